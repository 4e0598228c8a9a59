//! Buildkite's agent targeting rules.
//!
//! A job runs on an agent that has **all** of the job's `key=value` rules.
//! A rule value of `*` (or an empty value, `key=`) matches any value the
//! agent has for that key; a rule whose value is `false` is dropped, as
//! the agent drops such tags; there is no negation. An agent without a
//! `queue` tag belongs to the `default` queue, and a job that names no
//! queue goes there too.

use std::collections::BTreeMap;

/// The tags an agent (one kind of agent VM) registers with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentTags(BTreeMap<String, String>);

impl AgentTags {
    /// Parses `key=value` tags as the agent's `--tags` option takes them.
    pub fn parse<'a>(tags: impl IntoIterator<Item = &'a str>) -> Result<Self, RuleError> {
        let mut map = BTreeMap::new();
        for tag in tags {
            let (k, v) = split_rule(tag)?;
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Self(map))
    }

    /// The tags as written, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when `key` is among the tags as written.
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The agent's value for `key`, with the implicit `queue=default`.
    pub fn get(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(v) => Some(v),
            None if key == "queue" => Some("default"),
            None => None,
        }
    }

    /// True when an agent with these tags may run a job with `rules`
    /// (the job's `agent_query_rules`, each `key=value`).
    pub fn accepts<S: AsRef<str>>(&self, rules: &[S]) -> Result<bool, RuleError> {
        let mut queue_named = false;
        for rule in rules {
            let (key, want) = split_rule(rule.as_ref())?;
            if want == "false" {
                continue;
            }
            queue_named |= key == "queue";
            match self.get(key) {
                Some(have) if want == "*" || want.is_empty() || have == want => {}
                _ => return Ok(false),
            }
        }
        // A job that names no queue goes to the default queue.
        Ok(queue_named || self.get("queue") == Some("default"))
    }
}

/// The queue a job goes to: its `queue` rule, else `default`.
pub fn job_queue<S: AsRef<str>>(rules: &[S]) -> &str {
    rules
        .iter()
        .filter_map(|r| r.as_ref().strip_prefix("queue="))
        .find(|v| *v != "false")
        .unwrap_or("default")
}

/// A rule or tag that is not `key=value`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("agent rule {0:?} is not of the form key=value")]
pub struct RuleError(pub String);

fn split_rule(rule: &str) -> Result<(&str, &str), RuleError> {
    match rule.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(RuleError(rule.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(tags: &[&str]) -> AgentTags {
        AgentTags::parse(tags.iter().copied()).unwrap()
    }

    #[test]
    fn a_job_needs_every_rule_to_hold() {
        let a = agent(&["queue=linux", "arch=amd64"]);
        assert!(a.accepts(&["queue=linux", "arch=amd64"]).unwrap());
        assert!(!a.accepts(&["queue=linux", "arch=arm64"]).unwrap());
        assert!(!a.accepts(&["queue=linux", "os=debian"]).unwrap());
    }

    #[test]
    fn a_star_matches_any_value_but_not_a_missing_tag() {
        let a = agent(&["queue=linux", "arch=amd64"]);
        assert!(a.accepts(&["arch=*", "queue=linux"]).unwrap());
        assert!(!a.accepts(&["os=*", "queue=linux"]).unwrap());
    }

    #[test]
    fn agents_without_a_queue_serve_the_default_queue() {
        let untagged = agent(&["arch=amd64"]);
        let linux = agent(&["queue=linux"]);
        assert!(untagged.accepts::<&str>(&[]).unwrap());
        assert!(untagged.accepts(&["queue=default"]).unwrap());
        assert!(!linux.accepts::<&str>(&[]).unwrap());
        assert!(!untagged.accepts(&["queue=linux"]).unwrap());
    }

    /// The agent's documented rules as a table: agent tags, job rules, match.
    #[test]
    fn the_documented_rules_hold() {
        let table: &[(&[&str], &[&str], bool)] = &[
            // every rule must be among the tags
            (
                &["queue=linux", "os=debian"],
                &["queue=linux", "os=debian"],
                true,
            ),
            (&["queue=linux", "os=debian"], &["queue=linux"], true),
            (&["queue=linux"], &["queue=linux", "os=debian"], false),
            (
                &["queue=linux", "os=debian"],
                &["queue=linux", "os=ubuntu"],
                false,
            ),
            // `*` and an empty value match any value, not a missing tag
            (
                &["queue=linux", "os=debian"],
                &["queue=linux", "os=*"],
                true,
            ),
            (&["queue=linux", "os=debian"], &["queue=linux", "os="], true),
            (&["queue=linux"], &["queue=linux", "os=*"], false),
            (&["queue=linux"], &["queue=*"], true),
            // no queue rule means the default queue
            (&[], &[], true),
            (&["os=debian"], &["os=debian"], true),
            (&["queue=default"], &[], true),
            (&["queue=linux"], &[], false),
            (&["queue=linux"], &["os=*"], false),
            (&[], &["queue=default"], true),
            // rules with value false are dropped
            (&["queue=linux"], &["queue=linux", "docker=false"], true),
            (&["queue=linux"], &["queue=false"], false),
            // values compare exactly
            (&["queue=Linux"], &["queue=linux"], false),
            (&["size=large"], &["size=large ", "queue=default"], false),
            // a value may itself hold '='
            (&["env=a=b"], &["env=a=b"], true),
        ];
        for (tags, rules, want) in table {
            let got = agent(tags).accepts(rules).unwrap();
            assert_eq!(got, *want, "tags {tags:?} rules {rules:?}");
        }
    }

    #[test]
    fn a_job_names_its_queue_or_the_default() {
        assert_eq!(job_queue(&["os=x", "queue=linux"]), "linux");
        assert_eq!(job_queue(&["os=x"]), "default");
        assert_eq!(job_queue::<&str>(&[]), "default");
    }

    #[test]
    fn a_malformed_rule_is_an_error_naming_it() {
        let err = agent(&[]).accepts(&["queue"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent rule \"queue\" is not of the form key=value"
        );
    }
}

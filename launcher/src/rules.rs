//! Buildkite's agent targeting rules.
//!
//! A job runs on an agent that has **all** of the job's `key=value` rules.
//! A rule value of `*` matches any value the agent has for that key, and
//! an agent without a `queue` tag belongs to the `default` queue.

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
            queue_named |= key == "queue";
            match self.get(key) {
                Some(have) if want == "*" || have == want => {}
                _ => return Ok(false),
            }
        }
        // A job that names no queue goes to the default queue.
        Ok(queue_named || self.get("queue") == Some("default"))
    }
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

    #[test]
    fn a_malformed_rule_is_an_error_naming_it() {
        let err = agent(&[]).accepts(&["queue"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent rule \"queue\" is not of the form key=value"
        );
    }
}

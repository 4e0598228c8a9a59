//! A client of Buildkite's REST builds listing (`/v2`, API token), the job
//! source for organisations without clusters: every page of the builds
//! that are scheduled or running (`Link: <…>; rel="next"`, 100 a page),
//! their `script` jobs in state `scheduled`, and the state of every job of
//! those builds (to follow jobs whose VM is coming).
//!
//! The REST API has no reservation: de-duplication is the caller's (the
//! instances' labels in libvirt). Its budget is per organisation: the
//! answer's `RateLimit-Remaining` and `RateLimit-Reset` are followed, so a
//! listing that would run out waits for the window to reset (or, when
//! that is far, stops and says when to look again); 429 (`Retry-After`),
//! 5xx, timeouts and bodies that do not parse are retried with backoff and
//! jitter.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::Url;
use serde::Deserialize;

use crate::config::Secret;
use crate::http::client::{escape, http_client, send};
use crate::retry::{retry_request, server_wait, ApiError, Policy};
use crate::rules::job_queue;
use crate::schedule::Job;

/// Builds a page.
pub const PER_PAGE: u32 = 100;
/// Pages read at most in one listing (10,000 builds).
pub const MAX_PAGES: usize = 100;
/// A listing that ran out of budget waits this long at most for the
/// window to reset; a longer wait ends the listing for this pass.
pub const MAX_BUDGET_WAIT: Duration = Duration::from_secs(15);

/// A REST client for one organisation.
#[derive(Debug, Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    /// `base` parsed: what a next page's link must stay within.
    endpoint: Option<Url>,
    token: Secret,
    org: String,
    policy: Policy,
}

/// What one listing found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// `script` jobs in state `scheduled`, with their queue key
    /// (`__default__` for the default queue), in listing order.
    pub jobs: Vec<(Job, String)>,
    /// REST state of every job of the builds listed.
    pub states: HashMap<String, String>,
    /// Pages read.
    pub pages: usize,
    /// Every page was read: a job missing from `states` is in no
    /// scheduled or running build.
    pub complete: bool,
    /// When the budget allows the next listing, if it ran out.
    pub resume_at: Option<Instant>,
}

#[derive(Deserialize)]
struct RawBuild {
    #[serde(default)]
    jobs: Vec<RawJob>,
}

#[derive(Deserialize)]
struct RawJob {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    agent_query_rules: Option<Vec<String>>,
    #[serde(default)]
    priority: Option<serde_json::Value>,
    #[serde(default)]
    scheduled_at: Option<String>,
}

/// What the answer's rate-limit headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    /// `RateLimit-Remaining`.
    pub remaining: Option<u64>,
    /// `RateLimit-Reset` (time until the window resets), at most
    /// [`crate::retry::MAX_SERVER_WAIT`].
    pub reset: Option<Duration>,
}

impl Budget {
    fn of(h: &HeaderMap) -> Self {
        let text = |n: &str| h.get(n)?.to_str().ok();
        Budget {
            remaining: text("ratelimit-remaining").and_then(|v| v.trim().parse().ok()),
            reset: text("ratelimit-reset").and_then(|v| server_wait(v, SystemTime::now())),
        }
    }
}

/// A next page's link that the token is not sent to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the next page's link {link:?} leaves the configured API endpoint {endpoint}; not following it with the token")]
pub struct LinkRefused {
    /// The link as the server gave it.
    pub link: String,
    /// `api_endpoint`.
    pub endpoint: String,
}

/// Whether `link` lies inside `endpoint`: the same scheme, host and port,
/// no user name or password, and a path whose segments begin with the
/// endpoint's (so `/v2x` is not inside `/v2`). Compared parsed, since
/// `https://bk.example.com.evil.net/` and `https://bk.example.com@evil.net/`
/// both begin with the text `https://bk.example.com`.
pub fn within(endpoint: &Url, link: &Url) -> bool {
    fn segments(u: &Url) -> Vec<&str> {
        u.path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
    link.scheme() == endpoint.scheme()
        && link.host() == endpoint.host()
        && link.port_or_known_default() == endpoint.port_or_known_default()
        && link.username().is_empty()
        && link.password().is_none()
        && segments(link).starts_with(&segments(endpoint))
}

impl RestClient {
    /// A client of the API at `base` (the `/v2` URL) for organisation `org`.
    pub fn new(base: &str, token: Secret, org: &str) -> Self {
        RestClient {
            http: http_client(Duration::from_secs(30)),
            base: base.trim_end_matches('/').to_string(),
            endpoint: Url::parse(base).ok(),
            token,
            org: org.to_string(),
            policy: Policy::default(),
        }
    }

    /// Uses `policy` for retries.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The first page's URL.
    pub fn first_page(&self) -> String {
        format!(
            "{}/organizations/{}/builds?state%5B%5D=scheduled&state%5B%5D=running&per_page={PER_PAGE}",
            self.base,
            escape(&self.org)
        )
    }

    /// The next page to read after `page`: its `link` resolved against
    /// `page`, when that stays inside the configured endpoint.
    pub fn next_page(&self, page: &str, link: &str) -> Result<String, LinkRefused> {
        let refused = || LinkRefused {
            link: link.to_string(),
            endpoint: self.base.clone(),
        };
        let endpoint = self.endpoint.as_ref().ok_or_else(refused)?;
        let next = Url::parse(page)
            .and_then(|p| p.join(link))
            .map_err(|_| refused())?;
        match within(endpoint, &next) {
            true => Ok(next.to_string()),
            false => Err(refused()),
        }
    }

    /// Lists every page of scheduled and running builds; keeps the
    /// scheduled `script` jobs of `queues` (all queues when empty). A page
    /// that still fails after the retries, or a next page's link that
    /// leaves the endpoint, ends the listing early (`complete` is false)
    /// unless it was the first page that failed, which is an error.
    pub async fn list(&self, queues: &[String]) -> Result<Listing, ApiError> {
        let mut out = Listing::default();
        let mut url = Some(self.first_page());
        while let Some(u) = url.take() {
            if out.pages >= MAX_PAGES {
                eprintln!(
                    "buildkite: more than {MAX_PAGES} pages of scheduled and running builds; the rest waits for the next pass"
                );
                return Ok(out);
            }
            let (builds, next, budget) = match self.page(&u).await {
                Ok(p) => p,
                Err(e) if out.pages == 0 => return Err(e),
                Err(e) => {
                    eprintln!(
                        "buildkite: listing builds stopped after {} pages: {e}",
                        out.pages
                    );
                    return Ok(out);
                }
            };
            out.pages += 1;
            for b in builds {
                for j in b.jobs {
                    let Some(id) = j.id.filter(|i| !i.is_empty()) else {
                        continue;
                    };
                    let state = j.state.unwrap_or_default();
                    out.states.insert(id.clone(), state.clone());
                    if j.kind.as_deref() != Some("script") || state != "scheduled" {
                        continue;
                    }
                    let rules = j.agent_query_rules.unwrap_or_default();
                    let queue = match job_queue(&rules) {
                        "default" => "__default__".to_string(),
                        q => q.to_string(),
                    };
                    if !queues.is_empty() && !queues.contains(&queue) {
                        continue;
                    }
                    let priority = match &j.priority {
                        Some(serde_json::Value::Object(m)) => {
                            m.get("number").and_then(|n| n.as_i64()).unwrap_or(0)
                        }
                        Some(v) => v.as_i64().unwrap_or(0),
                        None => 0,
                    };
                    out.jobs.push((
                        Job {
                            id,
                            rules,
                            priority,
                            scheduled_at: j.scheduled_at.unwrap_or_default(),
                        },
                        queue,
                    ));
                }
            }
            let next = match next.map(|n| self.next_page(&u, &n)).transpose() {
                Ok(next) => next,
                Err(refused) => {
                    eprintln!("buildkite: {refused}");
                    return Ok(out);
                }
            };
            // The last request of the window was spent: wait for the
            // reset when it is near, else look again after it.
            if next.is_some() && budget.remaining == Some(0) {
                let reset = budget.reset.unwrap_or(Duration::from_secs(1));
                if reset > MAX_BUDGET_WAIT {
                    eprintln!(
                        "buildkite: REST rate limit spent after {} pages; the listing goes on in {} s",
                        out.pages,
                        reset.as_secs()
                    );
                    out.resume_at = Some(kvmhost::deadline::after(reset));
                    return Ok(out);
                }
                tokio::time::sleep(reset).await;
            }
            url = next;
        }
        out.complete = true;
        Ok(out)
    }

    async fn page(&self, url: &str) -> Result<(Vec<RawBuild>, Option<String>, Budget), ApiError> {
        retry_request(self.policy, "GET builds", || self.once(url)).await
    }

    async fn once(&self, url: &str) -> Result<(Vec<RawBuild>, Option<String>, Budget), ApiError> {
        let req = self
            .http
            .get(url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()));
        let (headers, bytes) = send(req, |status| match status {
            401 => "; check the API token (api_token_file or BUILDKITE_API_TOKEN)",
            403 => "; the API token needs the read_builds scope",
            404 => "; check the organisation slug (organization or BUILDKITE_ORGANIZATION)",
            _ => "",
        })
        .await?;
        let builds: Vec<RawBuild> =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::Transient {
                message: format!("the answer does not parse: {e}"),
                wait: None,
            })?;
        Ok((builds, next_link(&headers), Budget::of(&headers)))
    }
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(h: &HeaderMap) -> Option<String> {
    for v in h.get_all("link") {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let mut bits = part.split(';');
            let Some(url) = bits.next() else { continue };
            let next = bits.any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p == "rel=\"next\"" || p == "rel=next"
            });
            if next {
                let url = url.trim().trim_start_matches('<').trim_end_matches('>');
                if !url.is_empty() {
                    return Some(url.to_string());
                }
            }
        }
    }
    None
}

/// What a REST job state means for a job whose VM is coming, in the
/// Stacks API's words: `scheduled` (still waiting), `running` (an agent
/// has it or had it) or the state itself (it will not run: cancelled,
/// expired, skipped, ...). A job missing from a complete listing is in a
/// build that is no longer scheduled or running: `canceled`.
pub fn coming_state(state: Option<&str>) -> &str {
    match state {
        Some("scheduled") => "scheduled",
        Some(
            "assigned" | "accepted" | "running" | "passed" | "failed" | "finished" | "timing_out"
            | "timed_out",
        ) => "running",
        Some(other) => other,
        None => "canceled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::MAX_SERVER_WAIT;
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_next_link_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            "<http://x/v2/b?page=1>; rel=\"first\", <http://x/v2/b?page=1>; rel=\"prev\", \
             <http://x/v2/b?page=3>; rel=\"next\", <http://x/v2/b?page=9>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("http://x/v2/b?page=3"));
        h.insert(
            "link",
            "<http://x/v2/b?page=1>; rel=\"first\"".parse().unwrap(),
        );
        assert_eq!(next_link(&h), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn budgets_are_read_from_the_headers() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", "0".parse().unwrap());
        h.insert("ratelimit-reset", "42".parse().unwrap());
        assert_eq!(
            Budget::of(&h),
            Budget {
                remaining: Some(0),
                reset: Some(Duration::from_secs(42))
            }
        );
    }

    #[test]
    fn a_reset_time_from_the_server_is_at_most_five_minutes_and_garbage_is_none() {
        let reset = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("ratelimit-reset", v.parse().unwrap());
            Budget::of(&h).reset
        };
        assert_eq!(reset("18446744073709551615"), Some(MAX_SERVER_WAIT));
        assert_eq!(reset("100000000000000000000000"), Some(MAX_SERVER_WAIT));
        assert_eq!(reset("-3"), None);
        assert_eq!(reset("soon"), None);
        assert_eq!(reset("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            reset("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_SERVER_WAIT)
        );
    }

    #[test]
    fn a_next_link_must_stay_inside_the_endpoint_parsed_not_as_text() {
        let inside = |endpoint: &str, link: &str| {
            within(&Url::parse(endpoint).unwrap(), &Url::parse(link).unwrap())
        };
        let bk = "https://bk.example.com";
        assert!(inside(
            bk,
            "https://bk.example.com/v2/organizations/o/builds?page=2"
        ));
        assert!(inside(
            bk,
            "https://BK.example.com:443/organizations/o/builds"
        ));
        assert!(!inside(
            bk,
            "https://bk.example.com.evil.net/organizations/o/builds"
        ));
        assert!(!inside(
            bk,
            "https://bk.example.com@evil.net/organizations/o/builds"
        ));
        assert!(!inside(
            bk,
            "https://bk.example.com:secret@bk.example.com/x"
        ));
        assert!(!inside(bk, "http://bk.example.com/organizations/o/builds"));
        assert!(!inside(
            bk,
            "https://bk.example.com:8443/organizations/o/builds"
        ));
        let v2 = "https://api.buildkite.com/v2";
        assert!(inside(
            v2,
            "https://api.buildkite.com/v2/organizations/o/builds?page=3"
        ));
        assert!(!inside(
            v2,
            "https://api.buildkite.com/v2x/organizations/o/builds"
        ));
        assert!(!inside(
            v2,
            "https://api.buildkite.com/v2/../v3/organizations"
        ));
        assert!(!inside(v2, "https://api.buildkite.com/"));
        let port = "http://127.0.0.1:1234";
        assert!(!inside(port, "http://127.0.0.1:12345/organizations"));
    }

    #[test]
    fn a_refused_link_is_named_with_the_endpoint_and_a_relative_one_is_resolved() {
        let c = RestClient::new("https://bk.example.com", Secret::new("t"), "o");
        let page = c.first_page();
        assert_eq!(
            c.next_page(&page, "/organizations/o/builds?page=2")
                .as_deref(),
            Ok("https://bk.example.com/organizations/o/builds?page=2")
        );
        let e = c
            .next_page(
                &page,
                "https://bk.example.com.evil.net/organizations/o/builds",
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the next page's link \"https://bk.example.com.evil.net/organizations/o/builds\" \
             leaves the configured API endpoint https://bk.example.com; not following it with the token"
        );
    }

    /// One scheduled `script` job of queue `linux` as a page of builds.
    fn page_of(job: &str) -> String {
        format!(
            r#"[{{"jobs":[{{"id":"{job}","type":"script","state":"scheduled","agent_query_rules":["queue=linux"]}}]}}]"#
        )
    }

    /// What a loopback server was asked: each request's path and query,
    /// and whether it carried a token.
    type Asked = Arc<Mutex<Vec<(String, bool)>>>;

    /// A loopback server answering each GET with `answer(its URL, path
    /// and query)`: headers and body.
    async fn server(
        answer: impl Fn(&str, &str) -> (Vec<(&'static str, String)>, String)
            + Clone
            + Send
            + Sync
            + 'static,
    ) -> (String, Asked) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let asked: Asked = Arc::default();
        let (me, log) = (url.clone(), asked.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                let (answer, me, log) = (answer.clone(), me.clone(), log.clone());
                async move {
                    let target = uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    log.lock()
                        .unwrap()
                        .push((target.clone(), headers.contains_key(AUTHORIZATION)));
                    let (hs, body) = answer(&me, &target);
                    let mut out = HeaderMap::new();
                    for (k, v) in hs {
                        out.insert(k, v.parse().unwrap());
                    }
                    (out, body)
                }
            },
        );
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, asked)
    }

    fn quick() -> Policy {
        Policy {
            attempts: 1,
            base: Duration::from_millis(1),
            max: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn a_huge_reset_with_a_next_page_stops_the_listing_for_at_most_five_minutes() {
        let (url, _) = server(|me, target| match target.contains("page=2") {
            false => (
                vec![
                    ("ratelimit-remaining", "0".into()),
                    ("ratelimit-reset", "18446744073709551615".into()),
                    (
                        "link",
                        format!("<{me}/organizations/o/builds?page=2>; rel=\"next\""),
                    ),
                ],
                page_of("j1"),
            ),
            true => (vec![], page_of("j2")),
        })
        .await;
        let c = RestClient::new(&url, Secret::new("t"), "o").with_policy(quick());
        let l = c.list(&[]).await.unwrap();
        assert_eq!(l.pages, 1);
        assert!(!l.complete);
        let resume = l.resume_at.expect("the listing goes on after the reset");
        assert!(resume <= Instant::now() + MAX_SERVER_WAIT, "{resume:?}");
    }

    #[tokio::test]
    async fn a_next_link_to_another_host_gets_no_token_and_one_inside_is_followed() {
        let (evil, evil_asked) = server(|_, _| (vec![], page_of("stolen"))).await;
        let evil = evil.trim_start_matches("http://").to_string();
        let (url, asked) = server(move |me, target| {
            let me = me.trim_start_matches("http://");
            let next = match target {
                // `http://<us>@<evil>/...` begins with `http://<us>` as text.
                t if t.starts_with("/organizations/trap/") => {
                    format!("http://{me}@{evil}/organizations/trap/builds")
                }
                t if t.contains("page=2") => return (vec![], page_of("j2")),
                _ => format!("http://{me}/organizations/o/builds?page=2"),
            };
            (
                vec![("link", format!("<{next}>; rel=\"next\""))],
                page_of("j1"),
            )
        })
        .await;

        // A link inside the endpoint is followed with the token.
        let c = RestClient::new(&url, Secret::new("t"), "o").with_policy(quick());
        let l = c.list(&[]).await.unwrap();
        let ids: Vec<&str> = l.jobs.iter().map(|(j, _)| j.id.as_str()).collect();
        assert_eq!(ids, ["j1", "j2"]);
        assert!(l.complete);

        // One that leaves it is not: the listing stops with what it has.
        let c = RestClient::new(&url, Secret::new("t"), "trap").with_policy(quick());
        let l = c.list(&[]).await.unwrap();
        let ids: Vec<&str> = l.jobs.iter().map(|(j, _)| j.id.as_str()).collect();
        assert_eq!(ids, ["j1"]);
        assert!(!l.complete);
        assert!(
            evil_asked.lock().unwrap().is_empty(),
            "the other host was asked"
        );
        assert!(asked.lock().unwrap().iter().all(|(_, token)| *token));
    }

    #[test]
    fn rest_states_map_to_what_the_daemon_acts_on() {
        assert_eq!(coming_state(Some("scheduled")), "scheduled");
        assert_eq!(coming_state(Some("accepted")), "running");
        assert_eq!(coming_state(Some("passed")), "running");
        assert_eq!(coming_state(Some("canceled")), "canceled");
        assert_eq!(coming_state(None), "canceled");
    }
}

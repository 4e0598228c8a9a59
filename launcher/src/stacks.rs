//! A client of Buildkite's Stacks API (`/v3/stacks/...`) for custom
//! schedulers: register, list scheduled jobs, reserve, read job states,
//! finish, notify, deregister. Payloads are parsed into typed structs
//! here; a body that does not parse is a transient error (retried).
//! [`jat`] asks for the VMs' job acquisition tokens.

pub mod jat;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Secret;
use crate::retry::{retry_request, server_wait, ApiError, Policy};
use crate::schedule::Job;

/// A Stacks API client for one cluster token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Secret,
    policy: Policy,
}

/// One page of `scheduled-jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Jobs waiting in the queue, oldest first.
    pub jobs: Vec<Job>,
    /// Cursor for the next page, when there is one.
    pub next: Option<String>,
    /// The queue is paused: dispatch nothing.
    pub paused: bool,
}

#[derive(Deserialize)]
struct RawPage {
    jobs: Vec<RawJob>,
    page_info: Option<PageInfo>,
    cluster_queue: Option<ClusterQueue>,
}

#[derive(Deserialize)]
struct RawJob {
    id: String,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    agent_query_rules: Vec<String>,
    #[serde(default)]
    scheduled_at: Option<String>,
}

#[derive(Deserialize)]
struct PageInfo {
    #[serde(default)]
    has_next_page: bool,
    end_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ClusterQueue {
    #[serde(default)]
    dispatch_paused: Option<bool>,
    // Some clients and older answers say `paused`.
    #[serde(default)]
    paused: Option<bool>,
}

#[derive(Deserialize)]
struct Reserved {
    #[serde(default)]
    reserved: Vec<String>,
    #[serde(default)]
    not_reserved: Vec<String>,
}

#[derive(Deserialize)]
struct States {
    states: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Ignored {}

/// A note shown on a job's page in Buildkite.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Notification {
    /// Job UUID.
    pub job_uuid: String,
    /// At most 256 characters.
    pub detail: String,
}

impl Client {
    /// A client of the API at `base` (the `/v3` URL) with `token`.
    pub fn new(base: &str, token: Secret) -> Self {
        Client {
            http: http_client(Duration::from_secs(15)),
            base: base.trim_end_matches('/').to_string(),
            token,
            policy: Policy::default(),
        }
    }

    /// Uses `policy` for retries.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ApiError> {
        let what = format!("{method} {path}");
        retry_request(self.policy, &what, || {
            self.once(method.clone(), path, body.clone())
        })
        .await
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ApiError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Token {}", self.token.expose()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let (_, bytes) = send(req, |_| "").await?;
        let bytes = if bytes.is_empty() { &b"{}"[..] } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| ApiError::Transient {
            message: format!("the answer does not parse: {e}"),
            wait: None,
        })
    }

    /// `POST /stacks/register` for one queue (`__default__` for the default queue).
    pub async fn register(&self, key: &str, queue_key: &str) -> Result<(), ApiError> {
        let body = json!({
            "key": key,
            "type": "custom",
            "queue_key": queue_key,
            "metadata": { "launcher": "buildkite-agent-launcher", "version": env!("CARGO_PKG_VERSION") },
        });
        self.call::<Ignored>(Method::POST, "/stacks/register", Some(body))
            .await
            .map(|_| ())
    }

    /// One page of `GET /stacks/:key/scheduled-jobs`.
    pub async fn scheduled_jobs(
        &self,
        key: &str,
        queue_key: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page, ApiError> {
        let mut path = format!(
            "/stacks/{key}/scheduled-jobs?queue_key={}&limit={limit}",
            escape(queue_key)
        );
        if let Some(a) = after {
            path.push_str(&format!("&after={}", escape(a)));
        }
        let raw: RawPage = self.call(Method::GET, &path, None).await?;
        let paused = raw
            .cluster_queue
            .as_ref()
            .and_then(|q| q.dispatch_paused.or(q.paused))
            .unwrap_or(false);
        let next = raw
            .page_info
            .filter(|p| p.has_next_page)
            .and_then(|p| p.end_cursor);
        Ok(Page {
            jobs: raw
                .jobs
                .into_iter()
                .map(|j| Job {
                    id: j.id,
                    rules: j.agent_query_rules,
                    priority: j.priority.unwrap_or(0),
                    scheduled_at: j.scheduled_at.unwrap_or_default(),
                })
                .collect(),
            next,
            paused,
        })
    }

    /// `PUT .../batch-reserve`; returns the ids reserved for us.
    pub async fn reserve(
        &self,
        key: &str,
        ids: &[String],
        expiry: Duration,
    ) -> Result<Vec<String>, ApiError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut reserved = Vec::new();
        for chunk in ids.chunks(1000) {
            let body = json!({
                "job_uuids": chunk,
                "reservation_expiry_seconds": expiry.as_secs().clamp(1, 3600),
            });
            let r: Reserved = self
                .call(
                    Method::PUT,
                    &format!("/stacks/{key}/scheduled-jobs/batch-reserve"),
                    Some(body),
                )
                .await?;
            let _ = r.not_reserved;
            reserved.extend(r.reserved);
        }
        Ok(reserved)
    }

    /// `POST .../jobs/get-states`: job id to state name.
    pub async fn states(
        &self,
        key: &str,
        ids: &[String],
    ) -> Result<HashMap<String, String>, ApiError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(1000) {
            let s: States = self
                .call(
                    Method::POST,
                    &format!("/stacks/{key}/jobs/get-states"),
                    Some(json!({ "job_uuids": chunk })),
                )
                .await?;
            out.extend(s.states);
        }
        Ok(out)
    }

    /// `POST .../jobs/:id/finish` with a reason; a job that is already
    /// finished counts as done.
    pub async fn finish(&self, key: &str, id: &str, detail: &str) -> Result<(), ApiError> {
        let detail = truncate(detail, 4096);
        match self
            .call::<Ignored>(
                Method::POST,
                &format!("/stacks/{key}/jobs/{id}/finish"),
                Some(json!({ "exit_status": -1, "detail": detail })),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(422) && e.to_string().contains("already") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST .../notifications`.
    pub async fn notify(&self, key: &str, notes: &[Notification]) -> Result<(), ApiError> {
        for chunk in notes.chunks(1000) {
            let notes: Vec<Notification> = chunk
                .iter()
                .map(|n| Notification {
                    job_uuid: n.job_uuid.clone(),
                    detail: truncate(&n.detail, 256),
                })
                .collect();
            self.call::<Ignored>(
                Method::POST,
                &format!("/stacks/{key}/notifications"),
                Some(json!({ "notifications": notes })),
            )
            .await?;
        }
        Ok(())
    }

    /// `POST .../deregister`.
    pub async fn deregister(&self, key: &str) -> Result<(), ApiError> {
        self.call::<Ignored>(Method::POST, &format!("/stacks/{key}/deregister"), None)
            .await
            .map(|_| ())
    }
}

/// Shortens `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" ({u})"), "").replace(u.as_str(), "");
    }
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

pub(crate) fn message_of(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Msg {
        message: String,
    }
    match serde_json::from_slice::<Msg>(bytes) {
        Ok(m) => m.message,
        Err(_) => truncate(&String::from_utf8_lossy(bytes), 200),
    }
}

/// The HTTP client both Buildkite APIs use, with a request `timeout`.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!(
            "buildkite-agent-launcher/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .expect("a plain reqwest client builds")
}

/// Sends `req` and sorts the answer: no answer, 429 and 5xx are worth
/// retrying (with the server's wait hint); another failure status is
/// permanent, its message followed by `hint(status)`; a success gives
/// the headers and the body.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    hint: impl Fn(u16) -> &'static str,
) -> Result<(HeaderMap, Vec<u8>), ApiError> {
    let resp = req.send().await.map_err(|e| ApiError::Transient {
        message: if e.is_timeout() {
            "timed out".into()
        } else {
            format!("cannot reach Buildkite: {}", without_url(&e))
        },
        wait: None,
    })?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(|e| ApiError::Transient {
        message: format!("reading the answer: {}", without_url(&e)),
        wait: None,
    })?;
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(ApiError::Transient {
            message: format!("HTTP {status}"),
            wait: wait_hint(&headers),
        });
    }
    if !status.is_success() {
        return Err(ApiError::Permanent {
            status: Some(status.as_u16()),
            message: format!(
                "HTTP {status}: {}{}",
                message_of(&bytes),
                hint(status.as_u16())
            ),
        });
    }
    Ok((headers, bytes.to_vec()))
}

/// The server's hint of how long to wait: `Retry-After` (seconds or a
/// date), else `RateLimit-Reset` (seconds until the window resets); at
/// most [`crate::retry::MAX_SERVER_WAIT`], a value that is neither is no hint.
pub fn wait_hint(h: &HeaderMap) -> Option<Duration> {
    let wait = |name: &str| server_wait(h.get(name)?.to_str().ok()?, SystemTime::now());
    wait(RETRY_AFTER.as_str()).or_else(|| wait("ratelimit-reset"))
}

/// `s` percent-encoded for a URL path or query.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::MAX_SERVER_WAIT;

    #[test]
    fn the_wait_hint_prefers_retry_after() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", "7".parse().unwrap());
        assert_eq!(wait_hint(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(wait_hint(&h), Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_wait_hint_is_never_longer_than_five_minutes() {
        let hint = |retry_after: &str, reset: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, retry_after.parse().unwrap());
            h.insert("ratelimit-reset", reset.parse().unwrap());
            wait_hint(&h)
        };
        assert_eq!(
            hint("18446744073709551615", "1"),
            Some(MAX_SERVER_WAIT),
            "huge"
        );
        assert_eq!(hint("86400", "1"), Some(MAX_SERVER_WAIT));
        // A Retry-After that is no wait gives way to RateLimit-Reset.
        assert_eq!(hint("-1", "9"), Some(Duration::from_secs(9)), "negative");
        assert_eq!(hint("later", "9"), Some(Duration::from_secs(9)));
        assert_eq!(hint("later", "-9"), None);
        // An HTTP date: one long past is no wait, one far ahead is capped.
        assert_eq!(
            hint("Thu, 01 Jan 1970 00:00:00 GMT", "9"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            hint("Fri, 31 Dec 9999 23:59:59 GMT", "9"),
            Some(MAX_SERVER_WAIT)
        );
    }

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 5), "abc");
    }
}

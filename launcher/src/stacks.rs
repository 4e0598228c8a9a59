//! A client of Buildkite's Stacks API (`/v3/stacks/...`) for custom
//! schedulers: register, list scheduled jobs, reserve, read job states,
//! finish, notify, deregister. Payloads are parsed into typed structs
//! here; a body that does not parse is a transient error (retried).
//! [`jat`] asks for the VMs' job acquisition tokens.

pub mod jat;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Secret;
use crate::http::client::{escape, http_client, send, truncate};
use crate::retry::{retry_request, ApiError, Policy};
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

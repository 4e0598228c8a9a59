//! What a stand-in is started with: organization, tokens, limits, webhooks.

use std::time::Duration;

use anyhow::{bail, Context};

/// How a stand-in behaves; `Config::default()` suits most tests.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on: 127.0.0.1 unless agents in guests must reach it
    /// (e.g. `0.0.0.0` inside a test's own network namespace).
    pub bind: std::net::IpAddr,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Organization slug served under `/v2/organizations/{org}`.
    pub org: String,
    /// Cluster name reported by the metrics endpoint.
    pub cluster_name: String,
    /// REST API access token (`Authorization: Bearer ...`).
    pub api_token: String,
    /// Cluster agent token for the Stacks API (`Authorization: Token ...`).
    pub cluster_token: String,
    /// Agent registration token for `/v3/metrics` (`Authorization: Token ...`).
    pub agent_token: String,
    /// Queue key of jobs whose rules name no `queue=`; `__default__` also means it.
    pub default_queue: String,
    /// REST limit: requests per window for the whole organization.
    pub rest_rate_limit: RateLimit,
    /// Stacks limit per endpoint scope; `None` uses the documented per-scope defaults.
    pub stacks_rate_limit: Option<RateLimit>,
    /// Value of the `Buildkite-Agent-Metrics-Poll-Duration` header.
    pub metrics_poll_duration: Duration,
    /// A queue counts as connected while a stack polled it within this time.
    pub queue_connected_timeout: Duration,
    /// Where job events are POSTed, if anywhere.
    pub webhook: Option<WebhookConfig>,
    /// Whether the organisation has job acquisition tokens; without, the
    /// Stacks API answers 403 to requests for them.
    pub job_acquisition_tokens: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 0,
            org: "test-org".to_string(),
            cluster_name: "test-cluster".to_string(),
            api_token: format!("bkua_{}", uuid::Uuid::new_v4().simple()),
            cluster_token: format!("bkct_{}", uuid::Uuid::new_v4().simple()),
            agent_token: format!("bkat_{}", uuid::Uuid::new_v4().simple()),
            default_queue: "default".to_string(),
            rest_rate_limit: RateLimit {
                limit: 200,
                window: Duration::from_secs(60),
            },
            stacks_rate_limit: None,
            metrics_poll_duration: Duration::from_secs(15),
            queue_connected_timeout: Duration::from_secs(30),
            webhook: None,
            job_acquisition_tokens: true,
        }
    }
}

/// A fixed-window request budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u32,
    /// Length of one window.
    pub window: Duration,
}

/// A webhook receiver and how deliveries prove where they come from.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Receiver URL; must be on loopback.
    pub url: String,
    /// Token or signing secret.
    pub auth: WebhookAuth,
}

/// The two ways Buildkite authenticates webhook deliveries.
#[derive(Clone, Debug)]
pub enum WebhookAuth {
    /// Sent as-is in `X-Buildkite-Token`.
    Token(String),
    /// Signs each body into `X-Buildkite-Signature`.
    Secret(String),
}

impl Config {
    /// Rejects settings the stand-in cannot honour, naming the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.org.is_empty() || !self.org.chars().all(slug_char) {
            bail!(
                "config.org {:?}: use lowercase letters, digits and dashes",
                self.org
            );
        }
        for (field, token) in [
            ("api_token", &self.api_token),
            ("cluster_token", &self.cluster_token),
            ("agent_token", &self.agent_token),
        ] {
            if token.is_empty() || token.chars().any(char::is_whitespace) {
                bail!("config.{field} must be a non-empty token without spaces");
            }
        }
        if self.default_queue.is_empty() {
            bail!("config.default_queue must not be empty (Buildkite's is \"default\")");
        }
        for (field, limit) in [
            ("rest_rate_limit", Some(self.rest_rate_limit)),
            ("stacks_rate_limit", self.stacks_rate_limit),
        ] {
            if let Some(l) = limit {
                if l.limit == 0 || l.window.is_zero() {
                    bail!("config.{field}: limit and window must both be above zero");
                }
            }
        }
        if let Some(hook) = &self.webhook {
            check_loopback(&hook.url).context("config.webhook.url")?;
        }
        Ok(())
    }
}

fn slug_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

// Deliveries may only go to this machine: the test bed never sends
// packets anywhere else.
fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?} must start with http://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    match host {
        "127.0.0.1" | "localhost" | "[::1]" => Ok(()),
        _ => bail!("{url:?} is not on loopback; use http://127.0.0.1:PORT/..."),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn webhook_urls_off_loopback_are_refused() {
        let mut config = Config {
            webhook: Some(WebhookConfig {
                url: "http://10.0.0.1:80/hook".into(),
                auth: WebhookAuth::Token("t".into()),
            }),
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert!(format!("{err:#}").contains("config.webhook.url"));
        config.webhook.as_mut().unwrap().url = "http://127.0.0.1:9/hook".into();
        config.validate().unwrap();
    }
}

//! Fixed-window request budgets and the `RateLimit-*` headers that report them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::config::RateLimit;

/// Where a request stands against its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The budget per window.
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Whole seconds until the window resets.
    pub reset_secs: u64,
}

impl Decision {
    /// The decision a forced rate-limit fault reports.
    pub fn exhausted(limit: RateLimit) -> Self {
        Decision {
            allowed: false,
            limit: limit.limit,
            remaining: 0,
            reset_secs: ceil_secs(limit.window),
        }
    }

    /// Adds `RateLimit-Limit`, `-Remaining`, `-Reset` (and `-Scope` when given).
    pub fn write_headers(&self, headers: &mut HeaderMap, scope: Option<&str>) {
        headers.insert("RateLimit-Limit", HeaderValue::from(self.limit));
        headers.insert("RateLimit-Remaining", HeaderValue::from(self.remaining));
        headers.insert("RateLimit-Reset", HeaderValue::from(self.reset_secs));
        if let Some(scope) = scope.and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert("RateLimit-Scope", scope);
        }
    }

    /// The 429 answer, with headers and Buildkite's message.
    pub fn too_many(&self, scope: Option<&str>) -> Response {
        let mut body = json!({
            "message": format!(
                "You have exceeded your API rate limit. Please wait {} seconds before making more requests.",
                self.reset_secs
            ),
        });
        if let Some(scope) = scope {
            body["scope"] = json!(scope);
            body["limit"] = json!(self.limit);
            body["current"] = json!(self.limit + 1);
            body["reset"] = json!(self.reset_secs);
        }
        let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        self.write_headers(response.headers_mut(), scope);
        response
    }
}

/// Counters per scope.
#[derive(Debug, Default)]
pub struct Limiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    /// Counts one request in `scope` against `limit`.
    pub fn check(&self, scope: &str, limit: RateLimit) -> Decision {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let entry = windows.entry(scope.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= limit.window {
            *entry = (now, 0);
        }
        let allowed = entry.1 < limit.limit;
        if allowed {
            entry.1 += 1;
        }
        let left = limit.window.saturating_sub(now.duration_since(entry.0));
        Decision {
            allowed,
            limit: limit.limit,
            remaining: limit.limit - entry.1,
            reset_secs: ceil_secs(left).max(1),
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The Stacks API's documented per-endpoint limits (requests per second).
pub fn stacks_default(scope: &str) -> RateLimit {
    let limit = match scope {
        "list-scheduled-jobs" | "batch-reserve" => 10,
        "show-job" => 1000,
        "batch-load-job-states" => 20,
        "finish-job" => 100,
        "stack-notification" => 200,
        _ => 10,
    };
    RateLimit {
        limit,
        window: Duration::from_secs(1),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_request_past_the_limit_is_refused() {
        let limiter = Limiter::default();
        let limit = RateLimit {
            limit: 2,
            window: Duration::from_secs(60),
        };
        assert_eq!(limiter.check("s", limit).remaining, 1);
        assert!(limiter.check("s", limit).allowed);
        let third = limiter.check("s", limit);
        assert!(!third.allowed);
        assert_eq!(third.remaining, 0);
        assert!(third.reset_secs >= 59 && third.reset_secs <= 60);
        assert!(limiter.check("other", limit).allowed);
    }
}

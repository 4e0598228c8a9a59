//! Injected failures: the next N requests (optionally only those whose
//! path contains a pattern) fail in a chosen way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use super::ratelimit::Decision;
use super::render::message;
use super::server::AppState;

/// How a faulty request fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this 5xx status without touching any state.
    ServerError(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Never answer while the stand-in runs (the client must time out).
    Hang,
    /// Do the work but cut the JSON body in half.
    Malformed,
    /// Answer 429 with `RateLimit-*` headers, as if the budget were spent.
    RateLimited,
    /// Answer 429 whose `RateLimit-Reset` says this many seconds, sane
    /// (a few) or not (`u64::MAX`), without touching any state.
    RateLimitedFor(u64),
    /// Do the work but answer 200 with a body that is not JSON at all.
    Garbage,
}

/// A fault armed for the next `times` matching requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// How many requests it hits.
    pub times: u32,
    /// Only requests whose path contains this, if set.
    pub path_contains: Option<String>,
}

impl Fault {
    /// The next request answers `status` (500-599).
    pub fn server_error(status: u16) -> Self {
        Self::once(FaultKind::ServerError(status))
    }

    /// The next request is answered after `delay`.
    pub fn delay(delay: Duration) -> Self {
        Self::once(FaultKind::Delay(delay))
    }

    /// The next request is never answered.
    pub fn hang() -> Self {
        Self::once(FaultKind::Hang)
    }

    /// The next request gets a truncated JSON body.
    pub fn malformed() -> Self {
        Self::once(FaultKind::Malformed)
    }

    /// The next request is rate limited.
    pub fn rate_limited() -> Self {
        Self::once(FaultKind::RateLimited)
    }

    /// The next request is rate limited with `RateLimit-Reset: reset_secs`.
    pub fn rate_limited_for(reset_secs: u64) -> Self {
        Self::once(FaultKind::RateLimitedFor(reset_secs))
    }

    /// The next request gets a 200 whose body is not JSON.
    pub fn garbage() -> Self {
        Self::once(FaultKind::Garbage)
    }

    /// Hits `n` requests instead of one.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    /// Hits only requests whose path contains `pattern`.
    pub fn on_path(mut self, pattern: &str) -> Self {
        self.path_contains = Some(pattern.to_string());
        self
    }

    fn once(kind: FaultKind) -> Self {
        Fault {
            kind,
            times: 1,
            path_contains: None,
        }
    }

    /// Refuses faults that could never fire or would not be 5xx.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.times == 0 {
            bail!("fault times is 0: it would never fire; use 1 or more");
        }
        if let FaultKind::ServerError(status) = self.kind {
            if !(500..=599).contains(&status) {
                bail!("fault ServerError({status}): use a 5xx status such as 500 or 503");
            }
        }
        Ok(())
    }

    fn matches(&self, path: &str) -> bool {
        self.path_contains
            .as_deref()
            .is_none_or(|pattern| path.contains(pattern))
    }
}

/// Marks a response that a fault shaped, for the request log.
#[derive(Clone, Debug)]
pub struct Applied(pub FaultKind);

/// Takes one shot from the first armed fault matching `path`.
pub fn take(faults: &mut Vec<Fault>, path: &str) -> Option<FaultKind> {
    let index = faults.iter().position(|f| f.matches(path))?;
    let fault = &mut faults[index];
    fault.times -= 1;
    let kind = fault.kind.clone();
    if fault.times == 0 {
        faults.remove(index);
    }
    Some(kind)
}

/// Middleware: applies the next matching fault, if any.
pub async fn apply(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let kind = {
        let mut faults = state.faults.lock().unwrap_or_else(|e| e.into_inner());
        take(&mut faults, &path)
    };
    let Some(kind) = kind else {
        return next.run(request).await;
    };
    let mut response = match &kind {
        FaultKind::ServerError(status) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            message(status, status.canonical_reason().unwrap_or("Server Error"))
        }
        FaultKind::Delay(delay) => {
            tokio::select! {
                _ = tokio::time::sleep(*delay) => next.run(request).await,
                _ = stopping(state.shutdown.clone()) => {
                    message(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                }
            }
        }
        FaultKind::Hang => {
            stopping(state.shutdown.clone()).await;
            message(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        }
        FaultKind::Malformed => truncate(next.run(request).await).await,
        FaultKind::RateLimited => {
            let (limit, scope) = if path.starts_with("/v3/stacks/") {
                let scope = super::stacks::scope_of(request.method(), &path);
                (state.stacks_limit(scope), Some(scope))
            } else {
                (state.config.rest_rate_limit, None)
            };
            Decision::exhausted(limit).too_many(scope)
        }
        FaultKind::RateLimitedFor(reset) => {
            let mut r = message(StatusCode::TOO_MANY_REQUESTS, "rate limited");
            r.headers_mut()
                .insert("RateLimit-Remaining", axum::http::HeaderValue::from(0));
            r.headers_mut()
                .insert("RateLimit-Reset", axum::http::HeaderValue::from(*reset));
            r
        }
        FaultKind::Garbage => {
            let (parts, _) = next.run(request).await.into_parts();
            let mut r =
                Response::from_parts(parts, Body::from("<html>502 Bad Gateway</html>\n\x00\x7f"));
            r.headers_mut().remove(axum::http::header::CONTENT_LENGTH);
            r
        }
    };
    response.extensions_mut().insert(Applied(kind));
    response
}

/// Resolves once the stand-in is stopping.
pub async fn stopping(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it before resolving.
    let _ = shutdown.wait_for(|s| *s).await.is_ok();
}

async fn truncate(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let cut = if bytes.len() > 1 {
        bytes.slice(..bytes.len() / 2)
    } else {
        axum::body::Bytes::from_static(b"{\"")
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_fault_fires_the_given_number_of_times_on_matching_paths() {
        let mut faults = vec![Fault::server_error(502).times(2).on_path("/scheduled-jobs")];
        assert_eq!(take(&mut faults, "/v2/organizations/o/builds"), None);
        assert_eq!(
            take(&mut faults, "/v3/stacks/s/scheduled-jobs"),
            Some(FaultKind::ServerError(502))
        );
        assert!(take(&mut faults, "/v3/stacks/s/scheduled-jobs").is_some());
        assert!(faults.is_empty());
    }

    #[test]
    fn non_5xx_statuses_are_refused() {
        assert!(Fault::server_error(404).validate().is_err());
        assert!(Fault::hang().times(0).validate().is_err());
    }
}

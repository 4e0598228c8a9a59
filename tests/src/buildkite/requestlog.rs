//! Every request the stand-in saw, for tests to assert on.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::faults::{Applied, FaultKind};
use super::server::AppState;

/// One request and how it was answered.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Arrival order, counted from 1 over the stand-in's life.
    pub id: u64,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// Request body (lossy UTF-8).
    pub body: String,
    /// Status answered; `None` while unanswered (for example a hang fault).
    pub status: Option<u16>,
    /// The fault that shaped the answer, if any.
    pub fault: Option<FaultKind>,
    /// When it arrived.
    pub at: SystemTime,
    /// When its answer was ready, if it was.
    pub answered_at: Option<SystemTime>,
}

// Bodies we keep are API payloads; anything bigger is a client bug.
const BODY_LIMIT: usize = 4 << 20;

/// Middleware: records the request on arrival and its status when answered.
pub async fn record(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .unwrap_or_default();
    let id = state
        .request_seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let entry = RecordedRequest {
        id,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        authorization: parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status: None,
        fault: None,
        at: SystemTime::now(),
        answered_at: None,
    };
    state
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(entry);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let mut log = state.requests.lock().unwrap_or_else(|e| e.into_inner());
    // The log may have been cleared while this request was in flight.
    if let Some(entry) = log.iter_mut().rev().find(|e| e.id == id) {
        entry.status = Some(response.status().as_u16());
        entry.answered_at = Some(SystemTime::now());
        entry.fault = response.extensions().get::<Applied>().map(|a| a.0.clone());
    }
    response
}

//! The launcher's HTTP listeners: the webhook receiver (any path, POST)
//! and Prometheus `/metrics` with the status page at `/`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use tokio::sync::Notify;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::status::Status;
use crate::webhook::{event_of, verify};

#[derive(Clone)]
struct Hook {
    token: Secret,
    max_age: Duration,
    kick: Arc<Notify>,
    metrics: Arc<Metrics>,
}

async fn receive(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if let Err(e) = verify(
        header("x-buildkite-token"),
        header("x-buildkite-signature"),
        &body,
        &h.token,
        h.max_age,
        now,
    ) {
        h.metrics.error("webhook");
        eprintln!("webhook refused: {e}");
        return (StatusCode::UNAUTHORIZED, format!("{e}\n"));
    }
    match event_of(header("x-buildkite-event"), &body).as_deref() {
        Some("job.scheduled") => {
            h.kick.notify_one();
            (StatusCode::OK, "looking now\n".into())
        }
        Some(other) => (StatusCode::OK, format!("ignored {other}\n")),
        None => (StatusCode::BAD_REQUEST, "no event named\n".into()),
    }
}

/// The webhook receiver's routes.
pub fn webhook_router(
    token: Secret,
    max_age: Duration,
    kick: Arc<Notify>,
    metrics: Arc<Metrics>,
) -> Router {
    Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(Hook {
            token,
            max_age,
            kick,
            metrics,
        })
}

/// `/metrics`, and the status page at `/`.
pub fn metrics_router(metrics: Arc<Metrics>, status: Status) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        )
        .route(
            "/",
            get(move || {
                let s = status.clone();
                async move { axum::response::Html(s.render()) }
            }),
        )
}

/// Serves `router` on `addr` in the background.
pub async fn serve(addr: std::net::SocketAddr, router: Router) -> Result<(), String> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(l, router).await {
            eprintln!("HTTP listener on {addr} stopped: {e}");
        }
    });
    Ok(())
}

//! The launcher's HTTP listeners: the webhook receiver (any path, POST)
//! and Prometheus `/metrics` with the status page at `/`.
//!
//! Both may face anyone on the network, so a listener closes a connection
//! whose request does not arrive within the read timeout (slow clients
//! cannot hold connections open), serves at most so many connections at
//! once (more are closed as they come, costing nothing), reads at most
//! [`MAX_BODY`] of a body, one request per connection, and logs what it
//! refuses through a [`ThrottledLog`].

pub mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::status::Status;
use crate::throttled_log::ThrottledLog;
use crate::webhook::{event_of, verify};

/// The largest webhook body read; Buildkite's are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// How a listener guards itself against slow and numerous clients.
#[derive(Debug, Clone)]
pub struct Guard {
    /// What the listener is, for its log lines: `webhook`, `metrics`.
    pub name: &'static str,
    /// How long a client may take to send a request's head, and then its
    /// body (and a TLS handshake, with TLS).
    pub read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// HTTPS with this configuration; plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where refused requests and connections are logged.
    pub log: Arc<ThrottledLog>,
}

impl Guard {
    /// The `name` listener on plain HTTP, with a 10 s read timeout and 32
    /// connections, refusals logged to standard error at most once a
    /// minute.
    pub fn plain(name: &'static str) -> Self {
        Guard {
            name,
            read_timeout: Duration::from_secs(10),
            max_connections: 32,
            tls: None,
            log: Arc::new(ThrottledLog::stderr(crate::throttled_log::EVERY)),
        }
    }
}

#[derive(Clone)]
struct Hook {
    token: Secret,
    max_age: Duration,
    kick: Arc<Notify>,
    metrics: Arc<Metrics>,
    read_timeout: Duration,
    log: Arc<ThrottledLog>,
}

async fn receive(State(h): State<Hook>, req: Request) -> (StatusCode, String) {
    let (parts, body) = req.into_parts();
    // A Content-Length over the cap is refused before reading any of it.
    if axum::body::HttpBody::size_hint(&body).lower() > MAX_BODY as u64 {
        h.metrics.error("webhook");
        h.log
            .log(|| format!("webhook refused: a body over {MAX_BODY} bytes"));
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY} bytes\n"),
        );
    }
    let body =
        match tokio::time::timeout(h.read_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                h.metrics.error("webhook");
                h.log
                    .log(|| format!("webhook refused: a body over {MAX_BODY} bytes, or cut short"));
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over {MAX_BODY} bytes or was cut short\n"),
                );
            }
            Err(_) => {
                h.metrics.error("webhook");
                h.log.log(|| {
                    format!(
                        "webhook refused: the body did not arrive within {} s",
                        h.read_timeout.as_secs()
                    )
                });
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive in time\n".into(),
                );
            }
        };
    let headers = &parts.headers;
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
        h.log.log(|| format!("webhook refused: {e}"));
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

/// The webhook receiver's routes; bodies are read under `guard`'s read
/// timeout and refusals logged to its log.
pub fn webhook_router(
    token: Secret,
    max_age: Duration,
    kick: Arc<Notify>,
    metrics: Arc<Metrics>,
    guard: &Guard,
) -> Router {
    Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(Hook {
            token,
            max_age,
            kick,
            metrics,
            read_timeout: guard.read_timeout,
            log: guard.log.clone(),
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

/// Serves `router` on `addr` in the background, as `guard` says; returns
/// the address bound (the port chosen, for port 0).
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    guard: Guard,
) -> Result<SocketAddr, ListenError> {
    let cannot = |source: std::io::Error| ListenError { addr, source };
    let l = tokio::net::TcpListener::bind(addr).await.map_err(cannot)?;
    let bound = l.local_addr().map_err(cannot)?;
    let slots = Arc::new(Semaphore::new(guard.max_connections));
    let tls = guard.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match l.accept().await {
                Ok(c) => c,
                // Out of file descriptors and the like: wait, do not spin.
                Err(e) => {
                    guard
                        .log
                        .log(|| format!("{} listener on {bound}: accept failed: {e}", guard.name));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // A connection over the cap is closed at once: it costs a
            // file descriptor for an instant and no memory.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                guard.log.log(|| {
                    format!(
                        "{} listener on {bound}: refused a connection from {peer}: \
                         {} already open",
                        guard.name, guard.max_connections
                    )
                });
                continue;
            };
            let (router, guard, tls) = (router.clone(), guard.clone(), tls.clone());
            tokio::spawn(async move {
                let t = guard.read_timeout;
                let served = match tls {
                    None => connection(stream, router, t).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(t, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => connection(s, router, t).await,
                            Ok(Err(e)) => Err(ConnectionError::Handshake(e)),
                            Err(_) => Err(ConnectionError::NoHandshake(t)),
                        }
                    }
                };
                if let Err(why) = served {
                    guard
                        .log
                        .log(|| format!("{} listener on {bound}: {peer}: {why}", guard.name));
                }
                drop(slot);
            });
        }
    });
    Ok(bound)
}

/// One request on `io`: its head must arrive within `read_timeout` (the
/// handler bounds the body the same way); the connection closes after
/// the answer.
async fn connection<I>(io: I, router: Router, read_timeout: Duration) -> Result<(), ConnectionError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        router.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    // The head and the body each have their timeout; this bounds the
    // rest (a client that does not take the answer) so that no
    // connection holds its slot for long.
    match tokio::time::timeout(read_timeout * 3, conn).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.is_timeout() => Err(ConnectionError::NoHead(read_timeout)),
        // A client that hangs up or speaks no HTTP: nothing to log.
        Ok(Err(_)) => Ok(()),
        Err(_) => Err(ConnectionError::StillOpen(read_timeout * 3)),
    }
}

/// The address given could not be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    /// The address to listen on.
    pub addr: SocketAddr,
    /// What the system said.
    pub source: std::io::Error,
}

/// Why a connection was closed without an answer (logged, never sent).
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// No TLS handshake within the read timeout.
    #[error("no TLS handshake within {} s", .0.as_secs())]
    NoHandshake(Duration),
    /// No complete request head within the read timeout.
    #[error("no complete request head within {} s; closed", .0.as_secs())]
    NoHead(Duration),
    /// The connection outlived its bound (three read timeouts).
    #[error("the connection was still open after {} s; closed", .0.as_secs())]
    StillOpen(Duration),
}

#[cfg(test)]
mod test;

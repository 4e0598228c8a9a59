//! A scripted Buildkite for unit tests: an HTTP server on loopback that
//! answers each request with what the test's function says, and keeps
//! every request it got.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `POST`, `PUT`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: String,
    /// The body as text.
    pub body: String,
}

type Answer = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

#[derive(Clone)]
struct Shared {
    answer: Arc<Answer>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A running fake; it stops with the test's runtime.
pub struct FakeApi {
    /// `http://127.0.0.1:PORT/v3`.
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    /// Serves `answer` (status, JSON body) for every request.
    pub async fn start(answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            answer: Arc::new(answer),
            seen: seen.clone(),
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi {
            base: format!("http://{addr}/v3"),
            seen,
        }
    }

    /// The requests so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (status, body) = (s.answer)(&seen);
    s.seen.lock().unwrap().push(seen);
    (
        StatusCode::from_u16(status).expect("a valid status"),
        [("content-type", "application/json")],
        body,
    )
}

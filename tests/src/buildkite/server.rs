//! The shared state behind the HTTP handlers, the router, and the
//! authentication and rate-limit guards in front of each API.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use tokio::sync::{mpsc, watch};

use super::config::{Config, RateLimit};
use super::faults::Fault;
use super::model::{JobEvent, Store};
use super::ratelimit::{self, Limiter};
use super::render::{message, webhook_body};
use super::requestlog::RecordedRequest;
use super::webhook::{Deliveries, Outgoing};
use super::{agents, faults, metrics, requestlog, rest, stacks};

/// Everything the handlers and the control API share.
#[derive(Debug)]
pub struct AppState {
    /// The configuration it was started with.
    pub config: Config,
    /// `http://127.0.0.1:PORT` (or the bound address when not unspecified).
    pub base_url: String,
    /// Organization UUID reported by stack registration.
    pub org_id: String,
    /// Pipelines, builds, jobs, stacks, queues.
    pub store: Mutex<Store>,
    /// Armed faults, first match wins.
    pub faults: Mutex<Vec<Fault>>,
    /// Request log.
    pub requests: Mutex<Vec<RecordedRequest>>,
    /// Numbers request log entries.
    pub request_seq: AtomicU64,
    /// Rate-limit counters.
    pub limiter: Limiter,
    /// Becomes true when the stand-in stops; hung requests end then.
    pub shutdown: watch::Receiver<bool>,
    /// Queue of webhook deliveries, when a receiver is configured.
    pub webhooks: Option<mpsc::UnboundedSender<Outgoing>>,
    /// Webhook deliveries made so far.
    pub deliveries: Arc<Deliveries>,
}

impl AppState {
    /// Reads the store.
    pub fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes the store and queues a webhook for each job event it reports.
    pub fn mutate<T>(&self, f: impl FnOnce(&mut Store, &mut Vec<JobEvent>) -> T) -> T {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = Vec::new();
        let result = f(&mut store, &mut events);
        if let Some(queue) = &self.webhooks {
            for event in events {
                let body = store
                    .jobs
                    .get(&event.job_id)
                    .and_then(|job| webhook_body(&self.base_url, &store, event.event, job));
                if let Some(body) = body {
                    // A closed queue means the stand-in is stopping; nothing to tell.
                    let _ = queue.send(Outgoing {
                        event: event.event.to_string(),
                        job_id: event.job_id,
                        body: body.to_string(),
                    });
                }
            }
        }
        result
    }

    /// The budget of one Stacks API scope.
    pub fn stacks_limit(&self, scope: &str) -> RateLimit {
        self.config
            .stacks_rate_limit
            .unwrap_or_else(|| ratelimit::stacks_default(scope))
    }
}

/// The token after `scheme` in the `Authorization` header, if that scheme is used.
pub fn bearer<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (given, token) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(token.trim())
}

/// All routes with their guards, faults and request log.
pub fn router(state: Arc<AppState>) -> Router {
    let rest = Router::new()
        .route("/v2/organizations/{org}/builds", get(rest::list_org_builds))
        .route(
            "/v2/organizations/{org}/pipelines/{pipeline}/builds",
            get(rest::list_pipeline_builds),
        )
        .route_layer(from_fn_with_state(state.clone(), rest_guard));
    let stacks = Router::new()
        .route("/v3/stacks/register", post(stacks::register))
        .route("/v3/stacks/{key}/deregister", post(stacks::deregister))
        .route(
            "/v3/stacks/{key}/scheduled-jobs",
            get(stacks::scheduled_jobs),
        )
        .route(
            "/v3/stacks/{key}/scheduled-jobs/batch-reserve",
            put(stacks::batch_reserve),
        )
        .route("/v3/stacks/{key}/jobs/get-states", post(stacks::get_states))
        .route("/v3/stacks/{key}/jobs/{id}", get(stacks::show_job))
        .route("/v3/stacks/{key}/jobs/{id}/finish", post(stacks::finish))
        .route(
            "/v3/stacks/{key}/notifications",
            post(stacks::notifications),
        )
        .route(
            "/v3/stacks/{key}/job-acquisition-tokens",
            post(stacks::job_acquisition_tokens),
        )
        .route_layer(from_fn_with_state(state.clone(), stacks_guard));
    let metrics = Router::new()
        .route("/v3/metrics", get(metrics::all_queues))
        .route("/v3/metrics/queue", get(metrics::one_queue))
        .route_layer(from_fn_with_state(state.clone(), metrics_guard));
    // Each agent call checks its own token: registration or cluster token
    // for `register`, the access token it was given for the rest.
    let agent = Router::new()
        .route("/v3/register", post(agents::register))
        .route("/v3/connect", post(agents::connect))
        .route("/v3/disconnect", post(agents::disconnect))
        .route("/v3/ping", get(agents::ping))
        .route("/v3/heartbeat", post(agents::heartbeat))
        .route("/v3/jobs/{id}", get(agents::job_state))
        .route("/v3/jobs/{id}/acquire", put(agents::acquire))
        .route("/v3/jobs/{id}/accept", put(agents::accept))
        .route("/v3/jobs/{id}/start", put(agents::start))
        .route("/v3/jobs/{id}/finish", put(agents::finish))
        .route("/v3/jobs/{id}/chunks", post(agents::chunk))
        .route("/v3/jobs/{id}/header_times", post(agents::header_times))
        .route("/v3/{scope}/{id}/data/{op}", post(agents::meta_data));
    Router::new()
        .merge(rest)
        .merge(agent)
        .merge(stacks)
        .merge(metrics)
        .fallback(|| async { message(StatusCode::NOT_FOUND, "Not Found") })
        .layer(from_fn_with_state(state.clone(), faults::apply))
        .layer(from_fn_with_state(state.clone(), requestlog::record))
        .with_state(state)
}

async fn rest_guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if bearer(request.headers(), "Bearer") != Some(state.config.api_token.as_str()) {
        return message(
            StatusCode::UNAUTHORIZED,
            "Authentication required. Please supply a valid API Access Token (Authorization: Bearer ...)",
        );
    }
    let decision = state.limiter.check("rest", state.config.rest_rate_limit);
    if !decision.allowed {
        return decision.too_many(None);
    }
    let mut response = next.run(request).await;
    decision.write_headers(response.headers_mut(), None);
    response
}

async fn stacks_guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if bearer(request.headers(), "Token") != Some(state.config.cluster_token.as_str()) {
        return message(
            StatusCode::UNAUTHORIZED,
            "Invalid or missing cluster agent token (Authorization: Token ...)",
        );
    }
    let path = request.uri().path().to_string();
    let scope = stacks::scope_of(request.method(), &path);
    // Limits apply per stack key and endpoint, as the API documents.
    let key = path.split('/').nth(3).unwrap_or("");
    let decision = state
        .limiter
        .check(&format!("stacks/{key}/{scope}"), state.stacks_limit(scope));
    if !decision.allowed {
        return decision.too_many(Some(scope));
    }
    let mut response = next.run(request).await;
    decision.write_headers(response.headers_mut(), Some(scope));
    response
}

async fn metrics_guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    // Both agent registration tokens and cluster agent tokens read metrics.
    let token = bearer(request.headers(), "Token");
    if token != Some(state.config.agent_token.as_str())
        && token != Some(state.config.cluster_token.as_str())
    {
        return message(
            StatusCode::UNAUTHORIZED,
            "Invalid or missing agent token (Authorization: Token ...)",
        );
    }
    next.run(request).await
}

//! The Stacks API (`/v3/stacks/...`) for custom schedulers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::jats::{LIFETIME_DEFAULT, LIFETIME_MAX};
use super::model::{job_order, JobState, Stack, Store, RESERVATION_DEFAULT, RESERVATION_MAX};
use super::query;
use super::render::{message, stacks_job, ApiError};
use super::server::AppState;
use super::timefmt::rfc3339;

const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 1000;
const BATCH_MAX: usize = 1000;

/// The documented rate-limit scope of a Stacks API request.
pub fn scope_of(method: &Method, path: &str) -> &'static str {
    if path.ends_with("/scheduled-jobs") {
        "list-scheduled-jobs"
    } else if path.ends_with("/batch-reserve") {
        "batch-reserve"
    } else if path.ends_with("/get-states") {
        "batch-load-job-states"
    } else if path.ends_with("/finish") {
        "finish-job"
    } else if path.ends_with("/notifications") {
        "stack-notification"
    } else if path.ends_with("/job-acquisition-tokens") {
        "job-acquisition-tokens"
    } else if method == Method::GET && path.contains("/jobs/") {
        "show-job"
    } else {
        "default"
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request body: {e}"),
        )
    })
}

fn require_stack(store: &Store, key: &str) -> Result<(), ApiError> {
    if store.stacks.contains_key(key) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Stack {key:?} not found; register it with POST /v3/stacks/register"),
        ))
    }
}

#[derive(Deserialize)]
struct RegisterRequest {
    key: String,
    #[serde(rename = "type")]
    kind: String,
    queue_key: String,
    metadata: BTreeMap<String, String>,
}

/// `POST /v3/stacks/register`: creates (201) or updates (200) a stack.
pub async fn register(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: RegisterRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(text) = check_register(&req) {
        return message(StatusCode::UNPROCESSABLE_ENTITY, text);
    }
    let (created, stack) = state.mutate(|store, _| {
        let created = !store.stacks.contains_key(&req.key);
        let id = store
            .stacks
            .get(&req.key)
            .map(|s| s.id.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let stack = Stack {
            id,
            key: req.key.clone(),
            kind: req.kind.clone(),
            queue_key: req.queue_key.clone(),
            metadata: req.metadata.clone(),
        };
        store.stacks.insert(req.key.clone(), stack.clone());
        let queue = store.resolve_queue_key(&req.queue_key);
        store.queue_entry(&queue);
        (created, stack)
    });
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({
        "id": stack.id,
        "organization_uuid": state.org_id,
        "key": stack.key,
        "type": stack.kind,
        "cluster_queue_key": stack.queue_key,
        "metadata": stack.metadata,
        "last_connected_on": rfc3339(SystemTime::now()),
        "state": "connected",
    });
    (status, axum::Json(body)).into_response()
}

fn check_register(req: &RegisterRequest) -> Result<(), String> {
    if req.key.is_empty()
        || req.key.len() > 80
        || !req
            .key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "key {:?}: use 1-80 letters, digits, underscores or dashes",
            req.key
        ));
    }
    if !matches!(req.kind.as_str(), "custom" | "kubernetes" | "elastic") {
        return Err(format!(
            "type {:?}: must be custom, kubernetes or elastic (use custom for your own stack)",
            req.kind
        ));
    }
    if req.queue_key.is_empty() {
        return Err("queue_key must not be empty; use __default__ for the default queue".into());
    }
    if req.metadata.len() > 100 {
        return Err("metadata: at most 100 keys".into());
    }
    if let Some((k, _)) = req
        .metadata
        .iter()
        .find(|(k, v)| k.chars().count() > 64 || v.chars().count() > 256)
    {
        return Err(format!(
            "metadata {k:?}: keys take at most 64 characters, values 256"
        ));
    }
    Ok(())
}

/// `POST /v3/stacks/:key/deregister`: removes the stack (204).
pub async fn deregister(State(state): State<Arc<AppState>>, Path(key): Path<String>) -> Response {
    let removed = state.mutate(|store, _| store.stacks.remove(&key).is_some());
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        message(StatusCode::NOT_FOUND, format!("Stack {key:?} not found"))
    }
}

/// `GET /v3/stacks/:key/scheduled-jobs?queue_key=&limit=&after=`.
pub async fn scheduled_jobs(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query::parse(raw.as_deref());
    let Some(queue_key) = query::last(&pairs, "queue_key").filter(|q| !q.is_empty()) else {
        return message(StatusCode::BAD_REQUEST, "queue_key is required");
    };
    let limit = match query::last(&pairs, "limit") {
        None | Some("") => LIST_LIMIT_DEFAULT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => n,
            _ => {
                return message(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be an integer from 1 to {LIST_LIMIT_MAX}, got {v:?}"),
                )
            }
        },
    };
    let after = match query::last(&pairs, "after").filter(|a| !a.is_empty()) {
        None => None,
        Some(cursor) => match decode_cursor(cursor) {
            Some(c) => Some(c),
            None => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "after must be a page_info.end_cursor from an earlier answer",
                )
            }
        },
    };
    let now = Instant::now();
    let body: Result<_, ApiError> = state.mutate(|store, _| {
        require_stack(store, &key)?;
        let queue = store.resolve_queue_key(queue_key);
        store.queue_entry(&queue).last_polled = Some(now);
        let found = store.scheduled_jobs(&queue, after, now);
        let has_next = found.len() > limit;
        let page = &found[..found.len().min(limit)];
        let end_cursor = page.last().map(|j| encode_cursor(job_order(j)));
        let jobs: Vec<Value> = page.iter().map(|j| stacks_job(store, j)).collect();
        let q = &store.queues[&queue];
        Ok(json!({
            "jobs": jobs,
            "page_info": { "has_next_page": has_next, "end_cursor": end_cursor },
            "cluster_queue": { "id": q.id, "key": queue, "dispatch_paused": q.dispatch_paused },
        }))
    });
    match body {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn encode_cursor((millis, seq): (u128, u64)) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{millis}:{seq}"))
}

fn decode_cursor(cursor: &str) -> Option<(u128, u64)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (millis, seq) = text.split_once(':')?;
    Some((millis.parse().ok()?, seq.parse().ok()?))
}

#[derive(Deserialize)]
struct ReserveRequest {
    job_uuids: Vec<String>,
    reservation_expiry_seconds: Option<u64>,
}

/// `PUT /v3/stacks/:key/scheduled-jobs/batch-reserve`.
pub async fn batch_reserve(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let req: ReserveRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.job_uuids.len() > BATCH_MAX {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("job_uuids: at most {BATCH_MAX} per request"),
        );
    }
    let expiry = match req.reservation_expiry_seconds {
        None => RESERVATION_DEFAULT,
        Some(s) if s >= 1 && s <= RESERVATION_MAX.as_secs() => Duration::from_secs(s),
        Some(s) => {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "reservation_expiry_seconds {s}: must be from 1 to {}",
                    RESERVATION_MAX.as_secs()
                ),
            )
        }
    };
    let now = Instant::now();
    let result: Result<_, ApiError> = state.mutate(|store, _| {
        require_stack(store, &key)?;
        Ok(store.reserve(&key, &req.job_uuids, now + expiry, now))
    });
    match result {
        Ok((reserved, not_reserved)) => {
            axum::Json(json!({ "reserved": reserved, "not_reserved": not_reserved }))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct StatesRequest {
    job_uuids: Vec<String>,
}

/// `POST /v3/stacks/:key/jobs/get-states`: `{"states": {uuid: state}}`.
pub async fn get_states(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let req: StatesRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.job_uuids.len() > BATCH_MAX {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("job_uuids: at most {BATCH_MAX} per request"),
        );
    }
    let now = Instant::now();
    let result: Result<_, ApiError> = state.read(|store| {
        require_stack(store, &key)?;
        let mut states = serde_json::Map::new();
        for id in &req.job_uuids {
            if let Some(job) = store.jobs.get(id) {
                let name = if job.state == JobState::Scheduled && job.reserved_at(now) {
                    "reserved"
                } else {
                    job.state.agent_name()
                };
                states.insert(id.clone(), json!(name));
            }
        }
        Ok(json!({ "states": states }))
    });
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v3/stacks/:key/jobs/:id`: the job's command and environment.
pub async fn show_job(
    State(state): State<Arc<AppState>>,
    Path((key, id)): Path<(String, String)>,
) -> Response {
    let result: Result<_, ApiError> = state.read(|store| {
        require_stack(store, &key)?;
        let job = store
            .jobs
            .get(&id)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Job {id:?} not found")))?;
        let mut env = job.spec.env.clone();
        env.insert("BUILDKITE_JOB_ID".into(), job.id.clone());
        if let Some(build) = store.build_of(job) {
            env.insert("BUILDKITE_BUILD_ID".into(), build.id.clone());
            env.insert("BUILDKITE_BUILD_NUMBER".into(), build.number.to_string());
            env.insert(
                "BUILDKITE_PIPELINE_SLUG".into(),
                build.pipeline_slug.clone(),
            );
            env.insert("BUILDKITE_BRANCH".into(), build.branch.clone());
        }
        if let Some(step_key) = &job.spec.step_key {
            env.insert("BUILDKITE_STEP_KEY".into(), step_key.clone());
        }
        env.insert("BUILDKITE_COMMAND".into(), job.spec.command.clone());
        Ok(json!({ "id": job.id, "env": env, "command": job.spec.command }))
    });
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct FinishRequest {
    exit_status: Option<i32>,
    detail: String,
}

/// `POST /v3/stacks/:key/jobs/:id/finish`: the stack gives up on (or completes) a job.
pub async fn finish(
    State(state): State<Arc<AppState>>,
    Path((key, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let req: FinishRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.detail.is_empty() || req.detail.len() > 4096 {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "detail: give a reason of 1 to 4096 bytes",
        );
    }
    let result: Result<_, ApiError> = state.mutate(|store, events| {
        require_stack(store, &key)?;
        let job = store
            .jobs
            .get(&id)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Job {id:?} not found")))?;
        if job.state.is_terminal() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Job {id:?} is already {}", job.state.agent_name()),
            ));
        }
        let exit_status = req.exit_status.unwrap_or(-1);
        store
            .set_job_state(&id, JobState::Finished { exit_status }, events)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        if let Some(job) = store.jobs.get_mut(&id) {
            job.finish_detail = Some(req.detail.clone());
        }
        Ok(())
    });
    match result {
        Ok(()) => axum::Json(json!({})).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct NotificationsRequest {
    notifications: Vec<Notification>,
}

#[derive(Deserialize)]
struct Notification {
    job_uuid: String,
    detail: String,
}

/// `POST /v3/stacks/:key/notifications`: short notes on jobs' build pages.
pub async fn notifications(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let req: NotificationsRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.notifications.len() > BATCH_MAX {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("notifications: at most {BATCH_MAX} per request"),
        );
    }
    let result: Result<_, ApiError> = state.mutate(|store, _| {
        require_stack(store, &key)?;
        let mut errors: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
        for (i, n) in req.notifications.iter().enumerate() {
            let problem = if n.detail.is_empty() {
                Some("detail is required")
            } else if n.detail.chars().count() > 256 {
                Some("detail is too long (maximum is 256 characters)")
            } else {
                match store.jobs.get_mut(&n.job_uuid) {
                    None => Some("job not found"),
                    Some(job) if job.notifications.len() >= 100 => {
                        Some("job stack notification count exceeded")
                    }
                    Some(job) => {
                        job.notifications.push(n.detail.clone());
                        None
                    }
                }
            };
            if let Some(problem) = problem {
                errors.entry(problem).or_default().push(i);
            }
        }
        let errors: Vec<Value> = errors
            .into_iter()
            .map(|(error, indexes)| json!({ "error": error, "indexes": indexes }))
            .collect();
        Ok(json!({ "errors": errors }))
    });
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct JatRequest {
    job_uuids: Vec<String>,
    token_lifetime_seconds: Option<u64>,
}

/// `POST /v3/stacks/:key/job-acquisition-tokens`: a token for each job
/// the stack holds a reservation on (201), the others in `not_issued`.
pub async fn job_acquisition_tokens(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    if !state.config.job_acquisition_tokens {
        return message(
            StatusCode::FORBIDDEN,
            "Job acquisition tokens are not enabled for this organization",
        );
    }
    let req: JatRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.job_uuids.len() > BATCH_MAX {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("job_uuids: at most {BATCH_MAX} per request"),
        );
    }
    let lifetime = match req.token_lifetime_seconds {
        None => LIFETIME_DEFAULT,
        Some(s) if s >= 1 && s <= LIFETIME_MAX.as_secs() => Duration::from_secs(s),
        Some(s) => {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "token_lifetime_seconds {s}: must be from 1 to {}",
                    LIFETIME_MAX.as_secs()
                ),
            )
        }
    };
    let now = Instant::now();
    let result: Result<_, ApiError> = state.mutate(|store, _| {
        require_stack(store, &key)?;
        Ok(store.issue_jats(&key, &req.job_uuids, lifetime, now))
    });
    match result {
        Ok((issued, not_issued)) => {
            let tokens: Vec<Value> = issued
                .iter()
                .map(|j| {
                    json!({
                        "job_uuid": j.job_id,
                        "job_acquisition_token": j.token,
                        "expires_at": rfc3339(j.expires_at),
                    })
                })
                .collect();
            (
                StatusCode::CREATED,
                axum::Json(json!({ "job_acquisition_tokens": tokens, "not_issued": not_issued })),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = encode_cursor((1_700_000_000_000, 42));
        assert_eq!(decode_cursor(&c), Some((1_700_000_000_000, 42)));
        assert_eq!(decode_cursor("not a cursor"), None);
    }

    #[test]
    fn scopes_follow_the_documented_table() {
        assert_eq!(
            scope_of(&Method::GET, "/v3/stacks/s/scheduled-jobs"),
            "list-scheduled-jobs"
        );
        assert_eq!(scope_of(&Method::GET, "/v3/stacks/s/jobs/abc"), "show-job");
        assert_eq!(
            scope_of(&Method::POST, "/v3/stacks/s/deregister"),
            "default"
        );
    }
}

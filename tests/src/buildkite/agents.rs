//! The agent API (`/v3/register`, `/v3/connect`, `/v3/jobs/:id/...`) the
//! real `buildkite-agent` speaks: registration with an agent or cluster
//! token, or with a job acquisition token (once, before it expires; the
//! agent may then acquire only that token's job), then calls with the
//! access token it was given; `acquire` of one job (`start --acquire-job`),
//! start, gzip log chunks, header times, meta-data, finish, disconnect.
//! Shapes follow the agent's `api` package.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::model::{Job, JobEvent, JobState, Store};
use super::render::ApiError;
use super::server::{bearer, AppState};
use super::timefmt::rfc3339;

/// Largest log chunk the agent is told to send.
const CHUNK_MAX: u64 = 100 * 1024;
/// Largest whole log the agent is told to send.
const LOG_MAX: u64 = 64 * 1024 * 1024;

/// An agent that registered.
#[derive(Clone, Debug)]
pub struct RegisteredAgent {
    /// UUID.
    pub id: String,
    /// The name it registered with.
    pub name: String,
    /// Its tags (`meta_data`), e.g. `queue=linux`.
    pub tags: Vec<String>,
    /// Version it reported.
    pub version: String,
    /// When it registered.
    pub registered_at: SystemTime,
    /// When it connected, if it did.
    pub connected_at: Option<SystemTime>,
    /// When it disconnected, if it did.
    pub disconnected_at: Option<SystemTime>,
    /// Heartbeats and pings received.
    pub heartbeats: u32,
    /// The one job it may acquire, when it registered with a job
    /// acquisition token.
    pub acquire_only: Option<String>,
    access_token: String,
}

/// What one agent did with one job.
#[derive(Clone, Debug, Default)]
pub struct JobRun {
    /// UUID of the agent that acquired or accepted it.
    pub agent_id: String,
    /// When it was acquired.
    pub acquired_at: Option<SystemTime>,
    /// When the agent said it started (as the stand-in received it).
    pub started_at: Option<SystemTime>,
    /// When the agent said it finished.
    pub finished_at: Option<SystemTime>,
    /// `exit_status` as sent with `finish`.
    pub exit_status: Option<String>,
    /// `signal_reason` as sent with `finish`, if any.
    pub signal_reason: Option<String>,
    /// The log put together from its chunks (by offset).
    pub log: Vec<u8>,
    /// Chunks received: (sequence, offset, size).
    pub chunks: Vec<(u64, u64, u64)>,
    /// Header times the agent reported.
    pub header_times: BTreeMap<String, String>,
}

impl JobRun {
    /// The log as text (lossy).
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log).into_owned()
    }
}

/// The agent API's part of the store.
#[derive(Clone, Debug, Default)]
pub struct AgentApi {
    /// Registered agents by UUID.
    pub agents: BTreeMap<String, RegisteredAgent>,
    /// Runs by job UUID.
    pub runs: HashMap<String, JobRun>,
    /// Build meta-data by build UUID.
    pub meta_data: HashMap<String, BTreeMap<String, String>>,
    /// Every acquire call that named a known job, granted or refused, in
    /// order: `runs` keeps only the agent that holds a job, so a second
    /// agent trying the same job is seen only here.
    pub acquisitions: Vec<Acquisition>,
}

/// One agent's `acquire` of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquisition {
    /// The job asked for.
    pub job_id: String,
    /// The agent that asked.
    pub agent_id: String,
    /// When it asked.
    pub at: SystemTime,
    /// Whether the job became the agent's.
    pub granted: bool,
}

type ApiResult<T> = Result<T, ApiError>;

fn reply(result: ApiResult<Value>, status: StatusCode) -> Response {
    match result {
        Ok(v) => (status, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> ApiResult<T> {
    let body = if body.is_empty() {
        b"{}" as &[u8]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not the JSON this call takes: {e}"),
        )
    })
}

/// The agent whose access token the request carries.
fn agent_id(store: &Store, headers: &HeaderMap) -> ApiResult<String> {
    let token = bearer(headers, "Token").unwrap_or("");
    store
        .agent_api
        .agents
        .values()
        .find(|a| !token.is_empty() && a.access_token == token)
        .map(|a| a.id.clone())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Invalid or missing agent access token (Authorization: Token ...); register first",
            )
        })
}

/// Whether an agent with `tags` may run `job`: every `key=value` rule of
/// the job among the tags (`*` any value), the default queue for a job
/// without a queue rule.
fn agent_fits(store: &Store, job: &Job, tags: &[String]) -> bool {
    let tag = |k: &str| {
        tags.iter()
            .find_map(|t| t.split_once('=').filter(|(tk, _)| *tk == k).map(|(_, v)| v))
    };
    let queue = store.queue_of(job);
    if tag("queue").unwrap_or(store.default_queue.as_str()) != queue {
        return false;
    }
    job.spec.agent_query_rules.iter().all(|rule| {
        let Some((k, v)) = rule.split_once('=') else {
            return true;
        };
        k == "queue" || v == "*" || v.is_empty() || tag(k) == Some(v)
    })
}

fn job_env(store: &Store, job: &Job, base: &str, agent: &str) -> BTreeMap<String, String> {
    let build = store.build_of(job);
    let pipeline = build.and_then(|b| store.pipelines.get(&b.pipeline_slug));
    let agent = store.agent_api.agents.get(agent);
    let mut env: BTreeMap<String, String> = [
        ("BUILDKITE", "true".to_string()),
        ("CI", "true".to_string()),
        ("BUILDKITE_JOB_ID", job.id.clone()),
        ("BUILDKITE_BUILD_ID", job.build_id.clone()),
        (
            "BUILDKITE_BUILD_NUMBER",
            build.map(|b| b.number.to_string()).unwrap_or_default(),
        ),
        (
            "BUILDKITE_PIPELINE_SLUG",
            build.map(|b| b.pipeline_slug.clone()).unwrap_or_default(),
        ),
        ("BUILDKITE_ORGANIZATION_SLUG", store.org.clone()),
        (
            "BUILDKITE_PIPELINE_ID",
            pipeline.map(|p| p.id.clone()).unwrap_or_default(),
        ),
        ("BUILDKITE_PIPELINE_PROVIDER", "git".to_string()),
        (
            "BUILDKITE_AGENT_ID",
            agent.map(|a| a.id.clone()).unwrap_or_default(),
        ),
        (
            "BUILDKITE_AGENT_NAME",
            agent.map(|a| a.name.clone()).unwrap_or_default(),
        ),
        (
            "BUILDKITE_BRANCH",
            build.map(|b| b.branch.clone()).unwrap_or_default(),
        ),
        (
            "BUILDKITE_COMMIT",
            build.map(|b| b.commit.clone()).unwrap_or_default(),
        ),
        (
            "BUILDKITE_MESSAGE",
            build.map(|b| b.message.clone()).unwrap_or_default(),
        ),
        // The agent's bootstrap insists on one; an agent without git
        // skips the checkout with a `checkout` hook.
        (
            "BUILDKITE_REPO",
            pipeline.map(|p| p.repository.clone()).unwrap_or_default(),
        ),
        ("BUILDKITE_LABEL", job.spec.name.clone()),
        ("BUILDKITE_COMMAND", job.spec.command.clone()),
        ("BUILDKITE_SCRIPT_PATH", job.spec.command.clone()),
        (
            "BUILDKITE_STEP_KEY",
            job.spec.step_key.clone().unwrap_or_default(),
        ),
        (
            "BUILDKITE_BUILD_URL",
            format!("{base}/builds/{}", job.build_id),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(job.spec.env.clone());
    env
}

fn job_body(store: &Store, job: &Job, base: &str, agent: &str, token: &str) -> Value {
    json!({
        "id": job.id,
        "endpoint": base,
        "state": job.state.agent_name(),
        "env": job_env(store, job, base, agent),
        "chunks_max_size_bytes": CHUNK_MAX,
        "log_max_size_bytes": LOG_MAX,
        "token": token,
        "runnable_at": job.scheduled_at.map(rfc3339),
    })
}

/// The `/v3` base the agent used, from its `Host` header.
fn base_of(state: &AppState, headers: &HeaderMap) -> String {
    match headers.get("host").and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}/v3"),
        None => format!("{}/v3", state.base_url),
    }
}

#[derive(Deserialize)]
struct RegisterRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    meta_data: Vec<String>,
}

/// `POST /v3/register` with an agent registration or cluster agent
/// token, or a job acquisition token (which registers one agent, before
/// it expires, restricted to its job).
pub async fn register(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = bearer(&headers, "Token").unwrap_or("").to_string();
    let long_lived = token == state.config.agent_token || token == state.config.cluster_token;
    if !long_lived && !state.read(|store| store.jats.knows(&token)) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Invalid or missing agent registration token (Authorization: Token ...)",
        )
        .into_response();
    }
    let req: RegisterRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let base = base_of(&state, &headers);
    let mut agent = RegisteredAgent {
        id: uuid::Uuid::new_v4().to_string(),
        name: if req.name.is_empty() {
            req.hostname.clone()
        } else {
            req.name.clone()
        },
        tags: req.meta_data,
        version: req.version,
        registered_at: SystemTime::now(),
        connected_at: None,
        disconnected_at: None,
        heartbeats: 0,
        acquire_only: None,
        access_token: format!("bkaa_{}", uuid::Uuid::new_v4().simple()),
    };
    let now = std::time::Instant::now();
    let redeemed = state.mutate(|store, _| {
        if !long_lived {
            agent.acquire_only = Some(store.jats.redeem(&token, &agent.id, now)?);
        }
        store
            .agent_api
            .agents
            .insert(agent.id.clone(), agent.clone());
        Ok::<(), ApiError>(())
    });
    if let Err(e) = redeemed {
        return e.into_response();
    }
    let body = json!({
        "id": agent.id,
        "name": agent.name,
        "access_token": agent.access_token,
        "endpoint": base,
        "ping_interval": 5,
        "job_status_interval": 2,
        "heartbeat_interval": 60,
        "meta_data": agent.tags,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Updates the agent whose access token the request carries with `f`,
/// which gives the answer.
fn with_agent(
    state: &AppState,
    headers: &HeaderMap,
    f: impl FnOnce(&mut RegisteredAgent) -> Value,
) -> ApiResult<Value> {
    state.mutate(|store, _| {
        let id = agent_id(store, headers)?;
        let agent = store.agent_api.agents.get_mut(&id);
        Ok(f(agent.expect("agent_id found it under the same lock")))
    })
}

/// `POST /v3/connect`.
pub async fn connect(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let r = with_agent(&state, &headers, |a| {
        a.connected_at = Some(SystemTime::now());
        json!({"id": a.id, "connection_state": "connected"})
    });
    reply(r, StatusCode::OK)
}

/// `POST /v3/disconnect`.
pub async fn disconnect(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let r = with_agent(&state, &headers, |a| {
        a.disconnected_at = Some(SystemTime::now());
        json!({"id": a.id, "connection_state": "disconnected"})
    });
    reply(r, StatusCode::OK)
}

/// `GET /v3/ping`, as the agent's ping loop uses it (agents started
/// without `--acquire-job`): a job assigned to this agent and not yet
/// accepted is handed out again; else the oldest scheduled job whose
/// rules the agent's tags meet, on a queue whose dispatch is not paused
/// and not reserved by a stack, becomes `assigned` to it and is answered
/// as `{"job": {...}}` (the agent then accepts it); else `{"action":
/// "idle"}`. A disconnected agent is told `{"action": "disconnect"}`.
pub async fn ping(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let base = base_of(&state, &headers);
    let token = bearer(&headers, "Token").unwrap_or("").to_string();
    let r = state.mutate(|store, events| {
        let id = agent_id(store, &headers)?;
        let agent = store
            .agent_api
            .agents
            .get_mut(&id)
            .expect("found by agent_id");
        agent.heartbeats += 1;
        if agent.disconnected_at.is_some() {
            return Ok(json!({"action": "disconnect", "message": "This agent has disconnected"}));
        }
        // An agent of a job acquisition token is dispatched nothing: it
        // acquires its own job.
        if agent.acquire_only.is_some() {
            return Ok(json!({"action": "idle"}));
        }
        let tags = agent.tags.clone();
        let held = store.jobs.values().find(|j| {
            j.state == JobState::Assigned
                && store
                    .agent_api
                    .runs
                    .get(&j.id)
                    .is_some_and(|r| r.agent_id == id)
        });
        if let Some(j) = held {
            return Ok(json!({"job": job_body(store, j, &base, &id, &token)}));
        }
        let now = std::time::Instant::now();
        let mut ready: Vec<&Job> = store
            .jobs
            .values()
            .filter(|j| j.state == JobState::Scheduled && !j.reserved_at(now))
            .filter(|j| {
                !store
                    .queues
                    .get(&store.queue_of(j))
                    .is_some_and(|q| q.dispatch_paused)
            })
            .filter(|j| agent_fits(store, j, &tags))
            .collect();
        // Higher priority first, then oldest, as Buildkite dispatches.
        ready.sort_by_key(|j| {
            (
                std::cmp::Reverse(j.spec.priority),
                super::model::job_order(j),
            )
        });
        let Some(job_id) = ready.first().map(|j| j.id.clone()) else {
            return Ok(json!({"action": "idle"}));
        };
        move_job(store, &job_id, JobState::Assigned, events)?;
        store.agent_api.runs.insert(
            job_id.clone(),
            JobRun {
                agent_id: id.clone(),
                acquired_at: Some(SystemTime::now()),
                ..Default::default()
            },
        );
        Ok(json!({"job": job_body(store, job_of(store, &job_id)?, &base, &id, &token)}))
    });
    reply(r, StatusCode::OK)
}

#[derive(Deserialize)]
struct HeartbeatRequest {
    #[serde(default)]
    sent_at: String,
}

/// `POST /v3/heartbeat`: echoes `sent_at` with `received_at`.
pub async fn heartbeat(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = parse::<HeartbeatRequest>(&body).and_then(|req| {
        with_agent(&state, &headers, |a| {
            a.heartbeats += 1;
            json!({"sent_at": req.sent_at, "received_at": rfc3339(SystemTime::now())})
        })
    });
    reply(r, StatusCode::OK)
}

fn job_of<'a>(store: &'a Store, id: &str) -> ApiResult<&'a Job> {
    store
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Job {id:?} not found")))
}

/// The agent whose access token the request carries, checked to hold
/// job `id`.
fn job_holder(store: &Store, headers: &HeaderMap, id: &str) -> ApiResult<String> {
    let agent = agent_id(store, headers)?;
    job_of(store, id)?;
    match store.agent_api.runs.get(id) {
        Some(run) if run.agent_id == agent => Ok(agent),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Job {id:?} is not assigned to this agent; acquire it first"),
        )),
    }
}

/// Moves job `id` to `to`; a move the job's state does not allow is 422.
fn move_job(
    store: &mut Store,
    id: &str,
    to: JobState,
    events: &mut Vec<JobEvent>,
) -> ApiResult<()> {
    store
        .set_job_state(id, to, events)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// `GET /v3/jobs/:id`: its state (the agent polls it to see cancellation).
pub async fn job_state(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = state.mutate(|store, _| {
        job_holder(store, &headers, &id)?;
        let job = job_of(store, &id)?;
        Ok(json!({"state": job.state.agent_name()}))
    });
    reply(r, StatusCode::OK)
}

/// `PUT /v3/jobs/:id/acquire`: a scheduled job (reserved by a stack or
/// not) whose rules the agent's tags meet becomes accepted by it; a
/// waiting one answers 423 with `Retry-After`; any other state 422.
pub async fn acquire(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let base = base_of(&state, &headers);
    let token = bearer(&headers, "Token").unwrap_or("").to_string();
    let r: ApiResult<Value> = state.mutate(|store, events| {
        let agent = agent_id(store, &headers)?;
        job_of(store, &id)?;
        let r = acquire_in(store, events, &agent, &id);
        store.agent_api.acquisitions.push(Acquisition {
            job_id: id.clone(),
            agent_id: agent.clone(),
            at: SystemTime::now(),
            granted: r.is_ok(),
        });
        r?;
        Ok(job_body(store, job_of(store, &id)?, &base, &agent, &token))
    });
    match r {
        Err(e) if e.status == StatusCode::LOCKED => {
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            resp
        }
        r => reply(r, StatusCode::OK),
    }
}

/// Makes job `id` agent's, if its state and the agent's tags allow.
fn acquire_in(
    store: &mut Store,
    events: &mut Vec<JobEvent>,
    agent: &str,
    id: &str,
) -> ApiResult<()> {
    {
        let job = job_of(store, id)?;
        if let Some(only) = &store.agent_api.agents[agent].acquire_only {
            if *only != id {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("This agent registered with a job acquisition token for job {only:?}; it cannot acquire job {id:?}"),
                ));
            }
        }
        match job.state {
            JobState::Scheduled => {}
            JobState::Waiting => {
                return Err(ApiError::new(
                    StatusCode::LOCKED,
                    format!("Job {id:?} is waiting on an earlier step"),
                ))
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "Job {id:?} is {} and cannot be acquired",
                        other.agent_name()
                    ),
                ))
            }
        }
        let tags = store.agent_api.agents[agent].tags.clone();
        if !agent_fits(store, job, &tags) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "Job {id:?} targets {:?}; this agent's tags {tags:?} do not match",
                    job.spec.agent_query_rules
                ),
            ));
        }
    }
    move_job(store, id, JobState::Accepted, events)?;
    store.agent_api.runs.insert(
        id.to_string(),
        JobRun {
            agent_id: agent.to_string(),
            acquired_at: Some(SystemTime::now()),
            ..Default::default()
        },
    );
    Ok(())
}

/// `PUT /v3/jobs/:id/accept`: a job ping assigned to this agent becomes
/// accepted; one it acquired is answered as it stands.
pub async fn accept(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let base = base_of(&state, &headers);
    let token = bearer(&headers, "Token").unwrap_or("").to_string();
    let r = state.mutate(|store, events| {
        let agent = job_holder(store, &headers, &id)?;
        // A job handed out by ping is assigned until accepted; one
        // acquired is accepted already.
        match job_of(store, &id)?.state {
            JobState::Assigned => move_job(store, &id, JobState::Accepted, events)?,
            JobState::Accepted => {}
            other => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "Job {id:?} is {} and cannot be accepted",
                        other.agent_name()
                    ),
                ))
            }
        }
        Ok(job_body(store, job_of(store, &id)?, &base, &agent, &token))
    });
    reply(r, StatusCode::OK)
}

/// `PUT /v3/jobs/:id/start`: accepted -> running.
pub async fn start(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = state.mutate(|store, events| {
        job_holder(store, &headers, &id)?;
        move_job(store, &id, JobState::Running, events)?;
        if let Some(run) = store.agent_api.runs.get_mut(&id) {
            run.started_at = Some(SystemTime::now());
        }
        Ok(json!({}))
    });
    reply(r, StatusCode::OK)
}

#[derive(Deserialize)]
struct FinishRequest {
    #[serde(default)]
    exit_status: String,
    #[serde(default)]
    signal_reason: String,
}

/// `PUT /v3/jobs/:id/finish`: running (or accepted) -> finished with its exit status.
pub async fn finish(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = parse::<FinishRequest>(&body).and_then(|req| {
        state.mutate(|store, events| {
            job_holder(store, &headers, &id)?;
            let exit_status = req.exit_status.trim().parse::<i32>().unwrap_or(-1);
            move_job(store, &id, JobState::Finished { exit_status }, events)?;
            if let Some(run) = store.agent_api.runs.get_mut(&id) {
                run.finished_at = Some(SystemTime::now());
                run.exit_status = Some(req.exit_status.clone());
                run.signal_reason = Some(req.signal_reason.clone()).filter(|s| !s.is_empty());
            }
            Ok(json!({}))
        })
    });
    reply(r, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct ChunkQuery {
    sequence: u64,
    offset: u64,
    size: u64,
}

/// `POST /v3/jobs/:id/chunks?sequence=&offset=&size=`: a gzip body of
/// `size` bytes of log placed at `offset`.
pub async fn chunk(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<ChunkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gzip = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let data = if gzip {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out) {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the chunk is not valid gzip: {e}"),
            )
            .into_response();
        }
        out
    } else {
        body.to_vec()
    };
    if data.len() as u64 != q.size || q.size > CHUNK_MAX {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "size {} does not match the {} bytes sent (at most {CHUNK_MAX})",
                q.size,
                data.len()
            ),
        )
        .into_response();
    }
    let r = state.mutate(|store, _| {
        job_holder(store, &headers, &id)?;
        let run = store.agent_api.runs.get_mut(&id).expect("checked above");
        let end = (q.offset + q.size) as usize;
        if run.log.len() < end {
            run.log.resize(end, 0);
        }
        run.log[q.offset as usize..end].copy_from_slice(&data);
        run.chunks.push((q.sequence, q.offset, q.size));
        Ok(json!({}))
    });
    reply(r, StatusCode::CREATED)
}

#[derive(Deserialize)]
struct HeaderTimesRequest {
    header_times: BTreeMap<String, String>,
}

/// `POST /v3/jobs/:id/header_times`.
pub async fn header_times(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = parse::<HeaderTimesRequest>(&body).and_then(|req| {
        state.mutate(|store, _| {
            job_holder(store, &headers, &id)?;
            if let Some(run) = store.agent_api.runs.get_mut(&id) {
                run.header_times.extend(req.header_times);
            }
            Ok(json!({}))
        })
    });
    reply(r, StatusCode::OK)
}

#[derive(Deserialize)]
struct MetaDataRequest {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

/// `POST /v3/{jobs,builds}/:id/data/{set,get,exists,keys}`: the build's meta-data.
pub async fn meta_data(
    State(state): State<Arc<AppState>>,
    Path((scope, id, op)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = parse::<MetaDataRequest>(&body).and_then(|req| {
        state.mutate(|store, _| {
            agent_id(store, &headers)?;
            let build = match scope.as_str() {
                "jobs" => job_of(store, &id)?.build_id.clone(),
                "builds" if store.builds.iter().any(|b| b.id == id) => id.clone(),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("{scope}/{id} not found"),
                    ))
                }
            };
            let data = store.agent_api.meta_data.entry(build).or_default();
            match op.as_str() {
                "set" => {
                    if req.key.is_empty() {
                        return Err(ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "key: give a non-empty key",
                        ));
                    }
                    data.insert(req.key, req.value);
                    Ok(json!({}))
                }
                "get" => match data.get(&req.key) {
                    Some(v) => Ok(json!({"key": req.key, "value": v})),
                    None => Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("No meta-data found for key {:?}", req.key),
                    )),
                },
                "exists" => Ok(json!({"exists": data.contains_key(&req.key)})),
                "keys" => Ok(json!(data.keys().collect::<Vec<_>>())),
                other => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no meta-data operation {other:?}"),
                )),
            }
        })
    });
    reply(r, StatusCode::OK)
}

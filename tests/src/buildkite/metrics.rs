//! Agent metrics: `GET /v3/metrics` and `GET /v3/metrics/queue?name=`,
//! the counts `buildkite-agent-metrics` and autoscalers read.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::model::{JobState, Store};
use super::query;
use super::render::message;
use super::server::AppState;

#[derive(Default, Clone, Copy)]
struct Counts {
    scheduled: u64,
    running: u64,
    waiting: u64,
    idle: u64,
    busy: u64,
}

impl Counts {
    fn jobs(&self) -> Value {
        json!({
            "scheduled": self.scheduled,
            "running": self.running,
            "waiting": self.waiting,
            "total": self.scheduled + self.running + self.waiting,
        })
    }

    fn agents(&self) -> Value {
        json!({ "idle": self.idle, "busy": self.busy, "total": self.idle + self.busy })
    }

    fn add(&mut self, other: Counts) {
        self.scheduled += other.scheduled;
        self.running += other.running;
        self.waiting += other.waiting;
        self.idle += other.idle;
        self.busy += other.busy;
    }
}

fn per_queue(store: &Store) -> BTreeMap<String, Counts> {
    let mut queues: BTreeMap<String, Counts> = store
        .queues
        .keys()
        .map(|k| (k.clone(), Counts::default()))
        .collect();
    for job in store.jobs.values() {
        let counts = queues.entry(store.queue_of(job)).or_default();
        match job.state {
            JobState::Scheduled => counts.scheduled += 1,
            JobState::Waiting => counts.waiting += 1,
            s if s.is_active() => counts.running += 1,
            _ => {}
        }
    }
    for (queue, (idle, busy)) in &store.agents {
        let counts = queues.entry(queue.clone()).or_default();
        counts.idle += u64::from(*idle);
        counts.busy += u64::from(*busy);
    }
    queues
}

fn with_poll_header(state: &AppState, body: Value) -> Response {
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(
        "Buildkite-Agent-Metrics-Poll-Duration",
        HeaderValue::from(state.config.metrics_poll_duration.as_secs()),
    );
    response
}

/// `GET /v3/metrics`: totals and per-queue counts.
pub async fn all_queues(State(state): State<Arc<AppState>>) -> Response {
    let queues = state.read(per_queue);
    let mut total = Counts::default();
    let mut jobs = Map::new();
    let mut agents = Map::new();
    for (name, counts) in &queues {
        total.add(*counts);
        jobs.insert(name.clone(), counts.jobs());
        agents.insert(name.clone(), counts.agents());
    }
    let mut jobs_total = total.jobs();
    jobs_total["queues"] = Value::Object(jobs);
    let mut agents_total = total.agents();
    agents_total["queues"] = Value::Object(agents);
    let body = json!({
        "agents": agents_total,
        "jobs": jobs_total,
        "organization": { "slug": state.config.org },
        "cluster": { "name": state.config.cluster_name },
    });
    with_poll_header(&state, body)
}

/// `GET /v3/metrics/queue?name=Q`: one queue's counts.
pub async fn one_queue(State(state): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Response {
    let pairs = query::parse(raw.as_deref());
    let Some(name) = query::last(&pairs, "name").filter(|n| !n.is_empty()) else {
        return message(StatusCode::BAD_REQUEST, "name (the queue key) is required");
    };
    let counts = state.read(per_queue).get(name).copied().unwrap_or_default();
    let body = json!({
        "agents": counts.agents(),
        "jobs": counts.jobs(),
        "organization": { "slug": state.config.org },
        "cluster": { "name": state.config.cluster_name },
    });
    with_poll_header(&state, body)
}

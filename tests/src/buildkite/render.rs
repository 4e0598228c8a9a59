//! The JSON documents the stand-in answers with, shaped like Buildkite's.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::model::{Build, Job, Pipeline, Store};
use super::timefmt::rfc3339;

const WEB: &str = "https://buildkite.invalid";

/// An error answer: `{"message": ...}` with `status`.
pub fn message(status: StatusCode, text: impl Into<String>) -> Response {
    ApiError::new(status, text).into_response()
}

/// A refused request, answered as Buildkite does: `{"message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the client to act on.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "message": self.message }))).into_response()
    }
}

/// A pipeline as nested in REST builds and webhooks.
pub fn pipeline(api: &str, org: &str, p: &Pipeline) -> Value {
    json!({
        "id": p.id,
        "graphql_id": graphql_id("Pipeline", &p.id),
        "url": format!("{api}/v2/organizations/{org}/pipelines/{}", p.slug),
        "web_url": format!("{WEB}/{org}/{}", p.slug),
        "name": p.name,
        "slug": p.slug,
        "repository": p.repository,
        "default_branch": "main",
        "provider": { "id": "git", "webhook_url": "" },
        "builds_url": format!("{api}/v2/organizations/{org}/pipelines/{}/builds", p.slug),
        "created_at": rfc3339(p.created_at),
    })
}

/// A REST job object.
pub fn rest_job(api: &str, store: &Store, build: &Build, job: &Job) -> Value {
    let org = &store.org;
    let slug = &build.pipeline_slug;
    let n = build.number;
    let base = format!(
        "{api}/v2/organizations/{org}/pipelines/{slug}/builds/{n}/jobs/{}",
        job.id
    );
    let queue_id = store.queues.get(&store.queue_of(job)).map(|q| q.id.clone());
    json!({
        "id": job.id,
        "graphql_id": graphql_id("Job", &job.id),
        "type": "script",
        "name": job.spec.name,
        "step_key": job.spec.step_key,
        "priority": { "number": job.spec.priority },
        "agent_query_rules": job.spec.agent_query_rules,
        "state": job.state.rest_name(),
        "build_url": format!("{api}/v2/organizations/{org}/pipelines/{slug}/builds/{n}"),
        "web_url": format!("{WEB}/{org}/{slug}/builds/{n}#{}", job.id),
        "log_url": format!("{base}/log"),
        "raw_log_url": format!("{base}/log.txt"),
        "command": job.spec.command,
        "soft_failed": false,
        "exit_status": match job.state {
            super::model::JobState::Finished { exit_status } => Some(exit_status),
            _ => None,
        },
        "artifact_paths": "",
        "agent": Value::Null,
        "created_at": rfc3339(job.created_at),
        "scheduled_at": job.scheduled_at.map(rfc3339),
        "runnable_at": job.scheduled_at.map(rfc3339),
        "started_at": job.started_at.map(rfc3339),
        "finished_at": job.finished_at.map(rfc3339),
        "retried": false,
        "retried_in_job_id": Value::Null,
        "retries_count": Value::Null,
        "parallel_group_index": Value::Null,
        "parallel_group_total": Value::Null,
        "matrix": Value::Null,
        "cluster_id": Value::Null,
        "cluster_queue_id": queue_id,
    })
}

/// A REST build object, with its jobs unless `with_jobs` is false.
pub fn rest_build(api: &str, store: &Store, build: &Build, with_jobs: bool) -> Value {
    let org = &store.org;
    let slug = &build.pipeline_slug;
    let jobs: Vec<&Job> = store.jobs_of(build).collect();
    let started = jobs.iter().filter_map(|j| j.started_at).min();
    let state = store.build_state(build);
    let finished = if matches!(state, "passed" | "failed" | "canceled") {
        jobs.iter().filter_map(|j| j.finished_at).max()
    } else {
        None
    };
    let mut value = json!({
        "id": build.id,
        "graphql_id": graphql_id("Build", &build.id),
        "url": format!("{api}/v2/organizations/{org}/pipelines/{slug}/builds/{}", build.number),
        "web_url": format!("{WEB}/{org}/{slug}/builds/{}", build.number),
        "number": build.number,
        "state": state,
        "blocked": false,
        "cancel_reason": Value::Null,
        "message": build.message,
        "commit": build.commit,
        "branch": build.branch,
        "env": {},
        "source": "api",
        "creator": Value::Null,
        "created_at": rfc3339(build.created_at),
        "scheduled_at": rfc3339(build.created_at),
        "started_at": started.map(rfc3339),
        "finished_at": finished.map(rfc3339),
        "meta_data": {},
        "pull_request": Value::Null,
        "rebuilt_from": Value::Null,
        "pipeline": store.pipelines.get(slug).map(|p| pipeline(api, org, p)),
    });
    if with_jobs {
        value["jobs"] = jobs
            .iter()
            .map(|j| rest_job(api, store, build, j))
            .collect();
    }
    value
}

/// One entry of the Stacks API's scheduled-jobs listing.
pub fn stacks_job(store: &Store, job: &Job) -> Value {
    let build = store.build_of(job);
    let pipeline = build.and_then(|b| store.pipelines.get(&b.pipeline_slug));
    json!({
        "id": job.id,
        "priority": job.spec.priority,
        "agent_query_rules": job.spec.agent_query_rules,
        "scheduled_at": job.scheduled_at.map(rfc3339),
        "pipeline": {
            "slug": pipeline.map(|p| p.slug.clone()),
            "uuid": pipeline.map(|p| p.id.clone()),
        },
        "build": {
            "number": build.map(|b| b.number),
            "branch": build.map(|b| b.branch.clone()),
            "uuid": build.map(|b| b.id.clone()),
        },
        "step": { "key": job.spec.step_key },
    })
}

/// Webhook payload for `event` about `job`.
pub fn webhook_body(api: &str, store: &Store, event: &str, job: &Job) -> Option<Value> {
    let build = store.build_of(job)?;
    let pipeline = store.pipelines.get(&build.pipeline_slug)?;
    Some(json!({
        "event": event,
        "job": rest_job(api, store, build, job),
        "build": rest_build(api, store, build, false),
        "pipeline": self::pipeline(api, &store.org, pipeline),
        "sender": { "id": "00000000-0000-0000-0000-000000000000", "name": "Buildkite stand-in" },
    }))
}

// Buildkite's GraphQL ids are base64 of "Type---uuid"; clients treat them
// as opaque but some log or compare them.
fn graphql_id(kind: &str, id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{kind}---{id}"))
}

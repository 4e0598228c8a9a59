//! A stand-in for Buildkite's APIs (on loopback unless told otherwise), following the documented
//! shapes: the REST builds listing (Bearer token, `Link` paging, rate
//! limits), the Stacks API for custom schedulers (cluster token) with its
//! job acquisition tokens, the agent API, agent metrics (agent token), and
//! job webhooks (token or HMAC signature).
//!
//! Tests drive it through [`StandIn`]: add pipelines, builds and jobs,
//! move jobs through their states, read the request log, and arm faults
//! (5xx, delays, hangs, malformed bodies, rate limits).
//!
//! ```no_run
//! use testbed::buildkite::{BuildSpec, Config, JobSpec, StandIn};
//! let bk = StandIn::start(Config::default())?;
//! bk.add_pipeline("app")?;
//! let build = bk.add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=kvm"])]))?;
//! println!("{} {} {}", bk.url(), bk.api_token(), build.job_ids[0]);
//! # anyhow::Ok(())
//! ```

mod agents;
mod config;
mod faults;
mod jats;
mod metrics;
mod model;
mod query;
mod ratelimit;
mod render;
mod requestlog;
mod rest;
mod server;
mod stacks;
mod timefmt;
mod webhook;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch};

pub use agents::{Acquisition, JobRun, RegisteredAgent};
pub use config::{Config, RateLimit, WebhookAuth, WebhookConfig};
pub use faults::{Fault, FaultKind};
pub use jats::IssuedJat;
pub use model::{BuildRef, BuildSpec, Job, JobSpec, JobState, Stack};
pub use requestlog::RecordedRequest;
pub use timefmt::rfc3339;
pub use webhook::{sign, verify_signature, SignatureError, WebhookDelivery};

use server::AppState;

/// A running stand-in; it stops when dropped.
pub struct StandIn {
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Binds `config.bind` (127.0.0.1 by default) on `config.port` (0 for
    /// a free port) and serves on its own runtime thread.
    pub fn start(config: Config) -> anyhow::Result<StandIn> {
        config.validate()?;
        let listener =
            std::net::TcpListener::bind((config.bind, config.port)).with_context(|| {
                format!(
                    "binding the Buildkite stand-in on {}:{}",
                    config.bind, config.port
                )
            })?;
        listener.set_nonblocking(true)?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let (runtime, listener) = crate::util::server_runtime("buildkite-standin", listener)?;
        let (stop, stopped) = watch::channel(false);
        let deliveries = Arc::new(webhook::Deliveries::default());
        let (webhooks, hook_queue) = match &config.webhook {
            Some(hook) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some((hook.clone(), rx)))
            }
            None => (None, None),
        };
        let state = Arc::new(AppState {
            base_url: format!("http://{addr}"),
            org_id: uuid::Uuid::new_v4().to_string(),
            store: Mutex::new(model::Store::new(&config.org, &config.default_queue)),
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            request_seq: AtomicU64::new(0),
            limiter: ratelimit::Limiter::default(),
            shutdown: stopped.clone(),
            webhooks,
            deliveries: deliveries.clone(),
            config,
        });
        let app = server::router(state.clone());
        let thread = std::thread::Builder::new()
            .name("buildkite-standin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    if let Some((hook, rx)) = hook_queue {
                        tokio::spawn(webhook::deliver(hook, rx, deliveries));
                    }
                    tokio::select! {
                        result = axum::serve(listener, app) => {
                            if let Err(e) = result {
                                eprintln!("buildkite stand-in: serving stopped: {e}");
                            }
                        }
                        _ = faults::stopping(stopped) => {}
                    }
                });
                // Connections still open (keep-alive, hung requests) are
                // dropped here rather than waited for.
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .context("starting the stand-in's thread")?;
        Ok(StandIn {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Base URL, `http://127.0.0.1:PORT` (REST under `/v2`, agent APIs under `/v3`).
    pub fn url(&self) -> &str {
        &self.state.base_url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.state
            .base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Agents registered through the agent API.
    pub fn registered_agents(&self) -> Vec<RegisteredAgent> {
        self.state
            .read(|store| store.agent_api.agents.values().cloned().collect())
    }

    /// Job acquisition tokens issued so far, oldest first, with the agent
    /// each registered (if any) and the registrations refused with it.
    pub fn job_acquisition_tokens(&self) -> Vec<IssuedJat> {
        self.state.read(|store| store.jats.all())
    }

    /// What an agent did with a job (acquired, started, log, finished), if any agent took it.
    pub fn job_run(&self, job_id: &str) -> Option<JobRun> {
        self.state
            .read(|store| store.agent_api.runs.get(job_id).cloned())
    }

    /// Every agent `acquire` of a known job so far, granted or refused, in order.
    pub fn acquisitions(&self) -> Vec<Acquisition> {
        self.state
            .read(|store| store.agent_api.acquisitions.clone())
    }

    /// A build's meta-data as agents set it.
    pub fn build_meta_data(&self, build_id: &str) -> std::collections::BTreeMap<String, String> {
        self.state.read(|store| {
            store
                .agent_api
                .meta_data
                .get(build_id)
                .cloned()
                .unwrap_or_default()
        })
    }

    /// Organization slug.
    pub fn org(&self) -> &str {
        &self.state.config.org
    }

    /// REST API token (`Authorization: Bearer ...`).
    pub fn api_token(&self) -> &str {
        &self.state.config.api_token
    }

    /// Cluster agent token for the Stacks API (`Authorization: Token ...`).
    pub fn cluster_token(&self) -> &str {
        &self.state.config.cluster_token
    }

    /// Agent token for `/v3/metrics` (`Authorization: Token ...`).
    pub fn agent_token(&self) -> &str {
        &self.state.config.agent_token
    }

    /// Adds a pipeline; returns its UUID.
    pub fn add_pipeline(&self, slug: &str) -> anyhow::Result<String> {
        self.state
            .mutate(|store, _| store.add_pipeline(slug))
            .map(|p| p.id)
    }

    /// Adds a build with its jobs to a pipeline; scheduled jobs fire `job.scheduled`.
    pub fn add_build(&self, pipeline: &str, spec: BuildSpec) -> anyhow::Result<BuildRef> {
        self.state
            .mutate(|store, events| store.add_build(pipeline, spec, events))
    }

    /// Adds a job to an existing build; returns its UUID.
    pub fn add_job(&self, build_id: &str, spec: JobSpec) -> anyhow::Result<String> {
        self.state
            .mutate(|store, events| store.add_job(build_id, spec, events))
    }

    /// Moves a job forward (e.g. scheduled -> running -> finished), firing webhooks.
    pub fn set_job_state(&self, job_id: &str, state: JobState) -> anyhow::Result<()> {
        self.state
            .mutate(|store, events| store.set_job_state(job_id, state, events))
    }

    /// A copy of one job.
    pub fn job(&self, job_id: &str) -> Option<Job> {
        self.state.read(|store| store.jobs.get(job_id).cloned())
    }

    /// Registered stacks.
    pub fn stacks(&self) -> Vec<Stack> {
        self.state
            .read(|store| store.stacks.values().cloned().collect())
    }

    /// Pauses or resumes dispatch on a queue (`cluster_queue.dispatch_paused`).
    pub fn set_queue_paused(&self, queue_key: &str, paused: bool) {
        self.state.mutate(|store, _| {
            let key = store.resolve_queue_key(queue_key);
            store.queue_entry(&key).dispatch_paused = paused;
        });
    }

    /// Whether a stack listed the queue's scheduled jobs within the connected timeout.
    pub fn queue_connected(&self, queue_key: &str) -> bool {
        let timeout = self.state.config.queue_connected_timeout;
        self.state.read(|store| {
            store
                .queues
                .get(&store.resolve_queue_key(queue_key))
                .and_then(|q| q.last_polled)
                .is_some_and(|at| at.elapsed() <= timeout)
        })
    }

    /// Sets the idle and busy agent counts the metrics endpoint reports for a queue.
    pub fn set_agent_counts(&self, queue_key: &str, idle: u32, busy: u32) {
        self.state.mutate(|store, _| {
            let key = store.resolve_queue_key(queue_key);
            store.agents.insert(key, (idle, busy));
        });
    }

    /// Arms a fault for the next matching requests.
    pub fn inject_fault(&self, fault: Fault) -> anyhow::Result<()> {
        fault.validate()?;
        self.state
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
        Ok(())
    }

    /// Faults not yet used up.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.state
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Webhook deliveries made so far.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.state.deliveries.snapshot()
    }

    /// Waits up to `timeout` for at least `count` webhook deliveries; returns all so far.
    pub fn wait_for_webhooks(&self, count: usize, timeout: Duration) -> Vec<WebhookDelivery> {
        self.state.deliveries.wait_for(count, timeout)
    }

    /// Waits up to `timeout` for a job to reach `state`; returns whether it did.
    pub fn wait_for_job_state(&self, job_id: &str, state: JobState, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.job(job_id).is_some_and(|j| j.state == state) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("url", &self.state.base_url)
            .field("org", &self.state.config.org)
            .finish_non_exhaustive()
    }
}

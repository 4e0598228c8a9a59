//! Pipelines, builds and jobs as the stand-in holds them, and the rules
//! for how a job's state may change.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};

use super::agents::AgentApi;
use super::jats::Jats;

/// Where a job is in its life, using the agent API's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting on an earlier step; not yet runnable.
    Waiting,
    /// Runnable, waiting for an agent.
    Scheduled,
    /// Assigned to an agent that has not accepted it yet.
    Assigned,
    /// Accepted by an agent.
    Accepted,
    /// Running on an agent.
    Running,
    /// Done with this exit status (0 is a pass).
    Finished {
        /// The command's exit status; -1 when a stack gave up on the job.
        exit_status: i32,
    },
    /// Canceled before it finished.
    Canceled,
}

impl JobState {
    /// The state as the REST API names it (`passed`/`failed` for finished jobs).
    pub fn rest_name(self) -> &'static str {
        match self {
            JobState::Finished { exit_status: 0 } => "passed",
            JobState::Finished { .. } => "failed",
            other => other.agent_name(),
        }
    }

    /// The state as the agent and Stacks APIs name it.
    pub fn agent_name(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Scheduled => "scheduled",
            JobState::Assigned => "assigned",
            JobState::Accepted => "accepted",
            JobState::Running => "running",
            JobState::Finished { .. } => "finished",
            JobState::Canceled => "canceled",
        }
    }

    /// Finished or canceled: nothing more happens to the job.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Finished { .. } | JobState::Canceled)
    }

    /// Assigned, accepted or running: an agent holds the job.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Assigned | JobState::Accepted | JobState::Running
        )
    }

    fn rank(self) -> u8 {
        match self {
            JobState::Waiting => 0,
            JobState::Scheduled => 1,
            JobState::Assigned => 2,
            JobState::Accepted => 3,
            JobState::Running => 4,
            JobState::Finished { .. } | JobState::Canceled => 5,
        }
    }

    // Jobs only move forward; a terminal job never changes again.
    fn may_become(self, next: JobState) -> bool {
        !self.is_terminal() && next.rank() > self.rank()
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobState::Finished { exit_status } => write!(f, "finished({exit_status})"),
            other => f.write_str(other.agent_name()),
        }
    }
}

/// A job to add to a build.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Agent targeting rules such as `queue=linux`, `os=*`.
    pub agent_query_rules: Vec<String>,
    /// The step's `key`, if it has one.
    pub step_key: Option<String>,
    /// Display name.
    pub name: String,
    /// The command the agent would run.
    pub command: String,
    /// Job environment, as `GET /v3/stacks/:key/jobs/:id` shows it.
    pub env: BTreeMap<String, String>,
    /// Higher runs first.
    pub priority: i32,
    /// The state it starts in: `Scheduled` or `Waiting`.
    pub state: JobState,
    /// Overrides when it counts as scheduled (ordering of the Stacks listing).
    pub scheduled_at: Option<SystemTime>,
}

impl JobSpec {
    /// A scheduled script job with these agent query rules.
    pub fn new<S: AsRef<str>>(agent_query_rules: &[S]) -> Self {
        JobSpec {
            agent_query_rules: agent_query_rules
                .iter()
                .map(|r| r.as_ref().to_string())
                .collect(),
            step_key: None,
            name: "test".to_string(),
            command: "true".to_string(),
            env: BTreeMap::new(),
            priority: 0,
            state: JobState::Scheduled,
            scheduled_at: None,
        }
    }

    /// Sets the step key.
    pub fn step_key(mut self, key: &str) -> Self {
        self.step_key = Some(key.to_string());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the starting state.
    pub fn state(mut self, state: JobState) -> Self {
        self.state = state;
        self
    }

    /// Sets the command.
    pub fn command(mut self, command: &str) -> Self {
        self.command = command.to_string();
        self
    }

    /// Sets when the job was scheduled.
    pub fn scheduled_at(mut self, at: SystemTime) -> Self {
        self.scheduled_at = Some(at);
        self
    }
}

/// A build to add to a pipeline.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    /// Its jobs, in step order.
    pub jobs: Vec<JobSpec>,
    /// Git branch.
    pub branch: String,
    /// Git commit.
    pub commit: String,
    /// Build message.
    pub message: String,
}

impl BuildSpec {
    /// A build on `main` with these jobs.
    pub fn new(jobs: Vec<JobSpec>) -> Self {
        BuildSpec {
            jobs,
            branch: "main".to_string(),
            commit: "HEAD".to_string(),
            message: "test build".to_string(),
        }
    }
}

/// What was created by `StandIn::add_build`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRef {
    /// Build UUID.
    pub id: String,
    /// Build number within its pipeline.
    pub number: u64,
    /// UUIDs of its jobs, in the order given.
    pub job_ids: Vec<String>,
}

/// A pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// UUID.
    pub id: String,
    /// URL slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Repository URL.
    pub repository: String,
    /// Creation time.
    pub created_at: SystemTime,
    next_number: u64,
}

/// A build.
#[derive(Clone, Debug)]
pub struct Build {
    /// UUID.
    pub id: String,
    /// Number within the pipeline.
    pub number: u64,
    /// Slug of its pipeline.
    pub pipeline_slug: String,
    /// Git branch.
    pub branch: String,
    /// Git commit.
    pub commit: String,
    /// Message.
    pub message: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// Its jobs' UUIDs in step order.
    pub job_ids: Vec<String>,
}

/// A job and everything the stand-in knows about it.
#[derive(Clone, Debug)]
pub struct Job {
    /// UUID.
    pub id: String,
    /// UUID of its build.
    pub build_id: String,
    /// What it was created from.
    pub spec: JobSpec,
    /// Current state.
    pub state: JobState,
    /// When it was added.
    pub created_at: SystemTime,
    /// When it became scheduled (or was given as scheduled).
    pub scheduled_at: Option<SystemTime>,
    /// When it started running.
    pub started_at: Option<SystemTime>,
    /// When it finished or was canceled.
    pub finished_at: Option<SystemTime>,
    /// `detail` given by a stack that finished it.
    pub finish_detail: Option<String>,
    /// The stack holding a reservation on it, and until when.
    pub reservation: Option<(String, Instant)>,
    /// Notifications stacks attached to it.
    pub notifications: Vec<String>,
    seq: u64,
}

impl Job {
    /// The queue the job targets: its `queue=` rule, else `None` (default queue).
    pub fn queue_rule(&self) -> Option<&str> {
        self.spec
            .agent_query_rules
            .iter()
            .find_map(|r| r.strip_prefix("queue="))
    }

    /// Whether a stack reservation is still in force at `now`.
    pub fn reserved_at(&self, now: Instant) -> bool {
        matches!(&self.reservation, Some((_, until)) if *until > now)
    }
}

/// A registered stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// UUID.
    pub id: String,
    /// Unique key.
    pub key: String,
    /// `custom`, `kubernetes` or `elastic`.
    pub kind: String,
    /// Queue it serves.
    pub queue_key: String,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A cluster queue the stand-in has seen.
#[derive(Clone, Debug)]
pub struct Queue {
    /// UUID.
    pub id: String,
    /// Whether dispatch is paused.
    pub dispatch_paused: bool,
    /// Last time a stack listed its scheduled jobs.
    pub last_polled: Option<Instant>,
}

/// A job state change worth a webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEvent {
    /// `job.scheduled`, `job.started` or `job.finished`.
    pub event: &'static str,
    /// The job's UUID.
    pub job_id: String,
}

/// All state of one stand-in.
#[derive(Debug)]
pub struct Store {
    /// Organization slug.
    pub org: String,
    /// Key of the queue jobs without a `queue=` rule go to.
    pub default_queue: String,
    /// Pipelines by slug.
    pub pipelines: BTreeMap<String, Pipeline>,
    /// Builds in creation order.
    pub builds: Vec<Build>,
    /// Jobs by UUID.
    pub jobs: HashMap<String, Job>,
    /// Registered stacks by key.
    pub stacks: BTreeMap<String, Stack>,
    /// Agents registered through the agent API, and what they ran.
    pub agent_api: AgentApi,
    /// Job acquisition tokens issued to stacks.
    pub jats: Jats,
    /// Queues by key.
    pub queues: BTreeMap<String, Queue>,
    /// Idle and busy agent counts per queue, for the metrics endpoint.
    pub agents: BTreeMap<String, (u32, u32)>,
    next_seq: u64,
}

impl Store {
    /// An empty organization.
    pub fn new(org: &str, default_queue: &str) -> Self {
        Store {
            org: org.to_string(),
            default_queue: default_queue.to_string(),
            pipelines: BTreeMap::new(),
            builds: Vec::new(),
            jobs: HashMap::new(),
            stacks: BTreeMap::new(),
            queues: BTreeMap::new(),
            agents: BTreeMap::new(),
            agent_api: AgentApi::default(),
            jats: Jats::default(),
            next_seq: 0,
        }
    }

    /// Adds a pipeline; slugs are unique.
    pub fn add_pipeline(&mut self, slug: &str) -> anyhow::Result<Pipeline> {
        if slug.is_empty()
            || !slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bail!("pipeline slug {slug:?}: use lowercase letters, digits and dashes");
        }
        if self.pipelines.contains_key(slug) {
            bail!("pipeline slug {slug:?} already exists; pick another slug");
        }
        let pipeline = Pipeline {
            id: uuid::Uuid::new_v4().to_string(),
            slug: slug.to_string(),
            name: slug.to_string(),
            repository: format!("git@example.invalid:{}/{slug}.git", self.org),
            created_at: SystemTime::now(),
            next_number: 1,
        };
        self.pipelines.insert(slug.to_string(), pipeline.clone());
        Ok(pipeline)
    }

    /// Adds a build with its jobs to an existing pipeline.
    pub fn add_build(
        &mut self,
        pipeline_slug: &str,
        spec: BuildSpec,
        events: &mut Vec<JobEvent>,
    ) -> anyhow::Result<BuildRef> {
        for (i, job) in spec.jobs.iter().enumerate() {
            check_new_job(job).with_context(|| format!("build jobs[{i}]"))?;
        }
        let pipeline = self.pipelines.get_mut(pipeline_slug).with_context(|| {
            format!("pipeline {pipeline_slug:?} does not exist; add it with add_pipeline first")
        })?;
        let number = pipeline.next_number;
        pipeline.next_number += 1;
        let build = Build {
            id: uuid::Uuid::new_v4().to_string(),
            number,
            pipeline_slug: pipeline_slug.to_string(),
            branch: spec.branch,
            commit: spec.commit,
            message: spec.message,
            created_at: SystemTime::now(),
            job_ids: Vec::new(),
        };
        let build_id = build.id.clone();
        self.builds.push(build);
        let mut job_ids = Vec::new();
        for job in spec.jobs {
            job_ids.push(self.insert_job(&build_id, job, events));
        }
        Ok(BuildRef {
            id: build_id,
            number,
            job_ids,
        })
    }

    /// Adds a job to an existing build.
    pub fn add_job(
        &mut self,
        build_id: &str,
        spec: JobSpec,
        events: &mut Vec<JobEvent>,
    ) -> anyhow::Result<String> {
        check_new_job(&spec)?;
        if !self.builds.iter().any(|b| b.id == build_id) {
            bail!("build {build_id:?} does not exist");
        }
        Ok(self.insert_job(build_id, spec, events))
    }

    fn insert_job(&mut self, build_id: &str, spec: JobSpec, events: &mut Vec<JobEvent>) -> String {
        let now = SystemTime::now();
        let id = uuid::Uuid::new_v4().to_string();
        self.next_seq += 1;
        let scheduled_at = match spec.state {
            JobState::Scheduled => Some(spec.scheduled_at.unwrap_or(now)),
            _ => spec.scheduled_at,
        };
        let state = spec.state;
        let job = Job {
            id: id.clone(),
            build_id: build_id.to_string(),
            spec,
            state,
            created_at: now,
            scheduled_at,
            started_at: None,
            finished_at: None,
            finish_detail: None,
            reservation: None,
            notifications: Vec::new(),
            seq: self.next_seq,
        };
        let queue = self.queue_of(&job);
        self.queue_entry(&queue);
        self.jobs.insert(id.clone(), job);
        if let Some(build) = self.builds.iter_mut().find(|b| b.id == build_id) {
            build.job_ids.push(id.clone());
        }
        if state == JobState::Scheduled {
            events.push(JobEvent {
                event: "job.scheduled",
                job_id: id.clone(),
            });
        }
        id
    }

    /// Moves a job forward to `next`, refusing backward or terminal moves.
    pub fn set_job_state(
        &mut self,
        job_id: &str,
        next: JobState,
        events: &mut Vec<JobEvent>,
    ) -> anyhow::Result<()> {
        let job = self
            .jobs
            .get_mut(job_id)
            .with_context(|| format!("job {job_id:?} does not exist"))?;
        if !job.state.may_become(next) {
            bail!(
                "job {job_id}: cannot go from {} to {next}; jobs only move forward \
                 (waiting, scheduled, assigned, accepted, running, finished/canceled)",
                job.state
            );
        }
        let now = SystemTime::now();
        job.state = next;
        job.reservation = None;
        let event = match next {
            JobState::Scheduled => {
                job.scheduled_at.get_or_insert(now);
                Some("job.scheduled")
            }
            JobState::Running => {
                job.started_at = Some(now);
                Some("job.started")
            }
            JobState::Finished { .. } | JobState::Canceled => {
                job.finished_at = Some(now);
                Some("job.finished")
            }
            JobState::Waiting | JobState::Assigned | JobState::Accepted => None,
        };
        if let Some(event) = event {
            events.push(JobEvent {
                event,
                job_id: job_id.to_string(),
            });
        }
        Ok(())
    }

    /// The key of the queue `job` targets.
    pub fn queue_of(&self, job: &Job) -> String {
        job.queue_rule()
            .unwrap_or(self.default_queue.as_str())
            .to_string()
    }

    /// Maps the Stacks API's `__default__` to the default queue's key.
    pub fn resolve_queue_key(&self, key: &str) -> String {
        if key == "__default__" {
            self.default_queue.clone()
        } else {
            key.to_string()
        }
    }

    /// The queue called `key`, created on first use.
    pub fn queue_entry(&mut self, key: &str) -> &mut Queue {
        self.queues.entry(key.to_string()).or_insert_with(|| Queue {
            id: uuid::Uuid::new_v4().to_string(),
            dispatch_paused: false,
            last_polled: None,
        })
    }

    /// Scheduled, unreserved jobs on `queue`, oldest first, after `after`.
    pub fn scheduled_jobs(
        &self,
        queue: &str,
        after: Option<(u128, u64)>,
        now: Instant,
    ) -> Vec<&Job> {
        let mut jobs: Vec<&Job> = self
            .jobs
            .values()
            .filter(|j| j.state == JobState::Scheduled && !j.reserved_at(now))
            .filter(|j| self.queue_of(j) == queue)
            .filter(|j| after.is_none_or(|cursor| job_order(j) > cursor))
            .collect();
        jobs.sort_by_key(|j| job_order(j));
        jobs
    }

    /// Reserves each job for `stack` until `until`; returns (reserved, not reserved).
    pub fn reserve(
        &mut self,
        stack: &str,
        job_ids: &[String],
        until: Instant,
        now: Instant,
    ) -> (Vec<String>, Vec<String>) {
        let mut reserved = Vec::new();
        let mut refused = Vec::new();
        for id in job_ids {
            let ok = match self.jobs.get_mut(id) {
                Some(job) if job.state == JobState::Scheduled => {
                    let held_by_other =
                        matches!(&job.reservation, Some((s, u)) if s != stack && *u > now);
                    if !held_by_other {
                        job.reservation = Some((stack.to_string(), until));
                    }
                    !held_by_other
                }
                _ => false,
            };
            if ok {
                reserved.push(id.clone());
            } else {
                refused.push(id.clone());
            }
        }
        (reserved, refused)
    }

    /// The build a job belongs to.
    pub fn build_of(&self, job: &Job) -> Option<&Build> {
        self.builds.iter().find(|b| b.id == job.build_id)
    }

    /// The build's jobs in step order.
    pub fn jobs_of<'a>(&'a self, build: &'a Build) -> impl Iterator<Item = &'a Job> + 'a {
        build.job_ids.iter().filter_map(|id| self.jobs.get(id))
    }

    /// The build's state, derived from its jobs the way Buildkite shows it.
    pub fn build_state(&self, build: &Build) -> &'static str {
        let states: Vec<JobState> = self.jobs_of(build).map(|j| j.state).collect();
        if states.is_empty() {
            return "scheduled";
        }
        if states.iter().all(|s| s.is_terminal()) {
            if states.iter().all(|s| *s == JobState::Canceled) {
                "canceled"
            } else if states
                .iter()
                .any(|s| matches!(s, JobState::Finished { exit_status } if *exit_status != 0))
            {
                "failed"
            } else {
                "passed"
            }
        } else if states
            .iter()
            .all(|s| matches!(s, JobState::Waiting | JobState::Scheduled))
        {
            "scheduled"
        } else {
            "running"
        }
    }
}

/// Sort key of the Stacks listing and its cursors: scheduled time, then insertion.
pub fn job_order(job: &Job) -> (u128, u64) {
    (
        job.scheduled_at
            .map(crate::buildkite::timefmt::unix_millis)
            .unwrap_or(0),
        job.seq,
    )
}

fn check_new_job(spec: &JobSpec) -> anyhow::Result<()> {
    if !matches!(spec.state, JobState::Scheduled | JobState::Waiting) {
        bail!(
            "job state {}: new jobs start as scheduled or waiting; move them on with set_job_state",
            spec.state
        );
    }
    for rule in &spec.agent_query_rules {
        match rule.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {}
            _ => bail!("agent_query_rules entry {rule:?}: write it as key=value"),
        }
    }
    Ok(())
}

/// Default and maximum reservation, as the Stacks API documents them.
pub const RESERVATION_DEFAULT: Duration = Duration::from_secs(900);
/// The longest reservation the Stacks API accepts.
pub const RESERVATION_MAX: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod test {
    use super::*;

    fn store_with_job(rules: &[&str]) -> (Store, String) {
        let mut store = Store::new("org", "default");
        store.add_pipeline("p").unwrap();
        let mut events = Vec::new();
        let b = store
            .add_build("p", BuildSpec::new(vec![JobSpec::new(rules)]), &mut events)
            .unwrap();
        assert_eq!(events.len(), 1);
        (store, b.job_ids[0].clone())
    }

    #[test]
    fn jobs_only_move_forward() {
        let (mut store, id) = store_with_job(&["queue=linux"]);
        let mut events = Vec::new();
        store
            .set_job_state(&id, JobState::Running, &mut events)
            .unwrap();
        let err = store
            .set_job_state(&id, JobState::Scheduled, &mut events)
            .unwrap_err();
        assert!(err
            .to_string()
            .contains("cannot go from running to scheduled"));
        store
            .set_job_state(&id, JobState::Finished { exit_status: 3 }, &mut events)
            .unwrap();
        assert_eq!(store.jobs[&id].state.rest_name(), "failed");
        let names: Vec<_> = events.iter().map(|e| e.event).collect();
        assert_eq!(names, vec!["job.started", "job.finished"]);
    }

    #[test]
    fn a_job_without_queue_rule_is_on_the_default_queue() {
        let (store, id) = store_with_job(&["os=linux"]);
        assert_eq!(store.queue_of(&store.jobs[&id]), "default");
        assert_eq!(store.resolve_queue_key("__default__"), "default");
    }

    #[test]
    fn a_reservation_held_by_another_stack_is_refused() {
        let (mut store, id) = store_with_job(&[]);
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let (ok, _) = store.reserve("a", std::slice::from_ref(&id), later, now);
        assert_eq!(ok, vec![id.clone()]);
        let (ok, refused) = store.reserve("b", std::slice::from_ref(&id), later, now);
        assert!(ok.is_empty());
        assert_eq!(refused, vec![id.clone()]);
        assert!(store.scheduled_jobs("default", None, now).is_empty());
        assert_eq!(store.scheduled_jobs("default", None, later).len(), 1);
    }

    #[test]
    fn rules_must_be_key_value() {
        let mut store = Store::new("org", "default");
        store.add_pipeline("p").unwrap();
        let err = store
            .add_build(
                "p",
                BuildSpec::new(vec![JobSpec::new(&["linux"])]),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(format!("{err:#}").contains("jobs[0]"));
    }
}

//! The loop: look at Buildkite, decide, reserve, wake and start, watch
//! the jobs whose VMs are coming, and do it again every poll interval or
//! at once when a webhook says a job was scheduled.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kvmhost::libvirt::instance::InstanceSpec;
use tokio::sync::{mpsc, Notify};

use crate::config::{Buildkite, Config, Secret, Source};
use crate::hosts::{label, HostRt};
use crate::metrics::Metrics;
use crate::rest::RestClient;
use crate::retry::ApiError;
use crate::saved::SlotPool;
use crate::schedule::Job;
use crate::stacks::{Client, Notification};
use crate::stages::Journal;
use crate::warm::WarmPool;

/// How the daemon runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// One pass, then exit.
    pub once: bool,
    /// Decide and print, start nothing.
    pub dry_run: bool,
}

/// How long after its job acquisition token expired a VM that has not
/// taken its job is given up: an agent that registered just in time
/// acquires within seconds, and the job states are read every 2 s.
const TOKEN_GRACE: Duration = Duration::from_secs(30);

mod events;
mod jobs;
mod launch;
mod pass;
mod standby;
mod watch;

use events::Event;
use jobs::{InFlight, JobTable, Phase};

/// Why the daemon does not start, or stops.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `[buildkite]` lacks what its source needs.
    #[error("{0}")]
    Missing(&'static str),
    /// The state file cannot be opened, locked or read.
    #[error("{0}")]
    StateFile(crate::persist::StateFileError),
    /// A queue's stack could not be registered.
    #[error("registering the stack for queue {queue}: {error}")]
    Register {
        /// The queue.
        queue: String,
        /// What the Stacks API said.
        error: ApiError,
    },
    /// A dry run's decision could not be written out.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A dry run's decisions could not be written out.
    #[error("{0}")]
    Output(#[from] std::io::Error),
}

/// Where the jobs come from, as `[buildkite] source` says.
enum JobSource {
    /// The Stacks API: this process's stacks list, reserve, note and
    /// finish the jobs.
    Stacks(Client),
    /// The REST API: builds are listed; jobs are not reserved, noted or
    /// finished.
    Rest {
        client: RestClient,
        /// When the budget allows the next listing.
        resume: Option<Instant>,
    },
}

impl JobSource {
    fn new(b: &Buildkite) -> Result<Self, Error> {
        Ok(match b.source {
            Source::Stacks => {
                let token = b
                    .agent_token
                    .clone()
                    .ok_or(Error::Missing("no cluster agent token"))?;
                JobSource::Stacks(Client::new(&b.agent_endpoint, token))
            }
            Source::Rest => {
                let token = b
                    .api_token
                    .clone()
                    .ok_or(Error::Missing("no REST API token"))?;
                let org = b
                    .organization
                    .as_deref()
                    .ok_or(Error::Missing("no organisation"))?;
                JobSource::Rest {
                    client: RestClient::new(&b.api_endpoint, token, org),
                    resume: None,
                }
            }
        })
    }

    /// The Stacks API client, in Stacks mode.
    fn stacks(&self) -> Option<&Client> {
        match self {
            JobSource::Stacks(client) => Some(client),
            JobSource::Rest { .. } => None,
        }
    }
}

/// The running launcher.
pub struct Daemon {
    cfg: Arc<Config>,
    opts: Options,
    /// Where the jobs come from.
    source: JobSource,
    hosts: Vec<Arc<HostRt>>,
    /// Counters served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Each job's start, stage by stage (the histograms, notes and status page).
    pub stages: Arc<Journal>,
    /// When the webhook that started this pass arrived.
    kicked: Option<Instant>,
    /// Notified to run a pass at once (webhooks).
    pub kick: Arc<Notify>,
    /// Each job followed (its VM coming, or to be placed again) or
    /// remembered for what was said about it, so it is said once: jobs
    /// given up, the last note on a job's page, the last decision logged.
    /// Forgotten once the job is gone from Buildkite's lists and not ours
    /// to follow (see `forget_gone`).
    jobs: JobTable,
    /// Warm VMs: booting or waiting for a job.
    warm: WarmPool,
    saved: SlotPool,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    last_pass: Instant,
    /// Set to the Unix time after each pass (feeds the systemd watchdog).
    pub heartbeat: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// This process's part of its stack keys (kept in the state file,
    /// when there is one, for the next process).
    id: String,
    /// The state file, locked for this process (Stacks mode, not --dry-run).
    state: Option<crate::persist::StateFile>,
    /// Jobs an earlier launcher had reserved and not seen taken: placed
    /// again by the first pass.
    recovered: Vec<(Job, String)>,
}

/// How many jobs the daemon remembers having logged, noted or finished
/// at most. Jobs are forgotten once a complete listing no longer shows
/// them; this bound holds when listings keep coming incomplete (a queue
/// that fails to list, more pages than are read), at the cost of saying
/// again what was said about a job on a page not read.
const MAX_REMEMBERED: usize = 10_000;

/// The stack key of a queue for one launcher process:
/// `<stack_key>-<queue>-<id>`, queue names reduced to what stack keys
/// allow. Each process has its own stacks because Buildkite's
/// reservations are per stack: two launchers sharing one stack would both
/// be told they reserved the same job.
pub fn stack_key(prefix: &str, queue: &str, id: &str) -> String {
    let q: String = queue
        .trim_start_matches("__")
        .trim_end_matches("__")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!("{prefix}-{q}-{id}")
}

impl Daemon {
    /// A daemon for `cfg`; nothing is contacted yet.
    pub fn new(cfg: Config, opts: Options) -> Result<Self, Error> {
        let source = JobSource::new(&cfg.buildkite)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (state, saved) = match (&cfg.launcher.state_file, &source, opts.dry_run) {
            (Some(path), JobSource::Stacks(_), false) => {
                let (file, saved) =
                    crate::persist::StateFile::open(path).map_err(Error::StateFile)?;
                (Some(file), saved)
            }
            _ => (None, None),
        };
        let (id, recovered) = match saved {
            Some(s) => (s.id, s.jobs.into_iter().map(|j| j.into_job()).collect()),
            None => (random_hex(6), Vec::new()),
        };
        let hosts = cfg
            .hosts
            .iter()
            .cloned()
            .map(|h| HostRt::new(h, cfg.launcher.wake_timeout, &id))
            .collect();
        Ok(Daemon {
            cfg: Arc::new(cfg),
            opts,
            source,
            hosts,
            metrics: Arc::new(Metrics::default()),
            stages: Arc::new(Journal::default()),
            kicked: None,
            kick: Arc::new(Notify::new()),
            jobs: JobTable::default(),
            warm: WarmPool::default(),
            saved: SlotPool::default(),
            tx,
            rx,
            last_pass: Instant::now(),
            heartbeat: None,
            id,
            state,
            recovered,
        })
    }

    /// How long a reservation lasts: long enough to wake a host and boot.
    fn reservation(&self) -> Duration {
        let l = &self.cfg.launcher;
        l.wake_timeout
            .saturating_add(l.boot_timeout)
            .saturating_add(Duration::from_secs(60))
            .min(Duration::from_secs(3600))
    }

    /// What the status page shows: the hosts and the jobs' stages.
    pub fn status(&self) -> crate::status::Status {
        crate::status::Status {
            hosts: self.hosts.clone(),
            journal: self.stages.clone(),
        }
    }

    fn key(&self, queue: &str) -> String {
        stack_key(&self.cfg.buildkite.stack_key, queue, &self.id)
    }

    /// Registers a stack per queue (retried until it works or `stop`).
    pub async fn register(&self) -> Result<(), Error> {
        let Some(client) = self.source.stacks() else {
            return Ok(());
        };
        for q in self.cfg.queues() {
            client
                .register(&self.key(&q), &q)
                .await
                .map_err(|error| Error::Register {
                    queue: q.clone(),
                    error,
                })?;
        }
        Ok(())
    }

    /// Deregisters every stack; errors are reported, not fatal.
    pub async fn deregister(&self) {
        let Some(client) = self.source.stacks() else {
            return;
        };
        for q in self.cfg.queues() {
            if let Err(e) = client.deregister(&self.key(&q)).await {
                eprintln!("deregistering the stack for queue {q}: {e}");
            }
        }
    }

    /// Runs passes until `stop` resolves (or once with `--once`).
    pub async fn run(
        &mut self,
        out: &mut (dyn Write + Send),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        tokio::pin!(stop);
        let mut first = true;
        loop {
            let decisions = self.pass(first).await;
            self.save_state();
            first = false;
            if self.opts.dry_run {
                for d in &decisions {
                    let line = serde_json::to_string(&d.line(&self.cfg))?;
                    writeln!(out, "{line}")?;
                }
                out.flush()?;
            }
            if self.opts.once {
                // Let started launches finish before leaving.
                self.drain_launches(Duration::from_secs(600)).await;
                return Ok(());
            }
            let every = self.cfg.buildkite.poll_interval;
            let wait = if self.jobs.all_coming().next().is_none() {
                every
            } else {
                every.min(Duration::from_secs(2))
            };
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
                _ = self.kick.notified() => self.kicked = Some(Instant::now()),
                ev = self.rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_event(ev).await;
                        self.save_state();
                    }
                }
            }
        }
    }

    /// Writes the jobs reserved and not yet seen taken to the state file
    /// (when it changed); a failure is logged and tried again next time.
    fn save_state(&mut self) {
        let Some(state) = &mut self.state else {
            return;
        };
        if let Err(e) = state.save(&self.id, self.jobs.reserved()) {
            eprintln!("writing {}: {e}", state.path().display());
        }
    }

    /// Takes over, in this first pass, the jobs an earlier launcher had
    /// reserved (with the same stack keys) and not seen taken, when
    /// Buildkite says they still wait (no listing shows them until their
    /// reservations lapse): one whose VM a host lists is watched as if
    /// this launcher had started it, the others are placed again.
    async fn adopt_recovered(&mut self) {
        let Some(client) = self.source.stacks().cloned() else {
            return;
        };
        let mut by_queue: BTreeMap<String, Vec<Job>> = BTreeMap::new();
        for (job, q) in std::mem::take(&mut self.recovered) {
            by_queue.entry(q).or_default().push(job);
        }
        for (q, jobs) in by_queue {
            let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
            let states = match client.states(&self.key(&q), &ids).await {
                Ok(s) => s,
                Err(e) => {
                    // Their reservations lapse and the listing shows them.
                    self.metrics.error("buildkite");
                    eprintln!("reading the states of the jobs reserved before the restart: {e}");
                    continue;
                }
            };
            for job in jobs {
                let Some("scheduled" | "reserved") = states.get(&job.id).map(String::as_str) else {
                    continue;
                };
                match self.booting_vm_of(&job.id) {
                    // A warm VM or a slot's clone labelled with the job
                    // whose guest still waits was never handed it (the
                    // launcher stopped in between): it would never take
                    // the job.
                    Some((host, _, vm, true)) if self.guest_waits(host, &vm).await => {
                        eprintln!(
                            "job {}: {vm} on {} was never handed the job before the restart; removing it and placing the job again",
                            job.id, self.cfg.hosts[host].name
                        );
                        self.remove_vm_then_place(host, &vm, job, q.clone());
                    }
                    // Watched as if this launcher had started it: placed
                    // again if it vanishes or does not take the job
                    // within the boot timeout from now.
                    Some((host, def, vm, _)) => {
                        eprintln!(
                            "job {}: {vm} on {} was started before the restart; watching it",
                            job.id, self.cfg.hosts[host].name
                        );
                        let now = Instant::now();
                        self.jobs.follow(
                            &job.id.clone(),
                            InFlight {
                                job,
                                queue: q.clone(),
                                def,
                                host,
                                phase: Phase::Booting(vm),
                                since: now,
                                // Extended by the next look at its state.
                                reserved_until: now,
                                token_expires: None,
                            },
                        );
                    }
                    None => {
                        eprintln!(
                            "job {}: reserved before the restart; placing it again",
                            job.id
                        );
                        self.jobs.place_again(&job.id.clone(), job, q.clone());
                    }
                }
            }
        }
    }

    /// Whether the guest of warm VM or slot clone `vm` on `host` still
    /// waits for a job: its hand-off program answers (a guest that was
    /// handed its job runs the agent instead, and is silent).
    async fn guest_waits(&self, host: usize, vm: &str) -> bool {
        let Some(conn) = self.hosts[host].conn() else {
            return false;
        };
        let vm = vm.to_string();
        let r = conn
            .run(move |h| h.handoff_ready(&vm, crate::warm::READY_TIMEOUT))
            .await;
        matches!(r, Ok(Ok(())))
    }

    /// The host, definition and name of a VM this launcher's stacks
    /// started for `job`, as the hosts' last probe listed it, and whether
    /// it was a warm VM or a saved slot's clone (handed its job over the
    /// channel, not booted with it).
    fn booting_vm_of(&self, job: &str) -> Option<(usize, usize, String, bool)> {
        self.hosts.iter().enumerate().find_map(|(h, rt)| {
            rt.instances().into_iter().find_map(|i| {
                let ours = i.labels.get(label::LAUNCHER) == Some(&self.cfg.buildkite.stack_key);
                if !ours || i.labels.get(label::JOB).map(String::as_str) != Some(job) {
                    return None;
                }
                let def_name = i.labels.get(label::DEFINITION)?;
                let def = self.cfg.agents.iter().position(|a| &a.name == def_name)?;
                let standby =
                    i.labels.contains_key(label::WARM) || i.labels.contains_key(label::SAVED);
                Some((h, def, i.name, standby))
            })
        })
    }

    async fn drain_launches(&mut self, limit: Duration) {
        let t0 = Instant::now();
        while self.jobs.all_coming().any(|(_, f)| f.phase.is_starting()) && t0.elapsed() < limit {
            match tokio::time::timeout(Duration::from_secs(1), self.rx.recv()).await {
                Ok(Some(ev)) => {
                    self.on_event(ev).await;
                    self.save_state();
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
    }

    fn remove_vm(&self, host: usize, vm: &str) {
        self.remove_vm_and(host, vm, None);
    }

    /// Removes a VM given up on, then places its job again: only once it
    /// is gone, so neither this launcher's listing nor the start's check
    /// under the host lock takes it for the job's VM. (One that could not
    /// be removed is still found by that check, and the job gets no
    /// second VM on its host.)
    fn remove_vm_then_place(&self, host: usize, vm: &str, job: Job, queue: String) {
        self.remove_vm_and(host, vm, Some(Event::Removed { job, queue }));
    }

    fn remove_vm_and(&self, host: usize, vm: &str, then: Option<Event>) {
        let tx = self.tx.clone();
        let vm = vm.to_string();
        let Some(conn) = self.hosts[host].conn() else {
            if let Some(ev) = then {
                let _ = tx.send(ev);
            }
            return;
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = conn.run_here(|h| h.remove_instance(&vm)) {
                if !e.is_not_found() {
                    eprintln!("removing {vm}: {e}");
                }
            }
            if let Some(ev) = then {
                let _ = tx.send(ev);
            }
        });
    }

    async fn note(&mut self, queue: &str, job: &str, detail: String) {
        // The REST API has no notes on a job's page: the log says it.
        let Some(client) = self.source.stacks() else {
            return;
        };
        if self.opts.dry_run || self.jobs.noted(job) == Some(detail.as_str()) {
            return;
        }
        let n = [Notification {
            job_uuid: job.to_string(),
            detail: detail.clone(),
        }];
        if client.notify(&self.key(queue), &n).await.is_ok() {
            self.jobs.set_noted(job, detail);
        }
    }
}

/// The instance for `job` of definition `def`, its agent registering
/// with `token`: its name, labels, the values for the template's
/// placeholders, and the default user-data (a script that runs the agent
/// for this one job, then powers off).
pub fn instance_spec(
    cfg: &Config,
    def: usize,
    job: &Job,
    queue: &str,
    token: &Secret,
) -> InstanceSpec {
    let a = &cfg.agents[def];
    let name = vm_name(cfg, def, &job.id);
    let token = token.expose().to_string();
    let tags = agent_tags(cfg, def, queue);
    let endpoint = cfg.buildkite.vm_agent_endpoint.clone();
    let vars = BTreeMap::from([
        ("buildkite_agent_token".to_string(), token.clone()),
        ("buildkite_agent_endpoint".to_string(), endpoint.clone()),
        ("buildkite_job_id".to_string(), job.id.clone()),
        ("buildkite_agent_tags".to_string(), tags.clone()),
        ("buildkite_queue".to_string(), queue.to_string()),
    ]);
    let q = sh_quote;
    let script = format!(
        "#!/bin/sh\n# Written by buildkite-agent-launcher: run job {id}, then power off.\n\
         export BUILDKITE_AGENT_TOKEN={token}\n\
         export BUILDKITE_AGENT_ENDPOINT={endpoint}\n\
         export BUILDKITE_BUILD_PATH=\"${{BUILDKITE_BUILD_PATH:-/var/lib/buildkite-agent/builds}}\"\n\
         buildkite-agent start --acquire-job {id} --tags {tags} --name {name}\n\
         poweroff\n",
        id = q(&job.id),
        token = q(&token),
        endpoint = q(&endpoint),
        tags = q(&tags),
        name = q(&name),
    );
    InstanceSpec {
        template: a.template.clone(),
        name: name.clone(),
        vars,
        default_user_data: Some(script),
        labels: BTreeMap::from([
            (label::LAUNCHER.to_string(), cfg.buildkite.stack_key.clone()),
            (label::JOB.to_string(), job.id.clone()),
            (label::DEFINITION.to_string(), a.name.clone()),
            (label::QUEUE.to_string(), queue.to_string()),
        ]),
        channels: Vec::new(),
    }
}

/// The name of a VM of definition `def` for job `job`: `<definition>-<first
/// 8 characters of the job>-<4 random hex digits>`; also the host name a
/// warm VM takes when handed the job.
pub fn vm_name(cfg: &Config, def: usize, job: &str) -> String {
    let short: String = job
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    format!("{}-{short}-{}", cfg.agents[def].name, random_hex(4))
}

/// The tags `def`'s agents register with, `queue=` added when missing.
pub fn agent_tags(cfg: &Config, def: usize, queue: &str) -> String {
    let a = &cfg.agents[def];
    let mut tags: Vec<String> = a.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !a.tags.has("queue") {
        tags.push(format!(
            "queue={}",
            if queue == "__default__" {
                "default"
            } else {
                queue
            }
        ));
    }
    tags.join(",")
}

pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub(crate) fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n.div_ceil(2)];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    let mut s = hex::encode(buf);
    s.truncate(n);
    s
}

/// Parses `2026-01-02T03:04:05Z` or with fractional seconds / offset `+00:00`.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest = &frac[digits.len()..];
        nanos = format!("{digits:0<9}").get(..9)?.parse().ok()?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3600
                + o.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + se - offset;
    (secs >= 0).then(|| SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos))
}

#[cfg(test)]
mod jat_test;

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    #[test]
    fn rfc3339_times_parse() {
        let t = parse_rfc3339("2026-12-01T11:12:45Z").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1796123565);
        let t2 = parse_rfc3339("2026-12-01T12:12:45.500+01:00").unwrap();
        assert_eq!(t2.duration_since(t).unwrap(), Duration::from_millis(500));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn stack_keys_are_made_of_allowed_characters() {
        assert_eq!(stack_key("kvm", "__default__", "a1"), "kvm-default-a1");
        assert_eq!(stack_key("kvm", "linux/arm64", "a1"), "kvm-linux-arm64-a1");
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }

    /// A Stacks API on loopback whose queues `wait` and `gone` list the
    /// jobs numbered `window` (less those finished), as a stream of jobs
    /// each listed for a few passes; it counts notes and finishes per job.
    #[derive(Default)]
    struct Stub {
        window: std::ops::Range<usize>,
        finished: HashSet<String>,
        notes: HashMap<String, usize>,
        finishes: HashMap<String, usize>,
    }

    impl Stub {
        /// Job ids of `queue` in the window; every fifth `wait` job asks
        /// for tags no definition has.
        fn listed(&self, queue: &str) -> Vec<(String, Vec<String>)> {
            self.window
                .clone()
                .map(|n| {
                    let mut rules = vec![format!("queue={queue}")];
                    if queue == "wait" && n % 5 == 0 {
                        rules.push("os=plan9".into());
                    }
                    (format!("{queue}-{n:05}"), rules)
                })
                .filter(|(id, _)| !self.finished.contains(id))
                .collect()
        }

        fn answer(&mut self, method: &str, path: &str, query: &str, body: &[u8]) -> String {
            let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
            match (method, parts.as_slice()) {
                ("GET", ["v3", "stacks", _, "scheduled-jobs"]) => {
                    let queue = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("queue_key="))
                        .unwrap_or_default();
                    let jobs: Vec<serde_json::Value> = self
                        .listed(queue)
                        .into_iter()
                        .map(
                            |(id, rules)| serde_json::json!({"id": id, "agent_query_rules": rules}),
                        )
                        .collect();
                    serde_json::json!({"jobs": jobs, "page_info": {"has_next_page": false}})
                        .to_string()
                }
                ("PUT", ["v3", "stacks", _, "scheduled-jobs", "batch-reserve"]) => {
                    serde_json::json!({"reserved": body["job_uuids"]}).to_string()
                }
                ("POST", ["v3", "stacks", _, "jobs", id, "finish"]) => {
                    *self.finishes.entry(id.to_string()).or_default() += 1;
                    self.finished.insert(id.to_string());
                    "{}".into()
                }
                ("POST", ["v3", "stacks", _, "notifications"]) => {
                    for n in body["notifications"].as_array().into_iter().flatten() {
                        let id = n["job_uuid"].as_str().unwrap_or_default().to_string();
                        *self.notes.entry(id).or_default() += 1;
                    }
                    "{}".into()
                }
                _ => panic!("the stub has no {method} {path}"),
            }
        }
    }

    async fn stub() -> (String, Arc<std::sync::Mutex<Stub>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let state = Arc::new(std::sync::Mutex::new(Stub::default()));
        let st = state.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method, uri: axum::http::Uri, body: axum::body::Bytes| {
                let st = st.clone();
                async move {
                    st.lock().unwrap().answer(
                        method.as_str(),
                        uri.path(),
                        uri.query().unwrap_or_default(),
                        &body,
                    )
                }
            },
        );
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, state)
    }

    #[tokio::test]
    async fn many_passes_over_a_stream_of_jobs_remember_only_the_listed_ones_and_say_things_once() {
        let (url, stub) = stub().await;
        // `wait` jobs wait (their host never answers) and get a note;
        // `gone` jobs are given up (their template is not on the host).
        let text = format!(
            r#"
[buildkite]
agent_endpoint = "{url}/v3"
stack_key = "t"

[[host]]
name = "up"
uri = "test:///default"

[[host]]
name = "down"
uri = "nosuchdriver:///nowhere"

[[agent]]
name = "wait"
tags = ["queue=wait"]
template = "t"
hosts = ["down"]

[[agent]]
name = "gone"
tags = ["queue=gone"]
template = "not-on-the-host"
hosts = ["up"]
"#
        );
        let cfg = crate::config::parse(std::path::Path::new("c.toml"), &text, |k| {
            (k == "BUILDKITE_AGENT_TOKEN").then(|| "t".to_string())
        })
        .unwrap();
        let mut d = Daemon::new(cfg, Options::default()).unwrap();

        // Each pass lists 40 jobs of each queue, 10 of them new: every
        // job is listed for four passes, 1,230 jobs in all.
        let (width, step, passes) = (40, 10, 120);
        let mut logged_before: HashMap<String, String> = HashMap::new();
        for pass in 0..passes {
            let listed: HashSet<String> = {
                let mut s = stub.lock().unwrap();
                s.window = pass * step..pass * step + width;
                ["wait", "gone"]
                    .iter()
                    .flat_map(|q| s.listed(q))
                    .map(|(id, _)| id)
                    .collect()
            };
            let decisions = d.pass(pass == 0).await;
            assert!(!decisions.is_empty());
            // A job listed again was remembered: its line is not logged again.
            for (id, line) in &logged_before {
                if listed.contains(id) {
                    assert_eq!(
                        d.jobs.logged(id),
                        Some(line.as_str()),
                        "pass {pass}: {id} would be logged again"
                    );
                }
            }
            // Only jobs still listed (or just finished) are remembered.
            let remembered = d.jobs.remembered();
            assert!(
                remembered.logged <= 2 * width,
                "pass {pass}: {} logged",
                remembered.logged
            );
            assert!(
                remembered.noted <= width,
                "pass {pass}: {} noted",
                remembered.noted
            );
            assert!(
                remembered.finished <= width,
                "pass {pass}: {} finished",
                remembered.finished
            );
            logged_before = d.jobs.all_logged();
        }

        let s = stub.lock().unwrap();
        let total = (passes - 1) * step + width;
        let notes: Vec<usize> = s.notes.values().copied().collect();
        // Every `wait` job but the fifths (skipped) got one note, once.
        assert_eq!(notes.len(), total - total / 5);
        assert!(notes.iter().all(|&n| n == 1), "a job was noted twice");
        assert_eq!(s.finishes.len(), total);
        assert!(
            s.finishes.values().all(|&n| n == 1),
            "a job was finished twice"
        );
    }
}

//! The loop: look at Buildkite, decide, reserve, wake and start, watch
//! the jobs whose VMs are coming, and do it again every poll interval or
//! at once when a webhook says a job was scheduled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kvmhost::libvirt::channel::Message;
use kvmhost::libvirt::instance::InstanceSpec;
use tokio::sync::{mpsc, Notify};

use crate::config::{AgentTokens, Config, Secret, Source};
use crate::hosts::{label, templates_of, HostRt, Launch};
use crate::metrics::Metrics;
use crate::rest::{coming_state, Listing, RestClient};
use crate::saved::{self, Prepared, SlotPool};
use crate::schedule::{Decision, DefView, HostView, Job, Plan, Power, Verdict};
use crate::stacks::jat::{self, JatError};
use crate::stacks::{Client, Notification};
use crate::stages::{Journal, Kind, Stage, Via};
use crate::warm::{self, Removal, WarmPool};

/// How the daemon runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// One pass, then exit.
    pub once: bool,
    /// Decide and print, start nothing.
    pub dry_run: bool,
}

/// Where a job's VM is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waking the host or starting the VM.
    Starting,
    /// The VM was started under this name; its agent has not taken the job yet.
    Booting(String),
}

#[derive(Debug, Clone)]
struct InFlight {
    job: Job,
    queue: String,
    def: usize,
    host: usize,
    phase: Phase,
    since: Instant,
    reserved_until: Instant,
    cancelled: bool,
    /// When the VM's job acquisition token expires, if it has one.
    token_expires: Option<SystemTime>,
}

/// How long after its job acquisition token expired a VM that has not
/// taken its job is given up: an agent that registered just in time
/// acquires within seconds, and the job states are read every 2 s.
const TOKEN_GRACE: Duration = Duration::from_secs(30);

/// What a job's VM registers its agent with.
enum VmToken {
    /// The same long-lived token for every VM of the definition.
    Shared(Secret),
    /// A job acquisition token, asked for from this client and stack key
    /// right before the start.
    Jat(Client, String),
}

enum Event {
    Started {
        job: String,
        vm: String,
        /// Started for the job, or a warm VM handed it.
        kind: Kind,
        token_expires: Option<SystemTime>,
        /// When the token was issued, if the VM has its own.
        token_at: Option<Instant>,
        at: Instant,
    },
    /// No job acquisition token for the job, so no VM.
    NoToken { job: String, error: JatError },
    Failed {
        job: String,
        host: usize,
        why: String,
    },
    Woke {
        job: String,
        host: usize,
        took: Duration,
        at: Instant,
    },
    /// The host had no room when counted under its lock (another
    /// launcher's VM came first): the job is placed again.
    Full {
        job: String,
        host: usize,
        why: String,
    },
    /// The job already has a VM there (found under the lock).
    Duplicate { job: String, vm: String },
    /// The VM given up on is removed (or could not be): the job is
    /// placed again.
    Removed { job: Job, queue: String },
    /// A warm VM's start call returned (`started`: or lost its answer,
    /// so it may run) or failed.
    WarmStarted { vm: String, started: bool },
    /// A warm VM said it waits for a job, or did not (yet).
    WarmProbed { vm: String, ready: bool },
    /// A warm VM claimed for a job was not handed it (no token, no host):
    /// it waits for another.
    WarmReleased { vm: String },
    /// A warm VM whose hand-off failed was removed.
    WarmRemoved { vm: String },
    /// A saved slot's check or build ended.
    SlotPrepared {
        host: usize,
        name: String,
        got: Result<Prepared, String>,
    },
    /// A slot claimed for a job was not restored (no token, no host).
    SlotReleased { host: usize, name: String },
    /// A slot's restore or hand-off failed: check and rebuild it.
    SlotBroken { host: usize, name: String },
    /// The host's connection died during the start call: the VM may run.
    StartUnknown {
        job: String,
        host: usize,
        vm: String,
        why: String,
        token_expires: Option<SystemTime>,
    },
}

/// The running launcher.
pub struct Daemon {
    cfg: Arc<Config>,
    opts: Options,
    /// The Stacks API client (Stacks mode).
    stacks: Option<Client>,
    /// The REST client (REST mode).
    rest: Option<RestClient>,
    /// When the REST budget allows the next listing.
    rest_resume: Option<Instant>,
    hosts: Vec<Arc<HostRt>>,
    /// Counters served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Each job's start, stage by stage (the histograms, notes and status page).
    pub stages: Arc<Journal>,
    /// When the webhook that started this pass arrived.
    kicked: Option<Instant>,
    /// Notified to run a pass at once (webhooks).
    pub kick: Arc<Notify>,
    inflight: HashMap<String, InFlight>,
    /// Warm VMs: booting or waiting for a job.
    warm: WarmPool,
    saved: SlotPool,
    retry: HashMap<String, (Job, String)>,
    // What was said about each job, so it is said once: jobs given up,
    // the last note on a job's page, the last decision logged. Forgotten
    // once the job is gone from Buildkite's lists and not ours to follow
    // (see `forget_gone`).
    finished: HashSet<String>,
    noted: HashMap<String, String>,
    logged: HashMap<String, String>,
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
    pub fn new(cfg: Config, opts: Options) -> Result<Self, String> {
        let (stacks, rest) = match cfg.buildkite.source {
            Source::Stacks => {
                let token = cfg
                    .buildkite
                    .agent_token
                    .clone()
                    .ok_or("no cluster agent token")?;
                (
                    Some(Client::new(&cfg.buildkite.agent_endpoint, token)),
                    None,
                )
            }
            Source::Rest => {
                let b = &cfg.buildkite;
                let token = b.api_token.clone().ok_or("no REST API token")?;
                let org = b.organization.as_deref().ok_or("no organisation")?;
                (None, Some(RestClient::new(&b.api_endpoint, token, org)))
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (state, saved) = match (&cfg.launcher.state_file, &stacks, opts.dry_run) {
            (Some(path), Some(_), false) => {
                let (file, saved) = crate::persist::StateFile::open(path)?;
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
            stacks,
            rest,
            rest_resume: None,
            hosts,
            metrics: Arc::new(Metrics::default()),
            stages: Arc::new(Journal::default()),
            kicked: None,
            kick: Arc::new(Notify::new()),
            inflight: HashMap::new(),
            warm: WarmPool::default(),
            saved: SlotPool::default(),
            retry: HashMap::new(),
            finished: HashSet::new(),
            noted: HashMap::new(),
            logged: HashMap::new(),
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
    pub async fn register(&self) -> Result<(), String> {
        let Some(client) = &self.stacks else {
            return Ok(());
        };
        for q in self.cfg.queues() {
            client
                .register(&self.key(&q), &q)
                .await
                .map_err(|e| format!("registering the stack for queue {q}: {e}"))?;
        }
        Ok(())
    }

    /// Deregisters every stack; errors are reported, not fatal.
    pub async fn deregister(&self) {
        let Some(client) = &self.stacks else {
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
    ) -> Result<(), String> {
        tokio::pin!(stop);
        let mut first = true;
        loop {
            let decisions = self.pass(first).await;
            self.save_state();
            first = false;
            if self.opts.dry_run {
                for d in &decisions {
                    let line =
                        serde_json::to_string(&d.line(&self.cfg)).map_err(|e| e.to_string())?;
                    writeln!(out, "{line}").map_err(|e| e.to_string())?;
                }
                out.flush().map_err(|e| e.to_string())?;
            }
            if self.opts.once {
                // Let started launches finish before leaving.
                self.drain_launches(Duration::from_secs(600)).await;
                return Ok(());
            }
            let every = self.cfg.buildkite.poll_interval;
            let wait = if self.inflight.is_empty() {
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
        let jobs = self
            .inflight
            .values()
            .map(|f| (&f.job, f.queue.as_str()))
            .chain(self.retry.values().map(|(j, q)| (j, q.as_str())));
        if let Err(e) = state.save(&self.id, jobs) {
            eprintln!("writing {}: {e}", state.path().display());
        }
    }

    /// Takes over, in this first pass, the jobs an earlier launcher had
    /// reserved (with the same stack keys) and not seen taken, when
    /// Buildkite says they still wait (no listing shows them until their
    /// reservations lapse): one whose VM a host lists is watched as if
    /// this launcher had started it, the others are placed again.
    async fn adopt_recovered(&mut self) {
        let Some(client) = self.stacks.clone() else {
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
                    // Watched as if this launcher had started it: placed
                    // again if it vanishes or does not take the job
                    // within the boot timeout from now.
                    Some((host, def, vm)) => {
                        eprintln!(
                            "job {}: {vm} on {} was started before the restart; watching it",
                            job.id, self.cfg.hosts[host].name
                        );
                        let now = Instant::now();
                        self.inflight.insert(
                            job.id.clone(),
                            InFlight {
                                job,
                                queue: q.clone(),
                                def,
                                host,
                                phase: Phase::Booting(vm),
                                since: now,
                                // Extended by the next look at its state.
                                reserved_until: now,
                                cancelled: false,
                                token_expires: None,
                            },
                        );
                    }
                    None => {
                        eprintln!(
                            "job {}: reserved before the restart; placing it again",
                            job.id
                        );
                        self.retry.insert(job.id.clone(), (job, q.clone()));
                    }
                }
            }
        }
    }

    /// The host, definition and name of a VM this launcher's stacks
    /// started for `job`, as the hosts' last probe listed it.
    fn booting_vm_of(&self, job: &str) -> Option<(usize, usize, String)> {
        self.hosts.iter().enumerate().find_map(|(h, rt)| {
            rt.instances().into_iter().find_map(|i| {
                let ours = i.labels.get(label::LAUNCHER) == Some(&self.cfg.buildkite.stack_key);
                if !ours || i.labels.get(label::JOB).map(String::as_str) != Some(job) {
                    return None;
                }
                let def_name = i.labels.get(label::DEFINITION)?;
                let def = self.cfg.agents.iter().position(|a| &a.name == def_name)?;
                Some((h, def, i.name))
            })
        })
    }

    async fn drain_launches(&mut self, limit: Duration) {
        let t0 = Instant::now();
        while self.inflight.values().any(|f| f.phase == Phase::Starting) && t0.elapsed() < limit {
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

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Woke {
                job,
                host,
                took,
                at,
            } => {
                self.stages.awake(&job, took, at);
                self.metrics.woke(took);
                if !took.is_zero() {
                    eprintln!(
                        "{}: awake after {:.1} s",
                        self.cfg.hosts[host].name,
                        took.as_secs_f64()
                    );
                }
            }
            Event::Started {
                job,
                vm,
                kind,
                token_expires,
                token_at,
                at,
            } => {
                self.warm.forget(&vm);
                let Some(f) = self.inflight.get_mut(&job) else {
                    return;
                };
                if let Some(t) = token_at {
                    self.stages.mark(&job, Stage::Token, t);
                }
                self.stages.started(&job, kind, at);
                f.token_expires = token_expires;
                let host = self.cfg.hosts[f.host].name.clone();
                let def = self.cfg.agents[f.def].name.clone();
                match kind {
                    Kind::Cold => eprintln!("job {job}: started {vm} on {host}"),
                    Kind::Warm => eprintln!("job {job}: handed to warm {vm} on {host}"),
                    Kind::Saved => eprintln!("job {job}: handed to {vm} restored on {host}"),
                }
                let since = parse_rfc3339(&f.job.scheduled_at)
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                self.metrics.vm_started(&host, &def, since);
                f.phase = Phase::Booting(vm.clone());
                f.since = Instant::now();
                let (cancelled, queue, host_idx) = (f.cancelled, f.queue.clone(), f.host);
                if cancelled {
                    self.remove_vm(host_idx, &vm);
                    self.inflight.remove(&job);
                    self.stages.drop_job(&job);
                } else {
                    let note = match kind {
                        Kind::Cold => format!("booting {vm} on {host}"),
                        Kind::Warm => format!("warm {vm} on {host} took it"),
                        Kind::Saved => format!("saved slot on {host}"),
                    };
                    self.note(&queue, &job, note).await;
                }
            }
            Event::WarmStarted { vm, started } => {
                if started {
                    self.warm.started(&vm);
                } else {
                    self.warm.forget(&vm);
                }
            }
            Event::WarmReleased { vm } => self.warm.release(&vm),
            Event::WarmRemoved { vm } => self.warm.forget(&vm),
            Event::SlotPrepared { host, name, got } => {
                if self.saved.prepared(host, &name, &got) {
                    let h = &self.cfg.hosts[host].name;
                    match &got {
                        Ok(Prepared::Free) => eprintln!("saved slot {name} on {h} is ready"),
                        Ok(Prepared::Built) => {
                            eprintln!("saved slot {name} on {h} is ready (built now)")
                        }
                        Ok(Prepared::InUse) => {
                            eprintln!("saved slot {name} on {h} runs a clone")
                        }
                        Err(why) => eprintln!(
                            "saved slot {name} on {h}: {why}; trying again in {} s",
                            saved::RETRY_AFTER.as_secs()
                        ),
                    }
                }
            }
            Event::SlotReleased { host, name } => self.saved.release(host, &name),
            Event::SlotBroken { host, name } => self.saved.broken(host, &name),
            Event::WarmProbed { vm, ready } => {
                if self.warm.probed(&vm, ready) {
                    if let Some(w) = self.warm.vms().get(&vm) {
                        let host = &self.cfg.hosts[w.host].name;
                        eprintln!("warm {vm} on {host} waits for a job");
                    }
                }
            }
            Event::NoToken { job, error } => {
                let Some(f) = self.inflight.remove(&job) else {
                    return;
                };
                let def = &self.cfg.agents[f.def].name;
                eprintln!("job {job} ({def}): {error}");
                if f.cancelled {
                    self.stages.drop_job(&job);
                    return;
                }
                if error.place_again() {
                    self.stages.again(&job);
                    self.retry.insert(job, (f.job, f.queue));
                } else {
                    // Not placed again: a lapsed reservation brings the
                    // job back to the listing, a taken job is gone.
                    self.stages.drop_job(&job);
                    self.note(&f.queue, &job, error.note()).await;
                }
            }
            Event::Removed { job, queue } => {
                self.retry.insert(job.id.clone(), (job, queue));
            }
            Event::Duplicate { job, vm } => {
                eprintln!("job {job}: {vm} already runs it; no second VM");
                self.inflight.remove(&job);
                self.stages.drop_job(&job);
            }
            Event::Full { job, host, why } => {
                let name = self.cfg.hosts[host].name.clone();
                eprintln!("job {job}: {name} has no room after all ({why}); placing it again");
                if let Some(f) = self.inflight.remove(&job) {
                    if !f.cancelled {
                        self.stages.again(&job);
                        self.retry.insert(job, (f.job, f.queue));
                    }
                }
            }
            Event::StartUnknown {
                job,
                host,
                vm,
                why,
                token_expires,
            } => {
                let name = self.cfg.hosts[host].name.clone();
                eprintln!(
                    "job {job}: {name}: the start of {vm} lost its answer ({why}); \
                     counted as booting, so the job gets no second VM unless this one \
                     does not take it within the boot timeout"
                );
                self.metrics.start_failed(&name);
                let Some(f) = self.inflight.get_mut(&job) else {
                    return;
                };
                // Placing the job again now would start a second VM
                // beside one that may be booting; the boot timeout and the
                // token's expiry remove it (if it runs) and place the job
                // again when it does not take it.
                f.token_expires = token_expires;
                f.phase = Phase::Booting(vm.clone());
                f.since = Instant::now();
                if f.cancelled {
                    self.remove_vm(host, &vm);
                    self.inflight.remove(&job);
                }
            }
            Event::Failed { job, host, why } => {
                let name = self.cfg.hosts[host].name.clone();
                eprintln!("job {job}: {name}: {why}");
                self.metrics.start_failed(&name);
                if let Some(f) = self.inflight.remove(&job) {
                    if !f.cancelled {
                        // Placed again next pass, on another host if this one keeps failing.
                        self.stages.again(&job);
                        self.retry.insert(job, (f.job, f.queue));
                    }
                }
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
        let Some(client) = &self.stacks else {
            return;
        };
        if self.opts.dry_run || self.noted.get(job) == Some(&detail) {
            return;
        }
        let n = [Notification {
            job_uuid: job.to_string(),
            detail: detail.clone(),
        }];
        if client.notify(&self.key(queue), &n).await.is_ok() {
            self.noted.insert(job.to_string(), detail);
        }
    }

    /// One pass; returns its decisions.
    pub async fn pass(&mut self, first: bool) -> Vec<Decision> {
        let t0 = Instant::now();
        let kicked = self.kicked.take();
        while let Ok(ev) = self.rx.try_recv() {
            self.on_event(ev).await;
        }
        self.probe_hosts(first).await;
        if first {
            self.adopt_recovered().await;
        }
        // REST mode lists first: the listing also says how the jobs whose
        // VM is coming are doing.
        let listing = match self.rest.is_some() {
            true => Some(self.rest_listing().await),
            false => None,
        };
        if !self.opts.dry_run {
            self.watch_inflight(listing.as_ref()).await;
            let mut gone = self
                .warm
                .sync(&self.cfg, &self.hosts, self.cfg.launcher.boot_timeout);
            gone.extend(self.warm.surplus(&self.cfg));
            self.saved.sync(&self.hosts);
            for Removal { vm, host, why } in gone {
                eprintln!(
                    "warm {vm} on {}: {why}; removing it",
                    self.cfg.hosts[host].name
                );
                self.remove_vm(host, &vm);
            }
        }

        // Jobs that have a VM (ours, from libvirt, also after a restart).
        let mut taken: HashSet<String> = self.inflight.keys().cloned().collect();
        for h in &self.hosts {
            for i in h.instances() {
                if i.labels.get(label::LAUNCHER) == Some(&self.cfg.buildkite.stack_key) {
                    if let Some(j) = i.labels.get(label::JOB) {
                        taken.insert(j.clone());
                    }
                }
            }
        }
        let mut jobs: Vec<Job> = Vec::new();
        let mut queue_of: HashMap<String, String> = HashMap::new();
        let mut decisions = Vec::new();
        let mut seen = 0;
        // Every job the listings showed, and whether they showed them all.
        let mut listed: HashSet<String> = HashSet::new();
        let mut complete = true;
        if let Some(l) = listing {
            seen = l.jobs.len();
            listed.extend(l.states.keys().cloned());
            complete = l.complete;
            if l.complete {
                // A job placed again must still be waiting.
                self.retry
                    .retain(|id, _| l.states.get(id).map(String::as_str) == Some("scheduled"));
            }
            for (j, q) in l.jobs {
                if taken.contains(&j.id) || self.finished.contains(&j.id) {
                    continue;
                }
                queue_of.insert(j.id.clone(), q);
                jobs.push(j);
            }
        }
        let stacks = self.stacks.clone();
        for q in self.cfg.queues() {
            let Some(client) = &stacks else { break };
            let key = self.key(&q);
            let mut after: Option<String> = None;
            for _page in 0..2 {
                match client.scheduled_jobs(&key, &q, after.as_deref(), 500).await {
                    Ok(page) => {
                        seen += page.jobs.len();
                        listed.extend(page.jobs.iter().map(|j| j.id.clone()));
                        for j in page.jobs {
                            if taken.contains(&j.id) || self.finished.contains(&j.id) {
                                continue;
                            }
                            if page.paused {
                                decisions.push(Decision::skip(
                                    &j.id,
                                    format!("queue {q} is paused (dispatch_paused)"),
                                ));
                                continue;
                            }
                            queue_of.insert(j.id.clone(), q.clone());
                            jobs.push(j);
                        }
                        after = page.next;
                        if after.is_none() {
                            break;
                        }
                    }
                    Err(e) => {
                        complete = false;
                        self.metrics.error("buildkite");
                        eprintln!("listing jobs of queue {q}: {e}");
                        // Another launcher sharing the stack deregistered it
                        // on its way out: register again, list next pass.
                        if e.status() == Some(404) {
                            match client.register(&key, &q).await {
                                Ok(()) => eprintln!("registered the stack for queue {q} again"),
                                Err(e) => eprintln!("registering the stack for queue {q}: {e}"),
                            }
                        }
                        break;
                    }
                }
            }
            // Pages left unread may hold jobs we said something about.
            if after.is_some() {
                complete = false;
            }
        }
        self.metrics.jobs_seen(seen);
        // A job is seen when a webhook said so, else when listed (now:
        // the hosts were probed before the listing).
        let (via, seen_at) = match kicked {
            Some(at) => (Via::Webhook, at),
            None => (Via::Listing, Instant::now()),
        };
        for j in &jobs {
            self.stages.seen(&j.id, via, seen_at);
        }
        // Jobs to place again: reserved by us (Stacks), so no listing
        // shows them; kept until they get a VM.
        let mut again: HashMap<String, (Job, String)> = HashMap::new();
        for (id, (job, q)) in std::mem::take(&mut self.retry) {
            if !taken.contains(&id) && !queue_of.contains_key(&id) {
                queue_of.insert(id.clone(), q.clone());
                jobs.push(job.clone());
                again.insert(id, (job, q));
            }
        }

        // Capacity already promised to launches under way.
        let mut pending: HashMap<usize, (u32, u64)> = HashMap::new();
        let mut defs: Vec<DefView> = self
            .cfg
            .agents
            .iter()
            .map(|_| DefView {
                running: 0,
                memory_kib: 0,
                broken_on: HashMap::new(),
                warm: Vec::new(),
            })
            .collect();
        for (d, a) in self.cfg.agents.iter().enumerate() {
            for &h in &a.hosts {
                match self.hosts[h].template(&a.template) {
                    Some(Ok(t)) => defs[d].memory_kib = defs[d].memory_kib.max(t.memory_kib),
                    Some(Err(e)) if self.hosts[h].conn().is_some() => {
                        defs[d].broken_on.insert(h, e);
                    }
                    _ => {}
                }
            }
        }
        for f in self.inflight.values() {
            defs[f.def].running += 1;
            if f.phase == Phase::Starting {
                let p = pending.entry(f.host).or_default();
                p.0 += 1;
                p.1 += defs[f.def].memory_kib;
            }
        }
        // Warm VMs being started are not listed yet, nor those started
        // since their host was last read: they count as launches under way.
        for (vm, w) in self.warm.vms() {
            let listed = self.hosts[w.host].instances().iter().any(|i| &i.name == vm);
            if w.state != warm::WarmState::Claimed && !listed {
                defs[w.def].running += 1;
                let p = pending.entry(w.host).or_default();
                p.0 += 1;
                p.1 += defs[w.def].memory_kib;
            }
        }
        for (d, view) in defs.iter_mut().enumerate() {
            view.warm = self.warm.ready_hosts(&self.cfg, d);
        }
        for h in &self.hosts {
            for i in h.instances() {
                if let Some(d) = i.labels.get(label::DEFINITION) {
                    if let Some(idx) = self.cfg.agents.iter().position(|a| &a.name == d) {
                        // Booting VMs are both in flight and listed: count once.
                        let booting = i
                            .labels
                            .get(label::JOB)
                            .is_some_and(|j| self.inflight.contains_key(j));
                        if !booting {
                            defs[idx].running += 1;
                        }
                    }
                }
            }
        }
        let mut views: Vec<_> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (n, kib) = pending.get(&i).copied().unwrap_or_default();
                h.view(n, kib)
            })
            .collect();
        let asleep = views
            .iter()
            .filter(|v| v.power != crate::schedule::Power::Awake)
            .count();
        let plan = Plan::new(&self.cfg);
        decisions.extend(plan.pass(&jobs, &mut views, &mut defs));
        for d in &decisions {
            // A job no definition takes is not ours to time.
            if d.verdict == Verdict::Skip {
                self.stages.drop_job(&d.job);
            }
            if matches!(d.verdict, Verdict::Wait { .. } | Verdict::Skip) {
                if let Some(r) = again.remove(&d.job) {
                    self.retry.insert(d.job.clone(), r);
                }
            }
        }
        for d in &decisions {
            let line = format!("{:?} {}", d.action(), d.reason);
            if self.logged.get(&d.job) != Some(&line) {
                eprintln!(
                    "job {}: {} ({})",
                    d.job,
                    serde_json::to_string(&d.action())
                        .unwrap_or_default()
                        .trim_matches('"'),
                    d.reason
                );
                self.logged.insert(d.job.clone(), line);
            }
        }
        if !self.opts.dry_run {
            self.act(&decisions, &jobs, &queue_of).await;
            self.keep_warm(&mut views, &mut defs);
            self.probe_warm();
            self.keep_saved();
            self.metrics.warm_vms(self.warm.counts(&self.cfg));
        }
        self.forget_gone(&listed, complete);
        let vms: usize = self.hosts.iter().map(|h| h.instances().len()).sum();
        self.metrics
            .pass(asleep, vms, self.last_pass.elapsed(), t0.elapsed());
        self.last_pass = Instant::now();
        if let Some(h) = &self.heartbeat {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            h.store(now, std::sync::atomic::Ordering::Relaxed);
        }
        decisions
    }

    /// Forgets what was said about jobs that are gone: not `listed` by a
    /// `complete` listing and not in flight or to be placed again here
    /// (their notes and log lines would not be said again anyway). A job
    /// still listed or followed keeps its entries, so it is not logged or
    /// noted twice. Past [`MAX_REMEMBERED`], an incomplete listing is
    /// trusted too.
    fn forget_gone(&mut self, listed: &HashSet<String>, complete: bool) {
        let over = self
            .logged
            .len()
            .max(self.noted.len())
            .max(self.finished.len())
            > MAX_REMEMBERED;
        if !complete && !over {
            return;
        }
        let (inflight, retry) = (&self.inflight, &self.retry);
        let keep = |id: &String| {
            listed.contains(id) || inflight.contains_key(id) || retry.contains_key(id)
        };
        self.logged.retain(|id, _| keep(id));
        self.noted.retain(|id, _| keep(id));
        self.stages.retain(|id| keep(&id.to_string()));
        self.finished.retain(keep);
    }

    /// One REST listing, unless the budget ran out and has not reset yet
    /// (then nothing is seen and nothing is known).
    async fn rest_listing(&mut self) -> Listing {
        if self.rest_resume.is_some_and(|t| Instant::now() < t) {
            return Listing::default();
        }
        let Some(rest) = self.rest.clone() else {
            return Listing::default();
        };
        match rest.list(&self.cfg.queues()).await {
            Ok(l) => {
                self.rest_resume = l.resume_at;
                if !l.complete {
                    self.metrics.error("buildkite");
                }
                l
            }
            Err(e) => {
                self.metrics.error("buildkite");
                eprintln!("listing builds: {e}");
                Listing::default()
            }
        }
    }

    async fn probe_hosts(&self, force: bool) {
        let templates = Arc::new(templates_of(&self.cfg));
        let mut tasks = Vec::new();
        for h in &self.hosts {
            let h = h.clone();
            let t = templates.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                h.probe(&t, force);
                h.sweep();
            }));
        }
        // A host that takes long to answer is read in the background and
        // counts as it was until then.
        let limit = if force {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(3)
        };
        let _ = tokio::time::timeout(limit, futures_join(tasks)).await;
    }

    async fn act(
        &mut self,
        decisions: &[Decision],
        jobs: &[Job],
        queue_of: &HashMap<String, String>,
    ) {
        let by_id: HashMap<&str, &Job> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
        let mut to_reserve: BTreeMap<String, Vec<&Decision>> = BTreeMap::new();
        for d in decisions {
            let Some(q) = queue_of.get(&d.job) else {
                continue;
            };
            match d.verdict {
                Verdict::Start { .. }
                | Verdict::Warm { .. }
                | Verdict::Wake { .. }
                | Verdict::Finish { .. } => to_reserve.entry(q.clone()).or_default().push(d),
                Verdict::Wait { .. } => {
                    let q = q.clone();
                    self.note(&q, &d.job, d.reason.clone()).await;
                }
                Verdict::Skip => {}
            }
        }
        let expiry = self.reservation();
        let stacks = self.stacks.clone();
        for (q, ds) in to_reserve {
            let key = self.key(&q);
            let ids: Vec<String> = ds.iter().map(|d| d.job.clone()).collect();
            // REST has no reservation: the VM's labels in libvirt are what
            // keeps a job from getting a second VM.
            let reserved: HashSet<String> = match &stacks {
                None => ids.into_iter().collect(),
                Some(client) => match client.reserve(&key, &ids, expiry).await {
                    Ok(r) => {
                        self.metrics.jobs_reserved(r.len());
                        r.into_iter().collect()
                    }
                    Err(e) => {
                        self.metrics.error("buildkite");
                        eprintln!("reserving jobs of queue {q}: {e}");
                        continue;
                    }
                },
            };
            for d in ds {
                if !reserved.contains(&d.job) {
                    continue;
                }
                let Some(job) = by_id.get(d.job.as_str()) else {
                    continue;
                };
                if matches!(d.verdict, Verdict::Finish { .. }) {
                    // REST cannot finish a job it does not run: the
                    // decision's log line is all a person gets.
                    let Some(client) = &stacks else {
                        continue;
                    };
                    match client.finish(&key, &d.job, &d.reason).await {
                        Ok(()) => {
                            self.finished.insert(d.job.clone());
                            self.stages.drop_job(&d.job);
                            self.metrics.job_finished();
                            eprintln!("job {}: given up: {}", d.job, d.reason);
                        }
                        Err(e) => eprintln!("finishing job {}: {e}", d.job),
                    }
                    continue;
                }
                let (def, host, warm_vm) = match d.verdict {
                    Verdict::Start { def, host } | Verdict::Wake { def, host } => {
                        (def.0, host.0, None)
                    }
                    Verdict::Warm { def, host } => (def.0, host.0, self.warm.claim(def.0, host.0)),
                    // Finish is handled above; Wait and Skip are never reserved.
                    _ => continue,
                };
                let token = match (&self.cfg.agents[def].tokens, &stacks) {
                    (AgentTokens::Shared(t), _) => VmToken::Shared(t.clone()),
                    (AgentTokens::Jat, Some(client)) => VmToken::Jat(client.clone(), key.clone()),
                    // The config gives job acquisition tokens only in Stacks mode.
                    (AgentTokens::Jat, None) => continue,
                };
                self.inflight.insert(
                    d.job.clone(),
                    InFlight {
                        job: (*job).clone(),
                        queue: q.clone(),
                        def,
                        host,
                        phase: Phase::Starting,
                        since: Instant::now(),
                        reserved_until: Instant::now() + expiry,
                        cancelled: false,
                        token_expires: None,
                    },
                );
                self.stages.reserved(
                    &d.job,
                    &self.cfg.agents[def].name,
                    &self.cfg.hosts[host].name,
                    Instant::now(),
                );
                if matches!(d.verdict, Verdict::Wake { .. }) {
                    let name = self.cfg.hosts[host].name.clone();
                    self.note(&q, &d.job, format!("waking {name}")).await;
                }
                // No warm VM: a free saved slot there, else a cold start.
                let slot = match warm_vm {
                    Some(_) => None,
                    None => self.saved.claim(def, host),
                };
                self.spawn_launch((*job).clone(), q.clone(), def, host, token, (warm_vm, slot));
            }
        }
    }

    /// Wakes the host, gets the VM's token, then hands the job to warm VM
    /// `warm_vm` if there is one, or to a clone restored from saved slot
    /// `slot`, else (or if the restore or hand-off fails, after removing
    /// that VM) starts a VM for it.
    fn spawn_launch(
        &self,
        job: Job,
        queue: String,
        def: usize,
        host: usize,
        token: VmToken,
        (warm_vm, slot): (Option<String>, Option<String>),
    ) {
        let cfg = self.cfg.clone();
        let rt = self.hosts[host].clone();
        let tx = self.tx.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            // A warm VM not handed the job waits for another.
            let release = |tx: &mpsc::UnboundedSender<Event>| {
                if let Some(vm) = &warm_vm {
                    let _ = tx.send(Event::WarmReleased { vm: vm.clone() });
                }
                if let Some(name) = &slot {
                    let _ = tx.send(Event::SlotReleased {
                        host,
                        name: name.clone(),
                    });
                }
            };
            let (conn, took) = match rt.wake().await {
                Ok(c) => c,
                Err(why) => {
                    release(&tx);
                    rt.set_failing(why.clone(), cfg.launcher.host_retry_after);
                    let _ = tx.send(Event::Failed {
                        job: job.id,
                        host,
                        why,
                    });
                    return;
                }
            };
            let _ = tx.send(Event::Woke {
                job: job.id.clone(),
                host,
                took,
                at: Instant::now(),
            });
            // The token is asked for only now that the host is awake: it
            // lives from here to the agent's registration.
            let (token, token_expires, token_at) = match token {
                VmToken::Shared(t) => (t, None, None),
                VmToken::Jat(client, key) => {
                    let lifetime = jat::lifetime(cfg.launcher.boot_timeout);
                    let name = &cfg.agents[def].name;
                    let got = client
                        .job_acquisition_token(&key, &job.id, name, lifetime)
                        .await;
                    metrics.job_acquisition_token(
                        got.as_ref().map_or_else(JatError::kind, |_| "issued"),
                    );
                    match got {
                        Ok(t) => (t.token, Some(t.expires_at), Some(Instant::now())),
                        Err(error) => {
                            release(&tx);
                            let _ = tx.send(Event::NoToken { job: job.id, error });
                            return;
                        }
                    }
                }
            };
            let msg = Message {
                job: job.id.clone(),
                token: token.expose().to_string(),
                hostname: vm_name(&cfg, def, &job.id),
                time: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
                renew_dhcp: true,
            };
            if let Some(name) = slot.clone() {
                let spec = saved::slot_instance_spec(&cfg, def, &name);
                let (msg, id) = (msg.clone(), job.id.clone());
                let r = conn
                    .run(move |h| {
                        let took = saved::restore(h, &spec)?;
                        eprintln!(
                            "job {id}: restored {} in {:.2} s",
                            spec.name,
                            took.as_secs_f64()
                        );
                        if let Err(e) = h.set_instance_label(&spec.name, label::JOB, &id) {
                            eprintln!("job {id}: labelling {} with its job: {e}", spec.name);
                        }
                        h.hand_off(&spec.name, &msg, warm::HANDOFF_TIMEOUT)
                            .map_err(|e| e.to_string())
                    })
                    .await;
                let why = match r {
                    Ok(Ok(())) => {
                        let _ = tx.send(Event::Started {
                            job: job.id,
                            vm: name,
                            kind: Kind::Saved,
                            token_expires,
                            token_at,
                            at: Instant::now(),
                        });
                        return;
                    }
                    Ok(Err(e)) => e,
                    Err(e) => format!("the restore task failed: {e}"),
                };
                eprintln!(
                    "job {}: restoring saved slot {name} failed: {why}; starting a VM for the job",
                    job.id
                );
                metrics.error("restore");
                let name2 = name.clone();
                // A clone's removal deletes only its overlay.
                if let Ok(Err(e)) = conn.run(move |h| h.remove_instance(&name2)).await {
                    if !e.is_not_found() {
                        eprintln!("removing {name}: {e}");
                    }
                }
                let _ = tx.send(Event::SlotBroken { host, name });
            }
            if let Some(vm) = warm_vm.clone() {
                let (vm2, id) = (vm.clone(), job.id.clone());
                let r = conn
                    .run(move |h| {
                        // Labelled first: a launcher restarted meanwhile
                        // counts it as the job's VM, not as a warm one.
                        if let Err(e) = h.set_instance_label(&vm2, label::JOB, &id) {
                            eprintln!("job {id}: labelling {vm2} with its job: {e}");
                        }
                        h.hand_off(&vm2, &msg, warm::HANDOFF_TIMEOUT)
                    })
                    .await;
                let why = match r {
                    Ok(Ok(())) => {
                        let _ = tx.send(Event::Started {
                            job: job.id,
                            vm,
                            kind: Kind::Warm,
                            token_expires,
                            token_at,
                            at: Instant::now(),
                        });
                        return;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("the hand-off task failed: {e}"),
                };
                eprintln!(
                    "job {}: handing it to warm {vm} failed: {why}; removing {vm} and starting a VM for the job",
                    job.id
                );
                metrics.error("handoff");
                let vm2 = vm.clone();
                if let Ok(Err(e)) = conn.run(move |h| h.remove_instance(&vm2)).await {
                    if !e.is_not_found() {
                        eprintln!("removing {vm}: {e}");
                    }
                }
                let _ = tx.send(Event::WarmRemoved { vm });
            }
            let spec = instance_spec(&cfg, def, &job, &queue, &token);
            let rt2 = rt.clone();
            let id = job.id.clone();
            let r = conn
                .run(move |c| crate::hosts::launch(&rt2, c, &spec, &id))
                .await;
            let why = match r {
                Ok(Launch::Started(inst)) => {
                    let _ = tx.send(Event::Started {
                        job: job.id,
                        vm: inst.name,
                        kind: Kind::Cold,
                        token_expires,
                        token_at,
                        at: Instant::now(),
                    });
                    return;
                }
                Ok(Launch::Full(why)) => {
                    let _ = tx.send(Event::Full {
                        job: job.id,
                        host,
                        why,
                    });
                    return;
                }
                Ok(Launch::Duplicate(vm)) => {
                    let _ = tx.send(Event::Duplicate { job: job.id, vm });
                    return;
                }
                Ok(Launch::Unknown { vm, why }) => {
                    rt.set_failing(
                        format!("the connection died while starting {vm}: {why}"),
                        cfg.launcher.host_retry_after,
                    );
                    let _ = tx.send(Event::StartUnknown {
                        job: job.id,
                        host,
                        vm,
                        why,
                        token_expires,
                    });
                    return;
                }
                Ok(Launch::Failed(why)) => why,
                Err(e) => format!("the start task failed: {e}"),
            };
            rt.set_failing(
                format!("could not start a VM: {why}"),
                cfg.launcher.host_retry_after,
            );
            let _ = tx.send(Event::Failed {
                job: job.id,
                host,
                why,
            });
        });
    }

    /// Starts warm VMs for definitions that have fewer than they ask for,
    /// on awake hosts with room left after this pass's decisions
    /// (`hosts` and `defs` as the pass left them), like any VM within
    /// `max_vms`, `memory_limit` and `max_instances`.
    fn keep_warm(&mut self, hosts: &mut [HostView], defs: &mut [DefView]) {
        let cfg = self.cfg.clone();
        for (d, a) in cfg.agents.iter().enumerate() {
            let mem = defs[d].memory_kib;
            // Nothing is known of the template before a host was read.
            if mem == 0 {
                continue;
            }
            for _ in self.warm.kept(d)..a.warm as usize {
                if a.max_instances.is_some_and(|m| defs[d].running >= m) {
                    break;
                }
                let room = |h: &usize| {
                    let v = &hosts[*h];
                    v.power == Power::Awake
                        && !defs[d].broken_on.contains_key(h)
                        && v.max_vms.is_none_or(|m| v.vms < m)
                        && v.used_kib.saturating_add(mem) <= v.limit_kib
                };
                let Some(h) = a.hosts.iter().copied().find(room) else {
                    break;
                };
                hosts[h].vms += 1;
                hosts[h].used_kib = hosts[h].used_kib.saturating_add(mem);
                defs[d].running += 1;
                self.spawn_warm(d, h);
            }
        }
    }

    fn spawn_warm(&mut self, def: usize, host: usize) {
        let name = warm::warm_name(&self.cfg, def);
        self.warm.starting(&name, def, host);
        let spec = warm::warm_instance_spec(&self.cfg, def, &name);
        let cfg = self.cfg.clone();
        let rt = self.hosts[host].clone();
        let tx = self.tx.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let (h, d) = (&cfg.hosts[host].name, &cfg.agents[def].name);
            let Some(conn) = rt.conn() else {
                let _ = tx.send(Event::WarmStarted {
                    vm: name,
                    started: false,
                });
                return;
            };
            let rt2 = rt.clone();
            // Its name stands for the job: no VM has it as its job.
            let r = conn
                .run(move |c| crate::hosts::launch(&rt2, c, &spec, &spec.name))
                .await;
            let started = match r {
                Ok(Launch::Started(_)) => {
                    eprintln!("warm {name}: started on {h}");
                    metrics.vm_started(h, d, None);
                    true
                }
                Ok(Launch::Unknown { why, .. }) => {
                    eprintln!(
                        "warm {name}: {h}: the start lost its answer ({why}); followed as booting"
                    );
                    rt.set_failing(
                        format!("the connection died while starting {name}: {why}"),
                        cfg.launcher.host_retry_after,
                    );
                    true
                }
                Ok(Launch::Full(why)) => {
                    eprintln!("warm {name}: {h} has no room after all ({why})");
                    false
                }
                Ok(Launch::Duplicate(vm)) => {
                    eprintln!("warm {name}: {h} already runs {vm} under that name");
                    false
                }
                Ok(Launch::Failed(why)) => {
                    eprintln!("warm {name}: {h}: {why}");
                    metrics.start_failed(h);
                    rt.set_failing(
                        format!("could not start a VM: {why}"),
                        cfg.launcher.host_retry_after,
                    );
                    false
                }
                Err(e) => {
                    eprintln!("warm {name}: the start task failed: {e}");
                    false
                }
            };
            let _ = tx.send(Event::WarmStarted { vm: name, started });
        });
    }

    /// Checks (and builds, in the background) the saved slots due on
    /// awake hosts.
    fn keep_saved(&mut self) {
        for (def, host, name) in self.saved.to_prepare(&self.cfg, &self.hosts) {
            let tx = self.tx.clone();
            let Some(conn) = self.hosts[host].conn() else {
                let got = Err("the host is not connected".to_string());
                let _ = tx.send(Event::SlotPrepared { host, name, got });
                continue;
            };
            let spec = saved::slot_instance_spec(&self.cfg, def, &name);
            let boot_timeout = self.cfg.launcher.boot_timeout;
            tokio::spawn(async move {
                let got = conn
                    .run(move |h| saved::prepare(h, &spec, boot_timeout))
                    .await
                    .unwrap_or_else(|e| Err(format!("the slot task failed: {e}")));
                let _ = tx.send(Event::SlotPrepared { host, name, got });
            });
        }
    }

    /// Asks each booting warm VM whether it waits for a job yet.
    fn probe_warm(&mut self) {
        for (vm, host) in self.warm.to_probe() {
            let tx = self.tx.clone();
            let Some(conn) = self.hosts[host].conn() else {
                let _ = tx.send(Event::WarmProbed { vm, ready: false });
                continue;
            };
            tokio::spawn(async move {
                let vm2 = vm.clone();
                let r = conn
                    .run(move |h| h.handoff_ready(&vm2, warm::READY_TIMEOUT))
                    .await;
                let ready = matches!(r, Ok(Ok(())));
                let _ = tx.send(Event::WarmProbed { vm, ready });
            });
        }
    }

    /// Jobs whose VM is coming: cancelled ones lose their VM, taken ones
    /// are left to it, the rest keep their reservation until the boot
    /// timeout, then are placed again.
    async fn watch_inflight(&mut self, listing: Option<&Listing>) {
        let mut by_queue: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, f) in &self.inflight {
            by_queue
                .entry(f.queue.clone())
                .or_default()
                .push(id.clone());
        }
        for (q, ids) in by_queue {
            let key = self.key(&q);
            let states: HashMap<String, String> = match (listing, &self.stacks) {
                // Only a complete listing says a job is gone.
                (Some(l), _) if !l.complete => continue,
                (Some(l), _) => ids
                    .iter()
                    .map(|id| {
                        let s = coming_state(l.states.get(id).map(String::as_str));
                        (id.clone(), s.to_string())
                    })
                    .collect(),
                (None, Some(client)) => match client.states(&key, &ids).await {
                    Ok(s) => s,
                    Err(e) => {
                        self.metrics.error("buildkite");
                        eprintln!("reading job states of queue {q}: {e}");
                        continue;
                    }
                },
                (None, None) => continue,
            };
            let mut extend = Vec::new();
            for id in ids {
                let Some(state) = states.get(&id) else {
                    continue;
                };
                let Some(f) = self.inflight.get_mut(&id) else {
                    continue;
                };
                match state.as_str() {
                    "scheduled" | "reserved" => {
                        if let Phase::Booting(vm) = &f.phase {
                            // Gone before taking its job (powered off, or a
                            // start whose answer was lost did not happen):
                            // nothing to wait for.
                            if self.hosts[f.host].lacks_since(vm, f.since) {
                                let host = &self.cfg.hosts[f.host].name;
                                eprintln!("job {id}: {vm} is not on {host} and did not take the job; placing it again");
                                let f = self.inflight.remove(&id).expect("present");
                                self.retry.insert(id, (f.job, f.queue));
                                continue;
                            }
                            let expired = f
                                .token_expires
                                .is_some_and(|t| SystemTime::now() > t + TOKEN_GRACE);
                            if f.since.elapsed() > self.cfg.launcher.boot_timeout || expired {
                                let (vm, host) = (vm.clone(), f.host);
                                if expired {
                                    eprintln!("job {id}: {vm} did not take the job before its job acquisition token expired; removing it");
                                    self.metrics.error("token_expired");
                                } else {
                                    eprintln!("job {id}: {vm} did not take the job within the boot timeout; removing it");
                                }
                                let f = self.inflight.remove(&id).expect("present");
                                self.stages.again(&id);
                                self.remove_vm_then_place(host, &vm, f.job, f.queue);
                                continue;
                            }
                        }
                        let total = self.cfg.launcher.wake_timeout + self.cfg.launcher.boot_timeout;
                        if f.reserved_until.saturating_duration_since(Instant::now()) < total / 2 {
                            extend.push(id.clone());
                        }
                    }
                    // Finished counts as taken: a short job can be
                    // acquired, run and finished between two looks, and
                    // its VM is then powering off on its own. (A job
                    // finished before any VM took it costs nothing either:
                    // the agent's acquire is refused and the VM powers off.)
                    "assigned" | "accepted" | "running" | "finished" => {
                        let f = self.inflight.remove(&id).expect("present");
                        if let Some(r) = self.stages.agent(&id, Instant::now()) {
                            let line = r.breakdown();
                            eprintln!("job {id}: {line}");
                            self.metrics.job_started(&r);
                            self.note(&f.queue, &id, line).await;
                        }
                    }
                    other => {
                        eprintln!(
                            "job {id} is {other} before its VM took it; the VM is not needed"
                        );
                        f.cancelled = true;
                        self.stages.drop_job(&id);
                        if let Phase::Booting(vm) = &f.phase {
                            let (vm, host) = (vm.clone(), f.host);
                            self.inflight.remove(&id);
                            self.remove_vm(host, &vm);
                        }
                    }
                }
            }
            if let (false, Some(client)) = (extend.is_empty(), &self.stacks) {
                let expiry = self.reservation();
                if let Ok(r) = client.reserve(&key, &extend, expiry).await {
                    for id in r {
                        if let Some(f) = self.inflight.get_mut(&id) {
                            f.reserved_until = Instant::now() + expiry;
                        }
                    }
                }
            }
        }
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
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
                        d.logged.get(id),
                        Some(line),
                        "pass {pass}: {id} would be logged again"
                    );
                }
            }
            // Only jobs still listed (or just finished) are remembered.
            assert!(
                d.logged.len() <= 2 * width,
                "pass {pass}: {} logged",
                d.logged.len()
            );
            assert!(
                d.noted.len() <= width,
                "pass {pass}: {} noted",
                d.noted.len()
            );
            assert!(
                d.finished.len() <= width,
                "pass {pass}: {} finished",
                d.finished.len()
            );
            logged_before = d.logged.clone();
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

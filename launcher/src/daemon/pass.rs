//! One pass: list the waiting jobs, count what the hosts have and what
//! is promised, decide, and act on the decisions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::AgentTokens;
use crate::hosts::{label, templates_of};
use crate::rest::Listing;
use crate::retry::ApiError;
use crate::saved;
use crate::schedule::{Decision, DefView, HostView, Job, Plan, Verdict};
use crate::stacks::Client;
use crate::stages::Via;
use crate::warm::{self, Removal};

use super::jobs::{InFlight, Phase};
use super::launch::VmToken;
use super::{Daemon, JobSource, MAX_REMEMBERED};

impl Daemon {
    /// One pass; returns its decisions.
    pub async fn pass(&mut self, first: bool) -> Vec<Decision> {
        let t0 = Instant::now();
        let kicked = self.kicked.take();
        let listing = self.look(first).await;
        let taken = self.taken();
        let mut found = Found::new();
        if let Some(l) = listing {
            self.take_rest_listing(l, &taken, &mut found);
        }
        self.list_stacks(&taken, &mut found).await;
        self.metrics.jobs_seen(found.seen);
        // A job is seen when a webhook said so, else when listed (now:
        // the hosts were probed before the listing).
        let (via, seen_at) = match kicked {
            Some(at) => (Via::Webhook, at),
            None => (Via::Listing, Instant::now()),
        };
        for j in &found.jobs {
            self.stages.seen(&j.id, via, seen_at);
        }
        let again = self.take_retries(&taken, &mut found);

        let (mut views, mut defs) = self.capacity();
        let asleep = views
            .iter()
            .filter(|v| v.power != crate::schedule::Power::Awake)
            .count();
        let plan = Plan::new(&self.cfg);
        let mut decisions = std::mem::take(&mut found.decisions);
        decisions.extend(plan.pass(&found.jobs, &mut views, &mut defs));
        self.keep_retries(&decisions, again);
        self.log_decisions(&decisions);
        if !self.opts.dry_run {
            self.act(&decisions, &found.jobs, &found.queue_of).await;
            self.keep_warm(&mut views, &mut defs);
            self.probe_warm();
            self.check_warm_versions();
            self.keep_saved(&mut views, &mut defs);
            self.metrics.warm_vms(self.warm.counts(&self.cfg));
        }
        self.forget_gone(&found.listed, found.complete);
        self.end_pass(asleep, t0);
        decisions
    }

    /// What the pass starts from: the events that came, the hosts read,
    /// the jobs of a restarted launcher taken over (first pass), the jobs
    /// whose VM is coming followed and the warm VMs and slots brought up
    /// to date. Returns the REST listing (REST mode), read first: it also
    /// says how the jobs whose VM is coming are doing.
    async fn look(&mut self, first: bool) -> Option<Listing> {
        while let Ok(ev) = self.rx.try_recv() {
            self.on_event(ev).await;
        }
        self.probe_hosts(first).await;
        if first {
            self.adopt_recovered().await;
        }
        let listing = match self.source {
            JobSource::Rest { .. } => Some(self.rest_listing().await),
            JobSource::Stacks(_) => None,
        };
        if !self.opts.dry_run {
            self.watch_inflight(listing.as_ref()).await;
            let mut gone = self
                .warm
                .sync(&self.cfg, &self.hosts, self.cfg.launcher.boot_timeout);
            gone.extend(self.warm.surplus(&self.cfg, crate::hours::LocalTime::now()));
            self.saved.sync(&self.hosts);
            for Removal { vm, host, why } in gone {
                eprintln!(
                    "warm {vm} on {}: {why}; removing it",
                    self.cfg.hosts[host].name
                );
                self.remove_vm(host, &vm);
            }
        }
        listing
    }

    /// Jobs that have a VM (ours, from libvirt, also after a restart).
    fn taken(&self) -> HashSet<String> {
        let mut taken: HashSet<String> = self.jobs.all_coming().map(|(id, _)| id.clone()).collect();
        for h in &self.hosts {
            for i in h.instances() {
                if i.labels.get(label::LAUNCHER) == Some(&self.cfg.buildkite.stack_key) {
                    if let Some(j) = i.labels.get(label::JOB) {
                        taken.insert(j.clone());
                    }
                }
            }
        }
        taken
    }

    /// The jobs of the REST listing that wait for a VM.
    fn take_rest_listing(&mut self, l: Listing, taken: &HashSet<String>, found: &mut Found) {
        found.seen = l.jobs.len();
        found.listed.extend(l.states.keys().cloned());
        found.complete = l.complete;
        if l.complete {
            // A job placed again must still be waiting.
            self.jobs
                .retain_retries(|id| l.states.get(id).map(String::as_str) == Some("scheduled"));
        }
        for (j, q) in l.jobs {
            if taken.contains(&j.id) || self.jobs.is_finished(&j.id) {
                continue;
            }
            found.queue_of.insert(j.id.clone(), q);
            found.jobs.push(j);
        }
    }

    /// The jobs of each queue's stack that wait for a VM (Stacks mode),
    /// two pages at most.
    async fn list_stacks(&mut self, taken: &HashSet<String>, found: &mut Found) {
        let Some(client) = self.source.stacks().cloned() else {
            return;
        };
        for q in self.cfg.queues() {
            let key = self.key(&q);
            let mut after: Option<String> = None;
            for _page in 0..2 {
                match client.scheduled_jobs(&key, &q, after.as_deref(), 500).await {
                    Ok(page) => {
                        found.seen += page.jobs.len();
                        found.listed.extend(page.jobs.iter().map(|j| j.id.clone()));
                        for j in page.jobs {
                            if taken.contains(&j.id) || self.jobs.is_finished(&j.id) {
                                continue;
                            }
                            if page.paused {
                                found.decisions.push(Decision::skip(
                                    &j.id,
                                    format!("queue {q} is paused (dispatch_paused)"),
                                ));
                                continue;
                            }
                            found.queue_of.insert(j.id.clone(), q.clone());
                            found.jobs.push(j);
                        }
                        after = page.next;
                        if after.is_none() {
                            break;
                        }
                    }
                    Err(e) => {
                        found.complete = false;
                        self.listing_failed(&client, &key, &q, e).await;
                        break;
                    }
                }
            }
            // Pages left unread may hold jobs we said something about.
            if after.is_some() {
                found.complete = false;
            }
        }
    }

    async fn listing_failed(&self, client: &Client, key: &str, q: &str, e: ApiError) {
        self.metrics.error("buildkite");
        eprintln!("listing jobs of queue {q}: {e}");
        // Another launcher sharing the stack deregistered it
        // on its way out: register again, list next pass.
        if e.status() == Some(404) {
            match client.register(key, q).await {
                Ok(()) => eprintln!("registered the stack for queue {q} again"),
                Err(e) => eprintln!("registering the stack for queue {q}: {e}"),
            }
        }
    }

    /// Adds the jobs to place again: reserved by us (Stacks), so no
    /// listing shows them; kept until they get a VM. Returns them.
    fn take_retries(
        &mut self,
        taken: &HashSet<String>,
        found: &mut Found,
    ) -> HashMap<String, (Job, String)> {
        let mut again: HashMap<String, (Job, String)> = HashMap::new();
        for (id, job, q) in self.jobs.take_retries() {
            if !taken.contains(&id) && !found.queue_of.contains_key(&id) {
                found.queue_of.insert(id.clone(), q.clone());
                found.jobs.push(job.clone());
                again.insert(id, (job, q));
            }
        }
        again
    }

    /// The jobs placed again that wait again (or are skipped) stay to be
    /// placed again next pass.
    fn keep_retries(&mut self, decisions: &[Decision], mut again: HashMap<String, (Job, String)>) {
        for d in decisions {
            // A job no definition takes is not ours to time.
            if d.verdict == Verdict::Skip {
                self.stages.drop_job(&d.job);
            }
            if matches!(d.verdict, Verdict::Wait { .. } | Verdict::Skip) {
                if let Some((job, q)) = again.remove(&d.job) {
                    self.jobs.place_again(&d.job, job, q);
                }
            }
        }
    }

    /// Logs each decision that differs from the last one logged for its job.
    fn log_decisions(&mut self, decisions: &[Decision]) {
        for d in decisions {
            let line = format!("{:?} {}", d.action(), d.reason);
            if self.jobs.logged(&d.job) != Some(line.as_str()) {
                eprintln!(
                    "job {}: {} ({})",
                    d.job,
                    serde_json::to_string(&d.action())
                        .unwrap_or_default()
                        .trim_matches('"'),
                    d.reason
                );
                self.jobs.set_logged(&d.job, line);
            }
        }
    }

    /// What the hosts and definitions have, with the capacity already
    /// promised to launches under way.
    fn capacity(&self) -> (Vec<HostView>, Vec<DefView>) {
        let mut defs = self.def_views();
        let pending = self.pending(&mut defs);
        for (d, view) in defs.iter_mut().enumerate() {
            view.warm = self.warm.ready_hosts(&self.cfg, d);
            for &h in &self.cfg.agents[d].hosts {
                let free = self.saved.free(d, h);
                view.saved.extend(std::iter::repeat_n(h, free));
            }
        }
        self.count_listed(&mut defs);
        let views = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (n, kib) = pending.get(&i).copied().unwrap_or_default();
                h.view(n, kib)
            })
            .collect();
        (views, defs)
    }

    /// Each definition's memory (the largest its template has on any
    /// host) and the hosts its template is broken on.
    fn def_views(&self) -> Vec<DefView> {
        let mut defs: Vec<DefView> = self
            .cfg
            .agents
            .iter()
            .map(|_| DefView {
                running: 0,
                memory_kib: 0,
                broken_on: HashMap::new(),
                warm: Vec::new(),
                saved: Vec::new(),
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
        defs
    }

    /// Counts the launches under way (and warm VMs and slot builds not
    /// listed yet) as running; returns the VMs and memory they promise per host.
    fn pending(&self, defs: &mut [DefView]) -> HashMap<usize, (u32, u64)> {
        let mut pending: HashMap<usize, (u32, u64)> = HashMap::new();
        for (_, f) in self.jobs.all_coming() {
            defs[f.def].running += 1;
            if f.phase.is_starting() {
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
        // So do saved slots being built (an instance boots until it is
        // saved) that their host has not listed yet; listed, they count
        // as running VMs of their definition.
        for ((h, name), e) in self.saved.slots() {
            let listed = self.hosts[*h].instances().iter().any(|i| &i.name == name);
            if e.state == saved::SlotState::Building && !listed {
                defs[e.def].running += 1;
                let p = pending.entry(*h).or_default();
                p.0 += 1;
                p.1 += defs[e.def].memory_kib;
            }
        }
        pending
    }

    /// Counts the VMs the hosts list as running.
    fn count_listed(&self, defs: &mut [DefView]) {
        for h in &self.hosts {
            for i in h.instances() {
                if let Some(d) = i.labels.get(label::DEFINITION) {
                    if let Some(idx) = self.cfg.agents.iter().position(|a| &a.name == d) {
                        // Booting VMs are both in flight and listed: count once.
                        let booting = i
                            .labels
                            .get(label::JOB)
                            .is_some_and(|j| self.jobs.coming(j).is_some());
                        if !booting {
                            defs[idx].running += 1;
                        }
                    }
                }
            }
        }
    }

    /// The pass's metrics and the watchdog's heartbeat.
    fn end_pass(&mut self, asleep: usize, t0: Instant) {
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
    }

    /// Forgets what was said about jobs that are gone: not `listed` by a
    /// `complete` listing and not in flight or to be placed again here
    /// (their notes and log lines would not be said again anyway). A job
    /// still listed or followed keeps its entries, so it is not logged or
    /// noted twice. Past [`MAX_REMEMBERED`], an incomplete listing is
    /// trusted too.
    fn forget_gone(&mut self, listed: &HashSet<String>, complete: bool) {
        let r = self.jobs.remembered();
        let over = r.logged.max(r.noted).max(r.finished) > MAX_REMEMBERED;
        if !complete && !over {
            return;
        }
        let jobs = &self.jobs;
        self.stages
            .retain(|id| listed.contains(id) || jobs.followed(id));
        self.jobs.forget(|id| listed.contains(id));
    }

    /// One REST listing, unless the budget ran out and has not reset yet
    /// (then nothing is seen and nothing is known).
    async fn rest_listing(&mut self) -> Listing {
        let JobSource::Rest { client, resume } = &mut self.source else {
            return Listing::default();
        };
        if resume.is_some_and(|t| Instant::now() < t) {
            return Listing::default();
        }
        match client.list(&self.cfg.queues()).await {
            Ok(l) => {
                *resume = l.resume_at;
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

    /// Notes why jobs wait, reserves the jobs to start (by queue), and
    /// starts, hands over or gives up each job reserved.
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
        for (q, ds) in to_reserve {
            let Some(reserved) = self.reserve(&q, &ds).await else {
                continue;
            };
            for d in ds {
                if !reserved.contains(&d.job) {
                    continue;
                }
                let Some(job) = by_id.get(d.job.as_str()) else {
                    continue;
                };
                if matches!(d.verdict, Verdict::Finish { .. }) {
                    self.finish(&q, d).await;
                } else {
                    self.launch(&q, d, job).await;
                }
            }
        }
    }

    /// Reserves the jobs of `ds` in queue `q`; returns those reserved, or
    /// `None` when the reservation failed.
    async fn reserve(&mut self, q: &str, ds: &[&Decision]) -> Option<HashSet<String>> {
        let ids: Vec<String> = ds.iter().map(|d| d.job.clone()).collect();
        // REST has no reservation: the VM's labels in libvirt are what
        // keeps a job from getting a second VM.
        let Some(client) = self.source.stacks() else {
            return Some(ids.into_iter().collect());
        };
        match client.reserve(&self.key(q), &ids, self.reservation()).await {
            Ok(r) => {
                self.metrics.jobs_reserved(r.len());
                Some(r.into_iter().collect())
            }
            Err(e) => {
                self.metrics.error("buildkite");
                eprintln!("reserving jobs of queue {q}: {e}");
                None
            }
        }
    }

    /// Gives up a reserved job no definition can run.
    async fn finish(&mut self, q: &str, d: &Decision) {
        // REST cannot finish a job it does not run: the
        // decision's log line is all a person gets.
        let Some(client) = self.source.stacks() else {
            return;
        };
        match client.finish(&self.key(q), &d.job, &d.reason).await {
            Ok(()) => {
                self.jobs.finish(&d.job);
                self.stages.drop_job(&d.job);
                self.metrics.job_finished();
                eprintln!("job {}: given up: {}", d.job, d.reason);
            }
            Err(e) => eprintln!("finishing job {}: {e}", d.job),
        }
    }

    /// Follows a reserved job as starting and starts its launch: to a
    /// warm VM, else a free saved slot on the host, else a cold start.
    async fn launch(&mut self, q: &str, d: &Decision, job: &Job) {
        let (def, host, warm_vm) = match d.verdict {
            Verdict::Start { def, host } | Verdict::Wake { def, host } => (def.0, host.0, None),
            Verdict::Warm { def, host } => (def.0, host.0, self.warm.claim(def.0, host.0)),
            // Finish is handled apart; Wait and Skip are never reserved.
            _ => return,
        };
        let token = match (&self.cfg.agents[def].tokens, self.source.stacks()) {
            (AgentTokens::Shared(t), _) => VmToken::Shared(t.clone()),
            (AgentTokens::Jat, Some(client)) => VmToken::Jat(client.clone(), self.key(q)),
            // The config gives job acquisition tokens only in Stacks mode.
            (AgentTokens::Jat, None) => return,
        };
        self.jobs.follow(
            &d.job,
            InFlight {
                job: job.clone(),
                queue: q.to_string(),
                def,
                host,
                phase: Phase::Starting,
                since: Instant::now(),
                reserved_until: Instant::now() + self.reservation(),
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
            self.note(q, &d.job, format!("waking {name}")).await;
        }
        // No warm VM: a free saved slot there, else a cold start.
        let slot = match warm_vm {
            Some(_) => None,
            None => self.saved.claim(def, host),
        };
        self.spawn_launch(
            job.clone(),
            q.to_string(),
            def,
            host,
            token,
            (warm_vm, slot),
        );
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// The jobs a pass's listings showed.
struct Found {
    /// The jobs that wait for a VM (and the jobs to place again).
    jobs: Vec<Job>,
    /// Each of those jobs' queue.
    queue_of: HashMap<String, String>,
    /// Decisions made while listing (jobs of paused queues).
    decisions: Vec<Decision>,
    /// How many jobs the listings showed.
    seen: usize,
    /// Every job the listings showed.
    listed: HashSet<String>,
    /// Whether they showed them all.
    complete: bool,
}

impl Found {
    fn new() -> Self {
        Found {
            jobs: Vec::new(),
            queue_of: HashMap::new(),
            decisions: Vec::new(),
            seen: 0,
            listed: HashSet::new(),
            complete: true,
        }
    }
}

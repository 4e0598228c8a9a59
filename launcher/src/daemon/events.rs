//! What the tasks the loop started report back, and what the loop does
//! with each report.

use std::time::{Duration, Instant, SystemTime};

use crate::saved::{self, Prepared, SlotError};
use crate::schedule::Job;
use crate::stacks::jat::JatError;
use crate::stages::{Kind, Stage};

use super::jobs::Phase;
use super::{parse_rfc3339, Daemon};

pub(super) enum Event {
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
    /// A waiting warm VM was started from an older template.
    WarmStale {
        vm: String,
        host: usize,
        why: String,
    },
    /// A saved slot's check or build ended.
    SlotPrepared {
        host: usize,
        name: String,
        got: Result<Prepared, SlotError>,
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

impl Daemon {
    pub(super) async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Woke {
                job,
                host,
                took,
                at,
            } => self.on_woke(&job, host, took, at),
            Event::Started {
                job,
                vm,
                kind,
                token_expires,
                token_at,
                at,
            } => {
                self.on_started(job, vm, kind, (token_expires, token_at), at)
                    .await
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
            Event::WarmStale { vm, host, why } => {
                if self.warm.take_waiting(&vm) {
                    eprintln!(
                        "warm {vm} on {}: {why}; removing it",
                        self.cfg.hosts[host].name
                    );
                    self.remove_vm(host, &vm);
                }
            }
            Event::SlotPrepared { host, name, got } => self.on_slot_prepared(host, &name, &got),
            Event::SlotReleased { host, name } => self.saved.release(host, &name),
            Event::SlotBroken { host, name } => self.saved.broken(host, &name),
            Event::WarmProbed { vm, ready } => self.on_warm_probed(&vm, ready),
            Event::NoToken { job, error } => self.on_no_token(job, error).await,
            Event::Removed { job, queue } => {
                self.jobs.place_again(&job.id.clone(), job, queue);
            }
            Event::Duplicate { job, vm } => {
                eprintln!("job {job}: {vm} already runs it; no second VM");
                self.jobs.unfollow(&job);
                self.stages.drop_job(&job);
            }
            Event::Full { job, host, why } => {
                let name = self.cfg.hosts[host].name.clone();
                eprintln!("job {job}: {name} has no room after all ({why}); placing it again");
                self.place_again(job);
            }
            Event::StartUnknown {
                job,
                host,
                vm,
                why,
                token_expires,
            } => self.on_start_unknown(&job, host, vm, &why, token_expires),
            Event::Failed { job, host, why } => {
                let name = self.cfg.hosts[host].name.clone();
                eprintln!("job {job}: {name}: {why}");
                self.metrics.start_failed(&name);
                // Placed again next pass, on another host if this one keeps failing.
                self.place_again(job);
            }
        }
    }

    /// A launch under way gave up on its host: the job is placed again
    /// next pass, unless it was cancelled meanwhile.
    fn place_again(&mut self, job: String) {
        if let Some(f) = self.jobs.unfollow(&job) {
            if f.phase != Phase::Cancelled {
                self.stages.again(&job);
                self.jobs.place_again(&job, f.job, f.queue);
            }
        }
    }

    fn on_woke(&mut self, job: &str, host: usize, took: Duration, at: Instant) {
        self.stages.awake(job, took, at);
        self.metrics.woke(took);
        if !took.is_zero() {
            eprintln!(
                "{}: awake after {:.1} s",
                self.cfg.hosts[host].name,
                took.as_secs_f64()
            );
        }
    }

    /// A VM has the job (started for it, a warm one, or a restored
    /// clone): the job is followed as booting, or the VM removed if the
    /// job was cancelled meanwhile.
    async fn on_started(
        &mut self,
        job: String,
        vm: String,
        kind: Kind,
        (token_expires, token_at): (Option<SystemTime>, Option<Instant>),
        at: Instant,
    ) {
        self.warm.forget(&vm);
        let Some(f) = self.jobs.coming_mut(&job) else {
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
        let cancelled = f.phase == Phase::Cancelled;
        f.phase = Phase::Booting(vm.clone());
        f.since = Instant::now();
        let (queue, host_idx) = (f.queue.clone(), f.host);
        if cancelled {
            self.remove_vm(host_idx, &vm);
            self.jobs.unfollow(&job);
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

    fn on_slot_prepared(&mut self, host: usize, name: &str, got: &Result<Prepared, SlotError>) {
        let h = &self.cfg.hosts[host].name;
        // Failed as the host's connection went (it went to sleep): no
        // verdict on the slot, which is looked at again once it answers.
        if let Err(why) = got {
            if !self.hosts[host].conn().is_some_and(|c| c.is_alive()) {
                self.saved.cut_off(host, name);
                eprintln!(
                    "saved slot {name} on {h}: {why}; the host's connection is gone, checking it again once the host answers"
                );
                return;
            }
        }
        if !self.saved.prepared(host, name, got) {
            return;
        }
        match got {
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

    fn on_warm_probed(&mut self, vm: &str, ready: bool) {
        if self.warm.probed(vm, ready) {
            if let Some(w) = self.warm.vms().get(vm) {
                let host = &self.cfg.hosts[w.host].name;
                eprintln!("warm {vm} on {host} waits for a job");
            }
        }
    }

    async fn on_no_token(&mut self, job: String, error: JatError) {
        let Some(f) = self.jobs.unfollow(&job) else {
            return;
        };
        let def = &self.cfg.agents[f.def].name;
        eprintln!("job {job} ({def}): {error}");
        if f.phase == Phase::Cancelled {
            self.stages.drop_job(&job);
            return;
        }
        if error.place_again() {
            self.stages.again(&job);
            self.jobs.place_again(&job, f.job, f.queue);
        } else {
            // Not placed again: a lapsed reservation brings the
            // job back to the listing, a taken job is gone.
            self.stages.drop_job(&job);
            self.note(&f.queue, &job, error.note()).await;
        }
    }

    /// The start call lost its answer: the job is followed as booting on
    /// that VM.
    fn on_start_unknown(
        &mut self,
        job: &str,
        host: usize,
        vm: String,
        why: &str,
        token_expires: Option<SystemTime>,
    ) {
        let name = self.cfg.hosts[host].name.clone();
        eprintln!(
            "job {job}: {name}: the start of {vm} lost its answer ({why}); \
             counted as booting, so the job gets no second VM unless this one \
             does not take it within the boot timeout"
        );
        self.metrics.start_failed(&name);
        let Some(f) = self.jobs.coming_mut(job) else {
            return;
        };
        // Placing the job again now would start a second VM
        // beside one that may be booting; the boot timeout and the
        // token's expiry remove it (if it runs) and place the job
        // again when it does not take it.
        let cancelled = f.phase == Phase::Cancelled;
        f.token_expires = token_expires;
        f.phase = Phase::Booting(vm.clone());
        f.since = Instant::now();
        if cancelled {
            self.remove_vm(host, &vm);
            self.jobs.unfollow(job);
        }
    }
}

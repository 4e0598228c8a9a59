//! Following the jobs whose VM is coming until their agent takes them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use crate::rest::{coming_state, Listing};

use super::jobs::Phase;
use super::{Daemon, TOKEN_GRACE};

impl Daemon {
    /// Jobs whose VM is coming: cancelled ones lose their VM, taken ones
    /// are left to it, the rest keep their reservation until the boot
    /// timeout, then are placed again.
    pub(super) async fn watch_inflight(&mut self, listing: Option<&Listing>) {
        let mut by_queue: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, f) in self.jobs.all_coming() {
            by_queue
                .entry(f.queue.clone())
                .or_default()
                .push(id.clone());
        }
        for (q, ids) in by_queue {
            let Some(states) = self.states_of(&q, &ids, listing).await else {
                continue;
            };
            let mut extend = Vec::new();
            for id in ids {
                let Some(state) = states.get(&id) else {
                    continue;
                };
                if self.jobs.coming(&id).is_none() {
                    continue;
                }
                match state.as_str() {
                    "scheduled" | "reserved" => {
                        if self.still_waits(&id) {
                            extend.push(id.clone());
                        }
                    }
                    // Finished counts as taken: a short job can be
                    // acquired, run and finished between two looks, and
                    // its VM is then powering off on its own. (A job
                    // finished before any VM took it costs nothing either:
                    // the agent's acquire is refused and the VM powers off.)
                    "assigned" | "accepted" | "running" | "finished" => {
                        self.taken_by_agent(&id).await;
                    }
                    other => self.cancelled(&id, other),
                }
            }
            self.extend_reservations(&q, &extend).await;
        }
    }

    /// The states of the jobs `ids` of queue `q`: from the REST listing
    /// (REST mode; none unless it is complete, as only a complete listing
    /// says a job is gone), else asked of the queue's stack.
    async fn states_of(
        &self,
        q: &str,
        ids: &[String],
        listing: Option<&Listing>,
    ) -> Option<HashMap<String, String>> {
        match (listing, self.source.stacks()) {
            (Some(l), _) if !l.complete => None,
            (Some(l), _) => Some(
                ids.iter()
                    .map(|id| {
                        let s = coming_state(l.states.get(id).map(String::as_str));
                        (id.clone(), s.to_string())
                    })
                    .collect(),
            ),
            (None, Some(client)) => match client.states(&self.key(q), ids).await {
                Ok(s) => Some(s),
                Err(e) => {
                    self.metrics.error("buildkite");
                    eprintln!("reading job states of queue {q}: {e}");
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A job still waits for its VM: its booting VM is given up when gone
    /// from its host, past the boot timeout or past its token's expiry.
    /// Returns whether its reservation is to be extended.
    fn still_waits(&mut self, id: &str) -> bool {
        let Some(f) = self.jobs.coming(id) else {
            return false;
        };
        if let Phase::Booting(vm) = &f.phase {
            // Gone before taking its job (powered off, or a
            // start whose answer was lost did not happen):
            // nothing to wait for.
            if self.hosts[f.host].lacks_since(vm, f.since) {
                let host = &self.cfg.hosts[f.host].name;
                eprintln!(
                    "job {id}: {vm} is not on {host} and did not take the job; placing it again"
                );
                let f = self.jobs.unfollow(id).expect("present");
                self.jobs.place_again(id, f.job, f.queue);
                return false;
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
                    eprintln!(
                        "job {id}: {vm} did not take the job within the boot timeout; removing it"
                    );
                }
                let f = self.jobs.unfollow(id).expect("present");
                self.stages.again(id);
                self.remove_vm_then_place(host, &vm, f.job, f.queue);
                return false;
            }
        }
        let total = self.cfg.launcher.wake_timeout + self.cfg.launcher.boot_timeout;
        f.reserved_until.saturating_duration_since(Instant::now()) < total / 2
    }

    /// An agent took the job: it is its VM's now.
    async fn taken_by_agent(&mut self, id: &str) {
        let f = self.jobs.unfollow(id).expect("present");
        if let Some(r) = self.stages.agent(id, Instant::now()) {
            let line = r.breakdown();
            eprintln!("job {id}: {line}");
            self.metrics.job_started(&r);
            self.note(&f.queue, id, line).await;
        }
    }

    /// The job is `state` (cancelled, say) before its VM took it: a
    /// booting VM is removed, a start under way removes its VM when it
    /// reports.
    fn cancelled(&mut self, id: &str, state: &str) {
        let f = self.jobs.coming_mut(id).expect("present");
        if f.phase == Phase::Cancelled {
            // Said already; the start under way removes its VM.
            return;
        }
        eprintln!("job {id} is {state} before its VM took it; the VM is not needed");
        self.stages.drop_job(id);
        match &f.phase {
            Phase::Booting(vm) => {
                let (vm, host) = (vm.clone(), f.host);
                self.jobs.unfollow(id);
                self.remove_vm(host, &vm);
            }
            // Its VM is removed once the start reports.
            Phase::Starting | Phase::Cancelled => f.phase = Phase::Cancelled,
        }
    }

    /// Extends the reservations of the jobs `ids` of queue `q` (Stacks).
    async fn extend_reservations(&mut self, q: &str, ids: &[String]) {
        let (false, Some(client)) = (ids.is_empty(), self.source.stacks()) else {
            return;
        };
        let expiry = self.reservation();
        if let Ok(r) = client.reserve(&self.key(q), ids, expiry).await {
            for id in r {
                if let Some(f) = self.jobs.coming_mut(&id) {
                    f.reserved_until = Instant::now() + expiry;
                }
            }
        }
    }
}

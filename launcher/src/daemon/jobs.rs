//! What the daemon knows of each job, in one table keyed by job id: what
//! it is doing with the job (its [`JobState`]) and what it last said about
//! it, so a note or a log line is said once.
//!
//! A job is in the table while this launcher follows it (its VM is
//! coming, or it is to be placed again) or remembers something about it
//! (a note, a decision logged, the job given up); entries that hold
//! nothing any more are dropped, and [`JobTable::forget`] drops the
//! remembered jobs that are gone.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use crate::schedule::Job;

/// Where a reserved job's VM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waking the host or starting the VM.
    Starting,
    /// Still starting, but the job was cancelled meanwhile: the VM is
    /// removed once the start reports.
    Cancelled,
    /// The VM was started under this name; its agent has not taken the job yet.
    Booting(String),
}

impl Phase {
    /// Whether the launch is still under way (a VM is being started).
    pub(super) fn is_starting(&self) -> bool {
        matches!(self, Phase::Starting | Phase::Cancelled)
    }
}

/// A job reserved by this launcher whose VM is coming.
#[derive(Debug, Clone)]
pub(super) struct InFlight {
    pub(super) job: Job,
    pub(super) queue: String,
    pub(super) def: usize,
    pub(super) host: usize,
    pub(super) phase: Phase,
    pub(super) since: Instant,
    pub(super) reserved_until: Instant,
    /// When the VM's job acquisition token expires, if it has one.
    pub(super) token_expires: Option<SystemTime>,
}

/// What this launcher is doing with a job.
#[derive(Debug, Clone, Default)]
pub(super) enum JobState {
    /// Nothing: the job is remembered for what was said about it.
    #[default]
    Seen,
    /// To be placed again next pass: reserved by this launcher (Stacks),
    /// so no listing shows it, or its start failed.
    Retry { job: Job, queue: String },
    /// Reserved; its VM is coming.
    Coming(InFlight),
    /// Given up: finished on Buildkite with the reason.
    Finished,
}

#[derive(Debug, Default)]
struct Entry {
    state: JobState,
    /// The last note posted on the job's page.
    noted: Option<String>,
    /// The last decision logged for the job.
    logged: Option<String>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        matches!(self.state, JobState::Seen) && self.noted.is_none() && self.logged.is_none()
    }

    /// Followed: its VM is coming or it is to be placed again.
    fn followed(&self) -> bool {
        matches!(self.state, JobState::Coming(_) | JobState::Retry { .. })
    }
}

/// How many jobs the table remembers something about, by what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Remembered {
    pub(super) noted: usize,
    pub(super) logged: usize,
    pub(super) finished: usize,
}

/// Every job the daemon follows or remembers, by id.
#[derive(Debug, Default)]
pub(super) struct JobTable {
    jobs: HashMap<String, Entry>,
}

impl JobTable {
    /// Sets the state of job `id`, dropping the entry if it holds nothing.
    fn set(&mut self, id: &str, state: JobState) {
        match self.jobs.get_mut(id) {
            Some(e) => {
                e.state = state;
                if e.is_empty() {
                    self.jobs.remove(id);
                }
            }
            None if matches!(state, JobState::Seen) => {}
            None => {
                self.jobs.insert(
                    id.to_string(),
                    Entry {
                        state,
                        ..Entry::default()
                    },
                );
            }
        }
    }

    /// The job `id` if its VM is coming.
    pub(super) fn coming(&self, id: &str) -> Option<&InFlight> {
        match &self.jobs.get(id)?.state {
            JobState::Coming(f) => Some(f),
            _ => None,
        }
    }

    pub(super) fn coming_mut(&mut self, id: &str) -> Option<&mut InFlight> {
        match &mut self.jobs.get_mut(id)?.state {
            JobState::Coming(f) => Some(f),
            _ => None,
        }
    }

    /// Every job whose VM is coming.
    pub(super) fn all_coming(&self) -> impl Iterator<Item = (&String, &InFlight)> {
        self.jobs.iter().filter_map(|(id, e)| match &e.state {
            JobState::Coming(f) => Some((id, f)),
            _ => None,
        })
    }

    /// Follows job `id`, reserved, as its VM comes.
    pub(super) fn follow(&mut self, id: &str, f: InFlight) {
        self.set(id, JobState::Coming(f));
    }

    /// Stops following job `id`'s VM (taken, given up, cancelled or
    /// placed again): returns what was followed.
    pub(super) fn unfollow(&mut self, id: &str) -> Option<InFlight> {
        self.coming(id)?;
        let e = self.jobs.get_mut(id)?;
        let JobState::Coming(f) = std::mem::take(&mut e.state) else {
            unreachable!("checked above");
        };
        if e.is_empty() {
            self.jobs.remove(id);
        }
        Some(f)
    }

    /// Places job `id` again next pass. A job whose VM is coming (placed
    /// again meanwhile) keeps it.
    pub(super) fn place_again(&mut self, id: &str, job: Job, queue: String) {
        if self.coming(id).is_none() {
            self.set(id, JobState::Retry { job, queue });
        }
    }

    /// Whether job `id` is to be placed again.
    #[cfg(test)]
    pub(super) fn is_retry(&self, id: &str) -> bool {
        self.jobs
            .get(id)
            .is_some_and(|e| matches!(e.state, JobState::Retry { .. }))
    }

    /// The jobs to be placed again, no longer so (each is placed again
    /// by [`JobTable::place_again`] if it has to wait more).
    pub(super) fn take_retries(&mut self) -> Vec<(String, Job, String)> {
        let mut out = Vec::new();
        for (id, e) in &mut self.jobs {
            if let JobState::Retry { .. } = e.state {
                let JobState::Retry { job, queue } = std::mem::take(&mut e.state) else {
                    unreachable!("matched above");
                };
                out.push((id.clone(), job, queue));
            }
        }
        self.jobs.retain(|_, e| !e.is_empty());
        out
    }

    /// Keeps to be placed again only the jobs `keep` says.
    pub(super) fn retain_retries(&mut self, keep: impl Fn(&str) -> bool) {
        for (id, e) in &mut self.jobs {
            if matches!(e.state, JobState::Retry { .. }) && !keep(id) {
                e.state = JobState::Seen;
            }
        }
        self.jobs.retain(|_, e| !e.is_empty());
    }

    /// Remembers job `id` as given up.
    pub(super) fn finish(&mut self, id: &str) {
        self.set(id, JobState::Finished);
    }

    pub(super) fn is_finished(&self, id: &str) -> bool {
        self.jobs
            .get(id)
            .is_some_and(|e| matches!(e.state, JobState::Finished))
    }

    /// The last note posted on job `id`'s page.
    pub(super) fn noted(&self, id: &str) -> Option<&str> {
        self.jobs.get(id)?.noted.as_deref()
    }

    pub(super) fn set_noted(&mut self, id: &str, detail: String) {
        self.jobs.entry(id.to_string()).or_default().noted = Some(detail);
    }

    /// The last decision logged for job `id`.
    pub(super) fn logged(&self, id: &str) -> Option<&str> {
        self.jobs.get(id)?.logged.as_deref()
    }

    pub(super) fn set_logged(&mut self, id: &str, line: String) {
        self.jobs.entry(id.to_string()).or_default().logged = Some(line);
    }

    /// Every job's last decision logged.
    #[cfg(test)]
    pub(super) fn all_logged(&self) -> HashMap<String, String> {
        self.jobs
            .iter()
            .filter_map(|(id, e)| Some((id.clone(), e.logged.clone()?)))
            .collect()
    }

    /// Whether job `id` is followed: its VM is coming or it is to be
    /// placed again.
    pub(super) fn followed(&self, id: &str) -> bool {
        self.jobs.get(id).is_some_and(Entry::followed)
    }

    /// The jobs reserved and not yet seen taken, with their queue: those
    /// whose VM is coming and those to be placed again.
    pub(super) fn reserved(&self) -> impl Iterator<Item = (&Job, &str)> {
        let coming = self.all_coming().map(|(_, f)| (&f.job, f.queue.as_str()));
        let again = self.jobs.values().filter_map(|e| match &e.state {
            JobState::Retry { job, queue } => Some((job, queue.as_str())),
            _ => None,
        });
        coming.chain(again)
    }

    /// How many jobs have a note, a decision logged, or were given up.
    pub(super) fn remembered(&self) -> Remembered {
        let mut r = Remembered::default();
        for e in self.jobs.values() {
            r.noted += usize::from(e.noted.is_some());
            r.logged += usize::from(e.logged.is_some());
            r.finished += usize::from(matches!(e.state, JobState::Finished));
        }
        r
    }

    /// Forgets the jobs `listed` does not hold and that are not followed.
    pub(super) fn forget(&mut self, listed: impl Fn(&str) -> bool) {
        self.jobs.retain(|id, e| listed(id) || e.followed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            id: id.into(),
            rules: vec!["queue=linux".into()],
            priority: 0,
            scheduled_at: "2026-12-01T11:12:45Z".into(),
        }
    }

    fn in_flight(id: &str) -> InFlight {
        InFlight {
            job: job(id),
            queue: "linux".into(),
            def: 0,
            host: 0,
            phase: Phase::Starting,
            since: Instant::now(),
            reserved_until: Instant::now(),
            token_expires: None,
        }
    }

    #[test]
    fn a_job_no_longer_followed_is_remembered_only_for_what_was_said() {
        let mut t = JobTable::default();
        t.follow("a", in_flight("a"));
        t.follow("b", in_flight("b"));
        t.set_noted("b", "booting".into());
        assert_eq!(t.unfollow("a").map(|f| f.job.id), Some("a".to_string()));
        assert!(t.unfollow("b").is_some());
        assert!(t.unfollow("b").is_none());
        assert!(!t.jobs.contains_key("a"), "an empty entry is kept");
        assert_eq!(t.noted("b"), Some("booting"));
        assert!(t.coming("b").is_none());
        assert!(!t.followed("b"));
    }

    #[test]
    fn a_job_whose_vm_is_coming_is_not_placed_again() {
        let mut t = JobTable::default();
        t.follow("a", in_flight("a"));
        t.place_again("a", job("a"), "linux".into());
        assert!(t.coming("a").is_some());
        assert!(!t.is_retry("a"));
        assert_eq!(t.reserved().count(), 1);
    }

    #[test]
    fn retries_taken_are_placed_again_only_when_put_back() {
        let mut t = JobTable::default();
        t.place_again("a", job("a"), "linux".into());
        t.place_again("b", job("b"), "linux".into());
        t.set_logged("b", "Wait".into());
        let mut taken: Vec<String> = t.take_retries().into_iter().map(|r| r.0).collect();
        taken.sort();
        assert_eq!(taken, ["a", "b"]);
        assert!(!t.is_retry("a") && !t.is_retry("b"));
        assert!(!t.jobs.contains_key("a"));
        assert_eq!(t.logged("b"), Some("Wait"));
        t.place_again("b", job("b"), "linux".into());
        t.retain_retries(|id| id != "b");
        assert!(!t.is_retry("b"));
    }

    #[test]
    fn forgetting_keeps_the_listed_and_the_followed_jobs() {
        let mut t = JobTable::default();
        t.follow("coming", in_flight("coming"));
        t.place_again("again", job("again"), "linux".into());
        t.finish("finished");
        t.set_noted("noted", "waiting".into());
        t.set_logged("listed", "Start".into());
        assert_eq!(
            t.remembered(),
            Remembered {
                noted: 1,
                logged: 1,
                finished: 1
            }
        );
        let mut reserved: Vec<&str> = t.reserved().map(|(j, _)| j.id.as_str()).collect();
        reserved.sort();
        assert_eq!(reserved, ["again", "coming"]);
        t.forget(|id| id == "listed");
        let mut left: Vec<&String> = t.jobs.keys().collect();
        left.sort();
        assert_eq!(left, ["again", "coming", "listed"]);
        assert!(!t.is_finished("finished"));
    }
}

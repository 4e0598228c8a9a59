//! Each job's way from being seen to its agent taking it, stage by stage:
//! one [`Record`] per job, kept in the [`Journal`], which feeds the
//! histograms at `/metrics`, the job's last note and the status page.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// A point a job's start passes, in the order they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Listed waiting, or named by a webhook.
    Seen,
    /// Reserved for us (in REST mode: decided to start here).
    Reserved,
    /// Its host answers (woken if it slept).
    Awake,
    /// Its VM's job acquisition token was issued (not with a shared token).
    Token,
    /// Its VM's start call succeeded.
    Started,
    /// Its agent took the job (`get-states` no longer says it waits).
    Agent,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 6] = [
        Stage::Seen,
        Stage::Reserved,
        Stage::Awake,
        Stage::Token,
        Stage::Started,
        Stage::Agent,
    ];

    /// The stage's name on the status page: `seen`, `reserved`, ...
    pub fn name(self) -> &'static str {
        match self {
            Stage::Seen => "seen",
            Stage::Reserved => "reserved",
            Stage::Awake => "awake",
            Stage::Token => "token",
            Stage::Started => "started",
            Stage::Agent => "agent",
        }
    }

    /// The name of the time spent reaching this stage from the one
    /// before: the `stage` label of the histograms and the words of the
    /// job's note (`reserve`, `wake`, `token`, `start`, `agent`).
    pub fn span(self) -> &'static str {
        match self {
            Stage::Seen => "seen",
            Stage::Reserved => "reserve",
            Stage::Awake => "wake",
            Stage::Token => "token",
            Stage::Started => "start",
            Stage::Agent => "agent",
        }
    }
}

/// What kind of VM took the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A VM started for the job.
    Cold,
    /// A warm VM, booted before, handed the job (its `start` stage is the hand-off).
    Warm,
    /// A clone restored from a saved slot, handed the job (its `start`
    /// stage is the restore and the hand-off).
    Saved,
}

impl Kind {
    /// The `kind` label and field: `cold`, `warm` or `saved`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cold => "cold",
            Kind::Warm => "warm",
            Kind::Saved => "saved",
        }
    }
}

/// How a job was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// In a listing of waiting jobs.
    Listing,
    /// In the pass a `job.scheduled` webhook started.
    Webhook,
}

/// One job's start: when it reached each stage.
#[derive(Debug, Clone)]
pub struct Record {
    /// The job's UUID.
    pub job: String,
    /// How it was first seen.
    pub via: Via,
    /// When it was first seen, by the wall clock (for people).
    pub seen_at: SystemTime,
    /// The agent definition its VM is of, once reserved.
    pub definition: Option<String>,
    /// The host its VM goes to, once reserved.
    pub host: Option<String>,
    /// How long its host took to wake, when it had to be woken.
    pub wake: Option<Duration>,
    /// The kind of VM that took it, once started (or handed over).
    pub kind: Option<Kind>,
    // Stages reached, in stage order, the first always `Seen`.
    marks: Vec<(Stage, Instant)>,
}

impl Record {
    /// A job first seen at `at`.
    pub fn new(job: &str, via: Via, at: Instant) -> Self {
        let ago = at.elapsed();
        Record {
            job: job.to_string(),
            via,
            seen_at: SystemTime::now() - ago,
            definition: None,
            host: None,
            wake: None,
            kind: None,
            marks: vec![(Stage::Seen, at)],
        }
    }

    /// Notes that the job reached `stage` at `at`. A stage reached again
    /// (the job was placed again after a failed start) forgets the later
    /// stages of the failed attempt, so the spans are those of the start
    /// that worked. `Seen` is never marked again.
    pub fn mark(&mut self, stage: Stage, at: Instant) {
        if stage == Stage::Seen {
            return;
        }
        self.marks.retain(|(s, _)| *s < stage);
        // A clock read before the previous mark (events come from other
        // tasks) counts as that mark's time: spans are never negative.
        let last = self.marks.last().map_or(at, |m| m.1);
        self.marks.push((stage, at.max(last)));
    }

    /// Back to waiting: the start failed (or found no room) and the job
    /// is to be placed again; it keeps when it was first seen.
    pub fn again(&mut self) {
        self.marks.truncate(1);
        self.definition = None;
        self.host = None;
        self.wake = None;
        self.kind = None;
    }

    /// The last stage reached.
    pub fn reached(&self) -> Stage {
        self.marks.last().map_or(Stage::Seen, |m| m.0)
    }

    /// When the last stage was reached.
    pub fn reached_at(&self) -> Instant {
        self.marks
            .last()
            .map(|m| m.1)
            .expect("seen is always marked")
    }

    /// The time spent reaching each stage after `Seen` from the stage
    /// before it; stages skipped (no token with a shared one) are absent.
    pub fn spans(&self) -> Vec<(Stage, Duration)> {
        self.marks
            .windows(2)
            .map(|w| (w[1].0, w[1].1.duration_since(w[0].1)))
            .collect()
    }

    /// From seen to the last stage reached.
    pub fn total(&self) -> Duration {
        self.reached_at().duration_since(self.marks[0].1)
    }

    /// The job's last note: `VM on vmhost02 in 7.4 s: reserve 0.0 s,
    /// wake 5.1 s, start 0.4 s, agent 1.9 s`; `warm VM on …` for a warm
    /// VM, whose `start` is the hand-off.
    pub fn breakdown(&self) -> String {
        let spans: Vec<String> = self
            .spans()
            .iter()
            .map(|(s, d)| format!("{} {:.1} s", s.span(), d.as_secs_f64()))
            .collect();
        format!(
            "{}VM on {} in {:.1} s: {}",
            match self.kind {
                Some(Kind::Warm) => "warm ",
                Some(Kind::Saved) => "saved slot ",
                _ => "",
            },
            self.host.as_deref().unwrap_or("?"),
            self.total().as_secs_f64(),
            spans.join(", ")
        )
    }
}

/// How many finished starts the status page shows.
pub const RECENT: usize = 50;

/// How many jobs the journal follows at most; past it, the jobs seen
/// longest ago and not reserved are dropped (their start is then not timed).
pub const MAX_OPEN: usize = 10_000;

#[derive(Debug, Default)]
struct Inner {
    open: HashMap<String, Record>,
    recent: VecDeque<Record>,
}

/// Every job's record, from first seen until its agent took it (then
/// among the last [`RECENT`] starts) or it was dropped.
#[derive(Debug, Default)]
pub struct Journal(Mutex<Inner>);

impl Journal {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Notes `job` as seen at `at` unless it already was.
    pub fn seen(&self, job: &str, via: Via, at: Instant) {
        self.with(|j| {
            if !j.open.contains_key(job) {
                if j.open.len() >= MAX_OPEN {
                    drop_oldest_waiting(&mut j.open);
                }
                j.open.insert(job.to_string(), Record::new(job, via, at));
            }
        });
    }

    /// Notes that `job`, going to `host` as `definition`, was reserved at `at`.
    pub fn reserved(&self, job: &str, definition: &str, host: &str, at: Instant) {
        self.with(|j| {
            let r = j
                .open
                .entry(job.to_string())
                .or_insert_with(|| Record::new(job, Via::Listing, at));
            r.definition = Some(definition.to_string());
            r.host = Some(host.to_string());
            r.wake = None;
            r.mark(Stage::Reserved, at);
        });
    }

    /// Notes that `job`'s host answered at `at`, after a wake of `took`
    /// (zero when it was awake).
    pub fn awake(&self, job: &str, took: Duration, at: Instant) {
        self.with(|j| {
            if let Some(r) = j.open.get_mut(job) {
                r.wake = (!took.is_zero()).then_some(took);
                r.mark(Stage::Awake, at);
            }
        });
    }

    /// Notes that `job` reached `stage` at `at` (a job not followed is ignored).
    pub fn mark(&self, job: &str, stage: Stage, at: Instant) {
        self.with(|j| {
            if let Some(r) = j.open.get_mut(job) {
                r.mark(stage, at);
            }
        });
    }

    /// Notes that `job`'s VM, of `kind`, was started (or handed the job) at `at`.
    pub fn started(&self, job: &str, kind: Kind, at: Instant) {
        self.with(|j| {
            if let Some(r) = j.open.get_mut(job) {
                r.kind = Some(kind);
                r.mark(Stage::Started, at);
            }
        });
    }

    /// Notes that `job` waits to be placed again (see [`Record::again`]).
    pub fn again(&self, job: &str) {
        self.with(|j| {
            if let Some(r) = j.open.get_mut(job) {
                r.again();
            }
        });
    }

    /// Notes that `job`'s agent took it at `at`; returns its finished
    /// record, now among the recent starts, if the job was followed from
    /// its start call on.
    pub fn agent(&self, job: &str, at: Instant) -> Option<Record> {
        self.with(|j| {
            let mut r = j.open.remove(job)?;
            if r.reached() != Stage::Started {
                return None;
            }
            r.mark(Stage::Agent, at);
            if j.recent.len() >= RECENT {
                j.recent.pop_front();
            }
            j.recent.push_back(r.clone());
            Some(r)
        })
    }

    /// Stops following `job` (it needs no VM any more).
    pub fn drop_job(&self, job: &str) {
        self.with(|j| {
            j.open.remove(job);
        });
    }

    /// Keeps following only the jobs `keep` says are still there.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.with(|j| j.open.retain(|id, _| keep(id)));
    }

    /// The jobs followed now, the furthest along first.
    pub fn open(&self) -> Vec<Record> {
        let mut v: Vec<Record> = self.with(|j| j.open.values().cloned().collect());
        v.sort_by(|a, b| {
            b.reached()
                .cmp(&a.reached())
                .then(a.seen_at.cmp(&b.seen_at))
        });
        v
    }

    /// The last [`RECENT`] finished starts, the newest first.
    pub fn recent(&self) -> Vec<Record> {
        self.with(|j| j.recent.iter().rev().cloned().collect())
    }
}

fn drop_oldest_waiting(open: &mut HashMap<String, Record>) {
    let oldest = open
        .values()
        .filter(|r| r.reached() == Stage::Seen)
        .min_by_key(|r| r.reached_at())
        .map(|r| r.job.clone());
    if let Some(id) = oldest {
        open.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_start_spans_each_stage_from_the_one_before() {
        let t0 = Instant::now();
        let mut r = Record::new("j1", Via::Listing, t0);
        r.host = Some("vmhost02".into());
        r.mark(Stage::Reserved, t0 + ms(100));
        r.mark(Stage::Awake, t0 + ms(5_200));
        r.mark(Stage::Token, t0 + ms(5_260));
        r.mark(Stage::Started, t0 + ms(5_660));
        r.mark(Stage::Agent, t0 + ms(7_560));
        assert_eq!(r.reached(), Stage::Agent);
        assert_eq!(
            r.spans(),
            vec![
                (Stage::Reserved, ms(100)),
                (Stage::Awake, ms(5_100)),
                (Stage::Token, ms(60)),
                (Stage::Started, ms(400)),
                (Stage::Agent, ms(1_900)),
            ]
        );
        assert_eq!(r.total(), ms(7_560));
        assert_eq!(
            r.breakdown(),
            "VM on vmhost02 in 7.6 s: reserve 0.1 s, wake 5.1 s, token 0.1 s, start 0.4 s, agent 1.9 s"
        );
    }

    #[test]
    fn a_warm_start_says_so_and_a_start_placed_again_forgets_it() {
        let t0 = Instant::now();
        let j = Journal::default();
        j.seen("j1", Via::Listing, t0);
        j.reserved("j1", "linux", "vmhost01", t0 + ms(10));
        j.awake("j1", Duration::ZERO, t0 + ms(10));
        j.started("j1", Kind::Warm, t0 + ms(110));
        let r = j.agent("j1", t0 + ms(1_110)).unwrap();
        assert_eq!(r.kind, Some(Kind::Warm));
        assert_eq!(
            r.breakdown(),
            "warm VM on vmhost01 in 1.1 s: reserve 0.0 s, wake 0.0 s, start 0.1 s, agent 1.0 s"
        );
        j.seen("j2", Via::Listing, t0);
        j.reserved("j2", "linux", "vmhost01", t0);
        j.started("j2", Kind::Warm, t0);
        j.again("j2");
        assert_eq!(j.open()[0].kind, None);
    }

    #[test]
    fn a_saved_slot_start_says_so() {
        let t0 = Instant::now();
        let j = Journal::default();
        j.seen("j1", Via::Listing, t0);
        j.reserved("j1", "linux", "vmhost01", t0 + ms(10));
        j.awake("j1", Duration::ZERO, t0 + ms(10));
        j.started("j1", Kind::Saved, t0 + ms(710));
        let r = j.agent("j1", t0 + ms(2_710)).unwrap();
        assert_eq!(r.kind.map(Kind::name), Some("saved"));
        assert_eq!(
            r.breakdown(),
            "saved slot VM on vmhost01 in 2.7 s: reserve 0.0 s, wake 0.0 s, start 0.7 s, agent 2.0 s"
        );
    }

    #[test]
    fn a_shared_token_skips_the_token_stage() {
        let t0 = Instant::now();
        let mut r = Record::new("j1", Via::Webhook, t0);
        r.host = Some("vmhost01".into());
        for (s, t) in [
            (Stage::Reserved, 0),
            (Stage::Awake, 0),
            (Stage::Started, 400),
            (Stage::Agent, 2_300),
        ] {
            r.mark(s, t0 + ms(t));
        }
        assert_eq!(
            r.breakdown(),
            "VM on vmhost01 in 2.3 s: reserve 0.0 s, wake 0.0 s, start 0.4 s, agent 1.9 s"
        );
    }

    #[test]
    fn a_start_placed_again_keeps_the_attempt_that_worked() {
        let t0 = Instant::now();
        let mut r = Record::new("j1", Via::Listing, t0);
        r.mark(Stage::Reserved, t0 + ms(100));
        r.mark(Stage::Awake, t0 + ms(200));
        // The start failed: the job waits, then is reserved again.
        r.again();
        assert_eq!(r.reached(), Stage::Seen);
        assert_eq!(r.host, None);
        r.mark(Stage::Reserved, t0 + ms(3_000));
        assert_eq!(r.reached(), Stage::Reserved);
        r.mark(Stage::Awake, t0 + ms(3_100));
        r.mark(Stage::Started, t0 + ms(3_500));
        assert_eq!(
            r.spans(),
            vec![
                (Stage::Reserved, ms(3_000)),
                (Stage::Awake, ms(100)),
                (Stage::Started, ms(400)),
            ]
        );
    }

    #[test]
    fn a_mark_read_before_the_one_before_counts_as_no_time() {
        let t0 = Instant::now();
        let mut r = Record::new("j1", Via::Listing, t0 + ms(50));
        r.mark(Stage::Reserved, t0);
        r.mark(Stage::Seen, t0 + ms(900));
        assert_eq!(r.spans(), vec![(Stage::Reserved, Duration::ZERO)]);
    }

    #[test]
    fn the_journal_finishes_only_jobs_it_saw_started_and_keeps_the_last_fifty() {
        let j = Journal::default();
        let t0 = Instant::now();
        j.seen("early", Via::Listing, t0);
        // Taken by an agent before any VM of ours started: not a start.
        assert!(j.agent("early", t0 + ms(10)).is_none());
        assert!(j.agent("never-seen", t0).is_none());
        for n in 0..60 {
            let id = format!("job{n}");
            j.seen(&id, Via::Listing, t0);
            j.seen(&id, Via::Webhook, t0 + ms(5)); // seen once only
            j.reserved(&id, "linux", "vmhost01", t0 + ms(10));
            j.awake(&id, ms(0), t0 + ms(10));
            j.mark(&id, Stage::Started, t0 + ms(20));
            let r = j.agent(&id, t0 + ms(30)).expect("started");
            assert_eq!(r.via, Via::Listing);
            assert_eq!(r.total(), ms(30));
        }
        let recent = j.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].job, "job59");
        assert_eq!(recent[RECENT - 1].job, "job10");
        assert!(j.open().is_empty());
    }

    #[test]
    fn the_journal_lists_jobs_in_flight_furthest_first_and_forgets_gone_ones() {
        let j = Journal::default();
        let t0 = Instant::now();
        j.seen("waiting", Via::Listing, t0);
        j.seen("booting", Via::Listing, t0);
        j.seen("gone", Via::Listing, t0);
        j.reserved("booting", "linux", "vmhost02", t0);
        j.awake("booting", ms(4_000), t0 + ms(4_000));
        j.mark("booting", Stage::Started, t0 + ms(4_300));
        j.retain(|id| id != "gone");
        let open = j.open();
        let seen: Vec<(&str, Stage)> = open.iter().map(|r| (r.job.as_str(), r.reached())).collect();
        assert_eq!(
            seen,
            vec![("booting", Stage::Started), ("waiting", Stage::Seen)]
        );
        assert_eq!(open[0].wake, Some(ms(4_000)));
        j.drop_job("booting");
        assert_eq!(j.open().len(), 1);
    }
}

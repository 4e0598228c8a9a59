//! The daemon's loop: every interval ask each monitor, feed the idle
//! tracker, and carry out what it says.

use crate::action::{Action, Executor};
use crate::idle::{Event, IdleTracker, Timing};
use crate::log;
use crate::monitor::Monitor;
use std::time::{Duration, Instant};

/// Time as the daemon sees it; tests substitute a clock they advance.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Waits `d`.
    fn sleep(&self, d: Duration);
    /// Total time the machine has spent suspended since boot (the monotonic
    /// clock stands still meanwhile, so a resume is otherwise invisible).
    fn suspended(&self) -> Duration;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }

    fn suspended(&self) -> Duration {
        clock_gettime(libc::CLOCK_BOOTTIME).saturating_sub(clock_gettime(libc::CLOCK_MONOTONIC))
    }
}

fn clock_gettime(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A configured, running daemon.
pub struct Daemon<C: Clock, E: Executor> {
    clock: C,
    exec: E,
    interval: Duration,
    monitors: Vec<Box<dyn Monitor>>,
    actions: Vec<Action>,
    tracker: IdleTracker,
    /// [`Clock::suspended`] at the last tick.
    suspended: Duration,
    /// The last error of each monitor, so a lasting failure is logged once
    /// rather than every interval.
    last_errors: Vec<Option<String>>,
}

impl<C: Clock, E: Executor> Daemon<C, E> {
    /// A daemon whose idle time starts counting now.
    pub fn new(
        clock: C,
        exec: E,
        interval: Duration,
        monitors: Vec<Box<dyn Monitor>>,
        actions: Vec<(Action, Timing)>,
    ) -> Self {
        let tracker = IdleTracker::new(actions.iter().map(|(_, t)| *t), clock.now());
        let suspended = clock.suspended();
        Self {
            suspended,
            clock,
            exec,
            interval,
            monitors,
            actions: actions.into_iter().map(|(a, _)| a).collect(),
            tracker,
            last_errors: Vec::new(),
        }
    }

    /// Waits one interval, asks every monitor, and acts; returns what
    /// happened.
    pub fn tick(&mut self) -> Vec<Event> {
        self.clock.sleep(self.interval);
        let mut active = Vec::new();
        // Every monitor is asked each time: port monitors reset on asking,
        // so stopping at the first active one would lose their packets.
        self.last_errors.resize(self.monitors.len(), None);
        for (m, last_error) in self.monitors.iter_mut().zip(&mut self.last_errors) {
            let result = m.check().map_err(|e| e.to_string());
            match (&result, last_error.as_deref()) {
                (Err(e), last) if last != Some(e.as_str()) => {
                    log::warn(&format!(
                        "monitor {}: {e}; counting it as activity",
                        m.describe()
                    ));
                }
                (Ok(_), Some(_)) => log::info(&format!("monitor {} works again", m.describe())),
                _ => {}
            }
            *last_error = result.as_ref().err().cloned();
            if result.unwrap_or(true) {
                active.push(m.describe());
            }
        }
        // Waking from a suspend action counts as activity (as the seed's
        // sleep hook makes it), so an idle machine suspends again only
        // after a full idle time, and the action's recovery runs.
        let suspended = self.clock.suspended();
        if suspended > self.suspended + Duration::from_secs(1) {
            log::info(&format!(
                "resumed after {:?} suspended",
                suspended - self.suspended
            ));
            active.push("resume".into());
        }
        self.suspended = suspended;
        let now = self.clock.now();
        if active.is_empty() {
            log::debug(&format!("idle for {:?}", self.tracker.idle_for(now)));
        } else {
            log::debug(&format!("active: {}", active.join(", ")));
        }
        let events = self.tracker.update(!active.is_empty(), now);
        for e in &events {
            match *e {
                Event::Warn { action, remaining } => {
                    self.exec.warn(&self.actions[action], remaining)
                }
                Event::Rescind { action } => self.exec.rescind(&self.actions[action]),
                Event::Trigger { action } => self.exec.run(&self.actions[action], false),
                Event::Recover { action } => self.exec.run(&self.actions[action], true),
            }
        }
        events
    }

    /// Runs until the process ends.
    pub fn run(&mut self) -> ! {
        loop {
            self.tick();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Runner;
    use crate::monitor::MonitorError;
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// A clock that moves only when the daemon sleeps.
    struct FakeClock {
        base: Instant,
        offset: Rc<Cell<Duration>>,
        suspended: Rc<Cell<Duration>>,
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.base + self.offset.get()
        }
        fn sleep(&self, d: Duration) {
            self.offset.set(self.offset.get() + d);
        }
        fn suspended(&self) -> Duration {
            self.suspended.get()
        }
    }

    /// A monitor that reports a scripted sequence, then idleness.
    struct Scripted(VecDeque<Result<bool, MonitorError>>);

    impl Monitor for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn check(&mut self) -> Result<bool, MonitorError> {
            self.0.pop_front().unwrap_or(Ok(false))
        }
    }

    type Log = Rc<std::cell::RefCell<Vec<String>>>;

    #[derive(Default)]
    struct Recorder(Log);

    impl Executor for Recorder {
        fn run(&mut self, a: &Action, recovering: bool) {
            let verb = if recovering { "recover" } else { "run" };
            self.0.borrow_mut().push(format!("{verb} {}", a.name));
        }
        fn warn(&mut self, a: &Action, remaining: Duration) {
            self.0
                .borrow_mut()
                .push(format!("warn {} {}s", a.name, remaining.as_secs()));
        }
        fn rescind(&mut self, a: &Action) {
            self.0.borrow_mut().push(format!("rescind {}", a.name));
        }
    }

    struct Harness {
        daemon: Daemon<FakeClock, Recorder>,
        log: Log,
        /// Monotonic time since the daemon started.
        offset: Rc<Cell<Duration>>,
        /// Time spent suspended.
        suspended: Rc<Cell<Duration>>,
    }

    /// A daemon checking every 2 s, acting after 10 s idle, warning 4 s
    /// before.
    fn daemon(script: Vec<Result<bool, MonitorError>>) -> Harness {
        let offset = Rc::new(Cell::new(Duration::ZERO));
        let suspended = Rc::new(Cell::new(Duration::ZERO));
        let clock = FakeClock {
            base: Instant::now(),
            offset: offset.clone(),
            suspended: suspended.clone(),
        };
        let rec = Recorder::default();
        let log = rec.0.clone();
        let action = Action {
            name: "sleep".into(),
            runner: Runner::Shell {
                command: "true".into(),
                recover: None,
            },
        };
        let timing = Timing {
            after: Duration::from_secs(10),
            warn: Some(Duration::from_secs(4)),
        };
        let daemon = Daemon::new(
            clock,
            rec,
            Duration::from_secs(2),
            vec![Box::new(Scripted(script.into()))],
            vec![(action, timing)],
        );
        Harness {
            daemon,
            log,
            offset,
            suspended,
        }
    }

    #[test]
    fn idle_host_is_warned_then_acted_on_at_the_configured_times() {
        let mut h = daemon(vec![]);
        let mut when = Vec::new();
        for _ in 0..8 {
            if !h.daemon.tick().is_empty() {
                when.push(h.offset.get().as_secs());
            }
        }
        assert_eq!(*h.log.borrow(), ["warn sleep 4s", "run sleep"]);
        assert_eq!(when, [6, 10]);
    }

    #[test]
    fn activity_holds_the_action_off_and_brings_recovery() {
        // Active at 2 s and 4 s, idle until 14 s, active at 16 s.
        let mut script = vec![Ok(true), Ok(true)];
        script.extend((0..5).map(|_| Ok(false)));
        script.push(Ok(true));
        let mut h = daemon(script);
        for _ in 0..8 {
            h.daemon.tick();
        }
        assert_eq!(
            *h.log.borrow(),
            ["warn sleep 4s", "run sleep", "recover sleep"]
        );
    }

    #[test]
    fn a_monitor_that_cannot_tell_keeps_the_host_up() {
        let broken = || Err(MonitorError::NoTcpTable);
        let mut h = daemon((0..10).map(|_| broken()).collect());
        for _ in 0..10 {
            h.daemon.tick();
        }
        assert!(h.log.borrow().is_empty());
    }

    #[test]
    fn resuming_from_suspend_counts_as_activity() {
        let mut h = daemon(vec![]);
        for _ in 0..5 {
            h.daemon.tick();
        }
        assert_eq!(*h.log.borrow(), ["warn sleep 4s", "run sleep"]);
        // The action suspended the machine for an hour; nothing else
        // happens after the resume.
        h.suspended.set(Duration::from_secs(3600));
        h.daemon.tick();
        assert_eq!(
            *h.log.borrow(),
            ["warn sleep 4s", "run sleep", "recover sleep"]
        );
        for _ in 0..5 {
            h.daemon.tick();
        }
        assert_eq!(h.log.borrow().len(), 5, "{:?}", h.log.borrow());
        assert_eq!(h.log.borrow()[4], "run sleep");
    }
}

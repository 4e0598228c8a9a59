//! When to warn, act and recover: a pure state machine over "was there
//! activity at time T", so the timing can be tested without waiting.

use std::time::{Duration, Instant};

/// Something the daemon must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Tell users action `action` runs in `remaining`.
    Warn {
        /// Index into the configured actions.
        action: usize,
        /// Time left before it runs.
        remaining: Duration,
    },
    /// Activity came back before the action ran: take the warning back.
    Rescind {
        /// Index into the configured actions.
        action: usize,
    },
    /// The system has been idle for the action's `after`: run it.
    Trigger {
        /// Index into the configured actions.
        action: usize,
    },
    /// Activity came back after the action ran: run its recovery.
    Recover {
        /// Index into the configured actions.
        action: usize,
    },
}

/// One action's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Idle time before the action runs.
    pub after: Duration,
    /// How long before it runs to warn.
    pub warn: Option<Duration>,
}

#[derive(Debug)]
struct State {
    timing: Timing,
    warned: bool,
    triggered: bool,
}

/// Tracks idleness and the state of every action.
#[derive(Debug)]
pub struct IdleTracker {
    last_activity: Instant,
    actions: Vec<State>,
}

impl IdleTracker {
    /// Starts counting idleness from `now` (the daemon starting counts as
    /// activity, so a fresh boot is never acted on at once).
    pub fn new(timings: impl IntoIterator<Item = Timing>, now: Instant) -> Self {
        Self {
            last_activity: now,
            actions: timings
                .into_iter()
                .map(|timing| State {
                    timing,
                    warned: false,
                    triggered: false,
                })
                .collect(),
        }
    }

    /// How long the system has been idle at `now`.
    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_activity)
    }

    /// Records whether there was activity at `now` and returns what to do.
    pub fn update(&mut self, active: bool, now: Instant) -> Vec<Event> {
        if active || now < self.last_activity {
            self.last_activity = now;
        }
        let idle = self.idle_for(now);
        let mut events = Vec::new();
        for (i, a) in self.actions.iter_mut().enumerate() {
            let due = idle >= a.timing.after;
            let remaining = a.timing.after.saturating_sub(idle);
            if let Some(warn) = a.timing.warn {
                let in_warn_window = !due && remaining <= warn;
                if in_warn_window && !a.warned {
                    events.push(Event::Warn {
                        action: i,
                        remaining,
                    });
                    a.warned = true;
                } else if !due && !in_warn_window && a.warned && !a.triggered {
                    events.push(Event::Rescind { action: i });
                    a.warned = false;
                }
            }
            if due && !a.triggered {
                events.push(Event::Trigger { action: i });
                a.triggered = true;
            } else if !due && a.triggered {
                events.push(Event::Recover { action: i });
                a.triggered = false;
                a.warned = false;
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Feeds one activity sample per second and collects (second, event).
    fn run(timings: &[Timing], activity: &[bool]) -> Vec<(u64, Event)> {
        let t0 = Instant::now();
        let mut tr = IdleTracker::new(timings.iter().copied(), t0);
        let mut out = Vec::new();
        for (s, &active) in activity.iter().enumerate() {
            let s = s as u64 + 1;
            for e in tr.update(active, t0 + secs(s)) {
                out.push((s, e));
            }
        }
        out
    }

    const POWEROFF: Timing = Timing {
        after: Duration::from_secs(5),
        warn: Some(Duration::from_secs(2)),
    };

    #[test]
    fn idle_system_is_warned_then_acted_on_once() {
        let ev = run(&[POWEROFF], &[false; 10]);
        assert_eq!(
            ev,
            vec![
                (
                    3,
                    Event::Warn {
                        action: 0,
                        remaining: secs(2)
                    }
                ),
                (5, Event::Trigger { action: 0 }),
            ]
        );
    }

    #[test]
    fn activity_keeps_resetting_the_count() {
        let mut activity = [false; 12];
        activity[3] = true; // second 4
        let ev = run(
            &[Timing {
                after: secs(5),
                warn: None,
            }],
            &activity,
        );
        assert_eq!(ev, vec![(9, Event::Trigger { action: 0 })]);
        assert!(run(&[POWEROFF], &[true; 20]).is_empty());
    }

    #[test]
    fn activity_during_the_warning_rescinds_it() {
        let mut activity = [false; 6];
        activity[3] = true; // second 4: warned at 3, then active
        let ev = run(&[POWEROFF], &activity);
        assert_eq!(
            ev,
            vec![
                (
                    3,
                    Event::Warn {
                        action: 0,
                        remaining: secs(2)
                    }
                ),
                (4, Event::Rescind { action: 0 }),
            ]
        );
    }

    #[test]
    fn activity_after_the_action_recovers_and_the_cycle_restarts() {
        let mut activity = [false; 14];
        activity[6] = true; // second 7
        let ev = run(
            &[Timing {
                after: secs(5),
                warn: None,
            }],
            &activity,
        );
        assert_eq!(
            ev,
            vec![
                (5, Event::Trigger { action: 0 }),
                (7, Event::Recover { action: 0 }),
                (12, Event::Trigger { action: 0 }),
            ]
        );
    }

    #[test]
    fn several_actions_run_in_order_of_their_idle_times() {
        let ev = run(
            &[
                Timing {
                    after: secs(2),
                    warn: None,
                },
                Timing {
                    after: secs(4),
                    warn: None,
                },
            ],
            &[false; 5],
        );
        assert_eq!(
            ev,
            vec![
                (2, Event::Trigger { action: 0 }),
                (4, Event::Trigger { action: 1 }),
            ]
        );
    }

    #[test]
    fn clock_going_backwards_counts_as_a_fresh_start() {
        let t0 = Instant::now() + secs(100);
        let mut tr = IdleTracker::new([POWEROFF], t0);
        assert!(tr.update(false, t0 - secs(50)).is_empty());
        assert_eq!(tr.idle_for(t0 - secs(50)), Duration::ZERO);
    }
}

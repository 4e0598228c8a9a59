//! The machine's power state, for `shutdown /r` and `shutdown /a`: a
//! restart is scheduled for `/t N` seconds (abortable until then), then
//! the machine is stopping for [`Reboot::grace`] (WinRM still answers,
//! another `shutdown /r` gets 1115), then down for [`Reboot::down`]
//! (every connection is dropped), then up again with no shells open.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a restart plays out once its `/t` delay has passed.
#[derive(Debug, Clone, Copy)]
pub struct Reboot {
    /// Stopping: still answering WinRM, as Windows does while it logs off.
    pub grace: Duration,
    /// Down: every connection dropped.
    pub down: Duration,
}

impl Default for Reboot {
    fn default() -> Reboot {
        Reboot {
            grace: Duration::from_secs(2),
            down: Duration::from_secs(3),
        }
    }
}

/// Where the machine is in a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Running, no restart pending.
    Up,
    /// A restart is scheduled and may still be aborted.
    Scheduled,
    /// Restarting, still answering.
    Stopping,
    /// Restarting, not answering.
    Down,
}

/// `ERROR_SHUTDOWN_IN_PROGRESS`.
pub const SHUTDOWN_IN_PROGRESS: i32 = 1115;
/// `ERROR_NO_SHUTDOWN_IN_PROGRESS`.
pub const NO_SHUTDOWN_IN_PROGRESS: i32 = 1116;
/// `ERROR_SHUTDOWN_IS_SCHEDULED`.
pub const SHUTDOWN_IS_SCHEDULED: i32 = 1190;

#[derive(Debug, Default)]
struct State {
    /// When the pending restart begins stopping.
    reboot_at: Option<Instant>,
    /// Restarts that reached Down.
    downs: u64,
    /// Whether the pending restart has been counted in `downs`.
    counted: bool,
}

/// The power state one stand-in's commands and connections share.
#[derive(Debug)]
pub struct Power {
    reboot: Reboot,
    state: Mutex<State>,
}

impl Power {
    pub fn new(reboot: Reboot) -> Power {
        Power {
            reboot,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The phase now, and how many restarts have gone down so far.
    pub fn phase(&self) -> (Phase, u64) {
        let mut s = self.state();
        let now = Instant::now();
        let Some(at) = s.reboot_at else {
            return (Phase::Up, s.downs);
        };
        let phase = if now < at {
            Phase::Scheduled
        } else if now < at + self.reboot.grace {
            Phase::Stopping
        } else if now < at + self.reboot.grace + self.reboot.down {
            Phase::Down
        } else {
            Phase::Up
        };
        if matches!(phase, Phase::Down | Phase::Up) && !s.counted {
            s.downs += 1;
            s.counted = true;
        }
        if phase == Phase::Up {
            s.reboot_at = None;
            s.counted = false;
        }
        (phase, s.downs)
    }

    /// `shutdown /r /t N`; an error is the exit code Windows gives.
    pub fn schedule_restart(&self, after: Duration) -> Result<(), i32> {
        match self.phase().0 {
            Phase::Up => {
                self.state().reboot_at = Some(Instant::now() + after);
                Ok(())
            }
            Phase::Scheduled => Err(SHUTDOWN_IS_SCHEDULED),
            Phase::Stopping | Phase::Down => Err(SHUTDOWN_IN_PROGRESS),
        }
    }

    /// `shutdown /a`; an error is the exit code Windows gives.
    pub fn abort(&self) -> Result<(), i32> {
        match self.phase().0 {
            Phase::Scheduled => {
                self.state().reboot_at = None;
                Ok(())
            }
            Phase::Up => Err(NO_SHUTDOWN_IN_PROGRESS),
            Phase::Stopping | Phase::Down => Err(SHUTDOWN_IN_PROGRESS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_is_scheduled_then_stopping_then_down_then_up() {
        let ms = Duration::from_millis;
        let p = Power::new(Reboot {
            grace: ms(200),
            down: ms(200),
        });
        assert_eq!(p.abort(), Err(NO_SHUTDOWN_IN_PROGRESS));
        assert_eq!(p.schedule_restart(ms(200)), Ok(()));
        assert_eq!(p.phase(), (Phase::Scheduled, 0));
        assert_eq!(p.schedule_restart(ms(0)), Err(SHUTDOWN_IS_SCHEDULED));
        assert_eq!(p.abort(), Ok(()));
        assert_eq!(p.phase(), (Phase::Up, 0));
        assert_eq!(p.schedule_restart(ms(0)), Ok(()));
        assert_eq!(p.phase(), (Phase::Stopping, 0));
        assert_eq!(p.schedule_restart(ms(0)), Err(SHUTDOWN_IN_PROGRESS));
        assert_eq!(p.abort(), Err(SHUTDOWN_IN_PROGRESS));
        std::thread::sleep(ms(250));
        assert_eq!(p.phase(), (Phase::Down, 1));
        std::thread::sleep(ms(200));
        assert_eq!(p.phase(), (Phase::Up, 1));
        assert_eq!(p.phase(), (Phase::Up, 1));
    }
}

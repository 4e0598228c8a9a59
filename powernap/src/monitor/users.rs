//! `monitor users [max-idle <duration>]`: someone is logged in.

use super::{Monitor, MonitorError};
use std::time::{Duration, SystemTime};

/// A login session from utmp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user name.
    pub user: String,
    /// The terminal, e.g. `pts/0`.
    pub line: String,
    /// Time since the terminal was last read from (typed on), as `w`
    /// computes it; `None` when the terminal cannot be examined.
    pub idle: Option<Duration>,
}

/// Active while a user session exists (with `max_idle`, one that has typed
/// something within that time).
pub struct UsersMonitor {
    max_idle: Option<Duration>,
}

impl UsersMonitor {
    /// A monitor counting sessions idle at most `max_idle`.
    pub fn new(max_idle: Option<Duration>) -> Self {
        Self { max_idle }
    }
}

/// True when any session counts as activity.
pub fn any_active(sessions: &[Session], max_idle: Option<Duration>) -> bool {
    sessions.iter().any(|s| match (max_idle, s.idle) {
        (None, _) => true,
        (Some(max), Some(idle)) => idle <= max,
        (Some(_), None) => false,
    })
}

/// The user sessions utmp lists now.
pub fn sessions() -> Vec<Session> {
    let mut out = Vec::new();
    // SAFETY: the utmpx iteration functions are only used from this
    // monitor, one call at a time; each entry is copied before the next.
    unsafe {
        libc::setutxent();
        loop {
            let ent = libc::getutxent();
            if ent.is_null() {
                break;
            }
            let ent = &*ent;
            if ent.ut_type != libc::USER_PROCESS {
                continue;
            }
            let user = c_chars(&ent.ut_user);
            let line = c_chars(&ent.ut_line);
            if user.is_empty() {
                continue;
            }
            out.push(Session {
                idle: tty_idle(&line),
                user,
                line,
            });
        }
        libc::endutxent();
    }
    out
}

fn c_chars(field: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn tty_idle(line: &str) -> Option<Duration> {
    if line.is_empty() || line.contains("..") {
        return None;
    }
    let atime = std::fs::metadata(format!("/dev/{line}"))
        .ok()?
        .accessed()
        .ok()?;
    Some(SystemTime::now().duration_since(atime).unwrap_or_default())
}

impl Monitor for UsersMonitor {
    fn describe(&self) -> String {
        match self.max_idle {
            None => "users".into(),
            Some(d) => format!("users max-idle {d:?}"),
        }
    }

    fn check(&mut self) -> Result<bool, MonitorError> {
        Ok(any_active(&sessions(), self.max_idle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(idle: Option<u64>) -> Session {
        Session {
            user: "ci".into(),
            line: "pts/0".into(),
            idle: idle.map(Duration::from_secs),
        }
    }

    #[test]
    fn any_session_counts_without_max_idle() {
        assert!(!any_active(&[], None));
        assert!(any_active(&[s(None)], None));
        assert!(any_active(&[s(Some(86_400))], None));
    }

    #[test]
    fn max_idle_ignores_sessions_idle_longer() {
        let max = Some(Duration::from_secs(600));
        assert!(!any_active(&[s(Some(601)), s(None)], max));
        assert!(any_active(&[s(Some(601)), s(Some(599))], max));
    }
}

//! The daemon's log: standard error, plus a file or syslog when the config
//! says so.

use crate::config::LogTarget;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

struct Sink {
    debug: bool,
    file: Option<std::fs::File>,
    syslog: Option<UnixDatagram>,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    debug: false,
    file: None,
    syslog: None,
});

/// Why the configured log destination cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file cannot be opened for appending.
    #[error("log {}: cannot open: {source}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No datagram socket could be made.
    #[error("log syslog: {0}")]
    Socket(std::io::Error),
    /// `/dev/log` does not answer.
    #[error("log syslog: cannot connect to /dev/log: {0}")]
    Connect(std::io::Error),
}

/// Sets the level and the extra destination.
pub fn init(debug: bool, target: Option<&LogTarget>) -> Result<(), LogError> {
    let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
    s.debug = debug;
    match target {
        None => {}
        Some(LogTarget::File(p)) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| LogError::File {
                    path: p.clone(),
                    source,
                })?;
            s.file = Some(f);
        }
        Some(LogTarget::Syslog) => {
            let sock = UnixDatagram::unbound().map_err(LogError::Socket)?;
            sock.connect("/dev/log").map_err(LogError::Connect)?;
            s.syslog = Some(sock);
        }
    }
    Ok(())
}

fn write(level: &str, severity: u8, msg: &str) {
    let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if level == "DEBUG" && !s.debug {
        return;
    }
    let _ = writeln!(std::io::stderr(), "powernapd: {level} {msg}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    if let Some(f) = s.file.as_mut() {
        let _ = writeln!(f, "{now:.3} {level:<8} {msg}");
    }
    if let Some(sock) = s.syslog.as_ref() {
        // Facility daemon (3).
        let _ = sock.send(format!("<{}>powernapd: {msg}", 3 * 8 + severity).as_bytes());
    }
}

/// Logs at debug level (shown with `debug` or `--debug`).
pub fn debug(msg: &str) {
    write("DEBUG", 7, msg);
}

/// Logs at info level.
pub fn info(msg: &str) {
    write("INFO", 6, msg);
}

/// Logs a warning.
pub fn warn(msg: &str) {
    write("WARNING", 4, msg);
}

/// Logs an error.
pub fn error(msg: &str) {
    write("ERROR", 3, msg);
}

/// Lets through at most `max` messages per `window`; the first message
/// after a full window also says how many were dropped. Keeps a flood of
/// packets from filling the disk with log lines.
#[derive(Debug)]
pub struct Limiter {
    max: u32,
    window: std::time::Duration,
    start: Option<std::time::Instant>,
    count: u32,
    dropped: u64,
}

impl Limiter {
    /// A limiter for `max` messages per `window`.
    pub fn new(max: u32, window: std::time::Duration) -> Self {
        Self {
            max,
            window,
            start: None,
            count: 0,
            dropped: 0,
        }
    }

    /// `Some(msg)` (with a note of what was dropped before it) when `msg`
    /// may be logged at `now`, `None` when it must be dropped.
    pub fn admit(&mut self, msg: &str, now: std::time::Instant) -> Option<String> {
        let expired = self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if expired {
            self.start = Some(now);
            self.count = 0;
        }
        if self.count >= self.max {
            self.dropped += 1;
            return None;
        }
        self.count += 1;
        Some(match std::mem::take(&mut self.dropped) {
            0 => msg.to_string(),
            n => format!("{msg} ({n} similar messages dropped before this one)"),
        })
    }
}

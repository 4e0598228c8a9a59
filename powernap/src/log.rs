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

/// Sets the level and the extra destination.
pub fn init(debug: bool, target: Option<&LogTarget>) -> Result<(), String> {
    let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
    s.debug = debug;
    match target {
        None => {}
        Some(LogTarget::File(p)) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("log {}: cannot open: {e}", p.display()))?;
            s.file = Some(f);
        }
        Some(LogTarget::Syslog) => {
            let sock = UnixDatagram::unbound().map_err(|e| format!("log syslog: {e}"))?;
            sock.connect("/dev/log")
                .map_err(|e| format!("log syslog: cannot connect to /dev/log: {e}"))?;
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

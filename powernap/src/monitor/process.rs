//! `monitor process <regex>`: a process whose command line matches runs.

use super::{Monitor, MonitorError};
use regex::Regex;

/// Matches the regex against every process's command line, arguments
/// joined by spaces (as `ps -eo args` shows them; kernel threads as
/// `[name]`).
pub struct ProcessMonitor {
    re: Regex,
}

impl ProcessMonitor {
    /// A monitor for `re`.
    pub fn new(re: Regex) -> Self {
        Self { re }
    }

    /// The first matching command line, if any (our own is skipped).
    pub fn find(&self) -> Result<Option<(u32, String)>, MonitorError> {
        let me = std::process::id();
        let dir = std::fs::read_dir("/proc").map_err(|source| MonitorError::Proc {
            path: "/proc",
            source,
        })?;
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            // A process may exit between listing and reading: skip it.
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args = if raw.is_empty() {
                match std::fs::read_to_string(entry.path().join("comm")) {
                    Ok(c) => format!("[{}]", c.trim_end()),
                    Err(_) => continue,
                }
            } else {
                let trimmed = raw.strip_suffix(&[0]).unwrap_or(&raw);
                String::from_utf8_lossy(trimmed).replace('\0', " ")
            };
            if self.re.is_match(&args) {
                return Ok(Some((pid, args)));
            }
        }
        Ok(None)
    }
}

impl Monitor for ProcessMonitor {
    fn describe(&self) -> String {
        format!("process {}", self.re)
    }

    fn check(&mut self) -> Result<bool, MonitorError> {
        self.find().map(|found| found.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_running_process_by_its_arguments_and_not_after_it_exits() {
        let tag = format!("powernap-test-{}", std::process::id());
        // `exec -a` gives the sleep a distinctive argv[0].
        let mut child = std::process::Command::new("bash")
            .args(["-c", &format!("exec -a {tag} sleep 30")])
            .spawn()
            .unwrap();
        let re = Regex::new(&format!("^{tag} 30$")).unwrap();
        let mut m = ProcessMonitor::new(re);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !m.check().unwrap() {
            assert!(std::time::Instant::now() < deadline, "never saw {tag}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(m.find().unwrap().unwrap().0, child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!m.check().unwrap());
    }
}

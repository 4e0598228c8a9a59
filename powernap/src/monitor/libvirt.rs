//! `monitor libvirt [uri]`: a VM host is busy while any domain runs.

use super::Monitor;
use std::process::{Command, Stdio};

/// Active while the libvirt at `uri` has a running domain; asks `virsh`, so
/// powernapd does not link libvirt (it also runs inside guests that have
/// none).
pub struct LibvirtMonitor {
    uri: String,
}

impl LibvirtMonitor {
    /// A monitor for the libvirt at `uri`.
    pub fn new(uri: String) -> Self {
        Self { uri }
    }

    /// The names of the running domains.
    pub fn running(&self) -> Result<Vec<String>, String> {
        let out = Command::new("virsh")
            .args(["-q", "-c", &self.uri, "list", "--state-running", "--name"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run virsh (install libvirt-clients): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "virsh -c {} list failed ({}): {}",
                self.uri,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(parse_names(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// The non-empty lines of `virsh list --name` output.
pub fn parse_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

impl Monitor for LibvirtMonitor {
    fn describe(&self) -> String {
        format!("libvirt {}", self.uri)
    }

    fn check(&mut self) -> Result<bool, String> {
        self.running().map(|names| !names.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_not_domains() {
        assert!(parse_names("\n\n").is_empty());
        assert_eq!(
            parse_names("agent-1\nagent-2\n\n"),
            vec!["agent-1", "agent-2"]
        );
    }

    #[test]
    fn the_test_drivers_running_domain_makes_the_host_busy() {
        // libvirt's built-in test driver starts with one running domain.
        let mut m = LibvirtMonitor::new("test:///default".into());
        assert_eq!(m.running().unwrap(), vec!["test"]);
        assert!(m.check().unwrap());
    }

    #[test]
    fn an_unreachable_libvirt_is_an_error_not_idleness() {
        let m = LibvirtMonitor::new("test+unix:///nonexistent/socket".into());
        assert!(m.running().is_err());
    }
}

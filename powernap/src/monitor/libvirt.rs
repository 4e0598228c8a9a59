//! `monitor libvirt [uri]`: a VM host is busy while any domain runs.

use super::{Monitor, MonitorError};
use kvmhost::libvirt::domain::PowerState;
use kvmhost::libvirt::Host;

/// Active while the libvirt at `uri` has a domain that is not shut off
/// (running, paused or shutting down: powering off would lose it).
pub struct LibvirtMonitor {
    uri: String,
    /// Opened on first use and again after a failure, so libvirtd may start
    /// after powernapd or restart under it.
    host: Option<Host>,
}

impl LibvirtMonitor {
    /// A monitor for the libvirt at `uri`.
    pub fn new(uri: String) -> Self {
        Self { uri, host: None }
    }

    /// The names of the domains that are not shut off.
    pub fn live_domains(&mut self) -> Result<Vec<String>, MonitorError> {
        let result = self.query();
        if result.is_err() {
            self.host = None;
        }
        result
    }

    fn query(&mut self) -> Result<Vec<String>, MonitorError> {
        if !self.host.as_ref().is_some_and(Host::is_alive) {
            self.host = Some(Host::open(&self.uri)?);
        }
        let host = self.host.as_ref().expect("opened above");
        let mut live = Vec::new();
        for name in host.domain_names()? {
            match host.domain_status(&name) {
                Ok(s) if s.state != PowerState::ShutOff => live.push(name),
                Ok(_) => {}
                // A transient domain that stopped since the listing.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(live)
    }
}

impl Monitor for LibvirtMonitor {
    fn describe(&self) -> String {
        format!("libvirt {}", self.uri)
    }

    fn check(&mut self) -> Result<bool, MonitorError> {
        self.live_domains().map(|names| !names.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_drivers_running_domain_makes_the_host_busy() {
        // libvirt's in-process test driver starts with one running domain.
        let mut m = LibvirtMonitor::new("test:///default".into());
        assert_eq!(m.live_domains().unwrap(), vec!["test"]);
        assert!(m.check().unwrap());
    }

    #[test]
    fn an_unreachable_libvirt_is_an_error_not_idleness() {
        let mut m = LibvirtMonitor::new("qemu+unix:///system?socket=/nonexistent/sock".into());
        let e = m.check().unwrap_err().to_string();
        assert!(e.contains("nonexistent"), "{e}");
    }
}

//! Waiting for a guest's addresses, the one poll policy every program uses.
//!
//! A guest that has just started has no address yet: its DHCP client, or
//! its guest agent, needs a few seconds. [`AddressWait`] says which
//! interfaces (by MAC) must hold an address, where to learn it from and
//! until when; [`Host::wait_for_addresses`] polls for it on the calling
//! thread, and `wait_for_addresses_async` (the `async` feature) does the
//! same from async code, each look on the blocking pool, so that dropping
//! the future stops the wait.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::domain::{AddressSource, GuestInterface};
use super::Host;

/// Which addresses count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Any address the source reports.
    Any,
    /// IPv4 addresses only.
    Ipv4,
}

/// What to wait for: each of `macs` holding an address of `family`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressWait {
    /// Domain name or UUID.
    pub domain: String,
    /// MACs of the interfaces that must hold an address, in the caller's
    /// order; compared without regard to case.
    pub macs: Vec<String>,
    /// Where the addresses are learned from.
    pub source: AddressSource,
    /// Which addresses count.
    pub family: Family,
    /// When to give up.
    pub deadline: Instant,
}

/// No address in time for the interface at `index` of
/// [`AddressWait::macs`] (the first one still without).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAddress {
    /// Position of the interface in [`AddressWait::macs`].
    pub index: usize,
    /// Its MAC, lower case.
    pub mac: String,
}

/// The first look comes this soon after start; later looks back off to
/// [`SLOWEST_POLL`], so a quick guest is seen quickly and a slow one does
/// not keep libvirt busy.
const FIRST_POLL: Duration = Duration::from_millis(100);
/// The longest pause between two looks.
const SLOWEST_POLL: Duration = Duration::from_millis(500);

/// The pause after look number `looks` (0 for the first).
fn pause(looks: u32) -> Duration {
    FIRST_POLL
        .saturating_mul(1 << looks.min(8))
        .min(SLOWEST_POLL)
}

impl AddressWait {
    /// For each wanted MAC, the first address of the right family in
    /// `found`; the index of the first MAC without one otherwise.
    pub fn pick(&self, found: &[GuestInterface]) -> Result<Vec<String>, NoAddress> {
        self.macs
            .iter()
            .enumerate()
            .map(|(index, mac)| {
                found
                    .iter()
                    .filter(|i| i.mac.eq_ignore_ascii_case(mac))
                    .flat_map(|i| i.addresses.iter())
                    .find(|a| match self.family {
                        Family::Any => true,
                        Family::Ipv4 => a.parse::<Ipv4Addr>().is_ok(),
                    })
                    .cloned()
                    .ok_or_else(|| NoAddress {
                        index,
                        mac: mac.to_ascii_lowercase(),
                    })
            })
            .collect()
    }

    /// One look: the addresses if every interface has one. A failed read
    /// counts as "none yet", since a guest that is still starting (or an
    /// agent not yet up) makes libvirt refuse.
    fn look(&self, host: &Host) -> Result<Vec<String>, NoAddress> {
        let found = host
            .domain_addresses(&self.domain, self.source)
            .unwrap_or_default();
        self.pick(&found)
    }
}

impl Host {
    /// Waits on this thread until every interface of `wait` holds an
    /// address, looking at least once; the addresses in `wait.macs` order.
    pub fn wait_for_addresses(&self, wait: &AddressWait) -> Result<Vec<String>, NoAddress> {
        let mut looks = 0;
        loop {
            match wait.look(self) {
                Ok(found) => return Ok(found),
                Err(missing) if Instant::now() >= wait.deadline => return Err(missing),
                Err(_) => {}
            }
            std::thread::sleep(pause(looks));
            looks += 1;
        }
    }
}

/// [`Host::wait_for_addresses`] for async callers: each look runs on the
/// blocking pool and the pauses are timer sleeps, so dropping the future
/// (a cancelled build) ends the wait at once.
#[cfg(feature = "async")]
pub async fn wait_for_addresses_async(
    conn: &super::handle::Connection,
    wait: AddressWait,
) -> Result<Vec<String>, NoAddress> {
    let wait = std::sync::Arc::new(wait);
    let mut looks = 0;
    loop {
        let w = wait.clone();
        let seen = conn
            .run(move |h| w.look(h))
            .await
            // A look that panicked saw nothing; the deadline still ends the wait.
            .unwrap_or_else(|_| wait.pick(&[]));
        match seen {
            Ok(found) => return Ok(found),
            Err(missing) if Instant::now() >= wait.deadline => return Err(missing),
            Err(_) => {}
        }
        tokio::time::sleep(pause(looks)).await;
        looks += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(mac: &str, addrs: &[&str]) -> GuestInterface {
        GuestInterface {
            mac: mac.to_string(),
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn wait(macs: &[&str], family: Family) -> AddressWait {
        AddressWait {
            domain: "vm".into(),
            macs: macs.iter().map(|m| m.to_string()).collect(),
            source: AddressSource::Lease,
            family,
            deadline: Instant::now(),
        }
    }

    #[test]
    fn each_wanted_mac_gets_its_first_address_whatever_the_case() {
        let found = [
            iface("52:54:00:aa:bb:01", &["10.0.0.5"]),
            iface("52:54:00:aa:bb:02", &["fd00::2", "10.0.1.7"]),
        ];
        let w = wait(&["52:54:00:AA:BB:02", "52:54:00:aa:bb:01"], Family::Any);
        assert_eq!(w.pick(&found).unwrap(), vec!["fd00::2", "10.0.0.5"]);
        let w = wait(&["52:54:00:AA:BB:02"], Family::Ipv4);
        assert_eq!(w.pick(&found).unwrap(), vec!["10.0.1.7"]);
    }

    #[test]
    fn the_first_interface_without_an_address_is_named() {
        let found = [
            iface("52:54:00:aa:bb:01", &["10.0.0.5"]),
            iface("52:54:00:aa:bb:02", &[]),
            iface("52:54:00:aa:bb:03", &["fe80::1"]),
        ];
        let w = wait(
            &[
                "52:54:00:aa:bb:01",
                "52:54:00:aa:bb:03",
                "52:54:00:AA:BB:02",
            ],
            Family::Ipv4,
        );
        assert_eq!(
            w.pick(&found),
            Err(NoAddress {
                index: 1,
                mac: "52:54:00:aa:bb:03".into()
            })
        );
    }

    #[test]
    fn polling_starts_fast_and_eases_off() {
        assert_eq!(pause(0), FIRST_POLL);
        assert!(pause(1) > pause(0));
        assert_eq!(pause(40), SLOWEST_POLL);
    }

    #[test]
    fn a_guest_that_never_gets_an_address_times_out_after_one_look() {
        let host = Host::open("test:///default").unwrap();
        let mut w = wait(&["52:54:00:aa:bb:01"], Family::Any);
        w.domain = "test".into();
        let start = Instant::now();
        assert_eq!(host.wait_for_addresses(&w).unwrap_err().index, 0);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

//! A lock kept on the host itself, so that programs on any machine that
//! manage the same libvirt host can take turns (e.g. launchers checking
//! a host's room and then starting a VM there).
//!
//! The lock is an inactive, persistent domain of a fixed name that never
//! runs. libvirt refuses to define a second domain of a name that exists
//! (the new definition has a fresh UUID), so defining it is an atomic
//! test-and-set, done by libvirtd under its own lock; undefining it is the
//! release. The domain's `<description>` names the holder and the Unix
//! time until which the lock is held: a lock past that time belonged to a
//! holder that died, and is taken over by undefining exactly that domain.
//! libvirt undefines a domain by its UUID, so when two takers both find
//! the same stale lock, the second one's undefine fails (the stale domain
//! is gone, the first taker's new lock has another UUID) rather than
//! removing the new lock.

use std::time::{Duration, Instant, SystemTime};

use super::error::{Error, Result};
use super::Host;

/// A lock held on a host; released when dropped.
pub struct HostLock {
    dom: Option<virt::domain::Domain>,
    name: String,
}

impl std::fmt::Debug for HostLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLock")
            .field("name", &self.name)
            .finish()
    }
}

impl HostLock {
    /// Releases the lock now (dropping it does the same).
    pub fn release(mut self) {
        self.undefine();
    }

    fn undefine(&mut self) {
        if let Some(d) = self.dom.take() {
            // Gone already means it was taken over after its time: the
            // domain now of that name is someone else's.
            let _ = d.undefine();
        }
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        self.undefine();
    }
}

/// Who holds a lock and until when, from its description.
fn parse_description(text: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("until="))
        .and_then(|v| v.parse().ok())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

impl Host {
    /// Takes the host lock `name` for `owner` (shown to whoever waits),
    /// held at most `hold` (after that another taker may take it over);
    /// waits up to `wait` while someone else holds it, then returns
    /// `Ok(Err(holder))` with the holder's description. `name` must be a
    /// domain name no real domain uses. An error is a lock that cannot be
    /// taken at all (the host refuses the definition).
    pub fn lock(
        &self,
        name: &str,
        owner: &str,
        hold: Duration,
        wait: Duration,
    ) -> Result<std::result::Result<HostLock, String>> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::Invalid {
                field: "lock name",
                message: format!("'{name}' cannot name a domain; use letters, digits and '-'"),
            });
        }
        let dtype = match self.raw().driver_type() {
            Ok(t) if t.eq_ignore_ascii_case("test") => "test",
            _ => "qemu",
        };
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(20);
        let mut vanished = 0;
        loop {
            let until = unix_now().saturating_add(hold.as_secs().max(1));
            let xml = format!(
                "<domain type='{dtype}'><name>{n}</name><title>host lock (never runs)</title>\
                 <description>lock held by {o} until={until}</description>\
                 <memory unit='KiB'>1024</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>",
                n = xml_escape(name),
                o = xml_escape(owner),
            );
            let refused = match self.raw().define_domain_xml(&xml) {
                Ok(dom) => {
                    return Ok(Ok(HostLock {
                        dom: Some(dom),
                        name: name.to_string(),
                    }))
                }
                Err(e) => e.message().to_string(),
            };
            // Held by someone (or released in between): see by whom.
            match self.raw().lookup_domain_by_name(name) {
                Ok(d) => {
                    let desc = d.xml_desc(0).ok().and_then(|x| {
                        let doc = roxmltree::Document::parse(&x).ok()?;
                        let t = doc
                            .root_element()
                            .children()
                            .find(|c| c.has_tag_name("description"))?
                            .text()?
                            .to_string();
                        Some(t)
                    });
                    let until = desc.as_deref().and_then(parse_description);
                    let active = d.is_active().unwrap_or(false);
                    match until {
                        // Not a lock of ours: a real domain of that name.
                        None if active => {
                            return Err(Error::Invalid {
                                field: "lock name",
                                message: format!(
                                    "a running domain is called '{name}'; rename it or use another lock name"
                                ),
                            })
                        }
                        Some(u) if u < unix_now() => {
                            // Its holder died: take it over (by UUID).
                            let _ = d.undefine();
                            continue;
                        }
                        _ => {}
                    }
                    vanished = 0;
                    if Instant::now() >= deadline {
                        return Ok(Err(desc.unwrap_or_else(|| "no description".into())));
                    }
                }
                // Refused although no domain has the name: released in
                // between, or the host will not define it at all.
                Err(_) => {
                    vanished += 1;
                    if vanished >= 3 || Instant::now() >= deadline {
                        return Err(Error::Libvirt {
                            context: format!("define the host lock '{name}'"),
                            message: refused,
                        });
                    }
                }
            }
            std::thread::sleep(pause.mul_f64(0.5 + jitter()));
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

/// A number in [0, 1) that differs between calls and processes.
fn jitter() -> f64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let x =
        (u64::from(t) ^ (u64::from(std::process::id()) << 20)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_read_from_the_description() {
        assert_eq!(
            parse_description("lock held by launcher on a pid 7 until=1796123565"),
            Some(1796123565)
        );
        assert_eq!(parse_description("a real domain"), None);
    }

    #[test]
    fn a_second_taker_waits_and_a_stale_lock_is_taken_over() {
        let h = Host::open("test:///default").unwrap();
        let a = h
            .lock("t-lock", "a", Duration::from_secs(60), Duration::ZERO)
            .unwrap()
            .unwrap();
        let t0 = Instant::now();
        let holder = h
            .lock(
                "t-lock",
                "b",
                Duration::from_secs(60),
                Duration::from_millis(300),
            )
            .unwrap()
            .unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert!(holder.contains("held by a"), "{holder}");
        a.release();
        let b = h
            .lock("t-lock", "b", Duration::from_secs(60), Duration::ZERO)
            .unwrap()
            .unwrap();
        drop(b);
        // A holder that died: its time is past, the next taker takes over.
        let stale = "<domain type='test'><name>t-lock</name>\
            <description>lock held by dead until=1</description>\
            <memory unit='KiB'>1024</memory><os><type>hvm</type></os></domain>";
        h.raw().define_domain_xml(stale).unwrap();
        let c = h
            .lock("t-lock", "c", Duration::from_secs(60), Duration::ZERO)
            .unwrap()
            .unwrap();
        drop(c);
        assert!(h.raw().lookup_domain_by_name("t-lock").is_err());
    }

    #[test]
    fn a_name_no_domain_can_have_is_an_error_at_once() {
        let h = Host::open("test:///default").unwrap();
        let t0 = Instant::now();
        let e = h
            .lock(
                "bad/name",
                "a",
                Duration::from_secs(60),
                Duration::from_secs(10),
            )
            .unwrap_err();
        assert!(e.to_string().contains("lock name"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}

//! A lock kept on the host itself, so that programs on any machine that
//! manage the same libvirt host can take turns (e.g. launchers checking
//! a host's room and then starting a VM there).
//!
//! The lock is an inactive, persistent domain of a fixed name that never
//! runs. libvirt refuses to define a second domain of a name that exists
//! (the new definition has a fresh UUID), so defining it is an atomic
//! test-and-set, done by libvirtd under its own lock; undefining it is the
//! release. The domain's `<description>` names the holder and counts its
//! renewals.
//!
//! A holder that died leaves its lock behind, and no clock can tell: the
//! holder's and a taker's clocks may be minutes apart. So a taker takes a
//! lock over only after it has itself watched that very lock (the same
//! UUID with the same description) unchanged for the lock's hold time, by
//! its own monotonic clock, across its calls on one [`Host`]; and a live
//! holder renews its lock (a new description) every third of the hold
//! time while it works, from a thread with its own connection, so a slow
//! call on the holder's connection does not keep it from renewing. A
//! holder that still loses its lock hears so from [`HostLock::release`].
//! libvirt undefines a domain by its UUID, so when two takers both find
//! the same stale lock, the second one's undefine fails (the stale domain
//! is gone, the first taker's new lock has another UUID) rather than
//! removing the new lock. Every wait is bounded: tries are spaced out,
//! and a lock that cannot be taken over ends with an error at the
//! deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::error::{lv, Error, Result};
use super::Host;

/// How every lock's description begins: what tells a lock from a real
/// domain that happens to have its name.
const HELD_BY: &str = "lock held by ";

/// The shortest hold time: a taker must see a lock at least twice, some
/// time apart, before it takes it over.
const MIN_HOLD: Duration = Duration::from_millis(10);

/// A lock held on a host; released when dropped.
pub struct HostLock {
    dom: Option<virt::domain::Domain>,
    name: String,
    /// Dropped to stop the renewals.
    keeper: Option<mpsc::Sender<()>>,
    /// Set by the renewals when the lock is gone.
    lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for HostLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLock")
            .field("name", &self.name)
            .finish()
    }
}

impl HostLock {
    /// Releases the lock now (dropping it does the same, silently). An
    /// error [`Error::LockLost`] says another taker took it over while it
    /// was held (it could not be renewed for its hold time): what was done
    /// under it was not alone.
    pub fn release(mut self) -> Result<()> {
        self.undefine()
    }

    fn undefine(&mut self) -> Result<()> {
        drop(self.keeper.take());
        let Some(d) = self.dom.take() else {
            return Ok(());
        };
        // Gone already means it was taken over: the domain now of that
        // name, if any, is someone else's.
        match d
            .undefine()
            .map_err(lv("release the host lock", "domain", &self.name))
        {
            Err(e) if e.is_not_found() => Err(Error::LockLost {
                name: self.name.clone(),
            }),
            Ok(()) if self.lost.load(Ordering::SeqCst) => Err(Error::LockLost {
                name: self.name.clone(),
            }),
            // Still on the host: its holder can remove it by UUID later
            // rather than wait out the hold time like any taker.
            Err(e) => Err(Error::LockLeft {
                name: self.name.clone(),
                uuid: d.uuid_string().unwrap_or_default(),
                message: e.to_string(),
            }),
            Ok(()) => Ok(()),
        }
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        let _ = self.undefine();
    }
}

/// A lock someone else held until the wait ran out: its description
/// (holder and renewal count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held(pub String);

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lock held by someone else as a taker saw it: that domain with that
/// description, first seen then by the taker's own clock.
#[derive(Debug, Clone)]
pub(super) struct Sighting {
    uuid: String,
    description: String,
    since: Instant,
}

/// A lock's description: its holder and how often it was renewed, so that
/// every renewal reads differently.
fn description(owner: &str, renewal: u64) -> String {
    format!("{HELD_BY}{owner}; renewal {renewal}")
}

/// The `<description>` of a domain, if it has one.
fn description_of(d: &virt::domain::Domain) -> Option<String> {
    let x = d.xml_desc(0).ok()?;
    let doc = roxmltree::Document::parse(&x).ok()?;
    let t = doc
        .root_element()
        .children()
        .find(|c| c.has_tag_name("description"))?
        .text()?
        .to_string();
    Some(t)
}

impl Host {
    /// Takes the host lock `name` for `owner` (shown to whoever waits).
    /// While held it is renewed every `hold / 3`; a lock that another
    /// holder left unchanged for `hold` (as watched by this connection,
    /// over this and earlier calls) is taken over. Waits up to `wait`
    /// while someone else holds it, then returns `Ok(Err(holder))` with
    /// the holder's description. `name` must be a domain name no real
    /// domain uses. An error is a lock that cannot be taken at all: the
    /// host refuses the definition, a running domain has the name, or a
    /// lock left unchanged for `hold` could not be removed until `wait`
    /// ran out.
    pub fn lock(
        &self,
        name: &str,
        owner: &str,
        hold: Duration,
        wait: Duration,
    ) -> Result<std::result::Result<HostLock, Held>> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::Invalid {
                field: "lock name",
                message: format!("'{name}' cannot name a domain; use letters, digits and '-'"),
            });
        }
        let hold = hold.max(MIN_HOLD);
        let dtype = match self.raw().driver_type() {
            Ok(t) if t.eq_ignore_ascii_case("test") => "test",
            _ => "qemu",
        };
        let xml = format!(
            "<domain type='{dtype}'><name>{n}</name><title>host lock (never runs)</title>\
             <description>{d}</description>\
             <memory unit='KiB'>1024</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>",
            n = super::xml::esc(name),
            d = super::xml::esc(&description(owner, 0)),
        );
        let deadline = crate::deadline::after(wait);
        let mut pause = Duration::from_millis(20);
        let mut vanished = 0;
        // Why the last take-over of a lock left unchanged failed.
        let mut stuck: Option<(String, String)> = None;
        loop {
            let refused = match self.raw().define_domain_xml(&xml) {
                Ok(dom) => {
                    self.sightings().remove(name);
                    return Ok(Ok(self.hold(dom, name, owner, hold)));
                }
                Err(e) => e.message().to_string(),
            };
            // Held by someone (or released in between): see by whom.
            let holder = match self.raw().lookup_domain_by_name(name) {
                Ok(d) => d,
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
                    std::thread::sleep(pause.mul_f64(0.5 + jitter()));
                    continue;
                }
            };
            vanished = 0;
            let desc = description_of(&holder);
            let is_lock = desc.as_deref().is_some_and(|t| t.starts_with(HELD_BY));
            let active = holder.is_active().unwrap_or(false);
            if active && !is_lock {
                return Err(Error::Invalid {
                    field: "lock name",
                    message: format!(
                        "a running domain is called '{name}'; rename it or use another lock name"
                    ),
                });
            }
            let desc = desc.unwrap_or_else(|| "no description".into());
            if is_lock && !active && self.unchanged_for(name, &holder, &desc, hold) {
                // Its holder stopped renewing it: take it over, by UUID.
                match holder.undefine() {
                    Ok(()) => {
                        self.sightings().remove(name);
                        continue;
                    }
                    Err(e) => stuck = Some((desc.clone(), e.message().to_string())),
                }
            }
            if Instant::now() >= deadline {
                return match stuck {
                    Some((desc, message)) => Err(Error::Libvirt {
                        context: format!(
                            "take over the host lock '{name}' ({desc}), unchanged for {} ms",
                            hold.as_millis()
                        ),
                        message,
                    }),
                    None => Ok(Err(Held(desc))),
                };
            }
            std::thread::sleep(pause.mul_f64(0.5 + jitter()));
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Removes the host lock `name` that this caller held and could not
    /// release ([`Error::LockLeft`]), by its UUID: a lock taken since
    /// (another UUID) is left alone. Returns whether it was still there.
    pub fn remove_lock(&self, name: &str, uuid: &str) -> Result<bool> {
        let dom = match self.raw().lookup_domain_by_uuid_string(uuid).map_err(lv(
            "look up the host lock",
            "domain",
            uuid,
        )) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        let is_lock = dom.name().is_ok_and(|n| n == name)
            && description_of(&dom).is_some_and(|t| t.starts_with(HELD_BY))
            && !dom.is_active().unwrap_or(true);
        if !is_lock {
            return Ok(false);
        }
        match dom
            .undefine()
            .map_err(lv("remove the host lock", "domain", name))
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the host lock `name` when `gone` says its holder (the
    /// `owner` given to [`Host::lock`]) no longer runs: a holder the
    /// caller knows is dead, such as its own earlier process, whose lock
    /// would otherwise hold every taker off until watched unchanged for
    /// the hold time. Returns whether it removed one.
    pub fn remove_lock_of(&self, name: &str, gone: impl Fn(&str) -> bool) -> Result<bool> {
        let dom = match self.raw().lookup_domain_by_name(name).map_err(lv(
            "look up the host lock",
            "domain",
            name,
        )) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        let owner = description_of(&dom).and_then(|t| {
            let t = t.strip_prefix(HELD_BY)?;
            Some(
                t.rsplit_once("; renewal ")
                    .map_or(t, |(o, _)| o)
                    .to_string(),
            )
        });
        match (owner, dom.uuid_string()) {
            // By its UUID: a lock released and taken again since is left alone.
            (Some(o), Ok(uuid)) if gone(&o) => self.remove_lock(name, &uuid),
            _ => Ok(false),
        }
    }

    fn sightings(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Sighting>> {
        self.lock_sightings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this connection has watched lock `name` be `holder` with
    /// `description` for at least `hold`; remembers it when it is new.
    fn unchanged_for(
        &self,
        name: &str,
        holder: &virt::domain::Domain,
        description: &str,
        hold: Duration,
    ) -> bool {
        let Ok(uuid) = holder.uuid_string() else {
            return false;
        };
        let mut seen = self.sightings();
        match seen.get(name) {
            Some(s) if s.uuid == uuid && s.description == description => s.since.elapsed() >= hold,
            _ => {
                seen.insert(
                    name.to_string(),
                    Sighting {
                        uuid,
                        description: description.to_string(),
                        since: Instant::now(),
                    },
                );
                false
            }
        }
    }

    /// The lock just defined as `dom`, renewed every `hold / 3` until it
    /// is released.
    fn hold(&self, dom: virt::domain::Domain, name: &str, owner: &str, hold: Duration) -> HostLock {
        let lost = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let keeper = Keeper {
            uri: self.uri().to_string(),
            uuid: dom.uuid_string().unwrap_or_default(),
            owner: owner.to_string(),
            every: hold / 3,
            lost: lost.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("host-lock".into())
            .spawn(move || keeper.run(rx));
        HostLock {
            dom: Some(dom),
            name: name.to_string(),
            // Without the thread the lock is only not renewed.
            keeper: spawned.ok().map(|_| tx),
            lost,
        }
    }
}

/// Renews a held lock until told to stop.
struct Keeper {
    uri: String,
    uuid: String,
    owner: String,
    every: Duration,
    lost: Arc<AtomicBool>,
}

impl Keeper {
    fn run(self, stop: mpsc::Receiver<()>) {
        // Its own connection, opened when the first renewal is due (most
        // locks are released before): the holder's may be busy in a long
        // call, and some transports crash when two threads share one.
        let mut conn: Option<Host> = None;
        let mut renewal = 0;
        loop {
            match stop.recv_timeout(self.every) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            renewal += 1;
            if conn.is_none() {
                conn = Host::open(&self.uri).ok();
            }
            let Some(c) = &conn else { continue };
            let dom = c.raw().lookup_domain_by_uuid_string(&self.uuid).map_err(lv(
                "look up the host lock",
                "domain",
                &self.uuid,
            ));
            let renewed = dom.and_then(|d| {
                d.set_metadata(
                    virt::sys::VIR_DOMAIN_METADATA_DESCRIPTION as i32,
                    Some(&description(&self.owner, renewal)),
                    None,
                    None,
                    0,
                )
                .map_err(lv("renew the host lock", "domain", &self.uuid))
            });
            match renewed {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {
                    self.lost.store(true, Ordering::SeqCst);
                    return;
                }
                // The connection may have died: a new one next time.
                Err(_) => conn = None,
            }
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

    fn test_host() -> Host {
        Host::open("test:///default").unwrap()
    }

    /// A lock as a holder on another machine left it: `description` as it
    /// wrote it, its clock being whatever it was.
    fn define_foreign_lock(h: &Host, name: &str, description: &str) -> virt::domain::Domain {
        let xml = format!(
            "<domain type='test'><name>{name}</name><description>{description}</description>\
             <memory unit='KiB'>1024</memory><os><type>hvm</type></os></domain>"
        );
        h.raw().define_domain_xml(&xml).unwrap()
    }

    #[test]
    fn the_description_names_the_holder_and_reads_differently_at_each_renewal() {
        let d = description("launcher pid 7 job j", 0);
        assert_eq!(d, "lock held by launcher pid 7 job j; renewal 0");
        assert_ne!(d, description("launcher pid 7 job j", 1));
    }

    #[test]
    fn a_second_taker_waits_and_gets_the_lock_once_released() {
        let h = test_host();
        let hold = Duration::from_secs(60);
        let a = h
            .lock("t-lock-wait", "a", hold, Duration::ZERO)
            .unwrap()
            .unwrap();
        let t0 = Instant::now();
        let holder = h
            .lock("t-lock-wait", "b", hold, Duration::from_millis(300))
            .unwrap()
            .unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert!(holder.0.contains("held by a"), "{holder}");
        a.release().unwrap();
        let b = h
            .lock("t-lock-wait", "b", hold, Duration::ZERO)
            .unwrap()
            .unwrap();
        b.release().unwrap();
        assert!(h.raw().lookup_domain_by_name("t-lock-wait").is_err());
    }

    #[test]
    fn a_lock_with_a_deadline_long_past_is_taken_over_only_after_being_watched_for_the_hold_time() {
        // Written by a live holder whose clock is far behind ours.
        let h = test_host();
        let hold = Duration::from_millis(600);
        let live = define_foreign_lock(&h, "t-lock-skew", "lock held by live until=1");
        let uuid = live.uuid_string().unwrap();
        let t0 = Instant::now();
        let holder = h
            .lock("t-lock-skew", "taker", hold, Duration::from_millis(200))
            .unwrap()
            .unwrap_err();
        assert!(holder.0.contains("held by live"), "{holder}");
        let still = h.raw().lookup_domain_by_name("t-lock-skew").unwrap();
        assert_eq!(still.uuid_string().unwrap(), uuid, "taken over at once");

        // Watched unchanged (across calls) for the hold time: its holder
        // is gone, the lock is taken over.
        let mine = h
            .lock("t-lock-skew", "taker", hold, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert!(t0.elapsed() >= hold, "{:?}", t0.elapsed());
        let now = h.raw().lookup_domain_by_name("t-lock-skew").unwrap();
        assert_ne!(now.uuid_string().unwrap(), uuid);
        mine.release().unwrap();
    }

    #[test]
    fn a_holder_that_works_longer_than_the_hold_time_renews_its_lock_and_keeps_it() {
        let h = test_host();
        let hold = Duration::from_millis(300);
        let a = h
            .lock("t-lock-renew", "a", hold, Duration::ZERO)
            .unwrap()
            .unwrap();
        let uuid = h
            .raw()
            .lookup_domain_by_name("t-lock-renew")
            .unwrap()
            .uuid_string()
            .unwrap();
        // A taker watches for eight hold times while the holder works.
        let other = test_host();
        let holder = other
            .lock("t-lock-renew", "b", hold, Duration::from_millis(2500))
            .unwrap()
            .unwrap_err();
        assert!(holder.0.contains("held by a; renewal "), "{holder}");
        assert_ne!(holder.0, description("a", 0), "never renewed");
        let still = h.raw().lookup_domain_by_name("t-lock-renew").unwrap();
        assert_eq!(still.uuid_string().unwrap(), uuid);
        a.release().unwrap();
    }

    #[test]
    fn a_holder_whose_lock_was_taken_over_hears_so_at_release() {
        let h = test_host();
        let a = h
            .lock("t-lock-lost", "a", Duration::from_secs(60), Duration::ZERO)
            .unwrap()
            .unwrap();
        // What a taker does to a lock it found unchanged for its hold time.
        h.raw()
            .lookup_domain_by_name("t-lock-lost")
            .unwrap()
            .undefine()
            .unwrap();
        let e = a.release().unwrap_err();
        assert!(matches!(e, Error::LockLost { .. }), "{e}");
        assert!(
            e.to_string().contains("'t-lock-lost' was taken over"),
            "{e}"
        );
    }

    #[test]
    fn a_stale_lock_that_cannot_be_removed_ends_in_an_error_at_the_deadline() {
        let h = test_host();
        let stale = define_foreign_lock(&h, "t-lock-stuck", "lock held by dead until=1");
        // libvirt refuses to undefine a domain that has snapshots.
        stale
            .create_snapshot_xml("<domainsnapshot><name>keep</name></domainsnapshot>", 0)
            .unwrap();
        assert!(stale.undefine().is_err());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let h = test_host();
            let t0 = Instant::now();
            let r = h
                .lock(
                    "t-lock-stuck",
                    "taker",
                    Duration::from_millis(50),
                    Duration::from_millis(500),
                )
                .map(|r| r.map(|_| ()));
            let _ = tx.send((r, t0.elapsed()));
        });
        let (r, took) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the taker is still trying after 10 s");
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with("take over the host lock 't-lock-stuck' (lock held by dead until=1)"),
            "{e}"
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
        stale
            .undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            .unwrap();
    }

    #[test]
    fn a_lock_its_holder_could_not_release_is_removed_by_its_uuid_and_no_other() {
        let h = test_host();
        let name = "left-lock";
        let hold = Duration::from_secs(60);
        let lock = h
            .lock(name, "holder", hold, Duration::ZERO)
            .unwrap()
            .unwrap();
        let uuid = lock.dom.as_ref().unwrap().uuid_string().unwrap();
        // As if the release had failed with the connection: still there.
        let mut lock = lock;
        drop(lock.keeper.take());
        lock.dom = None;
        drop(lock);
        assert!(h.lock(name, "next", hold, Duration::ZERO).unwrap().is_err());
        // Another UUID is not the lock that was left.
        assert!(!h
            .remove_lock(name, "7e3b1b7a-0000-4000-8000-000000000000")
            .unwrap());
        assert!(h.remove_lock(name, &uuid).unwrap());
        assert!(!h.remove_lock(name, &uuid).unwrap());
        let next = h.lock(name, "next", hold, Duration::ZERO).unwrap().unwrap();
        // The new lock has another UUID: the old one names nothing now.
        assert!(!h.remove_lock(name, &uuid).unwrap());
        next.release().unwrap();
    }

    #[test]
    fn a_name_no_domain_can_have_is_an_error_at_once() {
        let h = test_host();
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

    #[test]
    fn a_lock_whose_holder_is_known_gone_is_removed_and_no_other() {
        let h = test_host();
        define_foreign_lock(
            &h,
            "t-lock-gone",
            "lock held by launcher ab12 pid 7 job j; renewal 3",
        );
        // A holder the caller does not know is gone keeps its lock.
        assert!(!h
            .remove_lock_of("t-lock-gone", |o| o.contains("pid 8 "))
            .unwrap());
        assert!(h.raw().lookup_domain_by_name("t-lock-gone").is_ok());

        let seen = std::cell::RefCell::new(String::new());
        let removed = h
            .remove_lock_of("t-lock-gone", |o| {
                *seen.borrow_mut() = o.to_string();
                o.starts_with("launcher ab12 pid ")
            })
            .unwrap();

        assert!(removed);
        assert_eq!(*seen.borrow(), "launcher ab12 pid 7 job j");
        assert!(h.raw().lookup_domain_by_name("t-lock-gone").is_err());
        // None there: nothing to remove.
        assert!(!h.remove_lock_of("t-lock-gone", |_| true).unwrap());
        // A domain that is not a lock is never removed.
        define_foreign_lock(&h, "t-lock-not", "a web server");
        assert!(!h.remove_lock_of("t-lock-not", |_| true).unwrap());
        h.raw()
            .lookup_domain_by_name("t-lock-not")
            .unwrap()
            .undefine()
            .unwrap();
    }
}

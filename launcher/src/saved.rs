//! Saved slots: per definition with `saved = N`, N slots on each awake
//! host it may use (see [`kvmhost::libvirt::slot`]): an instance booted
//! until its `kvmbe-handoff` waits, synced and saved to a state file next
//! to its disk, which stays as the slot's read-only base. Nothing secret
//! is in a slot. A job's VM is a clone restored onto a fresh overlay and
//! handed the job like a warm VM; one clone per slot at a time, and the
//! slot is free again once the clone is gone. Slots live on the host's
//! disk: a launcher restart, or a host's sleep, finds them again.
//!
//! [`SlotPool`] follows each slot from its check or build (`Building`)
//! to free (`Free`) and used by a clone (`InUse`); a slot that could not
//! be built is tried again after a while (`Failed`). A free slot is
//! checked against its template every [`RECHECK_EVERY`] and rebuilt when
//! stale; a restore checks again, so a stale slot is never used.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvmhost::libvirt::instance::InstanceSpec;
use kvmhost::libvirt::Host;

use crate::config::Config;
use crate::hosts::{label, HostRt};
use crate::warm::warm_instance_spec;

/// How long a restored clone's hand-off may take, from opening its
/// channel to `started`: longer than a warm VM's
/// ([`crate::warm::HANDOFF_TIMEOUT`]), as the clone's guest runs again
/// only after the restore, which on a busy host under emulation can take
/// seconds of its own.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(15);

/// How long after a failed build a slot is built again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// How often a free slot is checked against its template again (a slot
/// made from an older template, image or seed is rebuilt).
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// Where a slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Being checked, or built.
    Building,
    /// Saved, no clone runs.
    Free,
    /// A clone runs (or is being restored) since then.
    InUse(Instant),
    /// Its build failed; tried again after then.
    Failed(Instant),
}

/// A slot of this launcher on one host.
#[derive(Debug, Clone, Copy)]
pub struct SlotEntry {
    /// Its definition (index into [`Config::agents`]).
    pub def: usize,
    /// Where it is.
    pub state: SlotState,
    /// When it was last checked.
    pub checked: Instant,
    /// Whether it was found ready before (so a re-check says nothing).
    pub was_ready: bool,
}

/// What a check or build found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The slot is current and no clone runs.
    Free,
    /// The slot was (re)built now.
    Built,
    /// A clone of it runs.
    InUse,
}

/// The slots of this launcher, by (host, slot name).
#[derive(Debug, Default)]
pub struct SlotPool {
    slots: HashMap<(usize, String), SlotEntry>,
}

/// Slot `i` of definition `def`: `<definition>-saved-<i>`.
pub fn slot_name(cfg: &Config, def: usize, i: u32) -> String {
    format!("{}-saved-{i}", cfg.agents[def].name)
}

/// The instance a slot of `def` is built from: a warm VM's (no job, no
/// token, the hand-off channel), labelled as a slot instead of warm.
pub fn slot_instance_spec(cfg: &Config, def: usize, name: &str) -> InstanceSpec {
    let mut spec = warm_instance_spec(cfg, def, name);
    spec.labels.remove(label::WARM);
    spec.labels
        .insert(label::SAVED.to_string(), "1".to_string());
    spec
}

impl SlotPool {
    /// The slots followed now.
    pub fn slots(&self) -> &HashMap<(usize, String), SlotEntry> {
        &self.slots
    }

    /// The slots to check (and build when missing or stale) now, on
    /// awake hosts: new ones and failed ones due again (marked as being
    /// built). Slots of hosts asleep are left as they are, and so are
    /// those `room(definition, host)` refuses: a check can turn into a
    /// build, which boots an instance like any VM (`room` takes its room
    /// when it says yes).
    pub fn to_prepare(
        &mut self,
        cfg: &Config,
        hosts: &[Arc<HostRt>],
        mut room: impl FnMut(usize, usize) -> bool,
    ) -> Vec<(usize, usize, String)> {
        let mut out = Vec::new();
        for (d, a) in cfg.agents.iter().enumerate().filter(|(_, a)| a.saved > 0) {
            for &h in &a.hosts {
                if hosts[h].conn().is_none() {
                    continue;
                }
                for i in 0..a.saved {
                    let name = slot_name(cfg, d, i);
                    let due = match self.slots.get(&(h, name.clone())) {
                        None => true,
                        Some(e) => match e.state {
                            SlotState::Failed(t) => t <= Instant::now(),
                            SlotState::Free => e.checked.elapsed() >= RECHECK_EVERY,
                            _ => false,
                        },
                    };
                    if due && room(d, h) {
                        let was_ready = self
                            .slots
                            .get(&(h, name.clone()))
                            .is_some_and(|e| e.was_ready);
                        self.slots.insert(
                            (h, name.clone()),
                            SlotEntry {
                                def: d,
                                state: SlotState::Building,
                                checked: Instant::now(),
                                was_ready,
                            },
                        );
                        out.push((d, h, name));
                    }
                }
            }
        }
        out
    }

    /// A check or build of `name` on `host` ended (only whether it failed
    /// counts, not why); true when that is news (built, or found ready
    /// the first time).
    pub fn prepared<E>(&mut self, host: usize, name: &str, got: &Result<Prepared, E>) -> bool {
        let Some(e) = self.slots.get_mut(&(host, name.to_string())) else {
            return false;
        };
        let news = match got {
            Ok(Prepared::Free) => !e.was_ready,
            _ => true,
        };
        e.was_ready |= matches!(got, Ok(Prepared::Free | Prepared::Built));
        {
            e.checked = Instant::now();
            e.state = match got {
                Ok(Prepared::Free | Prepared::Built) => SlotState::Free,
                Ok(Prepared::InUse) => SlotState::InUse(Instant::now()),
                Err(_) => SlotState::Failed(Instant::now() + RETRY_AFTER),
            };
        }
        news
    }

    /// A check or build of `name` on `host` failed as the host's
    /// connection went (the host went to sleep): that says nothing of the
    /// slot. One found ready before is free again (a restore checks it
    /// anyway) and checked at the host's next pass awake; one never ready
    /// is forgotten, so that pass checks (or builds) it.
    pub fn cut_off(&mut self, host: usize, name: &str) {
        let key = (host, name.to_string());
        match self.slots.get_mut(&key) {
            Some(e) if e.was_ready => {
                e.state = SlotState::Free;
                e.checked = Instant::now()
                    .checked_sub(RECHECK_EVERY)
                    .unwrap_or(e.checked);
            }
            Some(_) => {
                self.slots.remove(&key);
            }
            None => {}
        }
    }

    /// Takes a free slot of `def` on `host` for a job; its name.
    pub fn claim(&mut self, def: usize, host: usize) -> Option<String> {
        let mut free: Vec<&String> = self
            .slots
            .iter()
            .filter(|((h, _), e)| *h == host && e.def == def && e.state == SlotState::Free)
            .map(|((_, n), _)| n)
            .collect();
        free.sort();
        let name = free.first().map(|n| (*n).clone())?;
        if let Some(e) = self.slots.get_mut(&(host, name.clone())) {
            e.state = SlotState::InUse(Instant::now());
        }
        Some(name)
    }

    /// `name`, claimed for a job it was not restored for, is free again.
    pub fn release(&mut self, host: usize, name: &str) {
        if let Some(e) = self.slots.get_mut(&(host, name.to_string())) {
            e.state = SlotState::Free;
        }
    }

    /// `name` could not give a clone: forgotten, so the next pass checks
    /// it again (and rebuilds it).
    pub fn broken(&mut self, host: usize, name: &str) {
        self.slots.remove(&(host, name.to_string()));
    }

    /// Slots whose clone is gone (the host was read since without it)
    /// are free again.
    pub fn sync(&mut self, hosts: &[Arc<HostRt>]) {
        for ((h, name), e) in &mut self.slots {
            if let SlotState::InUse(since) = e.state {
                if hosts[*h].lacks_since(name, since) {
                    e.state = SlotState::Free;
                }
            }
        }
    }

    /// Free slots of `def` on `host`.
    pub fn free(&self, def: usize, host: usize) -> usize {
        self.slots
            .iter()
            .filter(|((h, _), e)| *h == host && e.def == def && e.state == SlotState::Free)
            .count()
    }
}

/// Checks slot `spec.name` on `host`: current and free, or a clone (a
/// domain of its name labelled with a job) runs; otherwise (missing,
/// stale, broken, a build cut short) removes what is left of it and
/// builds it, giving the guest `boot_timeout` to say it waits.
pub fn prepare(
    host: &Host,
    spec: &InstanceSpec,
    boot_timeout: Duration,
) -> Result<Prepared, SlotError> {
    let name = spec.name.as_str();
    if host.domain_active(name).unwrap_or(false) {
        let job = format!("label.{}", label::JOB);
        if host
            .domain_def(name)
            .map_or(true, |d| d.metadata.contains_key(&job))
        {
            return Ok(Prepared::InUse);
        }
        // A build cut short (the launcher stopped during it): start over.
        host.remove_instance(name)?;
    }
    let pool = host.template(&spec.template)?.pool;
    let version = host.slot_version(spec)?;
    if host.slot(&pool, name).is_ok_and(|s| s.version == version) {
        return Ok(Prepared::Free);
    }
    host.remove_slot(&pool, name)?;
    host.build_slot(spec, boot_timeout)?;
    Ok(Prepared::Built)
}

/// Restores a clone of slot `spec.name` on `host` for a job; how long the
/// restore call took. A slot built from an older template (or variables)
/// is refused.
pub fn restore(host: &Host, spec: &InstanceSpec) -> Result<Duration, SlotError> {
    let name = spec.name.as_str();
    let pool = host.template(&spec.template)?.pool;
    let slot = host.slot(&pool, name)?;
    let version = host.slot_version(spec)?;
    if slot.version != version {
        return Err(SlotError::Stale {
            name: name.to_string(),
            built: slot.version,
            now: version,
        });
    }
    let t = Instant::now();
    host.restore_slot(&slot)?;
    Ok(t.elapsed())
}

/// Why a slot could not be checked, built or restored.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The host refused or failed a step.
    #[error(transparent)]
    Host(#[from] kvmhost::libvirt::Error),
    /// The slot's version is not its template's (and variables') now.
    #[error("slot {name} was built from an older template (version {built}, now {now})")]
    Stale {
        /// The slot.
        name: String,
        /// The version it was built from.
        built: String,
        /// The version it would be built from now.
        now: String,
    },
    /// The host's connection was gone when the slot was due.
    #[error("the host is not connected")]
    NotConnected,
    /// The task that ran the check or build did not finish.
    #[error("the slot task failed: {0}")]
    Task(#[from] kvmhost::libvirt::TaskError),
}

#[cfg(test)]
mod test {
    use std::path::Path;

    use super::*;

    fn config() -> Config {
        let text = "[buildkite]\nstack_key = \"kvm\"\nvm_agent_endpoint = \"http://10.0.0.1/v3\"\n\n\
             [[host]]\nname = \"h1\"\nuri = \"test:///default\"\n\n\
             [[host]]\nname = \"h2\"\nuri = \"test:///default\"\n\n\
             [[agent]]\nname = \"debian\"\ntags = [\"queue=linux\"]\ntemplate = \"debian-agent\"\nsaved = 2\n";
        let env = |k: &str| (k == "BUILDKITE_AGENT_TOKEN").then(|| "bkct_cluster".to_string());
        crate::config::parse(Path::new("/etc/launcher.toml"), text, env).unwrap()
    }

    #[test]
    fn a_slot_holds_no_secret_and_is_no_warm_vm() {
        let cfg = config();
        let spec = slot_instance_spec(&cfg, 0, &slot_name(&cfg, 0, 1));
        assert_eq!(spec.name, "debian-saved-1");
        assert_eq!(spec.channels, ["org.kvmbe.handoff"]);
        assert_eq!(spec.labels[label::SAVED], "1");
        assert!(!spec.labels.contains_key(label::WARM));
        assert_eq!(spec.vars["buildkite_agent_token"], "");
        assert_eq!(spec.vars["buildkite_job_id"], "");
        let everything = format!("{:?} {:?}", spec.vars, spec.default_user_data);
        assert!(!everything.contains("bkct_cluster"), "{everything}");
    }

    #[tokio::test]
    async fn slots_are_prepared_on_awake_hosts_used_once_and_free_when_the_clone_is_gone() {
        let cfg = config();
        let hosts: Vec<Arc<HostRt>> = cfg
            .hosts
            .iter()
            .map(|h| HostRt::new(h.clone(), Duration::from_secs(1), "ab12cd"))
            .collect();
        let mut pool = SlotPool::default();
        // No host read yet: nothing to build.
        assert!(pool.to_prepare(&cfg, &hosts, |_, _| true).is_empty());
        hosts[1].set_probed(Vec::new()).await;
        // No room for a build: asked once per slot, nothing marked, and
        // the slots are due again next time.
        let mut asked = Vec::new();
        let none = pool.to_prepare(&cfg, &hosts, |d, h| {
            asked.push((d, h));
            false
        });
        assert!(none.is_empty());
        assert_eq!(asked, [(0, 1), (0, 1)]);
        assert_eq!(pool.claim(0, 1), None);
        // Room for one build: the other slot waits.
        let mut left = 1;
        let one = pool.to_prepare(&cfg, &hosts, |_, _| {
            left -= 1;
            left >= 0
        });
        assert_eq!(one, [(0, 1, "debian-saved-0".to_string())]);
        pool.broken(1, "debian-saved-0");
        let due = pool.to_prepare(&cfg, &hosts, |_, _| true);
        assert_eq!(
            due,
            [
                (0, 1, "debian-saved-0".to_string()),
                (0, 1, "debian-saved-1".to_string())
            ]
        );
        // Being built: not again, and not to be claimed.
        assert!(pool.to_prepare(&cfg, &hosts, |_, _| true).is_empty());
        assert!(pool.to_prepare(&cfg, &hosts, |_, _| true).is_empty());
        assert_eq!(pool.claim(0, 1), None);
        assert!(pool.prepared(1, "debian-saved-0", &Ok::<_, &str>(Prepared::Free)));
        // Checked again only after a while.
        assert!(pool.to_prepare(&cfg, &hosts, |_, _| true).is_empty());
        pool.slots
            .get_mut(&(1, "debian-saved-0".to_string()))
            .unwrap()
            .checked -= RECHECK_EVERY;
        assert_eq!(
            pool.to_prepare(&cfg, &hosts, |_, _| true),
            [(0, 1, "debian-saved-0".to_string())]
        );
        // Found current again: no news.
        assert!(!pool.prepared(1, "debian-saved-0", &Ok::<_, &str>(Prepared::Free)));
        pool.prepared(1, "debian-saved-1", &Err::<Prepared, _>("no room"));
        assert_eq!(pool.free(0, 1), 1);
        assert_eq!(pool.claim(0, 0), None);
        assert_eq!(pool.claim(0, 1).as_deref(), Some("debian-saved-0"));
        assert_eq!(pool.claim(0, 1), None);
        // Not restored (no token): free again at once.
        pool.release(1, "debian-saved-0");
        assert_eq!(pool.claim(0, 1).as_deref(), Some("debian-saved-0"));
        // In use until a read of the host after the claim lacks it.
        pool.sync(&hosts);
        assert_eq!(pool.free(0, 1), 0);
        std::thread::sleep(Duration::from_millis(5));
        hosts[1].set_probed(Vec::new()).await;
        pool.sync(&hosts);
        assert_eq!(pool.free(0, 1), 1);
        // A check cut off with the host's connection: a slot ready before
        // stays free and is due at once; one never ready is forgotten.
        pool.slots
            .get_mut(&(1, "debian-saved-0".to_string()))
            .unwrap()
            .checked -= RECHECK_EVERY;
        pool.slots
            .get_mut(&(1, "debian-saved-1".to_string()))
            .unwrap()
            .state = SlotState::Failed(Instant::now());
        let due = pool.to_prepare(&cfg, &hosts, |_, _| true);
        assert_eq!(due.len(), 2, "{due:?}");
        pool.cut_off(1, "debian-saved-0");
        pool.cut_off(1, "debian-saved-1");
        assert_eq!(pool.free(0, 1), 1);
        assert!(!pool.slots.contains_key(&(1, "debian-saved-1".to_string())));
        assert_eq!(
            pool.to_prepare(&cfg, &hosts, |_, _| true),
            [
                (0, 1, "debian-saved-0".to_string()),
                (0, 1, "debian-saved-1".to_string())
            ]
        );
        // A broken slot is checked (and rebuilt) again.
        pool.broken(1, "debian-saved-0");
        assert_eq!(
            pool.to_prepare(&cfg, &hosts, |_, _| true),
            [(0, 1, "debian-saved-0".to_string())]
        );
    }
}

//! Saved slots: an instance booted until its `kvmbe-handoff` program
//! waits for a job, its file systems synced, its memory saved to a state
//! file next to its disk, and its disk kept as a read-only base. Each
//! restore starts a clone of it onto a fresh overlay of that base (see
//! [`super::saved`]); the clone has the slot's name, UUID and MAC, so a
//! slot has at most one live clone at a time.
//!
//! A slot's files are the instance's volumes (`<slot>--inst-<mark>-…`):
//! `disk0.qcow2` (the base), `seed.iso`, and two more parts, the state
//! file `memory.save` and the live clone's overlay `clone.qcow2`. The
//! volume sweep keeps a slot's files while its state file is there and
//! deletes a clone's overlay once the clone is gone, and removing a
//! clone as an instance deletes only its overlay.
//!
//! A slot records the version of what it was built from (label
//! `slot-version`, see [`Host::slot_version`]): the template's XML, the
//! contents' times and sizes of its base and seed-file volumes, and the
//! instance's variables, user-data and channels. A slot whose version is
//! not the current one is stale: remove and rebuild it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::domain_xml::GenId;
use super::error::{Error, Result};
use super::instance::{instance_volume_name, volume_time, InstanceSpec};
use super::saved::{OverlayRestore, Restored, ResumeAs};
use super::template::{BASES, SEED_FILES};
use super::volume::VolumeInfo;
use super::Host;

/// The part naming a slot's state file.
pub const STATE_PART: &str = "memory.save";
/// The part naming a slot's live clone's overlay.
pub const CLONE_PART: &str = "clone.qcow2";
/// The part naming a slot's base disk (the instance's first disk).
const BASE_PART: &str = "disk0.qcow2";
/// The label holding a slot's version.
pub const VERSION_LABEL: &str = "slot-version";
/// How long one try at `ready`, `sync` and `synced` may take (a guest
/// that boots meanwhile answers within the same try).
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// A saved slot on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Its name (and its clones' domain name).
    pub name: String,
    /// Its pool.
    pub pool: String,
    /// The state file on the host.
    pub state_file: PathBuf,
    /// The disk it was saved with, only read from now on.
    pub base: VolumeInfo,
    /// The version it was built from ([`Host::slot_version`]); empty
    /// when its state file has none.
    pub version: String,
}

impl Host {
    /// Builds slot `spec.name` from an instance of `spec` (which must
    /// carry the hand-off channel and run `kvmbe-handoff`, and whose
    /// template has one disk) with a `<genid/>`: boots it, waits up to
    /// `boot_timeout` for the guest's `ready`, has it sync its file
    /// systems and saves its memory. On failure nothing of it is left.
    pub fn build_slot(&self, spec: &InstanceSpec, boot_timeout: Duration) -> Result<Slot> {
        let name = spec.name.as_str();
        let t = self.template(&spec.template)?;
        let disks = self
            .domain_def(&spec.template)?
            .disks
            .iter()
            .filter(|d| d.device == super::domain_xml::DiskDevice::Disk)
            .count();
        if disks != 1 {
            return Err(Error::Invalid {
                field: "template",
                message: format!(
                    "template '{}' has {disks} disks: a saved slot needs a template with exactly one",
                    spec.template
                ),
            });
        }
        let pool = self.pool(&t.pool)?;
        if pool.path.is_empty() {
            return Err(Error::Invalid {
                field: "pool",
                message: format!(
                    "pool '{}' has no directory for a slot's state file: use a directory pool",
                    t.pool
                ),
            });
        }
        let mark = self.volume_mark()?;
        let state_file = PathBuf::from(format!(
            "{}/{}",
            pool.path.trim_end_matches('/'),
            instance_volume_name(name, &mark, STATE_PART)
        ));
        let mut spec = spec.clone();
        spec.labels
            .insert(VERSION_LABEL.to_string(), self.slot_version(&spec)?);
        self.launch_instance_with(&spec, Some(GenId::Auto))?;
        let built = (|| {
            let deadline = Instant::now() + boot_timeout;
            // `ready`, `sync` and `synced` on one connection, and a pause
            // between tries: a channel opened again right after it was
            // closed can reach a guest that has not yet seen the close and
            // still reads, having said `ready` on the closed one; it never
            // says `ready` on the new one.
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.handoff_sync(name, left.clamp(Duration::from_secs(1), SYNC_TIMEOUT)) {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(Error::Libvirt {
                            context: format!("build slot '{name}'"),
                            message: format!(
                                "the guest did not say it waits for a job within {} s: {e}",
                                boot_timeout.as_secs()
                            ),
                        })
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
            self.save_domain(name, &state_file, ResumeAs::Running)?;
            self.slot(&t.pool, name)
        })();
        if built.is_err() {
            let _ = self.remove_instance(name);
            let _ = std::fs::remove_file(&state_file);
            let _ = self.remove_slot(&t.pool, name);
        }
        built
    }

    /// Slot `name` in `pool`, found by its state file and base.
    pub fn slot(&self, pool: &str, name: &str) -> Result<Slot> {
        let mark = self.volume_mark()?;
        let state = self.volume(pool, &instance_volume_name(name, &mark, STATE_PART))?;
        let base = self.volume(pool, &instance_volume_name(name, &mark, BASE_PART))?;
        let state_file = PathBuf::from(state.path);
        let saved = super::domain_xml::DomainDef::from_xml(&self.saved_domain_xml(&state_file)?)?;
        let version = saved
            .metadata
            .get(&format!("label.{VERSION_LABEL}"))
            .cloned()
            .unwrap_or_default();
        Ok(Slot {
            name: name.to_string(),
            pool: pool.to_string(),
            state_file,
            base,
            version,
        })
    }

    /// Restores a clone of `slot` onto a fresh overlay (deleting the
    /// overlay a gone clone left). Fails when a clone of it runs. On
    /// failure no clone and no overlay are left.
    pub fn restore_slot(&self, slot: &Slot) -> Result<Restored> {
        if self.domain_active(&slot.name).unwrap_or(false) {
            return Err(Error::Invalid {
                field: "slot",
                message: format!("slot '{}' already runs a clone", slot.name),
            });
        }
        let mark = self.volume_mark()?;
        let overlay = instance_volume_name(&slot.name, &mark, CLONE_PART);
        if let Ok(old) = self.volume(&slot.pool, &overlay) {
            self.delete_volume(&old.key)?;
        }
        let target = self
            .saved_target(&slot.state_file, &slot.base.path)?
            .ok_or_else(|| Error::Invalid {
                field: "slot",
                message: format!(
                    "the state file of slot '{}' has no disk on {}: rebuild the slot",
                    slot.name, slot.base.path
                ),
            })?;
        let restored = self.restore_on_overlay(&OverlayRestore {
            state_file: &slot.state_file,
            base: &slot.base,
            target: &target,
            pool: &slot.pool,
            overlay: &overlay,
            changes: &[],
        })?;
        Ok(restored)
    }

    /// The version a slot built now from `spec` would have: a hash of
    /// the template's XML, the key, capacity and last change of each of
    /// its base and seed-file volumes (their contents' `mtime`), and
    /// `spec`'s variables, default user-data and channels. Changing any
    /// of them changes it. Neither a volume's `ctime` nor its allocation
    /// counts: starting a domain on a backing file changes the first
    /// (libvirt sets its owner and remembers the old one in extended
    /// attributes) and can change the second (the attributes may take a
    /// block of their own), while its contents stay the same.
    pub fn slot_version(&self, spec: &InstanceSpec) -> Result<String> {
        let xml = self.domain_xml(&spec.template)?;
        let def = self.domain_def(&spec.template)?;
        let mut parts: BTreeMap<String, String> = BTreeMap::new();
        parts.insert("template".into(), xml);
        let keys = def
            .metadata
            .get(BASES)
            .into_iter()
            .flat_map(|b| b.lines())
            .chain(def.metadata.get(SEED_FILES).map(String::as_str))
            .filter(|k| !k.is_empty());
        for key in keys {
            let info = self.volume_by_key(key)?;
            let changed = self
                .raw()
                .lookup_storage_vol_by_key(key)
                .ok()
                .and_then(|v| v.xml_desc(0).ok())
                .and_then(|x| volume_time(&x, &["mtime"]));
            parts.insert(
                format!("volume {key}"),
                format!("{} {changed:?}", info.capacity),
            );
        }
        parts.insert("vars".into(), format!("{:?}", spec.vars));
        parts.insert("user-data".into(), format!("{:?}", spec.default_user_data));
        parts.insert("channels".into(), format!("{:?}", spec.channels));
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &parts {
            for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Ok(format!("{h:016x}"))
    }

    /// Deletes slot `name`'s files in `pool` (its clone must be gone).
    pub fn remove_slot(&self, pool: &str, name: &str) -> Result<()> {
        let mark = self.volume_mark()?;
        for part in [CLONE_PART, BASE_PART, "seed.iso", STATE_PART] {
            match self.volume(pool, &instance_volume_name(name, &mark, part)) {
                Ok(v) => self.delete_volume(&v.key)?,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The target device of the saved domain's disk on `path`.
    fn saved_target(&self, state_file: &std::path::Path, path: &str) -> Result<Option<String>> {
        let xml = self.saved_domain_xml(state_file)?;
        let def = super::domain_xml::DomainDef::from_xml(&xml)?;
        Ok(def
            .disks
            .iter()
            .find(|d| d.source.path() == path)
            .map(|d| d.target.clone()))
    }
}

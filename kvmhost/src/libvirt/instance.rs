//! Instances: short-lived VMs made from a template kept in libvirt.
//!
//! An instance is a **transient** domain (`on_poweroff destroy`): when
//! the guest powers off, libvirt forgets it. Each disk of the template
//! gets a copy-on-write overlay, and the instance gets its own seed
//! (labelled as the template says), rendered from the template's
//! cloud-init files with the instance's values (its host name, and
//! whatever the caller passes: tokens, the job to run). Overlays and seed
//! are created with mode 0600; only their paths appear in the domain's
//! XML. A template with firmware gives each instance its own NVRAM file
//! in the pool, which libvirt copies from the template's NVRAM template
//! at the start (mode 0600, owned by QEMU's user). The template's XSLT
//! stylesheet, if any, is applied to the instance's XML last.
//!
//! The domain's metadata says what it is (kind `instance`, its template,
//! its volumes, the caller's labels), so a program that restarts can
//! list the instances it made with [`Host::instances`]. Labels are
//! readable by every local user: never put secrets there.
//!
//! Volumes (overlays, seed, NVRAM) outlive a domain that powered itself
//! off; [`Host::sweep_instance_volumes`] removes those whose instance is
//! gone, [`Host::remove_instance`] those of an instance it stops.
//!
//! The sweep cannot ask a gone instance which volumes were its own, and a
//! pool may be shared: by hosts that each run instances (a directory on
//! NFS), or with volumes an operator named as they liked. So an instance
//! volume's name carries its maker: `<instance>--inst-<mark>-<part>`,
//! where `<mark>` is [`Host::volume_mark`] (eight hex digits from the
//! host's name) and `<part>` is `disk<N>.qcow2`, `seed.iso` or
//! `nvram.fd`. The sweep deletes only names of exactly that shape with
//! this host's mark whose instance does not run here: another host's
//! instances and names that merely contain `--inst-` are left alone. The
//! host's name is what libvirt reports (its first label, lowercased, as
//! libvirt gives the full name only when DNS answers); it does not change
//! when the daemon restarts, unlike libvirt's host UUID, which is random
//! on machines without a usable SMBIOS UUID. A host that is renamed
//! leaves its earlier leaks for the operator, the safe direction.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use super::domain_xml::{DiskBus, DiskDef, DiskDevice, DiskSource, DomainDef, GenId, NvramDef};
use super::error::{lv, Error, Result};
use super::slot::{CLONE_PART, STATE_PART};
use super::template::{fill_placeholders, TemplateSpec, DEFAULT_LABEL, KIND, POOL};
use super::volume::{Backing, VolumeFormat, VolumeInfo, VolumeSpec};
use super::xml::{child, child_text, parse};
use super::Host;
use crate::nocloud::Seed;

const TEMPLATE: &str = "template";
const OVERLAY: &str = "overlay-volume";
const OVERLAYS: &str = "overlay-volumes";
const SEED: &str = "seed-volume";
/// Name of the instance's NVRAM volume in its pool (the file libvirt
/// creates is a volume once the pool is refreshed).
const NVRAM: &str = "nvram-volume";
const LABEL: &str = "label.";
/// Infix of every instance volume's name: `<instance>--inst-<mark>-<part>`.
const VOLUME_INFIX: &str = "--inst-";

/// The name of `instance`'s volume `part` (`disk0.qcow2`, `seed.iso`,
/// `nvram.fd`) made on the host whose [`Host::volume_mark`] is `mark`.
pub fn instance_volume_name(instance: &str, mark: &str, part: &str) -> String {
    format!("{instance}{VOLUME_INFIX}{mark}-{part}")
}

/// The instance whose volume `name` is, when `name` is one made on the
/// host of `mark`: `<instance>--inst-<mark>-` then `disk<N>.qcow2`,
/// `seed.iso` or `nvram.fd`.
fn instance_of_volume<'a>(name: &'a str, mark: &str) -> Option<&'a str> {
    let (instance, rest) = name.split_once(VOLUME_INFIX)?;
    let part = rest.strip_prefix(mark)?.strip_prefix('-')?;
    let disk = part
        .strip_prefix("disk")
        .and_then(|p| p.strip_suffix(".qcow2"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let slot = part == STATE_PART || part == CLONE_PART;
    (!instance.is_empty() && (disk || slot || part == "seed.iso" || part == "nvram.fd"))
        .then_some(instance)
}

/// Eight hex digits naming a host: FNV-1a of the first label of its name,
/// lowercased. Not a secret and not proof against a stranger choosing
/// the same name; it keeps hosts that share a pool apart.
fn mark_of_hostname(hostname: &str) -> String {
    let label = hostname
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}", (h ^ (h >> 32)) as u32)
}

/// An instance's own NVRAM file.
#[derive(Debug, Clone)]
struct NvramFile {
    /// Its path, in the template's pool's directory.
    path: String,
    /// Its volume's name in that pool.
    volume: String,
}

/// Refuses a name that cannot name an instance and its volumes.
fn check_instance_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.contains(VOLUME_INFIX) {
        return Err(Error::Invalid {
            field: "name",
            message: format!(
                "'{name}' cannot name an instance: it may not be empty or contain '/' or '{VOLUME_INFIX}'"
            ),
        });
    }
    Ok(())
}

/// The placeholders' values: the caller's, with `hostname` and `name`
/// defaulting to the instance's name.
fn instance_vars(spec: &InstanceSpec) -> BTreeMap<String, String> {
    let mut vars = spec.vars.clone();
    vars.entry("hostname".into())
        .or_insert_with(|| spec.name.clone());
    vars.entry("name".into())
        .or_insert_with(|| spec.name.clone());
    vars
}

/// The instance's seed image: template `t`'s cloud-init files with
/// their placeholders filled from `vars`.
fn seed_iso(
    t: &TemplateSpec,
    spec: &InstanceSpec,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let name = &spec.name;
    let user = if t.user_data.is_empty() {
        spec.default_user_data.clone().unwrap_or_default()
    } else {
        t.user_data.clone()
    };
    let user = fill_placeholders(&user, vars);
    let meta = match &t.meta_data {
        Some(m) => fill_placeholders(m, vars),
        None => format!("instance-id: {name}\nlocal-hostname: {name}\n"),
    };
    let mut seed = Seed::nocloud(
        &user,
        &meta,
        t.network_config
            .as_ref()
            .map(|n| fill_placeholders(n, vars))
            .as_deref(),
    )
    .label(t.cloudinit_label.as_deref().unwrap_or(DEFAULT_LABEL));
    for (file, text) in &t.cloudinit_files {
        seed = seed.file(file, fill_placeholders(text, vars).into_bytes());
    }
    seed.to_iso().map_err(|e| Error::Invalid {
        field: "cloudinit_files",
        message: e.to_string(),
    })
}

/// The CD-ROM that carries the seed at `path`.
fn seed_disk(path: &str) -> DiskDef {
    DiskDef {
        device: DiskDevice::Cdrom,
        source: DiskSource::File(path.to_string()),
        format: Some("raw".into()),
        bus: DiskBus::Sata,
        target: String::new(),
        wwn: None,
        driver: Default::default(),
    }
}

/// What the instance's domain says it is: its template, volumes and the
/// caller's labels.
fn instance_metadata(
    t: &TemplateSpec,
    spec: &InstanceSpec,
    overlay_keys: &[String],
    seed_key: &str,
    nvram: Option<&NvramFile>,
) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::from([
        (KIND.to_string(), "instance".to_string()),
        (TEMPLATE.to_string(), t.domain.name.clone()),
        (
            OVERLAY.to_string(),
            overlay_keys.first().cloned().unwrap_or_default(),
        ),
        (OVERLAYS.to_string(), overlay_keys.join("\n")),
        (SEED.to_string(), seed_key.to_string()),
        (POOL.to_string(), t.pool.clone()),
    ]);
    if let Some(n) = nvram {
        metadata.insert(NVRAM.to_string(), n.volume.clone());
    }
    for (k, v) in &spec.labels {
        metadata.insert(format!("{LABEL}{k}"), v.clone());
    }
    metadata
}

/// The instance's domain: template `t`'s hardware with the instance's
/// name, disks, channels, NVRAM file and metadata, no UUID or MAC
/// addresses of its own (libvirt picks them).
fn instance_def(
    t: &TemplateSpec,
    spec: &InstanceSpec,
    genid: Option<GenId>,
    vars: &BTreeMap<String, String>,
    disks: Vec<DiskDef>,
    nvram: Option<&NvramFile>,
    metadata: BTreeMap<String, String>,
) -> DomainDef {
    let mut def = t.domain.clone();
    def.name = spec.name.clone();
    def.uuid = None;
    for i in &mut def.interfaces {
        i.mac = None;
    }
    def.disks = disks;
    def.assign_targets();
    if genid.is_some() {
        def.genid = genid;
    }
    for c in &spec.channels {
        if !def.channels.contains(c) {
            def.channels.push(c.clone());
        }
    }
    def.os.nvram = nvram.map(|n| NvramDef {
        file: n.path.clone(),
        template: t.nvram_template.clone(),
    });
    // Console files may name the instance: `/var/log/vm/{{name}}.log`.
    for c in &mut def.consoles {
        for p in [&mut c.source_path, &mut c.log_file].into_iter().flatten() {
            *p = fill_placeholders(p, vars);
        }
    }
    def.metadata = metadata;
    def
}

/// What to make.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Template name or UUID.
    pub template: String,
    /// Domain name, also the guest's host name.
    pub name: String,
    /// Values for the `{{key}}` placeholders of the template's files;
    /// `hostname` and `name` default to the instance's name.
    pub vars: BTreeMap<String, String>,
    /// `user-data` to use when the template has none (placeholders filled too).
    pub default_user_data: Option<String>,
    /// The caller's own metadata (no secrets: any local user can read it).
    pub labels: BTreeMap<String, String>,
    /// virtio-serial channels to add to the template's, by name (see
    /// [`super::channel`]).
    pub channels: Vec<String>,
}

/// An instance that was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Domain UUID.
    pub uuid: String,
    /// Domain name (also its host name).
    pub name: String,
    /// Key of the overlay of the template's first disk.
    pub overlay_key: String,
    /// Keys of the overlays of every template disk, in disk order.
    pub overlay_keys: Vec<String>,
    /// Key of its seed volume.
    pub seed_key: String,
    /// Path of its own NVRAM file (templates with firmware).
    pub nvram_path: Option<String>,
}

/// An instance found on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Domain UUID.
    pub uuid: String,
    /// Domain name.
    pub name: String,
    /// Template it was made from.
    pub template: String,
    /// The caller's labels.
    pub labels: BTreeMap<String, String>,
    /// Memory it may use, KiB.
    pub memory_kib: u64,
}

/// Memory of a host as `virt-launch --mem-limit` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// The host's memory, KiB.
    pub total_kib: u64,
    /// The larger of memory in use and the running domains' allocations, KiB.
    pub in_use_kib: u64,
}

impl Host {
    /// The mark this host puts in its instance volumes' names (see the
    /// module's documentation).
    pub fn volume_mark(&self) -> Result<String> {
        let name = self.raw().hostname().map_err(|e| Error::Libvirt {
            context: "read the host's name".into(),
            message: e.message().to_string(),
        })?;
        Ok(mark_of_hostname(&name))
    }

    /// Makes and starts an instance as a transient domain. On failure
    /// whatever was made is removed.
    pub fn launch_instance(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.launch_instance_with(spec, None)
    }

    /// As [`Host::launch_instance`], with the domain's `<genid>` set
    /// when `genid` is given.
    pub(super) fn launch_instance_with(
        &self,
        spec: &InstanceSpec,
        genid: Option<GenId>,
    ) -> Result<Instance> {
        check_instance_name(&spec.name)?;
        let t = self.template(&spec.template)?;
        let template_def = self.domain_def(&spec.template)?;
        let name = spec.name.as_str();
        let mark = self.volume_mark()?;
        let volume_name = |part: &str| instance_volume_name(name, &mark, part);
        let vars = instance_vars(spec);
        let iso = seed_iso(&t, spec, &vars)?;
        let nvram = self.instance_nvram(&t, volume_name("nvram.fd"))?;
        let bases: Vec<&DiskDef> = template_def
            .disks
            .iter()
            .filter(|d| d.device == DiskDevice::Disk)
            .collect();

        let mut made: Vec<String> = Vec::new();
        let result = (|| {
            let (mut disks, overlay_keys) =
                self.make_overlays(&t.pool, &bases, &volume_name, &mut made)?;
            let seed = self.make_seed(&t.pool, &volume_name("seed.iso"), &iso, &mut made)?;
            disks.push(seed_disk(&seed.path));
            let metadata = instance_metadata(&t, spec, &overlay_keys, &seed.key, nvram.as_ref());
            let def = instance_def(&t, spec, genid, &vars, disks, nvram.as_ref(), metadata);
            let uuid = self.start_instance(&t, &def)?;
            Ok(Instance {
                uuid,
                name: name.to_string(),
                overlay_key: overlay_keys.first().cloned().unwrap_or_default(),
                overlay_keys,
                seed_key: seed.key,
                nvram_path: nvram.as_ref().map(|n| n.path.clone()),
            })
        })();
        if result.is_err() {
            self.remove_unstarted_instance(&t.pool, &made, nvram.as_ref());
        }
        result
    }

    /// The NVRAM file of instance volume `volume` when template `t` has
    /// firmware, checked to be free in the template's pool.
    fn instance_nvram(&self, t: &TemplateSpec, volume: String) -> Result<Option<NvramFile>> {
        if t.domain.os.firmware.is_none() {
            return Ok(None);
        }
        let pool = self.pool(&t.pool)?;
        if pool.path.is_empty() {
            return Err(Error::Invalid {
                field: "pool",
                message: format!(
                    "pool '{}' has no directory for the instances' NVRAM files: use a directory pool for a template with firmware",
                    t.pool
                ),
            });
        }
        // A file left by an earlier instance of this name would be
        // used as it is, not copied afresh from the template.
        if self.volume(&t.pool, &volume).is_ok() {
            return Err(Error::Invalid {
                field: "name",
                message: format!(
                    "pool '{}' already holds the NVRAM volume '{volume}' of an instance of this name: remove it or pick another name",
                    t.pool
                ),
            });
        }
        Ok(Some(NvramFile {
            path: format!("{}/{volume}", pool.path.trim_end_matches('/')),
            volume,
        }))
    }

    /// Makes a copy-on-write overlay in `pool` of each base disk, named
    /// `disk<N>.qcow2`, recording each key in `made`: the instance's
    /// disks and the overlays' keys, in disk order.
    fn make_overlays(
        &self,
        pool: &str,
        bases: &[&DiskDef],
        volume_name: &dyn Fn(&str) -> String,
        made: &mut Vec<String>,
    ) -> Result<(Vec<DiskDef>, Vec<String>)> {
        let mut disks = Vec::new();
        let mut overlay_keys = Vec::new();
        for (i, d) in bases.iter().enumerate() {
            let base = self.volume_by_path(d.source.path())?;
            let mut ov = VolumeSpec::new(
                &volume_name(&format!("disk{i}.qcow2")),
                base.capacity,
                VolumeFormat::Qcow2,
            );
            ov.backing = Some(Backing {
                path: base.path.clone(),
                format: VolumeFormat::parse(&base.format, "base_volume_key")
                    .unwrap_or(VolumeFormat::Raw),
            });
            ov.mode = Some(0o600);
            let overlay = self.create_volume(pool, &ov)?;
            made.push(overlay.key.clone());
            overlay_keys.push(overlay.key.clone());
            disks.push(DiskDef {
                device: DiskDevice::Disk,
                source: DiskSource::File(overlay.path.clone()),
                format: Some("qcow2".into()),
                bus: d.bus,
                target: d.target.clone(),
                wwn: None,
                driver: Default::default(),
            });
        }
        Ok((disks, overlay_keys))
    }

    /// Makes the seed volume `volume` in `pool` holding `iso`, recording
    /// its key in `made`.
    fn make_seed(
        &self,
        pool: &str,
        volume: &str,
        iso: &[u8],
        made: &mut Vec<String>,
    ) -> Result<VolumeInfo> {
        let mut sp = VolumeSpec::new(volume, iso.len() as u64, VolumeFormat::Raw);
        sp.mode = Some(0o600);
        let seed = self.create_volume(pool, &sp)?;
        made.push(seed.key.clone());
        self.upload_bytes(&seed.key, iso)?;
        Ok(seed)
    }

    /// Starts `def` as a transient domain, after template `t`'s
    /// stylesheet: the instance's UUID.
    fn start_instance(&self, t: &TemplateSpec, def: &DomainDef) -> Result<String> {
        def.validate()?;
        let mut xml = def.to_xml();
        if let Some(xslt) = &t.xslt {
            xml = DomainDef::apply_xslt(&xml, xslt)?;
        }
        let name = &def.name;
        // Transient: the domain goes away when the guest powers off
        // (the model writes on_poweroff destroy).
        let dom = self
            .raw()
            .create_domain_xml(&xml, 0)
            .map_err(|e| Error::Libvirt {
                context: format!("start instance '{name}'"),
                message: e.message().to_string(),
            })?;
        dom.uuid_string().map_err(|e| Error::Libvirt {
            context: format!("read the UUID of instance '{name}'"),
            message: e.message().to_string(),
        })
    }

    /// Removes the volumes `made` (keys) of an instance that did not
    /// start, last made first, and its NVRAM file if libvirt made one.
    fn remove_unstarted_instance(&self, pool: &str, made: &[String], nvram: Option<&NvramFile>) {
        for key in made.iter().rev() {
            let _ = self.delete_volume(key);
        }
        // libvirt may have made the NVRAM file before QEMU failed.
        if let Some(n) = nvram {
            if let Ok(v) = self.volume(pool, &n.volume) {
                let _ = self.delete_volume(&v.key);
            }
        }
    }

    /// Makes and starts an instance called `name` whose placeholders get
    /// `vars` plus `hostname` and `name`.
    pub fn instantiate(
        &self,
        template: &str,
        name: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<Instance> {
        self.launch_instance(&InstanceSpec {
            template: template.to_string(),
            name: name.to_string(),
            vars: vars.clone(),
            ..Default::default()
        })
    }

    /// Sets label `key` of running instance `id` to `value` (its live
    /// metadata, which [`Host::instances`] reads; a transient instance has
    /// no other).
    pub fn set_instance_label(&self, id: &str, key: &str, value: &str) -> Result<()> {
        let mut metadata = DomainDef::from_xml(&self.domain_xml(id)?)?.metadata;
        if metadata.get(KIND).map(String::as_str) != Some("instance") {
            return Err(Error::Invalid {
                field: "name",
                message: format!("domain '{id}' is not an instance made from a template"),
            });
        }
        metadata.insert(format!("{LABEL}{key}"), value.to_string());
        let dom = self.lookup_domain(id)?;
        dom.set_metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(&super::domain_xml::metadata_fragment(&metadata)),
            Some("kvmhost"),
            Some(super::domain_xml::METADATA_NS),
            virt::sys::VIR_DOMAIN_AFFECT_LIVE,
        )
        .map_err(lv(
            format!("set label '{key}' of instance '{id}'"),
            "domain",
            id,
        ))
    }

    /// Label `key` of running instance `id`, if it has one.
    pub fn instance_label(&self, id: &str, key: &str) -> Result<Option<String>> {
        let metadata = DomainDef::from_xml(&self.domain_xml(id)?)?.metadata;
        Ok(metadata.get(&format!("{LABEL}{key}")).cloned())
    }

    /// The running instances on the host, with their labels.
    pub fn instances(&self) -> Result<Vec<InstanceInfo>> {
        let doms = self
            .raw()
            .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(lv("list domains", "domain", ""))?;
        let mut out = Vec::new();
        for dom in doms {
            // A domain that went away between listing and reading is skipped.
            let Ok(xml) = dom.xml_desc(0) else { continue };
            let def = super::domain_xml::DomainDef::from_xml(&xml)?;
            if def.metadata.get(KIND).map(String::as_str) != Some("instance") {
                continue;
            }
            let labels = def
                .metadata
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(LABEL)?.to_string(), v.clone())))
                .collect();
            out.push(InstanceInfo {
                uuid: def.uuid.clone().unwrap_or_default(),
                name: def.name.clone(),
                template: def.metadata.get(TEMPLATE).cloned().unwrap_or_default(),
                labels,
                memory_kib: def.memory_mib << 10,
            });
        }
        Ok(out)
    }

    /// Powers an instance off and removes it with its overlays and seed.
    pub fn remove_instance(&self, id: &str) -> Result<()> {
        let def = self.domain_def(id)?;
        if def.metadata.get(KIND).map(String::as_str) != Some("instance") {
            return Err(Error::Invalid {
                field: "instance",
                message: format!(
                    "domain '{id}' was not made from a template; remove it as a domain"
                ),
            });
        }
        match self.undefine_domain(id) {
            Ok(()) => {}
            // A transient domain is gone once powered off.
            Err(e) if e.is_not_found() => {}
            // Destroyed but not undefinable: a transient domain, now gone.
            Err(_) if self.domain_status(id).is_err_and(|s| s.is_not_found()) => {}
            Err(e) => return Err(e),
        }
        let mut keys: Vec<String> = def
            .metadata
            .get(OVERLAYS)
            .map(|o| o.lines().map(str::to_string).collect())
            .unwrap_or_default();
        keys.extend(def.metadata.get(OVERLAY).cloned());
        keys.extend(def.metadata.get(SEED).cloned());
        // libvirt made the NVRAM file: the pool knows it once refreshed.
        if let (Some(pool), Some(volume)) = (def.metadata.get(POOL), def.metadata.get(NVRAM)) {
            match self.volume(pool, volume) {
                Ok(v) => keys.push(v.key),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        // A saved slot's clone: only its overlay is its own.
        if let Some(pool) = def.metadata.get(POOL) {
            let mark = self.volume_mark()?;
            if self
                .volume(pool, &instance_volume_name(&def.name, &mark, STATE_PART))
                .is_ok()
            {
                keys = match self.volume(pool, &instance_volume_name(&def.name, &mark, CLONE_PART))
                {
                    Ok(v) => vec![v.key],
                    Err(_) => Vec::new(),
                };
            }
        }
        keys.dedup();
        for key in keys.iter().filter(|k| !k.is_empty()) {
            match self.delete_volume(key) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                // A pool refresh by another client between lookup and
                // delete makes libvirt say "not found" by name: try again.
                Err(_) => match self.delete_volume(key) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(())
    }

    /// Deletes the volumes in `pool` that this host made for instances
    /// that no longer run here (overlays, seeds, NVRAM files), once
    /// untouched for `grace` (so volumes of an instance being made right
    /// now are left alone). Volumes another host made, and any volume
    /// not named as this host names instance volumes, are left alone.
    /// Returns the names deleted.
    pub fn sweep_instance_volumes(&self, pool: &str, grace: Duration) -> Result<Vec<String>> {
        let mark = self.volume_mark()?;
        let running: HashSet<String> = self
            .raw()
            .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(lv("list domains", "domain", ""))?
            .iter()
            .filter_map(|d| d.name().ok())
            .collect();
        let p = self.raw().lookup_storage_pool_by_name(pool).map_err(lv(
            format!("look up storage pool '{pool}'"),
            "storage pool",
            pool,
        ))?;
        let _ = p.refresh(0);
        let vols = p.list_all_volumes(0).map_err(|e| Error::Libvirt {
            context: format!("list volumes of pool '{pool}'"),
            message: e.message().to_string(),
        })?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let names: Vec<String> = vols.iter().filter_map(|v| v.name().ok()).collect();
        // A saved slot's files stay while its state file does; only a
        // gone clone's overlay goes.
        let slots: HashSet<&str> = names
            .iter()
            .filter(|n| n.ends_with(&format!("-{STATE_PART}")))
            .filter_map(|n| instance_of_volume(n, &mark))
            .collect();
        let mut removed = Vec::new();
        for vol in vols {
            let Ok(name) = vol.name() else { continue };
            let Some(owner) = instance_of_volume(&name, &mark) else {
                continue;
            };
            if running.contains(owner)
                || (slots.contains(owner) && !name.ends_with(&format!("-{CLONE_PART}")))
            {
                continue;
            }
            let Ok(xml) = vol.xml_desc(0) else { continue };
            let changed = last_change(&xml).unwrap_or(now);
            if now.saturating_sub(changed) < grace {
                continue;
            }
            if vol.delete(0).is_ok() {
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// The host's memory as `virt-launch --mem-limit` counts it.
    pub fn memory_use(&self) -> Result<MemoryUse> {
        let node = self.node_info()?;
        let used = node
            .memory_kib
            .saturating_sub(node.free_memory_bytes / 1024);
        let doms = self
            .raw()
            .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(lv("list domains", "domain", ""))?;
        let allocated: u64 = doms
            .iter()
            .filter_map(|d| d.info().ok())
            .map(|i| i.max_mem)
            .sum();
        Ok(MemoryUse {
            total_kib: node.memory_kib,
            in_use_kib: used.max(allocated),
        })
    }
}

/// The newest of a volume's mtime and ctime, from its XML timestamps.
fn last_change(xml: &str) -> Option<Duration> {
    volume_time(xml, &["mtime", "ctime"])
}

/// The latest of the volume timestamps `keys` (`mtime`, `ctime`) in `xml`.
pub(super) fn volume_time(xml: &str, keys: &[&str]) -> Option<Duration> {
    let doc = parse("volume XML", xml).ok()?;
    let ts = child(child(doc.root_element(), "target")?, "timestamps")?;
    keys.iter()
        .filter_map(|k| {
            let t = child_text(ts, k)?;
            let (s, frac) = t.split_once('.').unwrap_or((&t, "0"));
            let nanos: u32 = format!("{frac:0<9}")[..9].parse().ok()?;
            Some(Duration::new(s.parse().ok()?, nanos))
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_timestamps_are_read_from_the_xml() {
        let xml = "<volume><target><timestamps><atime>1.0</atime><mtime>1700000000.5</mtime><ctime>1600000000.25</ctime></timestamps></target></volume>";
        assert_eq!(
            last_change(xml),
            Some(Duration::new(1_700_000_000, 500_000_000))
        );
        assert_eq!(last_change("<volume/>"), None);
    }

    #[test]
    fn an_instance_volume_name_carries_its_host_and_only_those_names_are_read_back() {
        let mark = mark_of_hostname("vmhost02.example.com");
        assert_eq!(mark, mark_of_hostname("VMHOST02"));
        assert_ne!(mark, mark_of_hostname("vmhost03"));
        assert_eq!(mark.len(), 8);
        let name = instance_volume_name("agent-7f3a", &mark, "disk1.qcow2");
        assert_eq!(name, format!("agent-7f3a--inst-{mark}-disk1.qcow2"));
        assert_eq!(instance_of_volume(&name, &mark), Some("agent-7f3a"));
        for part in [
            "seed.iso",
            "nvram.fd",
            "disk0.qcow2",
            "disk12.qcow2",
            "memory.save",
            "clone.qcow2",
        ] {
            let n = instance_volume_name("a", &mark, part);
            assert_eq!(instance_of_volume(&n, &mark), Some("a"), "{n}");
        }
        let other = mark_of_hostname("vmhost03");
        for stranger in [
            "db--inst-data.qcow2".to_string(),
            "agent-7f3a--inst-disk0.qcow2".into(),
            "agent-7f3a--inst-seed.iso".into(),
            instance_volume_name("agent-7f3a", &other, "disk0.qcow2"),
            instance_volume_name("agent-7f3a", &mark, "data.qcow2"),
            instance_volume_name("agent-7f3a", &mark, "disk.qcow2"),
            instance_volume_name("agent-7f3a", &mark, "seed.iso.bak"),
            instance_volume_name("", &mark, "seed.iso"),
        ] {
            assert_eq!(instance_of_volume(&stranger, &mark), None, "{stranger}");
        }
    }

    #[test]
    fn the_sweep_takes_this_hosts_leaked_instance_volumes_and_nothing_else() {
        let host = Host::open("test:///default").unwrap();
        let pool = "default-pool";
        let mark = host.volume_mark().unwrap();
        let other = mark_of_hostname("some-other-host");
        assert_ne!(mark, other);
        let ours = |i: &str, part: &str| instance_volume_name(i, &mark, part);
        let leaked = [
            ours("sw-gone", "disk0.qcow2"),
            ours("sw-gone", "disk1.qcow2"),
            ours("sw-gone", "seed.iso"),
            ours("sw-gone", "nvram.fd"),
        ];
        let kept = [
            // An operator's volume and one of the old unmarked shape.
            "db--inst-data.qcow2".to_string(),
            "sw-old--inst-seed.iso".to_string(),
            // Another host's instance, not running here, in the shared pool.
            instance_volume_name("sw-elsewhere", &other, "disk0.qcow2"),
            instance_volume_name("sw-elsewhere", &other, "seed.iso"),
            // Ours, of an instance that runs.
            ours("sw-running", "disk0.qcow2"),
            ours("sw-running", "seed.iso"),
        ];
        for n in leaked.iter().chain(&kept) {
            host.create_volume(pool, &VolumeSpec::new(n, 1 << 20, VolumeFormat::Raw))
                .unwrap();
        }
        let running = host
            .raw()
            .create_domain_xml(
                "<domain type='test'><name>sw-running</name><memory unit='KiB'>1024</memory>\
                 <os><type>hvm</type></os></domain>",
                0,
            )
            .unwrap();

        let mut swept = host.sweep_instance_volumes(pool, Duration::ZERO).unwrap();
        swept.sort();
        let mut want = leaked.to_vec();
        want.sort();
        assert_eq!(swept, want);
        for n in &kept {
            let v = host
                .volume(pool, n)
                .unwrap_or_else(|e| panic!("{n} was swept: {e}"));
            host.delete_volume(&v.key).unwrap();
        }
        running.destroy().unwrap();
    }

    #[test]
    fn a_label_set_on_a_running_instance_is_listed_with_the_others() {
        let host = Host::open("test:///default").unwrap();
        let def = DomainDef {
            name: "lbl-inst".into(),
            kind: super::super::domain_xml::DomainKind::Qemu,
            memory_mib: 1,
            vcpu: 1,
            metadata: BTreeMap::from([
                (KIND.to_string(), "instance".to_string()),
                (TEMPLATE.to_string(), "t".to_string()),
                (format!("{LABEL}warm"), "1".to_string()),
            ]),
            ..Default::default()
        };
        let xml = def.to_xml().replace("type='qemu'", "type='test'");
        let dom = host.raw().create_domain_xml(&xml, 0).unwrap();
        host.set_instance_label("lbl-inst", "job", "j-1 & <2>")
            .unwrap();
        let found = host.instances().unwrap();
        let i = found.iter().find(|i| i.name == "lbl-inst").unwrap();
        assert_eq!(i.labels.get("job").map(String::as_str), Some("j-1 & <2>"));
        assert_eq!(i.labels.get("warm").map(String::as_str), Some("1"));
        // Not an instance: refused, naming it.
        let plain = host
            .raw()
            .create_domain_xml(
                "<domain type='test'><name>lbl-plain</name><memory unit='KiB'>1024</memory>\
                 <os><type>hvm</type></os></domain>",
                0,
            )
            .unwrap();
        let err = host
            .set_instance_label("lbl-plain", "job", "x")
            .unwrap_err();
        assert!(
            err.to_string().contains("'lbl-plain' is not an instance"),
            "{err}"
        );
        dom.destroy().unwrap();
        plain.destroy().unwrap();
    }

    #[test]
    fn an_instance_name_that_would_confuse_the_sweep_is_refused() {
        let host = Host::open("test:///default").unwrap();
        let err = host
            .launch_instance(&InstanceSpec {
                template: "t".into(),
                name: "a--inst-b".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid name"), "{err}");
    }
}

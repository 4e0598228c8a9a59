//! Templates and instances: a reusable VM kept inside libvirt.
//!
//! A template is a domain that is defined but never started. Its disks
//! are the base volumes, in order; its metadata holds the pool for
//! instances and what only instances use (the NVRAM template, the XSLT
//! stylesheet); its cloud-init files, in which `{{hostname}}`-style
//! placeholders are filled per instance, sit with their volume label in a
//! root-only volume beside it (they hold secrets such as the agent token,
//! and a domain's metadata is readable by every local user). Instances are
//! made from it by [`super::instance`]: all through the same connection,
//! nothing to copy to hosts.

use std::collections::BTreeMap;

use super::domain_xml::{DiskBus, DiskDef, DiskDevice, DiskSource, DomainDef};
use super::error::{Error, Result};
use super::volume::{VolumeFormat, VolumeSpec};
use super::Host;
use crate::nocloud::Seed;

pub(super) const KIND: &str = "kind";
const BASE: &str = "base-volume";
/// Every base volume's key, one a line, in disk order.
pub(super) const BASES: &str = "base-volumes";
pub(super) const POOL: &str = "pool";
const NVRAM_TEMPLATE: &str = "nvram-template";
const XSLT: &str = "xslt";
const CPU_MODEL: &str = "cpu-model";
/// Volume label of the seeds when none is given (cloud-init's NoCloud).
pub const DEFAULT_LABEL: &str = "cidata";
pub(super) const SEED_FILES: &str = "seed-files-volume";
const SEED_FILES_SUFFIX: &str = ".seed-files.iso";
const USER_DATA: &str = "user-data";
const META_DATA: &str = "meta-data";
const NETWORK_CONFIG: &str = "network-config";

/// A template to keep on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateSpec {
    /// Hardware of every instance. Its name is the template's name; its
    /// disks are replaced by the base volumes (template) or the overlays
    /// and seed (instance); MAC addresses are dropped per instance. With
    /// `os.firmware` set, every instance gets its own NVRAM file.
    pub domain: DomainDef,
    /// Key of the base volume instances overlay (their first disk).
    pub base_volume_key: String,
    /// Keys of further base volumes, overlaid per instance after the
    /// first, in this order.
    pub extra_base_volume_keys: Vec<String>,
    /// UEFI variables file each instance's own NVRAM starts as (libvirt
    /// copies it at the instance's start). Needs `domain.os.firmware`.
    pub nvram_template: Option<String>,
    /// XSLT stylesheet applied to each instance's XML before it starts.
    pub xslt: Option<String>,
    /// Volume label of each instance's seed; [`DEFAULT_LABEL`] when none
    /// (Windows config-drive readers look for `config-2`).
    pub cloudinit_label: Option<String>,
    /// Cloud-init files besides `user-data`, `meta-data` and
    /// `network-config`, by name, with placeholders.
    pub cloudinit_files: BTreeMap<String, String>,
    /// Pool that receives instances' overlays and seeds.
    pub pool: String,
    /// `user-data` with placeholders such as `{{hostname}}`.
    pub user_data: String,
    /// `meta-data`; default `instance-id` and `local-hostname` of the instance.
    pub meta_data: Option<String>,
    /// `network-config`, when any.
    pub network_config: Option<String>,
}

pub use super::instance::Instance;

/// Replaces each `{{key}}` by its value; unknown placeholders stay.
pub fn fill_placeholders(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

/// The cloud-init files of a template and the label of its seeds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeedFiles {
    label: String,
    files: BTreeMap<String, String>,
}

/// The field a seed-image error belongs to.
fn seed_error(e: crate::nocloud::SeedError) -> Error {
    use crate::nocloud::SeedError as S;
    let field = match &e {
        S::BadLabel(_) => "cloudinit_label",
        S::BadName(_) | S::Duplicate(_) => "cloudinit_files",
        _ => "user_data",
    };
    Error::Invalid {
        field,
        message: e.to_string(),
    }
}

impl TemplateSpec {
    /// Every cloud-init file by name: `user-data` (always), `meta-data`
    /// and `network-config` when given, then the others.
    fn all_files(&self) -> Result<BTreeMap<String, String>> {
        let mut files = BTreeMap::from([(USER_DATA.to_string(), self.user_data.clone())]);
        if let Some(m) = &self.meta_data {
            files.insert(META_DATA.into(), m.clone());
        }
        if let Some(n) = &self.network_config {
            files.insert(NETWORK_CONFIG.into(), n.clone());
        }
        for (name, text) in &self.cloudinit_files {
            if files.insert(name.clone(), text.clone()).is_some() {
                return Err(Error::Invalid {
                    field: "cloudinit_files",
                    message: format!(
                        "'{name}' is also given as its own attribute: give it in one place"
                    ),
                });
            }
        }
        Ok(files)
    }
}

impl Host {
    /// Defines (or redefines) a template domain; returns its UUID.
    ///
    /// The cloud-init files (the agent token among them) go into a volume
    /// of mode 0600 in the template's pool, not into the domain's
    /// metadata: libvirt's read-only socket is open to every local user,
    /// and `virsh -r dumpxml` shows metadata to all of them.
    pub fn define_template(&self, spec: &TemplateSpec) -> Result<String> {
        let mut bases = Vec::new();
        let keys = std::iter::once(&spec.base_volume_key).chain(&spec.extra_base_volume_keys);
        for (i, key) in keys.enumerate() {
            let base = self.volume_by_key(key).map_err(|e| match e {
                Error::NotFound { .. } if i == 0 => Error::Invalid {
                    field: "base_volume_key",
                    message: format!("no volume has the key '{key}'"),
                },
                Error::NotFound { .. } => Error::Invalid {
                    field: "extra_base_volume_keys",
                    message: format!("no volume has the key '{key}' (disk {i})"),
                },
                e => e,
            })?;
            bases.push(base);
        }
        self.pool(&spec.pool).map_err(|e| match e {
            Error::NotFound { .. } => Error::Invalid {
                field: "pool",
                message: format!("storage pool '{}' does not exist on the host", spec.pool),
            },
            e => e,
        })?;
        if spec.nvram_template.is_some() && spec.domain.os.firmware.is_none() {
            return Err(Error::Invalid {
                field: "nvram_template",
                message:
                    "per-instance NVRAM needs firmware: give the UEFI loader's path in firmware too"
                        .into(),
            });
        }
        let mut def = spec.domain.clone();
        def.validate()?;
        def.uuid = self.domain_status(&def.name).ok().map(|s| s.uuid);
        def.os.nvram = None;
        def.disks = bases
            .iter()
            .map(|base| DiskDef {
                device: DiskDevice::Disk,
                source: DiskSource::File(base.path.clone()),
                format: Some(
                    if base.format == "qcow2" {
                        "qcow2"
                    } else {
                        "raw"
                    }
                    .into(),
                ),
                bus: DiskBus::Virtio,
                target: String::new(),
                wwn: None,
                driver: Default::default(),
            })
            .collect();
        def.assign_targets();
        for i in &mut def.interfaces {
            i.mac = None;
        }
        // A stylesheet that fails fails now, not at every instance's start.
        if let Some(xslt) = &spec.xslt {
            DomainDef::apply_xslt(&def.to_xml(), xslt)?;
        }
        let files = self.store_seed_files(spec)?;
        def.metadata.insert(KIND.into(), "template".into());
        def.metadata
            .insert(BASE.into(), spec.base_volume_key.clone());
        let all: Vec<&str> = std::iter::once(&spec.base_volume_key)
            .chain(&spec.extra_base_volume_keys)
            .map(String::as_str)
            .collect();
        def.metadata.insert(BASES.into(), all.join("\n"));
        def.metadata.insert(POOL.into(), spec.pool.clone());
        def.metadata.insert(SEED_FILES.into(), files.clone());
        let optional = [
            (NVRAM_TEMPLATE, &spec.nvram_template),
            (XSLT, &spec.xslt),
            (CPU_MODEL, &spec.domain.cpu_model),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                def.metadata.insert(k.into(), v.clone());
            }
        }
        match self.define_domain(&def) {
            Ok(uuid) => Ok(uuid),
            Err(e) => {
                if def.uuid.is_none() {
                    let _ = self.delete_volume(&files);
                }
                Err(e)
            }
        }
    }

    /// Writes the template's cloud-init files, as an image with the
    /// template's label, into the root-only volume
    /// `<template>.seed-files.iso`; returns its key.
    fn store_seed_files(&self, spec: &TemplateSpec) -> Result<String> {
        let label = spec.cloudinit_label.as_deref().unwrap_or(DEFAULT_LABEL);
        let mut seed = Seed::new().label(label);
        for (name, text) in spec.all_files()? {
            seed = seed.file(&name, text.into_bytes());
        }
        let iso = seed.to_iso().map_err(seed_error)?;
        let name = format!("{}{SEED_FILES_SUFFIX}", spec.domain.name);
        match self.volume(&spec.pool, &name) {
            Ok(old) => self.delete_volume(&old.key)?,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let mut vs = VolumeSpec::new(&name, iso.len() as u64, VolumeFormat::Raw);
        vs.mode = Some(0o600);
        let vol = self.create_volume(&spec.pool, &vs)?;
        if let Err(e) = self.upload_bytes(&vol.key, &iso) {
            let _ = self.delete_volume(&vol.key);
            return Err(e);
        }
        Ok(vol.key)
    }

    /// Reads a template back by name or UUID.
    pub fn template(&self, id: &str) -> Result<TemplateSpec> {
        let mut def = self.domain_def(id)?;
        let meta = def.metadata.clone();
        if meta.get(KIND).map(String::as_str) != Some("template") {
            return Err(Error::NotFound {
                kind: "template",
                name: id.to_string(),
            });
        }
        let get = |k: &str| meta.get(k).cloned();
        def.disks.clear();
        // libvirt names an NVRAM file for a template with firmware; only
        // instances get one of their own.
        def.os.nvram = None;
        // libvirt fills in a model for its default CPU; the template's own
        // model is the one in the metadata.
        def.cpu_model = get(CPU_MODEL);
        for k in [
            KIND,
            BASE,
            BASES,
            POOL,
            SEED_FILES,
            NVRAM_TEMPLATE,
            XSLT,
            CPU_MODEL,
        ] {
            def.metadata.remove(k);
        }
        let mut seed = match get(SEED_FILES) {
            Some(key) => self.read_seed_files(&key)?,
            // Defined before the files moved out of the metadata; the next
            // define moves them.
            None => SeedFiles {
                label: DEFAULT_LABEL.into(),
                files: [USER_DATA, META_DATA, NETWORK_CONFIG]
                    .into_iter()
                    .filter_map(|k| Some((k.to_string(), get(k)?)))
                    .collect(),
            },
        };
        for k in [USER_DATA, META_DATA, NETWORK_CONFIG] {
            def.metadata.remove(k);
        }
        let extra_base_volume_keys = get(BASES)
            .map(|b| b.lines().skip(1).map(str::to_string).collect())
            .unwrap_or_default();
        Ok(TemplateSpec {
            domain: def,
            base_volume_key: get(BASE).unwrap_or_default(),
            extra_base_volume_keys,
            pool: get(POOL).unwrap_or_default(),
            user_data: seed.files.remove(USER_DATA).unwrap_or_default(),
            meta_data: seed.files.remove(META_DATA),
            network_config: seed.files.remove(NETWORK_CONFIG),
            nvram_template: get(NVRAM_TEMPLATE),
            xslt: get(XSLT),
            cloudinit_label: Some(seed.label).filter(|l| l != DEFAULT_LABEL),
            cloudinit_files: seed.files,
        })
    }

    fn read_seed_files(&self, key: &str) -> Result<SeedFiles> {
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let path = dir.path().join("seed-files.iso");
        self.download_volume(key, &path)?;
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let seed = Seed::from_iso(&bytes).map_err(|e| Error::Xml {
            context: format!("cloud-init files of the template in volume {key}"),
            message: e.to_string(),
        })?;
        Ok(SeedFiles {
            label: seed.volume_label().to_string(),
            files: seed
                .files()
                .map(|(n, b)| (n.to_string(), String::from_utf8_lossy(b).into_owned()))
                .collect(),
        })
    }

    /// Removes a template's definition and its cloud-init files (its base
    /// volumes stay).
    pub fn delete_template(&self, id: &str) -> Result<()> {
        self.template(id)?;
        let files = self.domain_def(id)?.metadata.get(SEED_FILES).cloned();
        self.undefine_domain(id)?;
        if let Some(key) = files {
            match self.delete_volume(&key) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libvirt::domain_xml::{DomainKind, OsDef};

    #[test]
    fn placeholders_are_filled_and_unknown_ones_stay() {
        let vars = BTreeMap::from([("hostname".to_string(), "agent-7".to_string())]);
        assert_eq!(
            fill_placeholders("hostname: {{hostname}} {{other}}", &vars),
            "hostname: agent-7 {{other}}"
        );
    }

    #[test]
    fn a_template_whose_files_cannot_be_stored_leaves_nothing_behind() {
        let host = Host::open("test:///default").unwrap();
        let base = host
            .create_volume(
                "default-pool",
                &VolumeSpec::new("base.img", 1 << 20, VolumeFormat::Raw),
            )
            .unwrap();
        let spec = TemplateSpec {
            domain: DomainDef {
                name: "agent-template".into(),
                kind: DomainKind::Qemu,
                memory_mib: 64,
                vcpu: 1,
                os: OsDef {
                    arch: Some("i686".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            base_volume_key: base.key.clone(),
            pool: "default-pool".into(),
            user_data: "#cloud-config\nhostname: {{hostname}}\n".into(),
            meta_data: None,
            network_config: None,
            ..Default::default()
        };
        let vols = |h: &Host| {
            h.raw()
                .lookup_storage_pool_by_name("default-pool")
                .unwrap()
                .list_volumes()
                .unwrap()
        };
        let before = vols(&host);
        // The test driver cannot upload, so the files cannot be stored.
        let err = host.define_template(&spec).unwrap_err();
        assert!(err.to_string().contains("upload"), "{err}");
        assert_eq!(vols(&host), before);
        assert!(host
            .domain_status("agent-template")
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn a_missing_base_volume_names_the_field() {
        let host = Host::open("test:///default").unwrap();
        let spec = TemplateSpec {
            domain: DomainDef {
                name: "t".into(),
                memory_mib: 64,
                vcpu: 1,
                ..Default::default()
            },
            base_volume_key: "/nope".into(),
            pool: "default-pool".into(),
            user_data: String::new(),
            meta_data: None,
            network_config: None,
            ..Default::default()
        };
        let err = host.define_template(&spec).unwrap_err().to_string();
        assert!(err.starts_with("invalid base_volume_key"), "{err}");
    }

    fn small_spec(host: &Host, name: &str) -> TemplateSpec {
        let base = host
            .create_volume(
                "default-pool",
                &VolumeSpec::new(&format!("{name}.img"), 1 << 20, VolumeFormat::Raw),
            )
            .unwrap();
        TemplateSpec {
            domain: DomainDef {
                name: name.into(),
                memory_mib: 64,
                vcpu: 1,
                ..Default::default()
            },
            base_volume_key: base.key,
            pool: "default-pool".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_second_disk_names_the_disk() {
        let host = Host::open("test:///default").unwrap();
        let mut spec = small_spec(&host, "two-disks");
        spec.extra_base_volume_keys = vec!["/nope".into()];
        let err = host.define_template(&spec).unwrap_err().to_string();
        assert!(err.starts_with("invalid extra_base_volume_keys"), "{err}");
        assert!(err.contains("'/nope' (disk 1)"), "{err}");
    }

    #[test]
    fn an_nvram_template_without_firmware_is_refused() {
        let host = Host::open("test:///default").unwrap();
        let mut spec = small_spec(&host, "nvram-only");
        spec.nvram_template = Some("/usr/share/OVMF/OVMF_VARS.fd".into());
        let err = host.define_template(&spec).unwrap_err().to_string();
        assert!(err.starts_with("invalid nvram_template"), "{err}");
        assert!(err.contains("firmware"), "{err}");
    }

    #[test]
    fn a_file_given_twice_names_cloudinit_files() {
        let host = Host::open("test:///default").unwrap();
        let mut spec = small_spec(&host, "twice");
        spec.meta_data = Some("instance-id: a\n".into());
        spec.cloudinit_files = BTreeMap::from([("meta-data".into(), "x".into())]);
        let err = host.define_template(&spec).unwrap_err().to_string();
        assert!(err.starts_with("invalid cloudinit_files"), "{err}");
        assert!(err.contains("'meta-data'"), "{err}");
    }

    #[test]
    fn a_bad_label_names_cloudinit_label() {
        let host = Host::open("test:///default").unwrap();
        let mut spec = small_spec(&host, "label");
        spec.cloudinit_label = Some("config 2".into());
        let err = host.define_template(&spec).unwrap_err().to_string();
        assert!(err.starts_with("invalid cloudinit_label"), "{err}");
        assert!(host.domain_status("label").unwrap_err().is_not_found());
    }

    #[test]
    fn a_broken_stylesheet_is_refused_before_anything_is_made() {
        let host = Host::open("test:///default").unwrap();
        let mut spec = small_spec(&host, "xslt");
        spec.xslt = Some("<not-a-stylesheet/>".into());
        let err = host.define_template(&spec).unwrap_err().to_string();
        assert!(err.starts_with("invalid xslt"), "{err}");
        assert!(host.domain_status("xslt").unwrap_err().is_not_found());
    }
}

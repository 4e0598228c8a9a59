//! Templates and instances: a reusable VM kept inside libvirt.
//!
//! A template is a domain that is defined but never started. Its first
//! disk is the base volume; its metadata holds the pool for instances;
//! its cloud-init files, in which `{{hostname}}`-style placeholders are
//! filled per instance, sit in a root-only volume beside it (they hold
//! secrets such as the agent token, and a domain's metadata is readable
//! by every local user). Instances are made from it by
//! [`super::instance`]: all through the same connection, nothing to copy
//! to hosts.

use std::collections::BTreeMap;

use super::domain_xml::{DiskBus, DiskDef, DiskDevice, DiskSource, DomainDef};
use super::error::{Error, Result};
use super::volume::{VolumeFormat, VolumeSpec};
use super::Host;
use crate::nocloud::Seed;

pub(super) const KIND: &str = "kind";
const BASE: &str = "base-volume";
const POOL: &str = "pool";
const SEED_FILES: &str = "seed-files-volume";
const SEED_FILES_SUFFIX: &str = ".seed-files.iso";
const USER_DATA: &str = "user-data";
const META_DATA: &str = "meta-data";
const NETWORK_CONFIG: &str = "network-config";

/// A template to keep on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// Hardware of every instance. Its name is the template's name; its
    /// disks are replaced by the base volume (template) or the overlay
    /// and seed (instance); MAC addresses are dropped per instance.
    pub domain: DomainDef,
    /// Key of the base volume instances overlay.
    pub base_volume_key: String,
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

impl Host {
    /// Defines (or redefines) a template domain; returns its UUID.
    ///
    /// The cloud-init files (the agent token among them) go into a volume
    /// of mode 0600 in the template's pool, not into the domain's
    /// metadata: libvirt's read-only socket is open to every local user,
    /// and `virsh -r dumpxml` shows metadata to all of them.
    pub fn define_template(&self, spec: &TemplateSpec) -> Result<String> {
        let base = self
            .volume_by_key(&spec.base_volume_key)
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::Invalid {
                    field: "base_volume_id",
                    message: format!("no volume has the key '{}'", spec.base_volume_key),
                },
                e => e,
            })?;
        self.pool(&spec.pool).map_err(|e| match e {
            Error::NotFound { .. } => Error::Invalid {
                field: "pool",
                message: format!("storage pool '{}' does not exist on the host", spec.pool),
            },
            e => e,
        })?;
        let mut def = spec.domain.clone();
        def.validate()?;
        def.uuid = self.domain_status(&def.name).ok().map(|s| s.uuid);
        def.disks = vec![DiskDef {
            device: DiskDevice::Disk,
            source: DiskSource::File(base.path),
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
        }];
        def.assign_targets();
        for i in &mut def.interfaces {
            i.mac = None;
        }
        let files = self.store_seed_files(spec)?;
        def.metadata.insert(KIND.into(), "template".into());
        def.metadata
            .insert(BASE.into(), spec.base_volume_key.clone());
        def.metadata.insert(POOL.into(), spec.pool.clone());
        def.metadata.insert(SEED_FILES.into(), files.clone());
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

    /// Writes the template's cloud-init files, as a NoCloud image, into
    /// the root-only volume `<template>.seed-files.iso`; returns its key.
    fn store_seed_files(&self, spec: &TemplateSpec) -> Result<String> {
        let mut seed = Seed::new()
            .label("cidata")
            .file(USER_DATA, spec.user_data.as_bytes());
        if let Some(m) = &spec.meta_data {
            seed = seed.file(META_DATA, m.as_bytes());
        }
        if let Some(n) = &spec.network_config {
            seed = seed.file(NETWORK_CONFIG, n.as_bytes());
        }
        let iso = seed.to_iso().map_err(|e| Error::Invalid {
            field: "user_data",
            message: e.to_string(),
        })?;
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
        for k in [KIND, BASE, POOL, SEED_FILES] {
            def.metadata.remove(k);
        }
        let (user_data, meta_data, network_config) = match get(SEED_FILES) {
            Some(key) => self.read_seed_files(&key)?,
            // Defined before the files moved out of the metadata; the next
            // define moves them.
            None => (
                get(USER_DATA).unwrap_or_default(),
                get(META_DATA),
                get(NETWORK_CONFIG),
            ),
        };
        for k in [USER_DATA, META_DATA, NETWORK_CONFIG] {
            def.metadata.remove(k);
        }
        Ok(TemplateSpec {
            domain: def,
            base_volume_key: get(BASE).unwrap_or_default(),
            pool: get(POOL).unwrap_or_default(),
            user_data,
            meta_data,
            network_config,
        })
    }

    fn read_seed_files(&self, key: &str) -> Result<(String, Option<String>, Option<String>)> {
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
        let text = |n: &str| seed.get(n).map(|b| String::from_utf8_lossy(b).into_owned());
        Ok((
            text(USER_DATA).unwrap_or_default(),
            text(META_DATA),
            text(NETWORK_CONFIG),
        ))
    }

    /// Removes a template's definition and its cloud-init files (its base
    /// volume stays).
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
        };
        let err = host.define_template(&spec).unwrap_err().to_string();
        assert!(err.starts_with("invalid base_volume_id"), "{err}");
    }
}

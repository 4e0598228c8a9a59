//! Templates and instances: a reusable VM kept inside libvirt.
//!
//! A template is a domain that is defined but never started. Its first
//! disk is the base volume; its metadata holds the pool for instances and
//! the cloud-init files, in which `{{hostname}}`-style placeholders are
//! filled per instance. An instance is a copy-on-write overlay of the
//! base, its own NoCloud seed, and a domain made from the template's
//! definition, all through the same connection: nothing to copy to hosts.

use std::collections::BTreeMap;

use super::domain_xml::{DiskBus, DiskDef, DiskDevice, DiskSource, DomainDef};
use super::error::{Error, Result};
use super::volume::{Backing, VolumeFormat, VolumeSpec};
use super::Host;
use crate::nocloud::Seed;

const KIND: &str = "kind";
const BASE: &str = "base-volume";
const POOL: &str = "pool";
const USER_DATA: &str = "user-data";
const META_DATA: &str = "meta-data";
const NETWORK_CONFIG: &str = "network-config";
const TEMPLATE: &str = "template";
const OVERLAY: &str = "overlay-volume";
const SEED: &str = "seed-volume";

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

/// An instance made from a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Domain UUID.
    pub uuid: String,
    /// Domain name (also its host name).
    pub name: String,
    /// Key of its overlay volume.
    pub overlay_key: String,
    /// Key of its seed volume.
    pub seed_key: String,
}

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
        def.metadata.insert(KIND.into(), "template".into());
        def.metadata
            .insert(BASE.into(), spec.base_volume_key.clone());
        def.metadata.insert(POOL.into(), spec.pool.clone());
        def.metadata
            .insert(USER_DATA.into(), spec.user_data.clone());
        for (k, v) in [
            (META_DATA, &spec.meta_data),
            (NETWORK_CONFIG, &spec.network_config),
        ] {
            match v {
                Some(v) => def.metadata.insert(k.into(), v.clone()),
                None => def.metadata.remove(k),
            };
        }
        self.define_domain(&def)
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
        for k in [KIND, BASE, POOL, USER_DATA, META_DATA, NETWORK_CONFIG] {
            def.metadata.remove(k);
        }
        Ok(TemplateSpec {
            domain: def,
            base_volume_key: get(BASE).unwrap_or_default(),
            pool: get(POOL).unwrap_or_default(),
            user_data: get(USER_DATA).unwrap_or_default(),
            meta_data: get(META_DATA),
            network_config: get(NETWORK_CONFIG),
        })
    }

    /// Removes a template's definition (its base volume stays).
    pub fn delete_template(&self, id: &str) -> Result<()> {
        self.template(id)?;
        self.undefine_domain(id)
    }

    /// Makes and starts an instance called `name`: an overlay of the base,
    /// a seed whose placeholders get `vars` plus `hostname` and `name`,
    /// and a domain. On failure whatever was made is removed.
    pub fn instantiate(
        &self,
        template: &str,
        name: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<Instance> {
        let t = self.template(template)?;
        let base = self.volume_by_key(&t.base_volume_key)?;
        let mut vars = vars.clone();
        vars.entry("hostname".into())
            .or_insert_with(|| name.to_string());
        vars.entry("name".into())
            .or_insert_with(|| name.to_string());
        let user = fill_placeholders(&t.user_data, &vars);
        let meta = match &t.meta_data {
            Some(m) => fill_placeholders(m, &vars),
            None => format!("instance-id: {name}\nlocal-hostname: {name}\n"),
        };
        let net = t
            .network_config
            .as_ref()
            .map(|n| fill_placeholders(n, &vars));
        let iso = Seed::nocloud(&user, &meta, net.as_deref())
            .to_iso()
            .map_err(|e| Error::Invalid {
                field: "user_data",
                message: e.to_string(),
            })?;

        let mut made: Vec<String> = Vec::new();
        let result = (|| {
            let mut ov =
                VolumeSpec::new(&format!("{name}.qcow2"), base.capacity, VolumeFormat::Qcow2);
            ov.backing = Some(Backing {
                path: base.path.clone(),
                format: VolumeFormat::parse(&base.format, "base_volume_id")
                    .unwrap_or(VolumeFormat::Raw),
            });
            let overlay = self.create_volume(&t.pool, &ov)?;
            made.push(overlay.key.clone());
            let mut sp = VolumeSpec::new(
                &format!("{name}-seed.iso"),
                iso.len() as u64,
                VolumeFormat::Raw,
            );
            sp.mode = Some(0o600);
            let seed = self.create_volume(&t.pool, &sp)?;
            made.push(seed.key.clone());
            self.upload_bytes(&seed.key, &iso)?;

            let mut def = t.domain.clone();
            def.name = name.to_string();
            def.uuid = None;
            for i in &mut def.interfaces {
                i.mac = None;
            }
            def.disks = vec![
                DiskDef {
                    device: DiskDevice::Disk,
                    source: DiskSource::File(overlay.path.clone()),
                    format: Some("qcow2".into()),
                    bus: DiskBus::Virtio,
                    target: String::new(),
                    wwn: None,
                },
                DiskDef {
                    device: DiskDevice::Cdrom,
                    source: DiskSource::File(seed.path.clone()),
                    format: Some("raw".into()),
                    bus: DiskBus::Sata,
                    target: String::new(),
                    wwn: None,
                },
            ];
            def.assign_targets();
            def.metadata = BTreeMap::from([
                (KIND.to_string(), "instance".to_string()),
                (TEMPLATE.to_string(), template.to_string()),
                (OVERLAY.to_string(), overlay.key.clone()),
                (SEED.to_string(), seed.key.clone()),
            ]);
            let uuid = self.define_domain(&def)?;
            if let Err(e) = self.start_domain(&uuid) {
                let _ = self.undefine_domain(&uuid);
                return Err(e);
            }
            Ok(Instance {
                uuid,
                name: name.to_string(),
                overlay_key: overlay.key,
                seed_key: seed.key,
            })
        })();
        if result.is_err() {
            for key in made.iter().rev() {
                let _ = self.delete_volume(key);
            }
        }
        result
    }

    /// Powers off and removes an instance with its overlay and seed.
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
        self.undefine_domain(id)?;
        for k in [OVERLAY, SEED] {
            if let Some(key) = def.metadata.get(k) {
                match self.delete_volume(key) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libvirt::domain::PowerState;
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
    fn template_round_trips_and_a_failed_instance_leaves_nothing() {
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
        host.define_template(&spec).unwrap();
        let back = host.template("agent-template").unwrap();
        assert_eq!(back.base_volume_key, base.key);
        assert_eq!(back.user_data, spec.user_data);

        // The test driver cannot upload: the failed instance leaves nothing.
        let vols = |h: &Host| {
            h.raw()
                .lookup_storage_pool_by_name("default-pool")
                .unwrap()
                .list_volumes()
                .unwrap()
        };
        let before = vols(&host);
        let err = host
            .instantiate("agent-template", "agent-1", &BTreeMap::new())
            .unwrap_err();
        assert!(err.to_string().contains("upload"), "{err}");
        assert_eq!(vols(&host), before);
        assert!(host.domain_status("agent-1").unwrap_err().is_not_found());
        assert_eq!(
            host.domain_status("agent-template").unwrap().state,
            PowerState::ShutOff
        );

        host.delete_template("agent-template").unwrap();
        assert!(host.template("agent-template").unwrap_err().is_not_found());
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

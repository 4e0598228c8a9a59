//! `libvirt_domain_template`: a reusable VM definition kept on the host
//! inside libvirt (a domain that never starts, its base volumes and
//! cloud-init files with `{{hostname}}`-style placeholders), from which
//! instances are made later. Any change redefines it (replace).
//!
//! Attributes added after the first release are optional and null by
//! default, so state written before them reads back unchanged at the
//! same schema version (missing attributes read as null; the `disk` and
//! `xml` blocks as empty).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::domain_xml::{DomainDef, DomainKind, InterfaceDef, InterfaceSource, OsDef};
use kvmhost::libvirt::template::{TemplateSpec, DEFAULT_LABEL};
use kvmhost::nocloud::Seed;
use serde::{Deserialize, Serialize};
use tfplugin::schema::{
    Attribute, AttributeConstraint as C, AttributeType as T, Block, Description, NestedBlock,
    Schema,
};
use tfplugin::value::{serde_as_vec, Value, ValueEmpty};
use tfplugin::{map, AttributePath, Diagnostic, Diagnostics, Resource};

use crate::connection::Shared;
use crate::diagnostics::fail;
use crate::schema::{attr, comp_str, oc_num, oc_str, opt_bool, opt_str, req_str};
use crate::state::{known, Maybe};

/// `libvirt_domain_template`.
pub struct DomainTemplateResource(pub Arc<Shared>);

/// State of `libvirt_domain_template`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DomainTemplateState {
    id: Value<String>,
    name: Value<String>,
    pool: Value<String>,
    base_volume_id: Value<String>,
    #[serde(rename = "type")]
    kind: Value<String>,
    memory: Value<i64>,
    vcpu: Value<i64>,
    cpu_mode: Value<String>,
    machine: Value<String>,
    kernel: Value<String>,
    initrd: Value<String>,
    cmdline: Value<String>,
    network_name: Value<String>,
    bridge: Value<String>,
    user_data: Value<String>,
    meta_data: Value<String>,
    network_config: Value<String>,
    #[serde(default, with = "list_or_empty")]
    disk: Value<Vec<DiskBlock>>,
    firmware: Value<String>,
    nvram_template: Value<String>,
    network_model: Value<String>,
    cpu_model: Value<String>,
    qemu_agent: Value<bool>,
    #[serde(default, with = "serde_as_vec")]
    xml: Value<XmlBlock>,
    cloudinit_files: Value<BTreeMap<String, Value<String>>>,
    cloudinit_label: Value<String>,
}

/// A further base volume of the instances.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct DiskBlock {
    volume_id: Value<String>,
}

/// Last-mile changes to each instance's XML.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct XmlBlock {
    xslt: Value<String>,
}

/// `#[serde(with = "list_or_empty")]` on a block list: a null list (state
/// written before the block existed) is written as the empty list that
/// Terraform sends for a configuration without the block.
mod list_or_empty {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use tfplugin::value::Value;

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Value<Vec<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Value::Null => <[&T; 0]>::default().serialize(s),
            v => v.serialize(s),
        }
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Value<Vec<T>>, D::Error> {
        Value::deserialize(d)
    }
}

fn text(v: &Value<String>) -> Option<String> {
    known(v).map(str::to_string)
}

fn opt(v: Option<String>) -> Value<String> {
    v.map(Value::Value).unwrap_or(Value::Null)
}

fn spec_of(s: &DomainTemplateState) -> Result<TemplateSpec, Diagnostic> {
    let kind = DomainKind::parse(known(&s.kind).unwrap_or("kvm"), "type").map_err(|e| {
        Diagnostic::new(
            "Invalid domain type",
            e.to_string(),
            AttributePath::new("type"),
        )
    })?;
    let mut interfaces = Vec::new();
    match (text(&s.network_name), text(&s.bridge)) {
        (Some(n), None) => interfaces.push(InterfaceDef {
            source: InterfaceSource::Network(n),
            mac: None,
            model: None,
        }),
        (None, Some(b)) => interfaces.push(InterfaceDef {
            source: InterfaceSource::Bridge(b),
            mac: None,
            model: None,
        }),
        (None, None) if s.network_model.is_value() => {
            return Err(Diagnostic::new(
                "NIC model without a NIC",
                "network_model sets the model of the instances' interface: give network_name or bridge too",
                AttributePath::new("network_model"),
            ))
        }
        (None, None) => {}
        (Some(_), Some(_)) => {
            return Err(Diagnostic::new(
                "Conflicting network",
                "give network_name or bridge, not both",
                AttributePath::new("bridge"),
            ))
        }
    }
    for i in &mut interfaces {
        i.model = text(&s.network_model);
    }
    let mut disks: Vec<String> = s
        .disk
        .as_ref_option()
        .map(|d| d.iter().filter_map(|b| text(&b.volume_id)).collect())
        .unwrap_or_default();
    if let Some(first) = text(&s.base_volume_id) {
        disks.insert(0, first);
    }
    if disks.is_empty() {
        return Err(Diagnostic::new(
            "No disk",
            "give base_volume_id or at least one disk block with the volume_id of a base volume",
            AttributePath::new("base_volume_id"),
        ));
    }
    let base_volume_key = disks.remove(0);
    let mut files = BTreeMap::new();
    for (name, v) in s.cloudinit_files.as_ref_option().into_iter().flatten() {
        if let Some(t) = text(v) {
            files.insert(name.clone(), t);
        }
    }
    // The three NoCloud files keep their own places in the host's model;
    // giving one both ways is refused there, naming cloudinit_files.
    let mut take = |attr: &Value<String>, name: &str| match (text(attr), files.contains_key(name)) {
        (Some(t), false) => Some(t),
        (None, true) => files.remove(name),
        (a, _) => a,
    };
    let user_data = take(&s.user_data, "user-data").unwrap_or_default();
    let meta_data = take(&s.meta_data, "meta-data");
    let network_config = take(&s.network_config, "network-config");
    Ok(TemplateSpec {
        domain: DomainDef {
            name: text(&s.name).unwrap_or_default(),
            kind,
            memory_mib: s.memory.as_ref_option().copied().unwrap_or(512).max(1) as u64,
            vcpu: s.vcpu.as_ref_option().copied().unwrap_or(1).max(1) as u32,
            os: OsDef {
                machine: text(&s.machine),
                firmware: text(&s.firmware),
                kernel: text(&s.kernel),
                initrd: text(&s.initrd),
                cmdline: text(&s.cmdline),
                ..Default::default()
            },
            cpu_mode: text(&s.cpu_mode),
            cpu_model: text(&s.cpu_model),
            interfaces,
            qemu_agent: s.qemu_agent.as_ref_option().copied().unwrap_or(false),
            ..Default::default()
        },
        base_volume_key,
        extra_base_volume_keys: disks,
        pool: text(&s.pool).unwrap_or_else(|| "default".into()),
        user_data,
        meta_data,
        network_config,
        nvram_template: text(&s.nvram_template),
        xslt: s.xml.as_ref_option().and_then(|x| text(&x.xslt)),
        cloudinit_label: text(&s.cloudinit_label),
        cloudinit_files: files,
    })
}

/// Checks of the attributes added with several disks, firmware and
/// cloud-init files; only known values are judged.
fn validate_new(diags: &mut Diagnostics, c: &DomainTemplateState) {
    if c.base_volume_id.is_null() && c.disk.as_ref_option().is_some_and(|d| d.is_empty()) {
        diags.error(
            "No disk",
            "give base_volume_id or at least one disk block with the volume_id of a base volume",
            AttributePath::new("base_volume_id"),
        );
    }
    if let (Some(mode), true) = (known(&c.cpu_mode), c.cpu_model.is_value()) {
        if mode != "custom" {
            diags.error(
                "CPU model with another CPU mode",
                format!(
                    "cpu_model goes with cpu_mode custom (or none), not '{mode}': drop one of them"
                ),
                AttributePath::new("cpu_model"),
            );
        }
    }
    if c.nvram_template.is_value() && c.firmware.is_null() {
        diags.error(
            "NVRAM template without firmware",
            "per-instance NVRAM needs firmware: give the UEFI loader's path in firmware too",
            AttributePath::new("nvram_template"),
        );
    }
    if c.network_model.is_value() && c.network_name.is_null() && c.bridge.is_null() {
        diags.error(
            "NIC model without a NIC",
            "network_model sets the model of the instances' interface: give network_name or bridge too",
            AttributePath::new("network_model"),
        );
    }
    if let Some(l) = known(&c.cloudinit_label) {
        if let Err(e) = Seed::new().label(l).to_iso() {
            diags.error(
                "Invalid cloud-init label",
                e.to_string(),
                AttributePath::new("cloudinit_label"),
            );
        }
    }
    if let Some(files) = c.cloudinit_files.as_ref_option() {
        let own = [
            ("user-data", &c.user_data, "user_data"),
            ("meta-data", &c.meta_data, "meta_data"),
            ("network-config", &c.network_config, "network_config"),
        ];
        for (name, attr, attr_name) in own {
            if attr.is_value() && files.contains_key(name) {
                diags.error(
                    "Cloud-init file given twice",
                    format!(
                        "'{name}' is in cloudinit_files and in {attr_name}: give it in one place"
                    ),
                    AttributePath::new("cloudinit_files"),
                );
            }
        }
        for name in files.keys() {
            if let Err(e) = Seed::new().file(name, "").to_iso() {
                diags.error(
                    "Invalid cloud-init file name",
                    e.to_string(),
                    AttributePath::new("cloudinit_files"),
                );
            }
        }
    }
}

/// Fills the state from the host; configured spellings of the machine
/// type survive libvirt's canonical names.
fn merge(prior: &DomainTemplateState, uuid: String, t: &TemplateSpec) -> DomainTemplateState {
    let d = &t.domain;
    let mut s = prior.clone();
    s.id = Value::Value(uuid);
    s.name = Value::Value(d.name.clone());
    s.pool = Value::Value(t.pool.clone());
    s.base_volume_id = Value::Value(t.base_volume_key.clone());
    s.kind = Value::Value(d.kind.as_str().into());
    s.memory = Value::Value(d.memory_mib as i64);
    s.vcpu = Value::Value(d.vcpu as i64);
    // libvirt writes mode "custom" for its own default CPU; a configured
    // mode is kept, an import takes only modes a user would write.
    if prior.id.is_null() {
        s.cpu_mode = opt(d.cpu_mode.clone().filter(|m| m != "custom"));
    }
    // "q35" and libvirt's "pc-q35-7.2" are the same machine.
    s.machine = match (known(&prior.machine), &d.os.machine) {
        (Some(p), Some(l)) if l == p || l.starts_with(&format!("pc-{p}-")) => {
            Value::Value(p.to_string())
        }
        (_, l) => opt(l.clone()),
    };
    s.kernel = opt(d.os.kernel.clone());
    s.initrd = opt(d.os.initrd.clone());
    s.cmdline = opt(d.os.cmdline.clone());
    s.network_name = Value::Null;
    s.bridge = Value::Null;
    match d.interfaces.first().map(|i| &i.source) {
        Some(InterfaceSource::Network(n)) => s.network_name = Value::Value(n.clone()),
        Some(InterfaceSource::Bridge(b)) => s.bridge = Value::Value(b.clone()),
        _ => {}
    }
    // An interface without a model gets `virtio`: a template configured
    // without one keeps none, an import takes only other models.
    let model = d.interfaces.first().and_then(|i| i.model.clone());
    s.network_model = match model {
        Some(m) if prior.network_model.is_value() || (prior.id.is_null() && m != "virtio") => {
            Value::Value(m)
        }
        _ => Value::Null,
    };
    // Disks: as configured, the first in base_volume_id unless only disk
    // blocks were given.
    let mut keys = vec![t.base_volume_key.clone()];
    keys.extend(t.extra_base_volume_keys.iter().cloned());
    let only_blocks = !prior.id.is_null()
        && prior.base_volume_id.is_null()
        && prior.disk.as_ref_option().is_some_and(|d| !d.is_empty());
    if only_blocks {
        s.base_volume_id = Value::Null;
    } else {
        s.base_volume_id = Value::Value(keys.remove(0));
    }
    s.disk = Value::Value(
        keys.into_iter()
            .map(|k| DiskBlock {
                volume_id: Value::Value(k),
            })
            .collect(),
    );
    s.firmware = opt(d.os.firmware.clone());
    s.nvram_template = opt(t.nvram_template.clone());
    s.cpu_model = opt(d.cpu_model.clone());
    s.qemu_agent = if !d.qemu_agent && prior.qemu_agent.is_null() {
        Value::Null
    } else {
        Value::Value(d.qemu_agent)
    };
    s.xml = match &t.xslt {
        Some(x) => Value::Value(XmlBlock {
            xslt: Value::Value(x.clone()),
        }),
        None => Value::Null,
    };
    s.cloudinit_label = match &t.cloudinit_label {
        Some(l) => Value::Value(l.clone()),
        None if known(&prior.cloudinit_label) == Some(DEFAULT_LABEL) => {
            Value::Value(DEFAULT_LABEL.into())
        }
        None => Value::Null,
    };
    // The NoCloud files go where the configuration put them: their own
    // attributes, or cloudinit_files.
    let in_map = |name: &str| {
        prior
            .cloudinit_files
            .as_ref_option()
            .is_some_and(|m| m.contains_key(name))
    };
    let mut files: BTreeMap<String, Value<String>> = t
        .cloudinit_files
        .iter()
        .map(|(k, v)| (k.clone(), Value::Value(v.clone())))
        .collect();
    let mut place = |name: &str, v: Option<String>| -> Value<String> {
        match v {
            Some(v) if in_map(name) => {
                files.insert(name.to_string(), Value::Value(v));
                Value::Null
            }
            v => opt(v),
        }
    };
    s.user_data = match place("user-data", Some(t.user_data.clone())) {
        Value::Value(u) if u.is_empty() && prior.user_data.is_null() => Value::Null,
        v => v,
    };
    s.meta_data = place("meta-data", t.meta_data.clone());
    s.network_config = place("network-config", t.network_config.clone());
    s.cloudinit_files = if files.is_empty() && prior.cloudinit_files.is_null() {
        Value::Null
    } else {
        Value::Value(files)
    };
    s
}

#[async_trait]
impl Resource for DomainTemplateResource {
    type State<'a> = Maybe<DomainTemplateState>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 0,
            block: Block {
                version: 0,
                description: Description::markdown(
                    "A VM template kept inside libvirt: a domain that is never started, its base volume and cloud-init files with `{{hostname}}` placeholders. Instances (overlay + own seed + domain) are made from it later. Any change replaces it.",
                ),
                attributes: map! {
                    "id" => comp_str("UUID of the template domain."),
                    "name" => req_str("Template name (the name of its domain)."),
                    "pool" => oc_str("Pool for the instances' overlays and seeds. Default `default`."),
                    "base_volume_id" => opt_str("Key of the base volume instances overlay: their first disk. Give it, or `disk` blocks, or both (then it comes first)."),
                    "type" => oc_str("`kvm` (default) or `qemu`."),
                    "memory" => oc_num("Memory in MiB. Default 512."),
                    "vcpu" => oc_num("Virtual CPUs. Default 1."),
                    "cpu_mode" => opt_str("CPU mode, e.g. `host-passthrough`."),
                    "machine" => oc_str("Machine type. Default: libvirt's."),
                    "kernel" => opt_str("Kernel for direct boot."),
                    "initrd" => opt_str("Initrd for direct boot."),
                    "cmdline" => opt_str("Kernel command line."),
                    "network_name" => opt_str("libvirt network of the instances' interface."),
                    "bridge" => opt_str("Host bridge of the instances' interface."),
                    "user_data" => Attribute {
                        sensitive: true,
                        ..attr(T::String, C::Optional, "`user-data` with placeholders `{{hostname}}`, `{{name}}` and any the launcher passes. Sensitive.")
                    },
                    "meta_data" => Attribute { sensitive: true, ..opt_str("`meta-data` with placeholders. Default: `instance-id` and `local-hostname` of the instance. Sensitive.") },
                    "network_config" => Attribute { sensitive: true, ..opt_str("`network-config` with placeholders. Sensitive.") },
                    "firmware" => opt_str("UEFI firmware (loader) path on the host, e.g. `/usr/share/OVMF/OVMF_CODE.fd`. Each instance gets its own NVRAM file in `pool`, removed with the instance."),
                    "nvram_template" => opt_str("UEFI variables file each instance's NVRAM starts as, e.g. `/usr/share/OVMF/OVMF_VARS.fd`. Needs `firmware`."),
                    "network_model" => opt_str("Model of the instances' interface, e.g. `e1000`, `vmxnet3`, `rtl8139`. Default `virtio`."),
                    "cpu_model" => opt_str("CPU model, e.g. `Haswell-noTSX-IBRS`; alone it means `cpu_mode` `custom`."),
                    "qemu_agent" => opt_bool("Add the QEMU guest agent channel. Default false."),
                    "cloudinit_files" => Attribute {
                        sensitive: true,
                        ..attr(T::Map(T::String.into()), C::Optional, "Cloud-init files by name (`user-data`, `meta-data`, `network-config` or any other), with placeholders; a name also given as its own attribute is refused. Sensitive.")
                    },
                    "cloudinit_label" => opt_str("Volume label of each instance's cloud-init CD. Default `cidata` (NoCloud); `config-2` for config-drive readers."),
                },
                blocks: map! {
                    "disk" => NestedBlock::List(Block {
                        version: 0,
                        description: Description::plain("A further base volume: each instance gets a copy-on-write overlay of each disk, in order, after `base_volume_id`."),
                        attributes: map! { "volume_id" => req_str("Key of the base volume.") },
                        ..Default::default()
                    }),
                    "xml" => NestedBlock::Optional(Block {
                        version: 0,
                        description: Description::plain("Last-mile changes to each instance's XML."),
                        attributes: map! { "xslt" => opt_str("XSLT stylesheet applied to each instance's domain XML before it starts.") },
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if let Some(c) = config.0 {
            // Unknown values (a module's inputs in `terraform validate`)
            // may yet be null: only known ones conflict.
            if c.network_name.is_value() && c.bridge.is_value() {
                diags.error(
                    "Conflicting network",
                    "give network_name or bridge, not both",
                    AttributePath::new("bridge"),
                );
            }
            if let Some(k) = known(&c.kind) {
                if let Err(e) = DomainKind::parse(k, "type") {
                    diags.error(
                        "Invalid domain type",
                        e.to_string(),
                        AttributePath::new("type"),
                    );
                }
            }
            validate_new(diags, &c);
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let Some(prior) = state.0 else {
            return Some((Maybe(None), private));
        };
        let id = known(&prior.id)?.to_string();
        let live = self
            .0
            .read_back(diags, "Cannot read the template", move |h| {
                h.template(&id).map(|t| (id, t))
            })
            .await?;
        Some((Maybe(live.map(|(id, t)| merge(&prior, id, &t))), private))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut s = proposed.0?;
        s.id = Value::Unknown;
        if s.pool.is_null() {
            s.pool = Value::Value("default".into());
        }
        if s.kind.is_null() {
            s.kind = Value::Value("kvm".into());
        }
        if s.memory.is_null() {
            s.memory = Value::Value(512);
        }
        if s.vcpu.is_null() {
            s.vcpu = Value::Value(1);
        }
        if s.machine.is_null() {
            s.machine = Value::Unknown;
        }
        Some((Maybe(Some(s)), ValueEmpty::Null))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let replace = [
            "name",
            "pool",
            "base_volume_id",
            "type",
            "memory",
            "vcpu",
            "cpu_mode",
            "machine",
            "kernel",
            "initrd",
            "cmdline",
            "network_name",
            "bridge",
            "user_data",
            "meta_data",
            "network_config",
            "disk",
            "firmware",
            "nvram_template",
            "network_model",
            "cpu_model",
            "qemu_agent",
            "xml",
            "cloudinit_files",
            "cloudinit_label",
        ]
        .map(AttributePath::new)
        .to_vec();
        Some((proposed, private, replace))
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let s = planned.0?;
        let spec = match spec_of(&s) {
            Ok(sp) => sp,
            Err(d) => return fail(diags, d),
        };
        let (uuid, t) = self
            .0
            .call(
                diags,
                "Cannot define the template",
                Some("name"),
                move |h| {
                    let uuid = h.define_template(&spec)?;
                    h.template(&uuid).map(|t| (uuid, t))
                },
            )
            .await?;
        let mut out = merge(&s, uuid, &t);
        // What was configured is what the host now holds: keep its spelling.
        out.user_data = s.user_data.clone();
        out.meta_data = s.meta_data.clone();
        out.network_config = s.network_config.clone();
        out.cloudinit_files = s.cloudinit_files.clone();
        out.cloudinit_label = s.cloudinit_label.clone();
        out.base_volume_id = s.base_volume_id.clone();
        out.disk = s.disk.clone();
        out.network_model = s.network_model.clone();
        out.qemu_agent = s.qemu_agent;
        out.xml = s.xml.clone();
        Some((Maybe(Some(out)), private))
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let id = known(&state.0?.id)?.to_string();
        self.0
            .delete(diags, "Cannot delete the template", move |h| {
                h.delete_template(&id)
            })
            .await
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let (uuid, t) = self
            .0
            .import(
                diags,
                "template",
                "give the template's name or UUID",
                move |h| {
                    let t = h.template(&id)?;
                    let uuid = h.domain_status(&id)?.uuid;
                    Ok((uuid, t))
                },
            )
            .await?;
        Some((
            Maybe(Some(merge(&DomainTemplateState::default(), uuid, &t))),
            ValueEmpty::Null,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfplugin::value::RawValue;

    fn s(v: &str) -> Value<String> {
        Value::Value(v.to_string())
    }

    /// State as the provider wrote it before disks, firmware and
    /// cloud-init files were added.
    fn first_release_state() -> serde_json::Value {
        serde_json::json!({
            "id": "6c1f0e52-8c41-4b57-9d43-7a3f4b0a9e11", "name": "agent-template",
            "pool": "default", "base_volume_id": "/p/base.qcow2", "type": "qemu",
            "memory": 256, "vcpu": 1, "cpu_mode": null, "machine": "pc-i440fx-7.2",
            "kernel": null, "initrd": null, "cmdline": null, "network_name": "default",
            "bridge": null, "user_data": "#cloud-config\n", "meta_data": null,
            "network_config": null
        })
    }

    fn read_state(json: serde_json::Value) -> DomainTemplateState {
        let mut d = Diagnostics::default();
        RawValue::Json(serde_json::to_vec(&json).unwrap())
            .deserialize(&mut d)
            .unwrap()
    }

    #[test]
    fn first_release_state_reads_with_the_new_attributes_null_and_blocks_empty() {
        let st = read_state(first_release_state());
        assert_eq!(st.base_volume_id, s("/p/base.qcow2"));
        assert!(st.firmware.is_null() && st.cloudinit_files.is_null() && st.qemu_agent.is_null());
        let back = serde_json::to_value(&st).unwrap();
        // As Terraform sends a configuration without the blocks: no diff.
        assert_eq!(back["disk"], serde_json::json!([]));
        assert_eq!(back["xml"], serde_json::json!([]));
        assert_eq!(back["cloudinit_label"], serde_json::Value::Null);
    }

    fn configured() -> DomainTemplateState {
        DomainTemplateState {
            name: s("agent-template"),
            base_volume_id: s("/p/boot.qcow2"),
            disk: Value::Value(vec![DiskBlock {
                volume_id: s("/p/data.qcow2"),
            }]),
            network_name: s("default"),
            network_model: s("e1000"),
            cpu_model: s("Haswell-noTSX-IBRS"),
            qemu_agent: Value::Value(true),
            xml: Value::Value(XmlBlock { xslt: s("<x/>") }),
            cloudinit_label: s("config-2"),
            cloudinit_files: Value::Value(BTreeMap::from([
                ("user-data".to_string(), s("#cloud-config\n")),
                ("extra.txt".to_string(), s("{{hostname}}")),
            ])),
            ..Default::default()
        }
    }

    #[test]
    fn disks_nic_model_and_cloudinit_files_reach_the_host_model() {
        let spec = spec_of(&configured()).unwrap();
        assert_eq!(spec.base_volume_key, "/p/boot.qcow2");
        assert_eq!(spec.extra_base_volume_keys, ["/p/data.qcow2"]);
        assert_eq!(spec.domain.interfaces[0].model.as_deref(), Some("e1000"));
        assert_eq!(spec.domain.cpu_model.as_deref(), Some("Haswell-noTSX-IBRS"));
        assert!(spec.domain.qemu_agent);
        assert_eq!(spec.xslt.as_deref(), Some("<x/>"));
        assert_eq!(spec.cloudinit_label.as_deref(), Some("config-2"));
        // user-data has its own place in the host's model.
        assert_eq!(spec.user_data, "#cloud-config\n");
        assert_eq!(
            spec.cloudinit_files,
            BTreeMap::from([("extra.txt".to_string(), "{{hostname}}".to_string())])
        );
    }

    #[test]
    fn disk_blocks_alone_give_every_disk() {
        let mut c = configured();
        c.base_volume_id = Value::Null;
        let spec = spec_of(&c).unwrap();
        assert_eq!(spec.base_volume_key, "/p/data.qcow2");
        assert!(spec.extra_base_volume_keys.is_empty());
        c.disk = Value::Value(vec![]);
        assert!(spec_of(&c).is_err());
    }

    #[test]
    fn a_read_back_puts_every_value_where_the_configuration_had_it() {
        let mut prior = configured();
        prior.id = s("6c1f0e52-8c41-4b57-9d43-7a3f4b0a9e11");
        let spec = spec_of(&prior).unwrap();
        let back = merge(&prior, "6c1f0e52-8c41-4b57-9d43-7a3f4b0a9e11".into(), &spec);
        assert_eq!(back.user_data, Value::Null);
        assert_eq!(back.cloudinit_files, prior.cloudinit_files);
        assert_eq!(back.base_volume_id, prior.base_volume_id);
        assert_eq!(back.disk, prior.disk);
        assert_eq!(back.network_model, prior.network_model);
        assert_eq!(back.xml, prior.xml);
        assert_eq!(back.cloudinit_label, prior.cloudinit_label);
        assert_eq!(back.qemu_agent, prior.qemu_agent);

        let mut blocks_only = prior.clone();
        blocks_only.base_volume_id = Value::Null;
        blocks_only.disk = Value::Value(vec![
            DiskBlock {
                volume_id: s("/p/boot.qcow2"),
            },
            DiskBlock {
                volume_id: s("/p/data.qcow2"),
            },
        ]);
        let back = merge(&blocks_only, "u".into(), &spec);
        assert_eq!(back.base_volume_id, Value::Null);
        assert_eq!(back.disk, blocks_only.disk);
    }

    #[test]
    fn an_import_takes_what_the_host_holds() {
        let spec = spec_of(&configured()).unwrap();
        let back = merge(&DomainTemplateState::default(), "u".into(), &spec);
        assert_eq!(back.user_data, s("#cloud-config\n"));
        assert_eq!(back.network_model, s("e1000"));
        assert_eq!(back.cloudinit_label, s("config-2"));
        assert_eq!(
            back.cloudinit_files,
            Value::Value(BTreeMap::from([(
                "extra.txt".to_string(),
                s("{{hostname}}")
            )]))
        );
    }

    #[test]
    fn contradictory_settings_are_refused_naming_the_attribute() {
        let errors = |c: &DomainTemplateState| {
            let mut d = Diagnostics::default();
            validate_new(&mut d, c);
            format!("{d:?}")
        };
        assert_eq!(
            errors(&configured()),
            format!("{:?}", Diagnostics::default())
        );
        let mut c = configured();
        c.cpu_mode = s("host-passthrough");
        assert!(
            errors(&c).contains("cpu_model goes with cpu_mode custom"),
            "{}",
            errors(&c)
        );
        let mut c = configured();
        c.nvram_template = s("/usr/share/OVMF/OVMF_VARS.fd");
        assert!(errors(&c).contains("needs firmware"), "{}", errors(&c));
        let mut c = configured();
        c.user_data = s("#cloud-config\n");
        assert!(
            errors(&c).contains("'user-data' is in cloudinit_files and in user_data"),
            "{}",
            errors(&c)
        );
        let mut c = configured();
        c.cloudinit_label = s("config 2");
        assert!(errors(&c).contains("seed label"), "{}", errors(&c));
        let mut c = configured();
        c.network_name = Value::Null;
        assert!(
            errors(&c).contains("give network_name or bridge too"),
            "{}",
            errors(&c)
        );
    }
}

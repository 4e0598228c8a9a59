//! `libvirt_domain_template`: a reusable VM definition kept on the host
//! inside libvirt (a domain that never starts, its base volume and
//! cloud-init files with `{{hostname}}`-style placeholders), from which
//! instances are made later. Any change redefines it (replace).

use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::domain_xml::{DomainDef, DomainKind, InterfaceDef, InterfaceSource, OsDef};
use kvmhost::libvirt::template::TemplateSpec;
use serde::{Deserialize, Serialize};
use tfplugin::schema::{
    Attribute, AttributeConstraint as C, AttributeType as T, Block, Description, Schema,
};
use tfplugin::value::{Value, ValueEmpty};
use tfplugin::{map, AttributePath, Diagnostic, Diagnostics, Resource};

use crate::common::{attr, comp_str, fail, known, oc_num, oc_str, opt_str, req_str, Maybe, Shared};

/// `libvirt_domain_template`.
pub struct TemplateResource(pub Arc<Shared>);

/// State of `libvirt_domain_template`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TemplateState {
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
}

fn text(v: &Value<String>) -> Option<String> {
    known(v).map(str::to_string)
}

fn opt(v: Option<String>) -> Value<String> {
    v.map(Value::Value).unwrap_or(Value::Null)
}

fn spec_of(s: &TemplateState) -> Result<TemplateSpec, Diagnostic> {
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
        (None, None) => {}
        (Some(_), Some(_)) => {
            return Err(Diagnostic::new(
                "Conflicting network",
                "give network_name or bridge, not both",
                AttributePath::new("bridge"),
            ))
        }
    }
    Ok(TemplateSpec {
        domain: DomainDef {
            name: text(&s.name).unwrap_or_default(),
            kind,
            memory_mib: s.memory.as_ref_option().copied().unwrap_or(512).max(1) as u64,
            vcpu: s.vcpu.as_ref_option().copied().unwrap_or(1).max(1) as u32,
            os: OsDef {
                machine: text(&s.machine),
                kernel: text(&s.kernel),
                initrd: text(&s.initrd),
                cmdline: text(&s.cmdline),
                ..Default::default()
            },
            cpu_mode: text(&s.cpu_mode),
            interfaces,
            ..Default::default()
        },
        base_volume_key: text(&s.base_volume_id).unwrap_or_default(),
        pool: text(&s.pool).unwrap_or_else(|| "default".into()),
        user_data: text(&s.user_data).unwrap_or_default(),
        meta_data: text(&s.meta_data),
        network_config: text(&s.network_config),
    })
}

/// Fills the state from the host; configured spellings of the machine
/// type survive libvirt's canonical names.
fn merge(prior: &TemplateState, uuid: String, t: &TemplateSpec) -> TemplateState {
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
    s.user_data = if t.user_data.is_empty() && prior.user_data.is_null() {
        Value::Null
    } else {
        Value::Value(t.user_data.clone())
    };
    s.meta_data = opt(t.meta_data.clone());
    s.network_config = opt(t.network_config.clone());
    s
}

#[async_trait]
impl Resource for TemplateResource {
    type State<'a> = Maybe<TemplateState>;
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
                    "base_volume_id" => req_str("Key of the base volume instances overlay."),
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
        ]
        .map(AttributePath::new)
        .to_vec();
        Some((proposed, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(private)
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
        out.user_data = s.user_data.clone();
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
            Maybe(Some(merge(&TemplateState::default(), uuid, &t))),
            ValueEmpty::Null,
        ))
    }
}

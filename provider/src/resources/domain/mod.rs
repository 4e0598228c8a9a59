//! `libvirt_domain`: a virtual machine. `running` and `autostart` change
//! in place; everything else libvirt cannot change live replaces it.
//!
//! This file holds the resource's typed state and its plan and CRUD;
//! [`schema`] the Terraform schema, [`def`] the domain definition built
//! from a plan, [`live`] the domain on the host (create, in-place
//! changes, read-back, import) and [`upgrade`] older stored state.

mod def;
mod live;
mod schema;
mod upgrade;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::domain_xml::DomainKind;
use serde::{Deserialize, Serialize};
use tfplugin::schema::Schema;
use tfplugin::value::{serde_as_vec, RawValue, Value, ValueEmpty};
use tfplugin::{AttributePath, Diagnostics, Resource};

use crate::connection::{blocking, Shared};
use crate::diagnostics::{fail, to_diag};
use crate::state::{known, Maybe};
use def::cmdline_of;

/// `libvirt_domain`.
pub struct DomainResource(pub Arc<Shared>);

/// State of `libvirt_domain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DomainState {
    id: Value<String>,
    name: Value<String>,
    #[serde(rename = "type")]
    kind: Value<String>,
    memory: Value<i64>,
    vcpu: Value<i64>,
    running: Value<bool>,
    autostart: Value<bool>,
    cloudinit: Value<String>,
    firmware: Value<String>,
    machine: Value<String>,
    arch: Value<String>,
    kernel: Value<String>,
    initrd: Value<String>,
    cmdline: Value<Vec<BTreeMap<String, Value<String>>>>,
    qemu_agent: Value<bool>,
    #[serde(with = "serde_as_vec")]
    cpu: Value<CpuBlock>,
    #[serde(with = "serde_as_vec")]
    nvram: Value<NvramBlock>,
    boot_device: Value<Vec<BootBlock>>,
    network_interface: Value<Vec<NicBlock>>,
    disk: Value<Vec<DiskBlock>>,
    #[serde(with = "serde_as_vec")]
    graphics: Value<GraphicsBlock>,
    console: Value<Vec<ConsoleBlock>>,
    #[serde(with = "serde_as_vec")]
    video: Value<VideoBlock>,
    #[serde(with = "serde_as_vec")]
    xml: Value<XmlBlock>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct CpuBlock {
    mode: Value<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct NvramBlock {
    file: Value<String>,
    template: Value<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct BootBlock {
    dev: Value<Vec<Value<String>>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct NicBlock {
    network_name: Value<String>,
    network_id: Value<String>,
    bridge: Value<String>,
    macvtap: Value<String>,
    mac: Value<String>,
    hostname: Value<String>,
    addresses: Value<Vec<Value<String>>>,
    wait_for_lease: Value<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct DiskBlock {
    volume_id: Value<String>,
    file: Value<String>,
    block_device: Value<String>,
    scsi: Value<bool>,
    wwn: Value<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct GraphicsBlock {
    #[serde(rename = "type")]
    kind: Value<String>,
    autoport: Value<bool>,
    listen_type: Value<String>,
    listen_address: Value<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct ConsoleBlock {
    #[serde(rename = "type")]
    kind: Value<String>,
    target_port: Value<String>,
    target_type: Value<String>,
    source_path: Value<String>,
    source_host: Value<String>,
    source_service: Value<String>,
    log_file: Value<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct VideoBlock {
    #[serde(rename = "type")]
    kind: Value<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct XmlBlock {
    xslt: Value<String>,
}

/// The blocks of a list, none when it is null or unknown.
fn list<T>(v: &Value<Vec<T>>) -> &[T] {
    v.as_ref_option().map(Vec::as_slice).unwrap_or(&[])
}

/// A known string.
fn s(v: &str) -> Value<String> {
    Value::Value(v.to_string())
}

/// A known string, or null.
fn opt(v: Option<&str>) -> Value<String> {
    v.map(s).unwrap_or(Value::Null)
}

/// Whether `attr` differs between `prior` and `planned` only in ways that
/// leave the domain as it is: a `cmdline` split differently into maps
/// (dmacvicar/libvirt 0.8 stores one map per word), NICs that differ in
/// the case of their MAC or in what is not part of the definition
/// (`wait_for_lease`, `hostname`, `addresses`).
fn same_domain_for(attr: &str, prior: &DomainState, planned: &DomainState) -> bool {
    match attr {
        "cmdline" => {
            let line = |s: &DomainState| s.cmdline.as_ref_option().map(|m| cmdline_of(m));
            prior.cmdline.is_value() && planned.cmdline.is_value() && line(prior) == line(planned)
        }
        "network_interface" => {
            let norm = |s: &DomainState| -> Option<Vec<NicBlock>> {
                let nics = s.network_interface.as_ref_option()?;
                Some(
                    nics.iter()
                        .map(|n| NicBlock {
                            mac: match &n.mac {
                                Value::Value(m) => s_lower(m),
                                other => other.clone(),
                            },
                            wait_for_lease: Value::Null,
                            hostname: Value::Null,
                            addresses: Value::Null,
                            ..n.clone()
                        })
                        .collect(),
                )
            };
            let (a, b) = (norm(prior), norm(planned));
            a.is_some() && a == b
        }
        _ => false,
    }
}

fn s_lower(v: &str) -> Value<String> {
    Value::Value(v.to_lowercase())
}

#[async_trait]
impl Resource for DomainResource {
    type State<'a> = Maybe<DomainState>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: schema::VERSION,
            block: schema::schema_block(),
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        let Some(c) = config.0 else { return Some(()) };
        if let Some(k) = known(&c.kind) {
            if let Err(e) = DomainKind::parse(k, "type") {
                diags.error(
                    "Invalid domain type",
                    e.to_string(),
                    AttributePath::new("type"),
                );
            }
        }
        for (name, v) in [("memory", &c.memory), ("vcpu", &c.vcpu)] {
            if let Value::Value(n) = v {
                if *n <= 0 {
                    diags.error(
                        format!("Invalid {name}"),
                        format!("{n} is not a positive number"),
                        AttributePath::new(name),
                    );
                }
            }
        }
        for (i, n) in list(&c.network_interface).iter().enumerate() {
            // Unknown values (a module's inputs in `terraform validate`)
            // may yet be null or not: only known values decide.
            let sources = [&n.network_name, &n.network_id, &n.bridge, &n.macvtap];
            let known_given = sources.iter().filter(|v| v.is_value()).count();
            let maybe_given = sources.iter().filter(|v| !v.is_null()).count();
            if known_given > 1 || maybe_given == 0 {
                diags.error(
                    "Invalid network interface",
                    "give exactly one of network_name, network_id, bridge or macvtap",
                    AttributePath::new("network_interface").index(i as i64),
                );
            }
            if let Some(m) = known(&n.mac) {
                if !kvmhost::libvirt::domain_xml::is_mac(m) {
                    diags.error(
                        "Invalid MAC address",
                        format!("'{m}' is not a MAC address like 52:54:00:12:34:56"),
                        AttributePath::new("network_interface")
                            .index(i as i64)
                            .attribute("mac"),
                    );
                }
            }
        }
        for (i, d) in list(&c.disk).iter().enumerate() {
            let given = [&d.volume_id, &d.file, &d.block_device]
                .iter()
                .filter(|v| !v.is_null())
                .count();
            if given != 1 {
                diags.error(
                    "Invalid disk",
                    "give exactly one of volume_id, file or block_device",
                    AttributePath::new("disk").index(i as i64),
                );
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
        let p = prior.clone();
        let live = self
            .0
            .read_back(diags, "Cannot read the domain", move |h| {
                live::read_live(h, &id, &p)
            })
            .await?;
        Some((
            Maybe(live.map(|live| live::merge_live(&prior, &live))),
            private,
        ))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut st = proposed.0?;
        st.id = Value::Unknown;
        if st.kind.is_null() {
            st.kind = s("kvm");
        }
        if st.memory.is_null() {
            st.memory = Value::Value(512);
        }
        if st.vcpu.is_null() {
            st.vcpu = Value::Value(1);
        }
        if st.running.is_null() {
            st.running = Value::Value(true);
        }
        if st.autostart.is_null() {
            st.autostart = Value::Value(false);
        }
        if st.qemu_agent.is_null() {
            st.qemu_agent = Value::Value(false);
        }
        for v in [&mut st.machine, &mut st.arch] {
            if v.is_null() {
                *v = Value::Unknown;
            }
        }
        if let Value::Value(nics) = &mut st.network_interface {
            for n in nics {
                if n.mac.is_null() {
                    n.mac = Value::Unknown;
                }
                if n.addresses.is_null() {
                    n.addresses = Value::Unknown;
                }
                if n.network_id.is_null() && !n.network_name.is_null() {
                    n.network_id = Value::Unknown;
                }
                if n.network_name.is_null() && !n.network_id.is_null() {
                    n.network_name = Value::Unknown;
                }
            }
        }
        Some((Maybe(Some(st)), ValueEmpty::Null))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        // Terraform keeps only the paths whose value really changes;
        // changes that mean the same domain are left out (see
        // `same_domain_for`).
        let prior = _prior.0.clone().unwrap_or_default();
        let planned = proposed.0.clone().unwrap_or_default();
        // `memory`, `vcpu` and `cloudinit` change in place (see
        // `redefine_in_place`).
        let replace = [
            "name",
            "type",
            "firmware",
            "machine",
            "arch",
            "kernel",
            "initrd",
            "cmdline",
            "qemu_agent",
            "cpu",
            "nvram",
            "boot_device",
            "network_interface",
            "disk",
            "graphics",
            "console",
            "video",
            "xml",
        ]
        .into_iter()
        .filter(|a| !same_domain_for(a, &prior, &planned))
        .map(AttributePath::new)
        .collect();
        let resized = prior.memory != planned.memory || prior.vcpu != planned.vcpu;
        if resized && prior.id.is_value() {
            diags.warning(
                "memory and vcpu change in place",
                "The domain is not restarted. A stopped domain gets the new values at its next \
                 start. A running one gets them live where libvirt can (memory through the \
                 balloon up to what it was started with, vCPUs up to its maximum); what \
                 libvirt cannot change live takes effect at the next start, and the apply \
                 says so.",
                if prior.memory != planned.memory {
                    AttributePath::new("memory")
                } else {
                    AttributePath::new("vcpu")
                },
            );
        }
        if prior.running == Value::Value(true) && planned.running == Value::Value(false) {
            diags.warning(
                "running = false does not stop the domain",
                "The domain keeps running: with running = false its power belongs to others \
                 (a launcher, powernap, virsh). Shut it down from inside or with `virsh shutdown`.",
                AttributePath::new("running"),
            );
        }
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
        let st = planned.0?;
        let host = self.0.connect(diags).await?;
        let plan = st.clone();
        let made = blocking(&host, move |h| {
            let uuid = live::create_blocking(h, &plan)?;
            live::read_live(h, &uuid, &plan).map_err(|e| ("name".to_string(), e))
        })
        .await;
        match made {
            Ok(live) => Some((Maybe(Some(live::merge_live(&st, &live))), private)),
            Err((field, e)) => fail(diags, to_diag("Cannot create the domain", &e, Some(&field))),
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let st = planned.0?;
        let before = prior.0.unwrap_or_default();
        let id = known(&st.id)?.to_string();
        let host = self.0.connect(diags).await?;
        let plan = st.clone();
        let done = blocking(&host, move |h| {
            let notes = live::redefine_in_place(h, &id, &before, &plan)?;
            if let Some(a) = plan.autostart.as_ref_option() {
                h.set_domain_autostart(&id, *a)
                    .map_err(|e| ("autostart".to_string(), e))?;
            }
            // `running = false` never stops the domain: its power belongs
            // to whoever started it.
            if plan.running.as_ref_option() == Some(&true) {
                h.start_domain(&id)
                    .map_err(|e| ("running".to_string(), e))?;
                live::wait_for_leases(h, &id, &plan)?;
            }
            let live = live::read_live(h, &id, &plan).map_err(|e| ("name".to_string(), e))?;
            Ok((live, notes))
        })
        .await;
        match done {
            Ok((live, notes)) => {
                for (attr, note) in notes {
                    diags.warning(
                        "Changed in the definition only",
                        note,
                        AttributePath::new(attr),
                    );
                }
                Some((Maybe(Some(live::merge_live(&st, &live))), private))
            }
            Err((field, e)) => fail(diags, to_diag("Cannot update the domain", &e, Some(&field))),
        }
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
            .delete(diags, "Cannot delete the domain", move |h| {
                h.undefine_domain(&id)
            })
            .await
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let st = self
            .0
            .import(
                diags,
                "domain",
                "give the domain's UUID or name",
                move |h| live::imported(h, &id),
            )
            .await?;
        Some((Maybe(Some(st)), ValueEmpty::Null))
    }

    async fn upgrade<'a>(
        &self,
        diags: &mut Diagnostics,
        version: i64,
        prior_state: RawValue,
    ) -> Option<Self::State<'a>> {
        upgrade::upgrade_state(&self.0, diags, version, prior_state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::path_of;

    #[test]
    fn attribute_paths_follow_block_indexes() {
        let p = path_of("network_interface.1.mac");
        assert_eq!(
            p.to_string(),
            AttributePath::new("network_interface")
                .index(1)
                .attribute("mac")
                .to_string()
        );
    }
}

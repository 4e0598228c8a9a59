//! `libvirt_domain`: a virtual machine. `running` and `autostart` change
//! in place; everything else libvirt cannot change live replaces it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kvmhost::libvirt::address::{AddressWait, Family};
use kvmhost::libvirt::domain::{AddressSource, PowerState};
use kvmhost::libvirt::domain_xml::{
    ConsoleDef, DiskBus, DiskDef, DiskDevice, DiskSource, DomainDef, DomainKind, GraphicsDef,
    InterfaceDef, InterfaceSource, NvramDef, OsDef,
};
use kvmhost::libvirt::{Error as HostError, Host};
use serde::{Deserialize, Serialize};
use tfplugin::schema::{
    AttributeConstraint as C, AttributeType as T, Block, Description, NestedBlock, Schema,
};
use tfplugin::value::{serde_as_vec, RawValue, Value, ValueEmpty};
use tfplugin::{map, AttributePath, Diagnostics, Resource};

use crate::common::{
    attr, comp_str, fail, known, oc_bool, oc_num, oc_str, opt_bool, opt_str, req_str, to_diag,
    Maybe,
};
use crate::connection::{blocking, Shared};
use crate::resources::cloudinit::key_of;

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

/// Schema version: 1 since state written by dmacvicar/libvirt 0.8 (also
/// version 0) is normalized on upgrade, see [`upgrade_v0`].
const VERSION: i64 = 1;

/// Attributes only dmacvicar/libvirt 0.8's `libvirt_domain` stores: their
/// presence tells its state from ours.
const DMACVICAR_ONLY: [&str; 4] = ["emulator", "fw_cfg_name", "coreos_ignition", "filesystem"];

/// Whether version-0 domain state was written by dmacvicar/libvirt 0.8.
pub fn is_dmacvicar_v0(v0: &serde_json::Value) -> bool {
    v0.as_object()
        .is_some_and(|o| DMACVICAR_ONLY.iter().any(|k| o.contains_key(*k)))
}

/// Version-0 state to version 1. Ours is unchanged. dmacvicar/libvirt
/// 0.8's is brought to what our read gives for the same configuration:
/// its empty strings for unset optional attributes become null, its
/// `false` for unset `scsi` and `wait_for_lease` null, its MAC addresses
/// lower case, and its `cpu { mode = "custom" }` (written whatever the
/// configuration said) the mode of the domain's persistent definition,
/// `live_cpu_mode` (None: no `cpu` block).
pub fn upgrade_v0(mut v0: serde_json::Value, live_cpu_mode: Option<&str>) -> serde_json::Value {
    use serde_json::Value as J;
    if !is_dmacvicar_v0(&v0) {
        return v0;
    }
    fn empty_to_null(o: &mut serde_json::Map<String, J>, keys: &[&str]) {
        for k in keys {
            if o.get(*k).is_some_and(|v| v.as_str() == Some("")) {
                o.insert((*k).to_string(), J::Null);
            }
        }
    }
    fn false_to_null(o: &mut serde_json::Map<String, J>, k: &str) {
        if o.get(k) == Some(&J::Bool(false)) {
            o.insert(k.to_string(), J::Null);
        }
    }
    let Some(o) = v0.as_object_mut() else {
        return v0;
    };
    empty_to_null(
        o,
        &[
            "kernel",
            "initrd",
            "firmware",
            "machine",
            "arch",
            "cloudinit",
        ],
    );
    if let Some(J::Array(disks)) = o.get_mut("disk") {
        for d in disks.iter_mut().filter_map(J::as_object_mut) {
            empty_to_null(d, &["volume_id", "file", "block_device", "wwn"]);
            false_to_null(d, "scsi");
        }
    }
    if let Some(J::Array(nics)) = o.get_mut("network_interface") {
        for n in nics.iter_mut().filter_map(J::as_object_mut) {
            empty_to_null(
                n,
                &[
                    "network_name",
                    "network_id",
                    "bridge",
                    "macvtap",
                    "hostname",
                    "mac",
                ],
            );
            false_to_null(n, "wait_for_lease");
            if let Some(J::String(m)) = n.get_mut("mac") {
                *m = m.to_lowercase();
            }
        }
    }
    if let Some(J::Array(nvram)) = o.get_mut("nvram") {
        for n in nvram.iter_mut().filter_map(J::as_object_mut) {
            empty_to_null(n, &["template"]);
        }
    }
    let custom = o
        .get("cpu")
        .and_then(|c| c.pointer("/0/mode"))
        .and_then(J::as_str)
        .is_some_and(|m| m == "custom" || m.is_empty());
    if custom {
        let cpu = match live_cpu_mode.filter(|m| *m != "custom") {
            Some(m) => serde_json::json!([{ "mode": m }]),
            None => J::Array(vec![]),
        };
        o.insert("cpu".into(), cpu);
    }
    v0
}

/// Metadata key under which the configuration is kept in the domain, so
/// that import restores what libvirt's XML cannot tell (ids, XSLT, ...).
const META_KEY: &str = "terraform-config";

fn list<T>(v: &Value<Vec<T>>) -> &[T] {
    v.as_ref_option().map(Vec::as_slice).unwrap_or(&[])
}

fn s(v: &str) -> Value<String> {
    Value::Value(v.to_string())
}

fn opt(v: Option<&str>) -> Value<String> {
    v.map(s).unwrap_or(Value::Null)
}

fn schema_block() -> Block {
    let nic = Block {
        version: 0,
        description: Description::plain("A network interface."),
        attributes: map! {
            "network_name" => oc_str("libvirt network to plug into."),
            "network_id" => oc_str("UUID of the libvirt network (instead of `network_name`)."),
            "bridge" => opt_str("Host bridge to plug into."),
            "macvtap" => opt_str("Host device for a macvtap interface."),
            "mac" => oc_str("MAC address; generated when unset."),
            "hostname" => opt_str("Host name (informational)."),
            "addresses" => attr(T::List(T::String.into()), C::OptionalComputed, "IP addresses, from DHCP leases."),
            "wait_for_lease" => opt_bool("Wait at create until the interface has a DHCP lease."),
        },
        ..Default::default()
    };
    let disk = Block {
        version: 0,
        description: Description::plain("A disk."),
        attributes: map! {
            "volume_id" => opt_str("Key of a `libvirt_volume`."),
            "file" => opt_str("Path of a file on the host (`.iso` files become CD-ROMs)."),
            "block_device" => opt_str("Path of a block device on the host."),
            "scsi" => opt_bool("Attach through virtio-scsi instead of virtio-blk."),
            "wwn" => opt_str("SCSI World Wide Name."),
        },
        ..Default::default()
    };
    let console = Block {
        version: 0,
        description: Description::plain("A serial port or console."),
        attributes: map! {
            "type" => req_str("`pty`, `file`, `unix` or `tcp`."),
            "target_port" => opt_str("Port on the guest side. Default \"0\"."),
            "target_type" => opt_str("`serial` (default) or `virtio`."),
            "source_path" => opt_str("Host path for `file` and `unix`."),
            "source_host" => opt_str("Host for `tcp`."),
            "source_service" => opt_str("Port for `tcp`."),
            "log_file" => opt_str("Also copy the guest's output to this host file."),
        },
        ..Default::default()
    };
    Block {
        version: 0,
        description: Description::markdown(
            "A virtual machine. `running`, `autostart`, `memory`, `vcpu` and `cloudinit` change in place; any other change replaces the domain.",
        ),
        attributes: map! {
            "id" => comp_str("UUID of the domain."),
            "name" => req_str("Domain name, unique on the host."),
            "type" => oc_str("`kvm` (default) or `qemu` (emulation, for hosts without KVM)."),
            "memory" => oc_num("Memory in MiB. Default 512."),
            "vcpu" => oc_num("Virtual CPUs. Default 1."),
            "running" => oc_bool("`true` (default): Terraform keeps the domain running (started at create; a refresh that finds it stopped plans `false -> true` and the apply starts it). `false`: Terraform neither starts nor stops it; its power belongs to others (a launcher, powernap), the state keeps `false` whatever the power, and an apply never stops it."),
            "autostart" => oc_bool("Start with libvirtd. Default false."),
            "cloudinit" => opt_str("Id of a `libvirt_cloudinit_disk`, attached as a CD-ROM."),
            "firmware" => opt_str("UEFI firmware (loader) path on the host."),
            "machine" => oc_str("Machine type, e.g. `q35`. Default: libvirt's."),
            "arch" => oc_str("Architecture. Default: libvirt's (the host's)."),
            "kernel" => opt_str("Kernel for direct boot."),
            "initrd" => opt_str("Initrd for direct boot."),
            "cmdline" => attr(T::List(T::Map(T::String.into()).into()), C::Optional, "Kernel command line as a list of maps; key `_` adds a bare word."),
            "qemu_agent" => oc_bool("Add the QEMU guest agent channel. Default false."),
        },
        blocks: map! {
            "cpu" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("CPU model."),
                attributes: map! { "mode" => opt_str("`host-passthrough`, `host-model` or `custom`.") },
                ..Default::default()
            }),
            "nvram" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("UEFI variables."),
                attributes: map! {
                    "file" => req_str("Per-domain variables file."),
                    "template" => opt_str("Template copied to `file` when it is missing."),
                },
                ..Default::default()
            }),
            "boot_device" => NestedBlock::List(Block {
                version: 0,
                description: Description::plain("Boot order."),
                attributes: map! { "dev" => attr(T::List(T::String.into()), C::Optional, "Devices: `hd`, `cdrom`, `network`.") },
                ..Default::default()
            }),
            "network_interface" => NestedBlock::List(nic),
            "disk" => NestedBlock::List(disk),
            "graphics" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("Graphical console."),
                attributes: map! {
                    "type" => opt_str("`spice` (default) or `vnc`."),
                    "autoport" => opt_bool("Let libvirt pick the port. Default true."),
                    "listen_type" => opt_str("`address` to listen on `listen_address`; `none` for libvirt's default."),
                    "listen_address" => opt_str("Address to listen on."),
                },
                ..Default::default()
            }),
            "console" => NestedBlock::List(console),
            "video" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("Video card."),
                attributes: map! { "type" => opt_str("Model, e.g. `cirrus`, `virtio`.") },
                ..Default::default()
            }),
            "xml" => NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain("Last-mile changes to the generated XML."),
                attributes: map! { "xslt" => opt_str("XSLT stylesheet applied to the domain XML before it is defined.") },
                ..Default::default()
            }),
        },
        ..Default::default()
    }
}

impl DomainState {
    /// The configuration part of the state, kept inside the domain.
    fn config_only(&self) -> DomainState {
        let mut c = self.clone();
        c.id = Value::Null;
        c.running = Value::Null;
        c.autostart = Value::Null;
        for v in [&mut c.machine, &mut c.arch] {
            if v.is_unknown() {
                *v = Value::Null;
            }
        }
        if let Value::Value(nics) = &mut c.network_interface {
            for n in nics {
                n.addresses = Value::Null;
                if n.mac.is_unknown() {
                    n.mac = Value::Null;
                }
                if n.network_id.is_unknown() {
                    n.network_id = Value::Null;
                }
                if n.network_name.is_unknown() {
                    n.network_name = Value::Null;
                }
            }
        }
        c
    }
}

fn cmdline_of(maps: &[BTreeMap<String, Value<String>>]) -> String {
    let mut words = Vec::new();
    for m in maps {
        for (k, v) in m {
            let v = v.as_ref_option().map(String::as_str).unwrap_or_default();
            if k == "_" {
                words.push(v.to_string());
            } else {
                words.push(format!("{k}={v}"));
            }
        }
    }
    words.join(" ")
}

fn cmdline_maps(line: &str) -> Vec<BTreeMap<String, Value<String>>> {
    line.split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => [(k.to_string(), s(v))].into(),
            None => [("_".to_string(), s(w))].into(),
        })
        .collect()
}

/// Builds the domain definition from a planned state (blocking: volumes
/// and networks are looked up). Errors name the attribute at fault.
fn build_def(h: &Host, st: &DomainState) -> Result<DomainDef, (String, HostError)> {
    // `at` is where in the configuration, `field` the schema name of it.
    let invalid = |at: String, field: &'static str, message: String| {
        (at, HostError::Invalid { field, message })
    };
    let kind = DomainKind::parse(known(&st.kind).unwrap_or("kvm"), "type")
        .map_err(|e| ("type".to_string(), e))?;
    let mut def = DomainDef {
        name: known(&st.name).unwrap_or_default().to_string(),
        uuid: None,
        kind,
        memory_mib: st.memory.as_ref_option().copied().unwrap_or(512).max(0) as u64,
        vcpu: st.vcpu.as_ref_option().copied().unwrap_or(1).max(0) as u32,
        os: OsDef {
            arch: known(&st.arch).map(str::to_string),
            machine: known(&st.machine).map(str::to_string),
            firmware: known(&st.firmware).map(str::to_string),
            nvram: st.nvram.as_ref_option().and_then(|n| {
                Some(NvramDef {
                    file: known(&n.file)?.to_string(),
                    template: known(&n.template).map(str::to_string),
                })
            }),
            boot_devices: list(&st.boot_device)
                .iter()
                .flat_map(|b| {
                    list(&b.dev)
                        .iter()
                        .filter_map(|d| d.as_ref_option().cloned())
                })
                .collect(),
            kernel: known(&st.kernel).map(str::to_string),
            initrd: known(&st.initrd).map(str::to_string),
            cmdline: st
                .cmdline
                .as_ref_option()
                .map(|m| cmdline_of(m))
                .filter(|c| !c.is_empty()),
        },
        cpu_mode: st
            .cpu
            .as_ref_option()
            .and_then(|c| known(&c.mode))
            .map(str::to_string),
        qemu_agent: st.qemu_agent.as_ref_option().copied().unwrap_or(false),
        ..Default::default()
    };
    for (i, d) in list(&st.disk).iter().enumerate() {
        let at = |a: &str| format!("disk.{i}.{a}");
        let bus = if d.scsi.as_ref_option().copied().unwrap_or(false) {
            DiskBus::Scsi
        } else {
            DiskBus::Virtio
        };
        let (device, source, format) =
            match (known(&d.volume_id), known(&d.file), known(&d.block_device)) {
                (Some(key), None, None) => {
                    let v = h.volume_by_key(key).map_err(|e| (at("volume_id"), e))?;
                    let dev = if v.format == "iso" {
                        DiskDevice::Cdrom
                    } else {
                        DiskDevice::Disk
                    };
                    let fmt = if v.format == "qcow2" { "qcow2" } else { "raw" };
                    (dev, DiskSource::File(v.path), fmt.to_string())
                }
                (None, Some(f), None) => {
                    let dev = if f.ends_with(".iso") {
                        DiskDevice::Cdrom
                    } else {
                        DiskDevice::Disk
                    };
                    let fmt = if f.ends_with(".qcow2") {
                        "qcow2"
                    } else {
                        "raw"
                    };
                    (dev, DiskSource::File(f.to_string()), fmt.to_string())
                }
                (None, None, Some(b)) => (
                    DiskDevice::Disk,
                    DiskSource::Block(b.to_string()),
                    "raw".to_string(),
                ),
                _ => {
                    return Err(invalid(
                        format!("disk.{i}"),
                        "disk",
                        "give exactly one of volume_id, file or block_device".into(),
                    ))
                }
            };
        def.disks.push(DiskDef {
            device,
            bus: if device == DiskDevice::Cdrom {
                DiskBus::Sata
            } else {
                bus
            },
            source,
            format: Some(format),
            target: String::new(),
            wwn: known(&d.wwn).map(str::to_string),
            driver: Default::default(),
        });
    }
    if let Some(ci) = known(&st.cloudinit) {
        let v = h
            .volume_by_key(key_of(ci))
            .map_err(|e| ("cloudinit".to_string(), e))?;
        def.disks.push(DiskDef {
            device: DiskDevice::Cdrom,
            source: DiskSource::File(v.path),
            format: Some("raw".into()),
            bus: DiskBus::Sata,
            target: String::new(),
            wwn: None,
            driver: Default::default(),
        });
    }
    def.assign_targets();
    for (i, n) in list(&st.network_interface).iter().enumerate() {
        let source = match (
            known(&n.network_name),
            known(&n.network_id),
            known(&n.bridge),
            known(&n.macvtap),
        ) {
            (Some(name), _, None, None) => InterfaceSource::Network(name.to_string()),
            (None, Some(id), None, None) => {
                let net = h
                    .network(id)
                    .map_err(|e| (format!("network_interface.{i}.network_id"), e))?;
                InterfaceSource::Network(net.def.name)
            }
            (None, None, Some(b), None) => InterfaceSource::Bridge(b.to_string()),
            (None, None, None, Some(m)) => InterfaceSource::Macvtap(m.to_string()),
            _ => {
                return Err(invalid(
                    format!("network_interface.{i}"),
                    "network_interface",
                    "give exactly one of network_name, network_id, bridge or macvtap".into(),
                ))
            }
        };
        def.interfaces.push(InterfaceDef {
            source,
            mac: known(&n.mac).map(str::to_lowercase),
            model: None,
        });
    }
    for (i, c) in list(&st.console).iter().enumerate() {
        def.consoles.push(ConsoleDef {
            kind: known(&c.kind).unwrap_or("pty").to_string(),
            target_type: known(&c.target_type).unwrap_or("serial").to_string(),
            target_port: match known(&c.target_port) {
                None => 0,
                Some(p) => p.parse().map_err(|_| {
                    invalid(
                        format!("console.{i}.target_port"),
                        "console.target_port",
                        format!("'{p}' is not a port number"),
                    )
                })?,
            },
            source_path: known(&c.source_path).map(str::to_string),
            source_host: known(&c.source_host).map(str::to_string),
            source_service: known(&c.source_service).map(str::to_string),
            log_file: known(&c.log_file).map(str::to_string),
        });
    }
    def.graphics = st.graphics.as_ref_option().map(|g| GraphicsDef {
        kind: known(&g.kind).unwrap_or("spice").to_string(),
        listen_address: match known(&g.listen_type) {
            Some("address") => known(&g.listen_address).map(str::to_string),
            _ => None,
        },
        autoport: g.autoport.as_ref_option().copied().unwrap_or(true),
    });
    def.video = st
        .video
        .as_ref_option()
        .map(|v| known(&v.kind).unwrap_or("cirrus").to_string());
    if let Ok(json) = serde_json::to_string(&st.config_only()) {
        def.metadata.insert(META_KEY.to_string(), json);
    }
    def.validate().map_err(|e| ("name".to_string(), e))?;
    Ok(def)
}

/// Defines, configures and starts the domain; removes it on failure.
fn create_blocking(h: &Host, st: &DomainState) -> Result<String, (String, HostError)> {
    let def = build_def(h, st)?;
    let mut xml = def.to_xml();
    if let Some(xslt) = st.xml.as_ref_option().and_then(|x| known(&x.xslt)) {
        xml = DomainDef::apply_xslt(&xml, xslt).map_err(|e| ("xml.0.xslt".to_string(), e))?;
    }
    let uuid = h
        .define_domain_xml(&xml)
        .map_err(|e| ("name".to_string(), e))?;
    let started = (|| {
        if st.autostart.as_ref_option().copied().unwrap_or(false) {
            h.set_domain_autostart(&uuid, true)
                .map_err(|e| ("autostart".to_string(), e))?;
        }
        if st.running.as_ref_option().copied().unwrap_or(true) {
            h.start_domain(&uuid)
                .map_err(|e| (start_error_field(h, st), e))?;
            wait_for_leases(h, &uuid, st)?;
        }
        Ok(())
    })();
    if let Err(e) = started {
        let _ = h.undefine_domain(&uuid);
        return Err(e);
    }
    Ok(uuid)
}

/// Applies the changes that `plan_update` lets through in place:
/// `memory`, `vcpu` and `cloudinit` go into the persistent definition
/// (redefined from the plan, same UUID). A running domain also gets them
/// live where libvirt can: memory through the balloon up to the maximum
/// it started with, vCPUs up to its maximum, the new seed into its CD-ROM
/// drive. What could not be done live is returned as (attribute, note):
/// it takes effect at the domain's next start.
fn redefine_in_place(
    h: &Host,
    id: &str,
    before: &DomainState,
    plan: &DomainState,
) -> Result<Vec<(&'static str, String)>, (String, HostError)> {
    let memory = plan.memory != before.memory;
    let vcpu = plan.vcpu != before.vcpu;
    let cloudinit = plan.cloudinit != before.cloudinit;
    let mut notes = Vec::new();
    if !(memory || vcpu || cloudinit) {
        return Ok(notes);
    }
    let old_def = h.domain_def(id).map_err(|e| ("name".to_string(), e))?;
    let mut def = build_def(h, plan)?;
    def.uuid = old_def.uuid.clone();
    let mut xml = def.to_xml();
    if let Some(xslt) = plan.xml.as_ref_option().and_then(|x| known(&x.xslt)) {
        xml = DomainDef::apply_xslt(&xml, xslt).map_err(|e| ("xml.0.xslt".to_string(), e))?;
    }
    h.define_domain_xml(&xml)
        .map_err(|e| ("name".to_string(), e))?;
    if !h.domain_active(id).unwrap_or(false) {
        return Ok(notes);
    }
    let later = "takes effect when the domain next starts; it was not restarted";
    if memory {
        let mib = plan.memory.as_ref_option().copied().unwrap_or(512).max(1) as u64;
        match h.set_live_memory(id, mib) {
            Ok(true) => {}
            Ok(false) => notes.push((
                "memory",
                format!("{mib} MiB is more than the running domain's maximum: {later}"),
            )),
            Err(e) => notes.push(("memory", format!("{e}: {later}"))),
        }
    }
    if vcpu {
        let n = plan.vcpu.as_ref_option().copied().unwrap_or(1).max(1) as u32;
        match h.set_live_vcpus(id, n) {
            Ok(true) => {}
            Ok(false) => notes.push((
                "vcpu",
                format!("{n} vCPUs is more than the running domain's maximum: {later}"),
            )),
            Err(e) => notes.push(("vcpu", format!("{e}: {later}"))),
        }
    }
    if cloudinit {
        let old_path = known(&before.cloudinit).map(key_of);
        let cds: Vec<&DiskDef> = old_def
            .disks
            .iter()
            .filter(|d| d.device == DiskDevice::Cdrom)
            .collect();
        let drive = cds
            .iter()
            .find(|d| Some(d.source.path()) == old_path)
            .or(cds.last());
        let new_path = match known(&plan.cloudinit) {
            Some(ci) => Some(
                h.volume_by_key(key_of(ci))
                    .map_err(|e| ("cloudinit".to_string(), e))?
                    .path,
            ),
            None => None,
        };
        match (drive, new_path) {
            (Some(d), Some(p)) => {
                if let Err(e) = h.change_live_cdrom(id, &d.target, d.bus.as_str(), &p) {
                    notes.push(("cloudinit", format!("{e}: {later}")));
                }
            }
            _ => notes.push((
                "cloudinit",
                format!("the running domain has no CD-ROM drive to change: {later}"),
            )),
        }
    }
    Ok(notes)
}

/// The attribute a failed start concerns: libvirt resolves networks only
/// at start, so an interface whose network is missing is the cause;
/// otherwise `running`.
fn start_error_field(h: &Host, st: &DomainState) -> String {
    list(&st.network_interface)
        .iter()
        .enumerate()
        .find(|(_, n)| {
            known(&n.network_name)
                .is_some_and(|name| h.network(name).is_err_and(|e| e.is_not_found()))
        })
        .map(|(i, _)| format!("network_interface.{i}.network_name"))
        .unwrap_or_else(|| "running".to_string())
}

const LEASE_WAIT: Duration = Duration::from_secs(300);

fn wait_for_leases(h: &Host, uuid: &str, st: &DomainState) -> Result<(), (String, HostError)> {
    let wanted: Vec<usize> = list(&st.network_interface)
        .iter()
        .enumerate()
        .filter(|(_, n)| n.wait_for_lease.as_ref_option().copied().unwrap_or(false))
        .map(|(i, _)| i)
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let def = h.domain_def(uuid).map_err(|e| ("name".to_string(), e))?;
    let wait = AddressWait {
        domain: uuid.to_string(),
        // An interface without a MAC never matches, so it times out below.
        macs: wanted
            .iter()
            .map(|i| {
                def.interfaces
                    .get(*i)
                    .and_then(|n| n.mac.clone())
                    .unwrap_or_default()
            })
            .collect(),
        source: AddressSource::Lease,
        family: Family::Any,
        deadline: Instant::now() + LEASE_WAIT,
    };
    match h.wait_for_addresses(&wait) {
        Ok(_) => Ok(()),
        Err(missing) => Err((
            format!("network_interface.{}.wait_for_lease", wanted[missing.index]),
            HostError::Invalid {
                field: "network_interface.wait_for_lease",
                message: format!(
                    "no DHCP lease within {} s; check that the network serves DHCP and \
                     the guest asks for an address, or set wait_for_lease = false",
                    LEASE_WAIT.as_secs()
                ),
            },
        )),
    }
}

/// What libvirt says about the domain, gathered in one blocking call.
struct Live {
    def: DomainDef,
    running: bool,
    autostart: bool,
    uuid: String,
    cloudinit_path: Option<String>,
    leases: Vec<kvmhost::libvirt::domain::GuestInterface>,
    volume_keys: BTreeMap<String, String>,
    network_ids: BTreeMap<String, String>,
    prior_paths: Vec<Option<String>>,
}

fn read_live(h: &Host, id: &str, prior: &DomainState) -> Result<Live, HostError> {
    let status = h.domain_status(id)?;
    let def = h.domain_def(&status.uuid)?;
    let running = status.state == PowerState::Running || status.state == PowerState::Paused;
    let cloudinit_path =
        known(&prior.cloudinit).and_then(|c| h.volume_by_key(key_of(c)).ok().map(|v| v.path));
    let mut leases = if running {
        h.domain_addresses(&status.uuid, AddressSource::Lease)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    // Bridged guests have no libvirt lease: their agent knows better.
    if running && def.qemu_agent {
        if let Ok(found) = h.domain_addresses(&status.uuid, AddressSource::Agent) {
            leases.extend(found.into_iter().map(|mut i| {
                i.addresses
                    .retain(|a| !a.starts_with("127.") && a != "::1" && !a.starts_with("fe80:"));
                i
            }));
        }
    }
    let mut volume_keys = BTreeMap::new();
    for d in &def.disks {
        if let Ok(v) = h.volume_by_path(d.source.path()) {
            volume_keys.insert(d.source.path().to_string(), v.key);
        }
    }
    let mut network_ids = BTreeMap::new();
    for n in &def.interfaces {
        if let InterfaceSource::Network(name) = &n.source {
            if let Ok(net) = h.network(name) {
                network_ids.insert(name.clone(), net.def.uuid.unwrap_or_default());
            }
        }
    }
    let prior_paths = list(&prior.disk)
        .iter()
        .map(|d| {
            if let Some(k) = known(&d.volume_id) {
                h.volume_by_key(k).ok().map(|v| v.path)
            } else {
                known(&d.file)
                    .or(known(&d.block_device))
                    .map(str::to_string)
            }
        })
        .collect();
    Ok(Live {
        def,
        running,
        autostart: status.autostart,
        uuid: status.uuid,
        cloudinit_path,
        leases,
        volume_keys,
        network_ids,
        prior_paths,
    })
}

/// Brings a state up to date with the host. `prior` holds what the
/// configuration said; libvirt's canonical spellings (machine types,
/// generated MACs) do not overwrite what the user wrote when they mean
/// the same thing.
fn merge_live(prior: &DomainState, live: &Live) -> DomainState {
    let d = &live.def;
    let mut st = prior.clone();
    st.id = s(&live.uuid);
    st.name = s(&d.name);
    st.kind = s(d.kind.as_str());
    st.memory = Value::Value(d.memory_mib as i64);
    st.vcpu = Value::Value(d.vcpu as i64);
    // `running = false` gives the domain's power to others (a launcher,
    // powernap): its state stays false whatever the power, so no plan
    // ever proposes to stop it.
    st.running = Value::Value(live.running && prior.running != Value::Value(false));
    st.autostart = Value::Value(live.autostart);
    let live_machine = d.os.machine.clone();
    st.machine = match (known(&prior.machine), live_machine) {
        (Some(p), Some(l))
            if l == p
                || l.starts_with(&format!("pc-{p}-"))
                || (p == "pc" && l.starts_with("pc-i440fx")) =>
        {
            s(p)
        }
        (_, l) => opt(l.as_deref()),
    };
    st.arch = match (known(&prior.arch), &d.os.arch) {
        (Some(p), Some(l)) if p == l => s(p),
        (_, l) => opt(l.as_deref()),
    };
    if prior.kernel.is_value() || d.os.kernel.is_some() {
        st.kernel = opt(d.os.kernel.as_deref());
    }
    if prior.initrd.is_value() || d.os.initrd.is_some() {
        st.initrd = opt(d.os.initrd.as_deref());
    }
    let live_cmdline = d.os.cmdline.clone().unwrap_or_default();
    let prior_cmdline = prior
        .cmdline
        .as_ref_option()
        .map(|m| cmdline_of(m))
        .unwrap_or_default();
    if live_cmdline != prior_cmdline {
        st.cmdline = if live_cmdline.is_empty() {
            Value::Null
        } else {
            Value::Value(cmdline_maps(&live_cmdline))
        };
    }
    if prior.firmware.is_value() || d.os.firmware.is_some() {
        st.firmware = opt(d.os.firmware.as_deref());
    }
    st.qemu_agent = Value::Value(d.qemu_agent);

    // Disks: the cloud-init CD-ROM is the `cloudinit` attribute, the rest
    // are `disk` blocks in order.
    let mut disks = d.disks.clone();
    let ci_index = match &live.cloudinit_path {
        Some(p) => disks.iter().position(|x| x.source.path() == p),
        None => None,
    };
    match ci_index {
        Some(i) => {
            disks.remove(i);
        }
        None => st.cloudinit = Value::Null,
    }
    let mut out = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        let path = disk.source.path();
        let prior_block = list(&prior.disk).get(i);
        let same = live.prior_paths.get(i).and_then(|p| p.as_deref()) == Some(path);
        let mut b = match (prior_block, same) {
            (Some(p), true) => p.clone(),
            _ => {
                let mut b = DiskBlock::default();
                match (&disk.source, live.volume_keys.get(path)) {
                    (_, Some(key)) => b.volume_id = s(key),
                    (DiskSource::Block(p), None) => b.block_device = s(p),
                    (DiskSource::File(p), None) => b.file = s(p),
                    // A pool volume that no longer resolves: its name.
                    (DiskSource::Volume { volume, .. }, None) => b.file = s(volume),
                }
                b
            }
        };
        if disk.bus == DiskBus::Scsi || b.scsi.is_value() {
            b.scsi = Value::Value(disk.bus == DiskBus::Scsi);
        }
        b.wwn = opt(disk.wwn.as_deref());
        out.push(b);
    }
    st.disk = Value::Value(out);

    let mut nics = Vec::new();
    for (i, n) in d.interfaces.iter().enumerate() {
        let mut b = list(&prior.network_interface)
            .get(i)
            .cloned()
            .unwrap_or_default();
        match &n.source {
            InterfaceSource::Network(name) => {
                b.network_name = s(name);
                b.network_id = opt(live.network_ids.get(name).map(String::as_str));
                b.bridge = Value::Null;
                b.macvtap = Value::Null;
            }
            InterfaceSource::Bridge(br) => {
                b.bridge = s(br);
                b.network_name = Value::Null;
                b.network_id = Value::Null;
                b.macvtap = Value::Null;
            }
            InterfaceSource::Macvtap(dev) => {
                b.macvtap = s(dev);
                b.network_name = Value::Null;
                b.network_id = Value::Null;
                b.bridge = Value::Null;
            }
        }
        let mac = n.mac.clone().unwrap_or_default();
        b.mac = match known(&b.mac) {
            Some(m) if m.eq_ignore_ascii_case(&mac) => b.mac.clone(),
            _ => s(&mac),
        };
        let mut found: Vec<String> = Vec::new();
        for a in live
            .leases
            .iter()
            .filter(|l| l.mac.eq_ignore_ascii_case(&mac))
            .flat_map(|l| l.addresses.iter())
        {
            if !found.contains(a) {
                found.push(a.clone());
            }
        }
        if !found.is_empty() || b.addresses.is_unknown() || b.addresses.is_null() {
            b.addresses = Value::Value(found.into_iter().map(Value::Value).collect());
        }
        nics.push(b);
    }
    st.network_interface = Value::Value(nics);

    // Settings libvirt rewrites or completes (consoles, graphics, video,
    // cpu) keep their configured form; only an import fills them.
    if prior.id.is_null() {
        st.cpu =
            opt(d.cpu_mode.as_deref().filter(|m| *m != "custom")).map(|m| CpuBlock { mode: s(&m) });
        st.console = Value::Value(
            d.consoles
                .iter()
                .map(|c| ConsoleBlock {
                    kind: s(&c.kind),
                    target_port: s(&c.target_port.to_string()),
                    target_type: s(&c.target_type),
                    source_path: opt(c.source_path.as_deref()),
                    source_host: opt(c.source_host.as_deref()),
                    source_service: opt(c.source_service.as_deref()),
                    log_file: opt(c.log_file.as_deref()),
                })
                .collect(),
        );
        st.video = opt(d.video.as_deref()).map(|v| VideoBlock { kind: s(&v) });
        st.boot_device = if d.os.boot_devices.is_empty() {
            Value::Value(vec![])
        } else {
            Value::Value(vec![BootBlock {
                dev: Value::Value(d.os.boot_devices.iter().map(|x| s(x)).collect()),
            }])
        };
        st.nvram = match &d.os.nvram {
            Some(n) => Value::Value(NvramBlock {
                file: s(&n.file),
                template: opt(n.template.as_deref()),
            }),
            None => Value::Null,
        };
    }
    st
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
            version: VERSION,
            block: schema_block(),
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
                read_live(h, &id, &p)
            })
            .await?;
        Some((Maybe(live.map(|live| merge_live(&prior, &live))), private))
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
        let st = planned.0?;
        let host = self.0.connect(diags).await?;
        let plan = st.clone();
        let made = blocking(&host, move |h| {
            let uuid = create_blocking(h, &plan)?;
            read_live(h, &uuid, &plan).map_err(|e| ("name".to_string(), e))
        })
        .await;
        match made {
            Ok(live) => Some((Maybe(Some(merge_live(&st, &live))), private)),
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
            let notes = redefine_in_place(h, &id, &before, &plan)?;
            if let Some(a) = plan.autostart.as_ref_option() {
                h.set_domain_autostart(&id, *a)
                    .map_err(|e| ("autostart".to_string(), e))?;
            }
            // `running = false` never stops the domain: its power belongs
            // to whoever started it.
            if plan.running.as_ref_option() == Some(&true) {
                h.start_domain(&id)
                    .map_err(|e| ("running".to_string(), e))?;
                wait_for_leases(h, &id, &plan)?;
            }
            let live = read_live(h, &id, &plan).map_err(|e| ("name".to_string(), e))?;
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
                Some((Maybe(Some(merge_live(&st, &live))), private))
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
        let import = move |h: &Host| {
            let def = h.domain_def(&id)?;
            // A domain this provider made carries its configuration;
            // one made elsewhere is described from its XML alone.
            let mut prior: DomainState = def
                .metadata
                .get(META_KEY)
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default();
            if prior.cloudinit.is_null() {
                if let Some(cd) = def.disks.iter().find(|d| d.device == DiskDevice::Cdrom) {
                    if let Ok(v) = h.volume_by_path(cd.source.path()) {
                        prior.cloudinit = s(&format!("{};imported", v.key));
                    }
                }
            }
            let imported_blocks = prior.id.is_null() && def.metadata.contains_key(META_KEY);
            let live = read_live(h, &id, &prior)?;
            let mut st = merge_live(&prior, &live);
            if imported_blocks {
                // The configuration came from the metadata: keep its
                // blocks as written rather than as libvirt spells them.
                st.cpu = prior.cpu.clone();
                st.console = prior.console.clone();
                st.video = prior.video.clone();
                st.boot_device = prior.boot_device.clone();
                st.nvram = prior.nvram.clone();
            }
            Ok(st)
        };
        let st = self
            .0
            .import(diags, "domain", "give the domain's UUID or name", import)
            .await?;
        Some((Maybe(Some(st)), ValueEmpty::Null))
    }

    async fn upgrade<'a>(
        &self,
        diags: &mut Diagnostics,
        version: i64,
        prior_state: RawValue,
    ) -> Option<Self::State<'a>> {
        let v0 =
            crate::common::state_v0_json(diags, "libvirt_domain", VERSION, version, prior_state)?;
        // dmacvicar's state does not say which CPU mode was configured:
        // the domain's persistent definition does.
        let mut live_mode = None;
        if is_dmacvicar_v0(&v0) {
            if let Some(id) = v0.get("id").and_then(|i| i.as_str()).map(str::to_string) {
                live_mode = self
                    .0
                    .read_back(diags, "Cannot read the domain", move |h| {
                        h.domain_def(&id).map(|d| d.cpu_mode)
                    })
                    .await?
                    .flatten();
            }
        }
        crate::common::state_from_json(diags, upgrade_v0(v0, live_mode.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::path_of;

    // Attributes of a domain as dmacvicar/libvirt 0.8.3 stored them
    // (taken from a state file its binary wrote in the test bed).
    fn dmacvicar_agent() -> serde_json::Value {
        serde_json::json!({
            "arch": "x86_64", "autostart": false, "boot_device": [],
            "cloudinit": "/p/agent-seed.iso;aa9604e5-619b-4f69-9c0f-8273e6f9ebec",
            "cmdline": null, "console": [], "coreos_ignition": null,
            "cpu": [{"mode": "custom"}], "description": "",
            "disk": [{"block_device": "", "file": "", "scsi": false, "url": "",
                      "volume_id": "/p/agent-root.qcow2", "wwn": ""}],
            "emulator": "/usr/bin/qemu-system-x86_64", "filesystem": [],
            "firmware": null, "fw_cfg_name": "opt/com.coreos/config",
            "graphics": [], "id": "d397a5f8-98bb-46cb-924b-b70e3cdf9a6c",
            "initrd": "", "kernel": "", "machine": "pc", "memory": 256,
            "metadata": null, "name": "agent",
            "network_interface": [{"addresses": [], "bridge": "br0", "hostname": "",
                "mac": "52:54:00:7A:00:01", "macvtap": "", "network_id": "",
                "network_name": "", "passthrough": "", "vepa": "", "wait_for_lease": false}],
            "nvram": null, "qemu_agent": false, "running": false, "timeouts": null,
            "tpm": [], "type": "qemu", "vcpu": 2, "video": [], "xml": []
        })
    }

    fn upgraded(v0: serde_json::Value, mode: Option<&str>) -> DomainState {
        let mut d = Diagnostics::default();
        let v1 = serde_json::to_vec(&upgrade_v0(v0, mode)).unwrap();
        RawValue::Json(v1).deserialize(&mut d).unwrap()
    }

    #[test]
    fn dmacvicar_state_reads_as_ours_would_write_it() {
        let st = upgraded(dmacvicar_agent(), Some("host-model"));
        assert_eq!(st.kernel, Value::Null);
        assert_eq!(st.cpu.as_ref_option().unwrap().mode, s("host-model"));
        let disk = &list(&st.disk)[0];
        assert_eq!(disk.volume_id, s("/p/agent-root.qcow2"));
        assert_eq!(
            (&disk.file, &disk.scsi, &disk.wwn),
            (&Value::Null, &Value::Null, &Value::Null)
        );
        let nic = &list(&st.network_interface)[0];
        assert_eq!(nic.mac, s("52:54:00:7a:00:01"));
        assert_eq!(nic.bridge, s("br0"));
        assert_eq!(
            (&nic.hostname, &nic.network_name),
            (&Value::Null, &Value::Null)
        );
        assert_eq!(nic.wait_for_lease, Value::Null);
        assert_eq!(
            st.cloudinit,
            s("/p/agent-seed.iso;aa9604e5-619b-4f69-9c0f-8273e6f9ebec")
        );
        // No cpu element in the definition (or a custom one): no block.
        assert!(upgraded(dmacvicar_agent(), None).cpu.is_null());
        assert!(upgraded(dmacvicar_agent(), Some("custom")).cpu.is_null());
    }

    #[test]
    fn our_version_0_state_is_unchanged() {
        let ours = serde_json::json!({
            "id": "u", "name": "vm", "cpu": [{"mode": "custom"}], "kernel": "",
            "network_interface": [{"bridge": "br0", "mac": "52:54:00:7A:00:01", "wait_for_lease": false}]
        });
        assert_eq!(upgrade_v0(ours.clone(), None), ours);
    }

    #[test]
    fn cmdline_maps_round_trip() {
        let maps = cmdline_maps("console=ttyS0 quiet panic=-1");
        assert_eq!(cmdline_of(&maps), "console=ttyS0 quiet panic=-1");
        assert_eq!(maps[1].get("_"), Some(&s("quiet")));
    }

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

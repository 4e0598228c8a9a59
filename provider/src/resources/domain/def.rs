//! The domain definition a planned state asks for: the XML model libvirt
//! is given at create and at an in-place change.

use std::collections::BTreeMap;

use kvmhost::libvirt::domain_xml::{
    ConsoleDef, DiskBus, DiskDef, DiskDevice, DiskSource, DomainDef, DomainKind, GraphicsDef,
    InterfaceDef, InterfaceSource, NvramDef, OsDef,
};
use kvmhost::libvirt::{Error as HostError, Host};
use tfplugin::value::Value;

use super::{list, s, ConsoleBlock, DiskBlock, DomainState, NicBlock};
use crate::resources::cloudinit_disk::key_of;
use crate::state::known;

/// Metadata key under which the configuration is kept in the domain, so
/// that import restores what libvirt's XML cannot tell (ids, XSLT, ...).
pub(super) const META_KEY: &str = "terraform-config";

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

pub(super) fn cmdline_of(maps: &[BTreeMap<String, Value<String>>]) -> String {
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

pub(super) fn cmdline_maps(line: &str) -> Vec<BTreeMap<String, Value<String>>> {
    line.split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => [(k.to_string(), s(v))].into(),
            None => [("_".to_string(), s(w))].into(),
        })
        .collect()
}

/// A configuration error at `at` (where in the configuration), about the
/// schema's `field` (the name of it without list positions).
pub(super) type Fault = (String, HostError);

fn invalid(at: String, field: &'static str, message: String) -> Fault {
    (at, HostError::Invalid { field, message })
}

/// Builds the domain definition from a planned state (blocking: volumes
/// and networks are looked up). Errors name the attribute at fault.
pub(super) fn build_def(h: &Host, st: &DomainState) -> Result<DomainDef, Fault> {
    let kind = DomainKind::parse(known(&st.kind).unwrap_or("kvm"), "type")
        .map_err(|e| ("type".to_string(), e))?;
    let mut def = DomainDef {
        name: known(&st.name).unwrap_or_default().to_string(),
        uuid: None,
        kind,
        memory_mib: st.memory.as_ref_option().copied().unwrap_or(512).max(0) as u64,
        vcpu: st.vcpu.as_ref_option().copied().unwrap_or(1).max(0) as u32,
        os: os_def(st),
        cpu_mode: st
            .cpu
            .as_ref_option()
            .and_then(|c| known(&c.mode))
            .map(str::to_string),
        qemu_agent: st.qemu_agent.as_ref_option().copied().unwrap_or(false),
        ..Default::default()
    };
    for (i, d) in list(&st.disk).iter().enumerate() {
        def.disks.push(disk_def(h, i, d)?);
    }
    if let Some(ci) = known(&st.cloudinit) {
        def.disks.push(cloudinit_def(h, ci)?);
    }
    def.assign_targets();
    for (i, n) in list(&st.network_interface).iter().enumerate() {
        def.interfaces.push(interface_def(h, i, n)?);
    }
    for (i, c) in list(&st.console).iter().enumerate() {
        def.consoles.push(console_def(i, c)?);
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

/// The domain's XML as libvirt gets it: the definition, then the `xml`
/// block's stylesheet if any.
pub(super) fn domain_xml(def: &DomainDef, st: &DomainState) -> Result<String, Fault> {
    let mut xml = def.to_xml();
    if let Some(xslt) = st.xml.as_ref_option().and_then(|x| known(&x.xslt)) {
        xml = DomainDef::apply_xslt(&xml, xslt).map_err(|e| ("xml.0.xslt".to_string(), e))?;
    }
    Ok(xml)
}

fn os_def(st: &DomainState) -> OsDef {
    OsDef {
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
    }
}

/// The `i`th `disk` block; its target is assigned with the others'.
fn disk_def(h: &Host, i: usize, d: &DiskBlock) -> Result<DiskDef, Fault> {
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
    Ok(DiskDef {
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
    })
}

/// The CD-ROM holding the `cloudinit` disk whose id is `ci`.
fn cloudinit_def(h: &Host, ci: &str) -> Result<DiskDef, Fault> {
    let v = h
        .volume_by_key(key_of(ci))
        .map_err(|e| ("cloudinit".to_string(), e))?;
    Ok(DiskDef {
        device: DiskDevice::Cdrom,
        source: DiskSource::File(v.path),
        format: Some("raw".into()),
        bus: DiskBus::Sata,
        target: String::new(),
        wwn: None,
        driver: Default::default(),
    })
}

/// The `i`th `network_interface` block.
fn interface_def(h: &Host, i: usize, n: &NicBlock) -> Result<InterfaceDef, Fault> {
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
    Ok(InterfaceDef {
        source,
        mac: known(&n.mac).map(str::to_lowercase),
        model: None,
    })
}

/// The `i`th `console` block.
fn console_def(i: usize, c: &ConsoleBlock) -> Result<ConsoleDef, Fault> {
    Ok(ConsoleDef {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_maps_round_trip() {
        let maps = cmdline_maps("console=ttyS0 quiet panic=-1");
        assert_eq!(cmdline_of(&maps), "console=ttyS0 quiet panic=-1");
        assert_eq!(maps[1].get("_"), Some(&s("quiet")));
    }
}

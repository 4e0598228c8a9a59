//! The domain on the host: defining and starting it, changing it in
//! place, and reading it back into a state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kvmhost::libvirt::address::{AddressWait, Family};
use kvmhost::libvirt::domain::{AddressSource, GuestInterface, PowerState};
use kvmhost::libvirt::domain_xml::{
    DiskBus, DiskDef, DiskDevice, DiskSource, DomainDef, InterfaceSource,
};
use kvmhost::libvirt::{Error as HostError, Host};
use tfplugin::value::Value;

use super::def::{build_def, cmdline_maps, cmdline_of, domain_xml, Fault, META_KEY};
use super::{
    list, opt, s, BootBlock, ConsoleBlock, CpuBlock, DiskBlock, DomainState, NicBlock, NvramBlock,
    VideoBlock,
};
use crate::resources::cloudinit_disk::key_of;
use crate::state::known;

/// Defines, configures and starts the domain; removes it on failure.
pub(super) fn create_blocking(h: &Host, st: &DomainState) -> Result<String, Fault> {
    let def = build_def(h, st)?;
    let xml = domain_xml(&def, st)?;
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

/// What a change that could not be made live is told with.
const LATER: &str = "takes effect when the domain next starts; it was not restarted";

/// Adds a note on `attr` unless the live change was `done`; `too_large`
/// says why when libvirt answered that the domain cannot take it.
fn note_unless_done(
    notes: &mut Vec<(&'static str, String)>,
    attr: &'static str,
    done: Result<bool, HostError>,
    too_large: impl FnOnce() -> String,
) {
    let why = match done {
        Ok(true) => return,
        Ok(false) => too_large(),
        Err(e) => e.to_string(),
    };
    notes.push((attr, format!("{why}: {LATER}")));
}

/// Applies the changes that `plan_update` lets through in place:
/// `memory`, `vcpu` and `cloudinit` go into the persistent definition
/// (redefined from the plan, same UUID). A running domain also gets them
/// live where libvirt can: memory through the balloon up to the maximum
/// it started with, vCPUs up to its maximum, the new seed into its CD-ROM
/// drive. What could not be done live is returned as (attribute, note):
/// it takes effect at the domain's next start.
pub(super) fn redefine_in_place(
    h: &Host,
    id: &str,
    before: &DomainState,
    plan: &DomainState,
) -> Result<Vec<(&'static str, String)>, Fault> {
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
    let xml = domain_xml(&def, plan)?;
    h.define_domain_xml(&xml)
        .map_err(|e| ("name".to_string(), e))?;
    if !h.domain_active(id).unwrap_or(false) {
        return Ok(notes);
    }
    if memory {
        let mib = plan.memory.as_ref_option().copied().unwrap_or(512).max(1) as u64;
        note_unless_done(&mut notes, "memory", h.set_live_memory(id, mib), || {
            format!("{mib} MiB is more than the running domain's maximum")
        });
    }
    if vcpu {
        let n = plan.vcpu.as_ref_option().copied().unwrap_or(1).max(1) as u32;
        note_unless_done(&mut notes, "vcpu", h.set_live_vcpus(id, n), || {
            format!("{n} vCPUs is more than the running domain's maximum")
        });
    }
    if cloudinit {
        change_live_seed(h, id, &old_def, before, plan, &mut notes)?;
    }
    Ok(notes)
}

/// Puts the planned cloud-init seed into the running domain's CD-ROM
/// drive that held the old one (or its last CD-ROM drive).
fn change_live_seed(
    h: &Host,
    id: &str,
    old_def: &DomainDef,
    before: &DomainState,
    plan: &DomainState,
    notes: &mut Vec<(&'static str, String)>,
) -> Result<(), Fault> {
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
    let done = match (drive, new_path) {
        (Some(d), Some(p)) => h
            .change_live_cdrom(id, &d.target, d.bus.as_str(), &p)
            .map(|()| true),
        _ => Ok(false),
    };
    note_unless_done(notes, "cloudinit", done, || {
        "the running domain has no CD-ROM drive to change".to_string()
    });
    Ok(())
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

pub(super) fn wait_for_leases(h: &Host, uuid: &str, st: &DomainState) -> Result<(), Fault> {
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
pub(super) struct Live {
    def: DomainDef,
    running: bool,
    autostart: bool,
    uuid: String,
    cloudinit_path: Option<String>,
    leases: Vec<GuestInterface>,
    volume_keys: BTreeMap<String, String>,
    network_ids: BTreeMap<String, String>,
    prior_paths: Vec<Option<String>>,
}

pub(super) fn read_live(h: &Host, id: &str, prior: &DomainState) -> Result<Live, HostError> {
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
pub(super) fn merge_live(prior: &DomainState, live: &Live) -> DomainState {
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
    merge_os(&mut st, prior, d);
    st.qemu_agent = Value::Value(d.qemu_agent);
    merge_disks(&mut st, prior, live);
    st.network_interface = Value::Value(merge_nics(prior, live));
    // Settings libvirt rewrites or completes (consoles, graphics, video,
    // cpu) keep their configured form; only an import fills them.
    if prior.id.is_null() {
        fill_rewritten_blocks(&mut st, d);
    }
    st
}

/// The machine type, architecture and direct boot settings.
fn merge_os(st: &mut DomainState, prior: &DomainState, d: &DomainDef) {
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
}

/// Disks: the cloud-init CD-ROM is the `cloudinit` attribute, the rest
/// are `disk` blocks in order.
fn merge_disks(st: &mut DomainState, prior: &DomainState, live: &Live) {
    let mut disks = live.def.disks.clone();
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
}

/// The `network_interface` blocks, with the addresses the guest has.
fn merge_nics(prior: &DomainState, live: &Live) -> Vec<NicBlock> {
    let mut nics = Vec::new();
    for (i, n) in live.def.interfaces.iter().enumerate() {
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
    nics
}

/// The blocks an import takes as libvirt spells them: cpu, consoles,
/// video, boot order and NVRAM.
fn fill_rewritten_blocks(st: &mut DomainState, d: &DomainDef) {
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

/// The state of the domain `id` names, for `terraform import`.
pub(super) fn imported(h: &Host, id: &str) -> Result<DomainState, HostError> {
    let def = h.domain_def(id)?;
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
    let live = read_live(h, id, &prior)?;
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
}

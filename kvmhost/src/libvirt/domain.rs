//! Domains: define, start, stop, autostart, undefine, inspect.

use std::time::{Duration, Instant};

use virt::domain::{Domain, DomainState};

use super::domain_xml::{DiskSource, DomainDef};
use super::error::{lv, Error, Result};
use super::Host;

/// Power state of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    /// Running (or blocked on I/O).
    Running,
    /// Paused by libvirt or the user.
    Paused,
    /// Shut off or crashed: no QEMU process.
    ShutOff,
    /// Shutting down, suspended, or a state libvirt added later.
    Other,
}

/// A domain's identity and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStatus {
    /// UUID (the stable identity).
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Power state.
    pub state: PowerState,
    /// Started when libvirtd starts.
    pub autostart: bool,
}

/// Where guest addresses are learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// DHCP leases of libvirt's own networks.
    Lease,
    /// The QEMU guest agent inside the guest.
    Agent,
}

/// Addresses of one guest interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestInterface {
    /// MAC address (lower case).
    pub mac: String,
    /// IP addresses without prefix length.
    pub addresses: Vec<String>,
}

impl Host {
    pub(super) fn lookup_domain(&self, id: &str) -> Result<Domain> {
        let ctx = format!("look up domain '{id}'");
        if looks_like_uuid(id) {
            self.raw()
                .lookup_domain_by_uuid_string(id)
                .map_err(lv(ctx, "domain", id))
        } else {
            self.raw()
                .lookup_domain_by_name(id)
                .map_err(lv(ctx, "domain", id))
        }
    }

    /// Defines (or, with a known UUID, redefines) a persistent domain and
    /// returns its UUID.
    pub fn define_domain(&self, def: &DomainDef) -> Result<String> {
        def.validate()?;
        self.define_domain_xml(&def.to_xml())
    }

    /// Defines a domain from raw XML (e.g. after an XSLT) and returns its UUID.
    pub fn define_domain_xml(&self, xml: &str) -> Result<String> {
        let dom = self
            .raw()
            .define_domain_xml(xml)
            .map_err(|e| Error::Libvirt {
                context: "define domain".into(),
                message: e.message().to_string(),
            })?;
        dom.uuid_string().map_err(|e| Error::Libvirt {
            context: "read the UUID of the new domain".into(),
            message: e.message().to_string(),
        })
    }

    /// The live definition of a domain (by UUID or name). Disks naming a
    /// pool volume (`<disk type='volume'>`) come with the volume's path.
    pub fn domain_def(&self, id: &str) -> Result<DomainDef> {
        let mut def = DomainDef::from_xml(&self.domain_xml(id)?)?;
        for d in &mut def.disks {
            if let DiskSource::Volume { pool, volume } = &d.source {
                if let Ok(v) = self.volume(pool, volume) {
                    d.source = DiskSource::File(v.path);
                }
            }
        }
        Ok(def)
    }

    /// The domain's XML as libvirt stores it (inactive definition).
    pub fn domain_xml(&self, id: &str) -> Result<String> {
        let dom = self.lookup_domain(id)?;
        dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).map_err(lv(
            format!("read XML of domain '{id}'"),
            "domain",
            id,
        ))
    }

    /// Identity, power state and autostart of a domain.
    pub fn domain_status(&self, id: &str) -> Result<DomainStatus> {
        let dom = self.lookup_domain(id)?;
        let fail = |e| lv(format!("read state of domain '{id}'"), "domain", id)(e);
        let (state, _) = dom.state().map_err(fail)?;
        let state = match state {
            virt::enumutil::Enum::Known(DomainState::Running | DomainState::Blocked) => {
                PowerState::Running
            }
            virt::enumutil::Enum::Known(DomainState::Paused) => PowerState::Paused,
            virt::enumutil::Enum::Known(DomainState::Shutoff | DomainState::Crashed) => {
                PowerState::ShutOff
            }
            _ => PowerState::Other,
        };
        Ok(DomainStatus {
            uuid: dom.uuid_string().map_err(fail)?,
            name: dom.name().map_err(fail)?,
            state,
            autostart: dom.autostart().map_err(fail)?,
        })
    }

    /// Starts a defined domain; a running one is left alone.
    pub fn start_domain(&self, id: &str) -> Result<()> {
        let dom = self.lookup_domain(id)?;
        if dom.is_active().unwrap_or(false) {
            return Ok(());
        }
        dom.create()
            .map(|_| ())
            .map_err(lv(format!("start domain '{id}'"), "domain", id))
    }

    /// Asks the guest to shut down (ACPI) and waits up to `grace`; then,
    /// or at once when `grace` is zero, powers it off.
    pub fn stop_domain(&self, id: &str, grace: Duration) -> Result<()> {
        let dom = self.lookup_domain(id)?;
        if !dom.is_active().unwrap_or(false) {
            return Ok(());
        }
        if !grace.is_zero() && dom.shutdown().is_ok() {
            let until = crate::deadline::after(grace);
            while Instant::now() < until {
                if !dom.is_active().unwrap_or(false) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        match dom.destroy() {
            Ok(()) => Ok(()),
            Err(_) if !dom.is_active().unwrap_or(true) => Ok(()),
            Err(e) => Err(lv(format!("power off domain '{id}'"), "domain", id)(e)),
        }
    }

    /// Whether the domain is running now (or paused).
    pub fn domain_active(&self, id: &str) -> Result<bool> {
        let dom = self.lookup_domain(id)?;
        dom.is_active()
            .map_err(lv(format!("read the state of domain '{id}'"), "domain", id))
    }

    /// Changes a running domain's memory (the balloon target) to
    /// `mib`. libvirt cannot go beyond the maximum the domain was started
    /// with: `Ok(false)` then, and nothing is changed.
    pub fn set_live_memory(&self, id: &str, mib: u64) -> Result<bool> {
        let dom = self.lookup_domain(id)?;
        let max_kib = dom.max_memory().map_err(lv(
            format!("read the maximum memory of domain '{id}'"),
            "domain",
            id,
        ))?;
        if mib * 1024 > max_kib {
            return Ok(false);
        }
        dom.set_memory_flags(mib * 1024, virt::sys::VIR_DOMAIN_MEM_LIVE)
            .map_err(lv(format!("set the memory of domain '{id}'"), "domain", id))?;
        Ok(true)
    }

    /// Changes a running domain's active vCPUs to `n` (hot-plug or
    /// unplug). Beyond the domain's maximum: `Ok(false)`, nothing changed.
    pub fn set_live_vcpus(&self, id: &str, n: u32) -> Result<bool> {
        let dom = self.lookup_domain(id)?;
        let max = dom.max_vcpus().map_err(lv(
            format!("read the maximum vCPUs of domain '{id}'"),
            "domain",
            id,
        ))?;
        if u64::from(n) > max {
            return Ok(false);
        }
        dom.set_vcpus_flags(n, virt::sys::VIR_DOMAIN_VCPU_LIVE)
            .map_err(lv(format!("set the vCPUs of domain '{id}'"), "domain", id))?;
        Ok(true)
    }

    /// Puts the image `path` into the running domain's CD-ROM drive
    /// `target` (e.g. `sda`) on `bus`.
    pub fn change_live_cdrom(&self, id: &str, target: &str, bus: &str, path: &str) -> Result<()> {
        let dom = self.lookup_domain(id)?;
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('\'', "&apos;")
        };
        let xml = format!(
            "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
             <source file='{}'/><target dev='{}' bus='{}'/><readonly/></disk>",
            esc(path),
            esc(target),
            esc(bus)
        );
        dom.update_device_flags(&xml, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(lv(
                format!("change the CD-ROM of domain '{id}'"),
                "domain",
                id,
            ))
    }

    /// Sets whether libvirtd starts the domain at boot.
    pub fn set_domain_autostart(&self, id: &str, on: bool) -> Result<()> {
        let dom = self.lookup_domain(id)?;
        dom.set_autostart(on).map(|_| ()).map_err(lv(
            format!("set autostart of domain '{id}'"),
            "domain",
            id,
        ))
    }

    /// Powers a domain off and removes its definition, with its NVRAM,
    /// managed save image and snapshot metadata. Its disks stay.
    pub fn undefine_domain(&self, id: &str) -> Result<()> {
        let dom = self.lookup_domain(id)?;
        if dom.is_active().unwrap_or(false) {
            if let Err(e) = dom.destroy() {
                if dom.is_active().unwrap_or(true) {
                    return Err(lv(format!("power off domain '{id}'"), "domain", id)(e));
                }
            }
        }
        let flags = virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM
            | virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
        dom.undefine_flags(flags)
            .or_else(|_| dom.undefine())
            .map_err(lv(format!("undefine domain '{id}'"), "domain", id))
    }

    /// Presses `keys` (Linux input key codes) together on the guest's
    /// keyboard and releases them, as a person typing at the console.
    pub fn send_keys(&self, id: &str, keys: &[u32]) -> Result<()> {
        let dom = self.lookup_domain(id)?;
        let mut codes = keys.to_vec();
        dom.send_key(
            virt::sys::VIR_KEYCODE_SET_LINUX,
            0,
            codes.as_mut_ptr(),
            codes.len() as i32,
            0,
        )
        .map_err(lv(format!("send keys to domain '{id}'"), "domain", id))
    }

    /// Names of all domains, running or not.
    pub fn domain_names(&self) -> Result<Vec<String>> {
        let doms = self
            .raw()
            .list_all_domains(0)
            .map_err(lv("list domains", "domain", ""))?;
        doms.iter()
            .map(|d| d.name().map_err(lv("list domains", "domain", "")))
            .collect()
    }

    /// Addresses the guest's interfaces hold, from DHCP leases or the agent.
    pub fn domain_addresses(&self, id: &str, source: AddressSource) -> Result<Vec<GuestInterface>> {
        let dom = self.lookup_domain(id)?;
        let src = match source {
            AddressSource::Lease => virt::sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            AddressSource::Agent => virt::sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        };
        let ifaces = dom.interface_addresses(src, 0).map_err(lv(
            format!("read addresses of domain '{id}'"),
            "domain",
            id,
        ))?;
        Ok(ifaces
            .into_iter()
            .filter_map(|i| {
                Some(GuestInterface {
                    mac: i.hwaddr?.to_lowercase(),
                    addresses: i.addrs.into_iter().map(|a| a.addr).collect(),
                })
            })
            .collect())
    }
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libvirt::domain_xml::{DomainKind, OsDef};

    fn tiny(name: &str) -> DomainDef {
        DomainDef {
            name: name.into(),
            kind: DomainKind::Qemu,
            memory_mib: 64,
            vcpu: 1,
            os: OsDef {
                arch: Some("i686".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn domain_lifecycle_on_the_test_driver() {
        let host = Host::open("test:///default").unwrap();
        let uuid = host.define_domain(&tiny("lifecycle")).unwrap();
        let st = host.domain_status(&uuid).unwrap();
        assert_eq!(
            (st.name.as_str(), st.state),
            ("lifecycle", PowerState::ShutOff)
        );
        host.start_domain(&uuid).unwrap();
        assert_eq!(
            host.domain_status("lifecycle").unwrap().state,
            PowerState::Running
        );
        host.set_domain_autostart(&uuid, true).unwrap();
        assert!(host.domain_status(&uuid).unwrap().autostart);
        assert_eq!(host.domain_def(&uuid).unwrap().memory_mib, 64);
        host.stop_domain(&uuid, Duration::ZERO).unwrap();
        assert_eq!(
            host.domain_status(&uuid).unwrap().state,
            PowerState::ShutOff
        );
        host.undefine_domain(&uuid).unwrap();
        assert!(host.domain_status(&uuid).unwrap_err().is_not_found());
    }

    #[test]
    fn redefining_with_the_uuid_changes_the_domain() {
        let host = Host::open("test:///default").unwrap();
        let uuid = host.define_domain(&tiny("redef")).unwrap();
        let mut def = host.domain_def(&uuid).unwrap();
        def.memory_mib = 128;
        assert_eq!(host.define_domain(&def).unwrap(), uuid);
        assert_eq!(host.domain_def(&uuid).unwrap().memory_mib, 128);
    }

    #[test]
    fn missing_domain_is_not_found() {
        let host = Host::open("test:///default").unwrap();
        let err = host
            .domain_status("00000000-0000-0000-0000-000000000001")
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}

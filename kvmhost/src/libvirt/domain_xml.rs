//! The domain XML model: what a guest is made of, written to and read
//! back from libvirt's `<domain>` XML.
//!
//! Only what the project manages is modelled; libvirt fills the rest
//! (controllers, PCI addresses) and [`DomainDef::from_xml`] ignores it.

use std::collections::BTreeMap;

use super::error::{Error, Result};
use super::stylesheet::Stylesheet;
use super::xml::{child, child_attr, child_text, children, esc, parse, to_bytes};

/// XML namespace of the project's metadata inside `<metadata>`.
pub const METADATA_NS: &str = "urn:kvmhost:domain:1";

/// XML namespace of libvirt's QEMU command-line passthrough
/// (`<qemu:commandline>`).
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// Hypervisor type of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DomainKind {
    /// Hardware virtualisation (the default on real hosts).
    #[default]
    Kvm,
    /// Plain emulation (TCG), for hosts without KVM.
    Qemu,
}

impl DomainKind {
    /// libvirt's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainKind::Kvm => "kvm",
            DomainKind::Qemu => "qemu",
        }
    }

    /// Parses libvirt's name; `field` names the input in the error.
    pub fn parse(s: &str, field: &'static str) -> Result<DomainKind> {
        match s {
            "kvm" => Ok(DomainKind::Kvm),
            "qemu" => Ok(DomainKind::Qemu),
            other => Err(Error::Invalid {
                field,
                message: format!(
                    "unknown domain type '{other}': use kvm, or qemu where KVM is not available"
                ),
            }),
        }
    }
}

/// The project's metadata element (`<kvmhost:meta>`) holding `entries`,
/// as the domain XML has it.
pub fn metadata_xml(entries: &BTreeMap<String, String>) -> String {
    format!(
        "<kvmhost:meta xmlns:kvmhost='{METADATA_NS}'>{}</kvmhost:meta>",
        entries_xml("kvmhost:", entries)
    )
}

/// The same element as `virDomainSetMetadata` takes it: without prefix
/// or namespace, which libvirt adds to the element itself (it refuses a
/// fragment that declares them).
pub fn metadata_fragment(entries: &BTreeMap<String, String>) -> String {
    format!("<meta>{}</meta>", entries_xml("", entries))
}

fn entries_xml(prefix: &str, entries: &BTreeMap<String, String>) -> String {
    entries
        .iter()
        .map(|(k, v)| format!("<{prefix}entry key='{}'>{}</{prefix}entry>", esc(k), esc(v)))
        .collect()
}

/// The QEMU guest agent's channel name.
const QEMU_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// A virtio-serial channel named `name` on a socket libvirt places.
fn channel_xml(name: &str) -> String {
    format!(
        "<channel type='unix'><target type='virtio' name='{}'/></channel>",
        esc(name)
    )
}

/// A domain definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainDef {
    /// Name, unique on the host.
    pub name: String,
    /// UUID; libvirt assigns one when absent. Needed to redefine.
    pub uuid: Option<String>,
    /// VM generation ID (`<genid>`); none when absent.
    pub genid: Option<GenId>,
    /// Hypervisor type.
    pub kind: DomainKind,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Boot and firmware settings.
    pub os: OsDef,
    /// `<cpu mode=...>`, e.g. "host-passthrough".
    pub cpu_mode: Option<String>,
    /// `<cpu><model>`, e.g. "Haswell-noTSX-IBRS"; alone it means mode
    /// `custom`.
    pub cpu_model: Option<String>,
    /// Disks and CD-ROMs, in bus order.
    pub disks: Vec<DiskDef>,
    /// Network interfaces.
    pub interfaces: Vec<InterfaceDef>,
    /// Serial ports and consoles.
    pub consoles: Vec<ConsoleDef>,
    /// Graphical console; none when absent.
    pub graphics: Option<GraphicsDef>,
    /// Video model type, e.g. "cirrus", "virtio".
    pub video: Option<String>,
    /// Adds the QEMU guest agent channel.
    pub qemu_agent: bool,
    /// Other virtio-serial channels, by name (`org.kvmbe.handoff`): each a
    /// `unix` channel whose socket libvirt places, reached with
    /// `virDomainOpenChannel`.
    pub channels: Vec<String>,
    /// Project metadata (key/value) kept inside the domain.
    pub metadata: BTreeMap<String, String>,
    /// Extra QEMU arguments passed through libvirt, for what libvirt has
    /// no element of its own.
    pub qemu_commandline: QemuCommandline,
}

/// A VM generation ID: libvirt gives it a new value whenever the guest
/// may run again from a copy of its state (a restore, a snapshot revert),
/// and the guest kernel then reseeds its random number generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenId {
    /// `<genid/>`: libvirt chooses the value.
    Auto,
    /// `<genid>UUID</genid>`: this value, as libvirt reports it.
    Id(String),
}

/// Arguments libvirt adds to QEMU's command line as they are
/// (`<qemu:commandline>`); written only when there are some.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QemuCommandline {
    /// Arguments in order, each one word of QEMU's command line.
    pub args: Vec<String>,
}

/// Boot and firmware settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OsDef {
    /// Architecture, e.g. "x86_64".
    pub arch: Option<String>,
    /// Machine type, e.g. "q35" or "pc".
    pub machine: Option<String>,
    /// Firmware loader path (UEFI code file).
    pub firmware: Option<String>,
    /// Per-domain UEFI variables.
    pub nvram: Option<NvramDef>,
    /// Boot order: "hd", "cdrom", "network", "fd".
    pub boot_devices: Vec<String>,
    /// Kernel for direct boot.
    pub kernel: Option<String>,
    /// Initrd for direct boot.
    pub initrd: Option<String>,
    /// Kernel command line for direct boot.
    pub cmdline: Option<String>,
}

/// UEFI variables file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NvramDef {
    /// Per-domain variables file.
    pub file: String,
    /// Template copied to `file` when it does not exist.
    pub template: Option<String>,
}

/// Disk or CD-ROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskDevice {
    /// A read-write disk.
    #[default]
    Disk,
    /// A read-only CD-ROM.
    Cdrom,
}

/// Where a disk's bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A file on the host (volumes of directory pools are files).
    File(String),
    /// A block device on the host.
    Block(String),
    /// A volume named by pool and name (`<disk type='volume'>`, as
    /// dmacvicar/libvirt writes). [`crate::libvirt::Host::domain_def`]
    /// turns these into [`DiskSource::File`] with the volume's path.
    Volume {
        /// Pool name.
        pool: String,
        /// Volume name in the pool.
        volume: String,
    },
}

impl DiskSource {
    /// The host path; for a [`DiskSource::Volume`] not yet resolved, the
    /// volume's name.
    pub fn path(&self) -> &str {
        match self {
            DiskSource::File(p) | DiskSource::Block(p) => p,
            DiskSource::Volume { volume, .. } => volume,
        }
    }
}

/// Disk bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    /// virtio-blk.
    #[default]
    Virtio,
    /// virtio-scsi.
    Scsi,
    /// SATA (AHCI), used for CD-ROMs.
    Sata,
    /// IDE.
    Ide,
}

impl DiskBus {
    /// libvirt's name of the bus.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Scsi => "scsi",
            DiskBus::Sata => "sata",
            DiskBus::Ide => "ide",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            DiskBus::Virtio => "vd",
            DiskBus::Scsi | DiskBus::Sata => "sd",
            DiskBus::Ide => "hd",
        }
    }
}

/// A disk attached to a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDef {
    /// Disk or CD-ROM.
    pub device: DiskDevice,
    /// Host file or device.
    pub source: DiskSource,
    /// Driver format ("qcow2", "raw"); libvirt probes nothing, so set it.
    pub format: Option<String>,
    /// Bus.
    pub bus: DiskBus,
    /// Guest device name ("vda"); filled by [`DomainDef::assign_targets`].
    pub target: String,
    /// SCSI World Wide Name.
    pub wwn: Option<String>,
    /// QEMU driver settings beyond the format.
    pub driver: DiskDriver,
}

/// A disk's QEMU driver settings (`<driver cache=... discard=...
/// detect_zeroes=...>`); `None` leaves QEMU's default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskDriver {
    /// Cache mode, e.g. "none", "writeback", "unsafe".
    pub cache: Option<String>,
    /// Discard mode: "unmap" or "ignore".
    pub discard: Option<String>,
    /// Zero detection: "off", "on" or "unmap".
    pub detect_zeroes: Option<String>,
}

impl DiskDriver {
    /// The settings as `(attribute, value)` pairs, in the order written.
    fn attributes(&self) -> [(&'static str, Option<&str>); 3] {
        [
            ("cache", self.cache.as_deref()),
            ("discard", self.discard.as_deref()),
            ("detect_zeroes", self.detect_zeroes.as_deref()),
        ]
    }
}

/// How an interface reaches the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSource {
    /// A libvirt network by name.
    Network(String),
    /// A host bridge.
    Bridge(String),
    /// macvtap on a host device (`type='direct'`, mode bridge).
    Macvtap(String),
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceDef {
    /// Where it is plugged in.
    pub source: InterfaceSource,
    /// MAC address; libvirt makes one when absent.
    pub mac: Option<String>,
    /// Device model, "virtio" unless set.
    pub model: Option<String>,
}

/// Where a serial port or console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleDef {
    /// Character device type: "pty", "file", "unix", "tcp".
    pub kind: String,
    /// Guest side: "serial" (a serial port) or "virtio" (a virtio console).
    pub target_type: String,
    /// Port number on the guest side.
    pub target_port: u32,
    /// Host path for "file" and "unix".
    pub source_path: Option<String>,
    /// Host for "tcp".
    pub source_host: Option<String>,
    /// Port for "tcp".
    pub source_service: Option<String>,
    /// Also log everything the guest writes to this file.
    pub log_file: Option<String>,
}

/// A graphical console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphicsDef {
    /// "spice" or "vnc".
    pub kind: String,
    /// Listen address, e.g. "127.0.0.1"; none means libvirt's default.
    pub listen_address: Option<String>,
    /// Whether libvirt picks the port.
    pub autoport: bool,
}

impl DomainDef {
    /// Names disks without a target: vda, vdb, ... per bus prefix.
    pub fn assign_targets(&mut self) {
        let mut used: Vec<String> = self
            .disks
            .iter()
            .filter(|d| !d.target.is_empty())
            .map(|d| d.target.clone())
            .collect();
        for d in self.disks.iter_mut().filter(|d| d.target.is_empty()) {
            let prefix = d.bus.prefix();
            let name = (0..26u8)
                .map(|i| format!("{prefix}{}", (b'a' + i) as char))
                .find(|n| !used.contains(n))
                .unwrap_or_else(|| format!("{prefix}z"));
            used.push(name.clone());
            d.target = name;
        }
    }

    /// Checks what libvirt would refuse late or silently misread.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains('/') {
            return Err(Error::Invalid {
                field: "name",
                message: format!(
                    "'{}' is not a valid domain name: it may not be empty or contain '/'",
                    self.name
                ),
            });
        }
        if self.memory_mib == 0 {
            return Err(Error::Invalid {
                field: "memory",
                message: "must be at least 1 (MiB)".into(),
            });
        }
        if self.vcpu == 0 {
            return Err(Error::Invalid {
                field: "vcpu",
                message: "must be at least 1".into(),
            });
        }
        if let (Some(mode), Some(model)) = (&self.cpu_mode, &self.cpu_model) {
            if mode != "custom" {
                return Err(Error::Invalid {
                    field: "cpu_model",
                    message: format!(
                        "CPU model '{model}' goes with cpu_mode custom (or none), not '{mode}': drop one of them"
                    ),
                });
            }
        }
        if let Some(mac) = self
            .interfaces
            .iter()
            .filter_map(|i| i.mac.as_ref())
            .find(|m| !is_mac(m))
        {
            return Err(Error::Invalid {
                field: "interface.mac",
                message: format!("'{mac}' is not a MAC address like 52:54:00:12:34:56"),
            });
        }
        Ok(())
    }

    /// The domain's libvirt XML.
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(2048);
        // The namespace is declared only where it is used, so domains
        // without passthrough read as before.
        let qemu_ns = if self.qemu_commandline.args.is_empty() {
            String::new()
        } else {
            format!("xmlns:qemu='{QEMU_NS}' ")
        };
        x.push_str(&format!("<domain {qemu_ns}type='{}'>", self.kind.as_str()));
        x.push_str(&format!("<name>{}</name>", esc(&self.name)));
        if let Some(uuid) = &self.uuid {
            x.push_str(&format!("<uuid>{}</uuid>", esc(uuid)));
        }
        match &self.genid {
            Some(GenId::Auto) => x.push_str("<genid/>"),
            Some(GenId::Id(id)) => x.push_str(&format!("<genid>{}</genid>", esc(id))),
            None => {}
        }
        if !self.metadata.is_empty() {
            x.push_str("<metadata>");
            x.push_str(&metadata_xml(&self.metadata));
            x.push_str("</metadata>");
        }
        x.push_str(&format!(
            "<memory unit='MiB'>{0}</memory><currentMemory unit='MiB'>{0}</currentMemory>",
            self.memory_mib
        ));
        x.push_str(&format!("<vcpu>{}</vcpu>", self.vcpu));
        self.os_xml(&mut x);
        x.push_str("<features><acpi/><apic/></features>");
        match (&self.cpu_mode, &self.cpu_model) {
            (Some(mode), None) => x.push_str(&format!("<cpu mode='{}'/>", esc(mode))),
            (mode, Some(model)) => x.push_str(&format!(
                "<cpu mode='{}' match='exact'><model fallback='allow'>{}</model></cpu>",
                esc(mode.as_deref().unwrap_or("custom")),
                esc(model)
            )),
            (None, None) => {}
        }
        x.push_str("<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>");
        x.push_str("<devices>");
        for d in &self.disks {
            disk_xml(&mut x, d);
        }
        if self.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
            x.push_str("<controller type='scsi' model='virtio-scsi'/>");
        }
        for i in &self.interfaces {
            interface_xml(&mut x, i);
        }
        for c in &self.consoles {
            console_xml(&mut x, c);
        }
        if self.qemu_agent {
            x.push_str(&channel_xml(QEMU_AGENT_CHANNEL));
        }
        for name in &self.channels {
            x.push_str(&channel_xml(name));
        }
        if let Some(g) = &self.graphics {
            x.push_str(&format!(
                "<graphics type='{}' autoport='{}'",
                esc(&g.kind),
                if g.autoport { "yes" } else { "no" }
            ));
            match &g.listen_address {
                Some(a) => x.push_str(&format!(
                    "><listen type='address' address='{}'/></graphics>",
                    esc(a)
                )),
                None => x.push_str("/>"),
            }
        }
        if let Some(v) = &self.video {
            x.push_str(&format!("<video><model type='{}'/></video>", esc(v)));
        }
        x.push_str("<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>");
        x.push_str("</devices>");
        if !self.qemu_commandline.args.is_empty() {
            x.push_str("<qemu:commandline>");
            for a in &self.qemu_commandline.args {
                x.push_str(&format!("<qemu:arg value='{}'/>", esc(a)));
            }
            x.push_str("</qemu:commandline>");
        }
        x.push_str("</domain>");
        x
    }

    fn os_xml(&self, x: &mut String) {
        x.push_str("<os><type");
        if let Some(a) = &self.os.arch {
            x.push_str(&format!(" arch='{}'", esc(a)));
        }
        if let Some(m) = &self.os.machine {
            x.push_str(&format!(" machine='{}'", esc(m)));
        }
        x.push_str(">hvm</type>");
        if let Some(f) = &self.os.firmware {
            x.push_str(&format!(
                "<loader readonly='yes' type='pflash'>{}</loader>",
                esc(f)
            ));
        }
        if let Some(n) = &self.os.nvram {
            match &n.template {
                Some(t) => x.push_str(&format!(
                    "<nvram template='{}'>{}</nvram>",
                    esc(t),
                    esc(&n.file)
                )),
                None => x.push_str(&format!("<nvram>{}</nvram>", esc(&n.file))),
            }
        }
        if let Some(k) = &self.os.kernel {
            x.push_str(&format!("<kernel>{}</kernel>", esc(k)));
        }
        if let Some(i) = &self.os.initrd {
            x.push_str(&format!("<initrd>{}</initrd>", esc(i)));
        }
        if let Some(c) = &self.os.cmdline {
            x.push_str(&format!("<cmdline>{}</cmdline>", esc(c)));
        }
        for b in &self.os.boot_devices {
            x.push_str(&format!("<boot dev='{}'/>", esc(b)));
        }
        x.push_str("</os>");
    }

    /// Reads a definition back from libvirt's XML.
    pub fn from_xml(text: &str) -> Result<DomainDef> {
        let doc = parse("domain XML", text)?;
        let root = doc.root_element();
        if root.tag_name().name() != "domain" {
            return Err(Error::Xml {
                context: "domain XML".into(),
                message: format!("root element is <{}>, not <domain>", root.tag_name().name()),
            });
        }
        let kind = match root.attribute("type") {
            Some("qemu") => DomainKind::Qemu,
            _ => DomainKind::Kvm,
        };
        let memory_kib = child(root, "memory")
            .and_then(|m| {
                let v: u64 = m.text()?.trim().parse().ok()?;
                to_bytes(v, Some(m.attribute("unit").unwrap_or("KiB")))
            })
            .unwrap_or(0);
        let os_node = child(root, "os");
        let os = match os_node {
            Some(os) => OsDef {
                arch: child_attr(os, "type", "arch"),
                machine: child_attr(os, "type", "machine"),
                firmware: child_text(os, "loader"),
                nvram: child(os, "nvram").map(|n| NvramDef {
                    file: n.text().unwrap_or_default().trim().to_string(),
                    template: n.attribute("template").map(str::to_string),
                }),
                boot_devices: children(os, "boot")
                    .filter_map(|b| b.attribute("dev").map(str::to_string))
                    .collect(),
                kernel: child_text(os, "kernel"),
                initrd: child_text(os, "initrd"),
                cmdline: child_text(os, "cmdline"),
            },
            None => OsDef::default(),
        };
        let mut def = DomainDef {
            name: child_text(root, "name").unwrap_or_default(),
            uuid: child_text(root, "uuid"),
            genid: child(root, "genid").map(|g| match g.text().map(str::trim) {
                Some(id) if !id.is_empty() => GenId::Id(id.to_string()),
                _ => GenId::Auto,
            }),
            kind,
            memory_mib: memory_kib / (1 << 20),
            vcpu: child_text(root, "vcpu")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            os,
            cpu_mode: child_attr(root, "cpu", "mode"),
            cpu_model: child(root, "cpu").and_then(|c| child_text(c, "model")),
            ..Default::default()
        };
        if let Some(meta) = child(root, "metadata") {
            for m in meta.children().filter(|c| {
                c.is_element()
                    && c.tag_name().namespace() == Some(METADATA_NS)
                    && c.tag_name().name() == "meta"
            }) {
                for e in children(m, "entry") {
                    if let Some(k) = e.attribute("key") {
                        def.metadata
                            .insert(k.to_string(), e.text().unwrap_or_default().to_string());
                    }
                }
            }
        }
        if let Some(devices) = child(root, "devices") {
            read_devices(devices, &mut def);
        }
        def.qemu_commandline.args = qemu_elements(root, "commandline")
            .flat_map(|c| qemu_elements(c, "arg"))
            .filter_map(|a| a.attribute("value").map(str::to_string))
            .collect();
        Ok(def)
    }

    /// Runs an XSLT stylesheet over `xml` with `xsltproc`, as users of the
    /// `xml { xslt }` block expect for last-mile changes libvirt supports
    /// but the model does not.
    ///
    /// The stylesheet comes from configuration, so it is checked first: it
    /// may only transform the domain XML, not read files (see
    /// [`Stylesheet`]); and it runs with no network and no file writes.
    ///
    /// Stylesheets written for dmacvicar/libvirt's XML (the seed's
    /// Windows agents replace `/domain/cpu` to pin a CPU model) expect a
    /// `<cpu>` element in every domain, which that provider always writes
    /// and this model writes only with a CPU mode. An empty `<cpu/>` is
    /// therefore added before the transform when there is none, and
    /// removed again if the stylesheet left it empty, so such stylesheets
    /// have the same effect here and the others see no difference.
    pub fn apply_xslt(xml: &str, xslt: &str) -> Result<String> {
        const EMPTY_CPU: &str = "<cpu/>";
        let added_cpu = !xml.contains("<cpu") && xml.contains("</features>");
        let input = if added_cpu {
            xml.replacen("</features>", &format!("</features>{EMPTY_CPU}"), 1)
        } else {
            xml.to_string()
        };
        let out = Stylesheet::parse(xslt)?.apply(&input)?;
        Ok(if added_cpu {
            out.replace(EMPTY_CPU, "")
        } else {
            out
        })
    }
}

/// Child elements called `name` in the QEMU namespace, whatever prefix
/// the document gives it.
fn qemu_elements<'a, 'i: 'a>(
    node: roxmltree::Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    node.children().filter(move |c| {
        c.is_element() && c.tag_name().namespace() == Some(QEMU_NS) && c.tag_name().name() == name
    })
}

/// True for a colon-separated 6-octet MAC address.
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn disk_xml(x: &mut String, d: &DiskDef) {
    let (kind, attr) = match &d.source {
        DiskSource::File(_) => ("file", "file"),
        DiskSource::Block(_) => ("block", "dev"),
        DiskSource::Volume { .. } => ("volume", "volume"),
    };
    let device = match d.device {
        DiskDevice::Disk => "disk",
        DiskDevice::Cdrom => "cdrom",
    };
    x.push_str(&format!("<disk type='{kind}' device='{device}'>"));
    x.push_str(&format!(
        "<driver name='qemu' type='{}'",
        esc(d.format.as_deref().unwrap_or("raw"))
    ));
    for (name, value) in d.driver.attributes() {
        if let Some(v) = value {
            x.push_str(&format!(" {name}='{}'", esc(v)));
        }
    }
    x.push_str("/>");
    match &d.source {
        DiskSource::Volume { pool, volume } => x.push_str(&format!(
            "<source pool='{}' volume='{}'/>",
            esc(pool),
            esc(volume)
        )),
        s => x.push_str(&format!("<source {attr}='{}'/>", esc(s.path()))),
    }
    x.push_str(&format!(
        "<target dev='{}' bus='{}'/>",
        esc(&d.target),
        d.bus.as_str()
    ));
    if d.device == DiskDevice::Cdrom {
        x.push_str("<readonly/>");
    }
    if let Some(w) = &d.wwn {
        x.push_str(&format!("<wwn>{}</wwn>", esc(w)));
    }
    x.push_str("</disk>");
}

fn interface_xml(x: &mut String, i: &InterfaceDef) {
    match &i.source {
        InterfaceSource::Network(n) => x.push_str(&format!(
            "<interface type='network'><source network='{}'/>",
            esc(n)
        )),
        InterfaceSource::Bridge(b) => x.push_str(&format!(
            "<interface type='bridge'><source bridge='{}'/>",
            esc(b)
        )),
        InterfaceSource::Macvtap(d) => x.push_str(&format!(
            "<interface type='direct'><source dev='{}' mode='bridge'/>",
            esc(d)
        )),
    }
    if let Some(m) = &i.mac {
        x.push_str(&format!("<mac address='{}'/>", esc(m)));
    }
    x.push_str(&format!(
        "<model type='{}'/></interface>",
        esc(i.model.as_deref().unwrap_or("virtio"))
    ));
}

fn console_xml(x: &mut String, c: &ConsoleDef) {
    let element = if c.target_type == "serial" {
        "serial"
    } else {
        "console"
    };
    x.push_str(&format!("<{element} type='{}'>", esc(&c.kind)));
    match (c.kind.as_str(), &c.source_path) {
        ("unix", Some(p)) => x.push_str(&format!("<source mode='bind' path='{}'/>", esc(p))),
        (_, Some(p)) => x.push_str(&format!("<source path='{}'/>", esc(p))),
        _ => {}
    }
    if c.kind == "tcp" {
        x.push_str(&format!(
            "<source mode='bind' host='{}' service='{}'/><protocol type='telnet'/>",
            esc(c.source_host.as_deref().unwrap_or("127.0.0.1")),
            esc(c.source_service.as_deref().unwrap_or("0"))
        ));
    }
    if let Some(l) = &c.log_file {
        x.push_str(&format!("<log file='{}' append='off'/>", esc(l)));
    }
    if element == "serial" {
        x.push_str(&format!("<target port='{}'/>", c.target_port));
    } else {
        x.push_str(&format!(
            "<target type='{}' port='{}'/>",
            esc(&c.target_type),
            c.target_port
        ));
    }
    x.push_str(&format!("</{element}>"));
}

fn read_devices(devices: roxmltree::Node, def: &mut DomainDef) {
    for d in children(devices, "disk") {
        let device = match d.attribute("device") {
            Some("cdrom") => DiskDevice::Cdrom,
            Some("disk") | None => DiskDevice::Disk,
            Some(_) => continue,
        };
        let source = match (d.attribute("type"), child(d, "source")) {
            (Some("block"), Some(s)) => {
                s.attribute("dev").map(|p| DiskSource::Block(p.to_string()))
            }
            (Some("volume"), Some(s)) => match (s.attribute("pool"), s.attribute("volume")) {
                (Some(pool), Some(volume)) => Some(DiskSource::Volume {
                    pool: pool.to_string(),
                    volume: volume.to_string(),
                }),
                _ => None,
            },
            (_, Some(s)) => s.attribute("file").map(|p| DiskSource::File(p.to_string())),
            _ => None,
        };
        let Some(source) = source else { continue };
        let bus = match child_attr(d, "target", "bus").as_deref() {
            Some("scsi") => DiskBus::Scsi,
            Some("sata") => DiskBus::Sata,
            Some("ide") => DiskBus::Ide,
            _ => DiskBus::Virtio,
        };
        def.disks.push(DiskDef {
            device,
            source,
            format: child_attr(d, "driver", "type"),
            bus,
            target: child_attr(d, "target", "dev").unwrap_or_default(),
            wwn: child_text(d, "wwn"),
            driver: DiskDriver {
                cache: child_attr(d, "driver", "cache"),
                discard: child_attr(d, "driver", "discard"),
                detect_zeroes: child_attr(d, "driver", "detect_zeroes"),
            },
        });
    }
    for i in children(devices, "interface") {
        let src = child(i, "source");
        let attr = |a: &str| {
            src.and_then(|s| s.attribute(a))
                .unwrap_or_default()
                .to_string()
        };
        let source = match i.attribute("type") {
            Some("network") => InterfaceSource::Network(attr("network")),
            Some("bridge") => InterfaceSource::Bridge(attr("bridge")),
            Some("direct") => InterfaceSource::Macvtap(attr("dev")),
            _ => continue,
        };
        def.interfaces.push(InterfaceDef {
            source,
            mac: child_attr(i, "mac", "address"),
            model: child_attr(i, "model", "type"),
        });
    }
    for c in devices
        .children()
        .filter(|c| c.is_element() && matches!(c.tag_name().name(), "serial" | "console"))
    {
        let target = child(c, "target");
        let target_type = match c.tag_name().name() {
            "serial" => "serial".to_string(),
            _ => {
                let t = target.and_then(|t| t.attribute("type")).unwrap_or("virtio");
                // libvirt mirrors the first serial port as a <console
                // type='serial'>; it is the same device, not a second one.
                if t == "serial" {
                    continue;
                }
                t.to_string()
            }
        };
        let source = child(c, "source");
        def.consoles.push(ConsoleDef {
            kind: c.attribute("type").unwrap_or("pty").to_string(),
            target_type,
            target_port: target
                .and_then(|t| t.attribute("port"))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            source_path: if c.attribute("type") == Some("pty") {
                None
            } else {
                source.and_then(|s| s.attribute("path")).map(str::to_string)
            },
            source_host: source.and_then(|s| s.attribute("host")).map(str::to_string),
            source_service: source
                .and_then(|s| s.attribute("service"))
                .map(str::to_string),
            log_file: child_attr(c, "log", "file"),
        });
    }
    // Only what the model writes: a spice agent channel (`spicevmc`) is
    // not a socket channel and is not written back as one.
    for name in children(devices, "channel")
        .filter(|c| c.attribute("type") == Some("unix"))
        .filter(|c| child_attr(*c, "target", "type").as_deref() == Some("virtio"))
        .filter_map(|c| child_attr(c, "target", "name"))
    {
        if name == QEMU_AGENT_CHANNEL {
            def.qemu_agent = true;
        } else if !def.channels.contains(&name) {
            def.channels.push(name);
        }
    }
    def.graphics = child(devices, "graphics").map(|g| GraphicsDef {
        kind: g.attribute("type").unwrap_or("spice").to_string(),
        listen_address: child_attr(g, "listen", "address")
            .or_else(|| g.attribute("listen").map(str::to_string)),
        autoport: g.attribute("autoport") != Some("no"),
    });
    def.video = child(devices, "video").and_then(|v| child_attr(v, "model", "type"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_disks_parse_and_round_trip() {
        let xml =
            "<domain type='qemu'><name>vm</name><memory unit='KiB'>262144</memory><vcpu>1</vcpu>\
            <os><type>hvm</type></os><devices>\
            <disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>\
            <source pool='bed' volume='root.qcow2'/><target dev='vda' bus='virtio'/></disk>\
            </devices></domain>";
        let d = DomainDef::from_xml(xml).unwrap();
        let want = DiskSource::Volume {
            pool: "bed".into(),
            volume: "root.qcow2".into(),
        };
        assert_eq!(d.disks[0].source, want);
        assert_eq!(d.disks[0].source.path(), "root.qcow2");
        let again = DomainDef::from_xml(&d.to_xml()).unwrap();
        assert_eq!(again.disks[0].source, want);
    }

    fn sample() -> DomainDef {
        let mut d = DomainDef {
            name: "agent-1".into(),
            genid: Some(GenId::Auto),
            kind: DomainKind::Qemu,
            memory_mib: 512,
            vcpu: 2,
            os: OsDef {
                machine: Some("q35".into()),
                kernel: Some("/k/vmlinuz".into()),
                initrd: Some("/k/initrd.gz".into()),
                cmdline: Some("console=ttyS0".into()),
                ..Default::default()
            },
            cpu_mode: Some("host-passthrough".into()),
            cpu_model: None,
            disks: vec![
                DiskDef {
                    device: DiskDevice::Disk,
                    source: DiskSource::File("/pool/root.qcow2".into()),
                    format: Some("qcow2".into()),
                    bus: DiskBus::Virtio,
                    target: String::new(),
                    wwn: None,
                    driver: DiskDriver::default(),
                },
                DiskDef {
                    device: DiskDevice::Cdrom,
                    source: DiskSource::File("/pool/seed.iso".into()),
                    format: Some("raw".into()),
                    bus: DiskBus::Sata,
                    target: String::new(),
                    wwn: None,
                    driver: DiskDriver::default(),
                },
            ],
            interfaces: vec![InterfaceDef {
                source: InterfaceSource::Network("default".into()),
                mac: Some("52:54:00:aa:bb:cc".into()),
                model: Some("virtio".into()),
            }],
            consoles: vec![ConsoleDef {
                kind: "file".into(),
                target_type: "serial".into(),
                target_port: 0,
                source_path: Some("/var/log/agent-1.log".into()),
                source_host: None,
                source_service: None,
                log_file: None,
            }],
            graphics: None,
            video: None,
            qemu_agent: true,
            channels: Vec::new(),
            metadata: [("role".to_string(), "agent & <x>".to_string())].into(),
            uuid: None,
            qemu_commandline: QemuCommandline::default(),
        };
        d.assign_targets();
        d
    }

    #[test]
    fn named_channels_are_written_beside_the_guest_agent_and_read_back() {
        let mut d = sample();
        d.channels = vec!["org.kvmbe.handoff".into()];
        let xml = d.to_xml();
        assert!(
            xml.contains("<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel><channel type='unix'><target type='virtio' name='org.kvmbe.handoff'/></channel>"),
            "{xml}"
        );
        assert_eq!(DomainDef::from_xml(&xml).unwrap(), d);
        // As libvirt gives it back: a socket path, an address, a state.
        let live = xml.replace(
            "<channel type='unix'><target type='virtio' name='org.kvmbe.handoff'/></channel>",
            "<channel type='unix'><source mode='bind' path='/run/libvirt/qemu/channel/1-x/org.kvmbe.handoff'/>\
             <target type='virtio' name='org.kvmbe.handoff' state='disconnected'/>\
             <address type='virtio-serial' controller='0' bus='0' port='2'/></channel>",
        );
        assert_eq!(DomainDef::from_xml(&live).unwrap().channels, d.channels);
        let spice = xml.replace(
            "</devices>",
            "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel></devices>",
        );
        assert_eq!(DomainDef::from_xml(&spice).unwrap().channels, d.channels);
        d.channels.clear();
        assert!(!d.to_xml().contains("org.kvmbe.handoff"));
    }

    #[test]
    fn a_cpu_model_with_host_passthrough_is_refused_naming_the_field() {
        let mut d = sample();
        d.cpu_model = Some("Haswell".into());
        let err = d.validate().unwrap_err().to_string();
        assert!(err.starts_with("invalid cpu_model"), "{err}");
        assert!(err.contains("host-passthrough"), "{err}");
    }

    #[test]
    fn a_cpu_model_alone_is_a_custom_cpu_and_reads_back() {
        let mut d = sample();
        d.cpu_mode = None;
        d.cpu_model = Some("Haswell-noTSX-IBRS".into());
        let xml = d.to_xml();
        assert!(
            xml.contains("<cpu mode='custom' match='exact'><model fallback='allow'>Haswell-noTSX-IBRS</model></cpu>"),
            "{xml}"
        );
        let back = DomainDef::from_xml(&xml).unwrap();
        assert_eq!(back.cpu_mode.as_deref(), Some("custom"));
        assert_eq!(back.cpu_model.as_deref(), Some("Haswell-noTSX-IBRS"));
    }

    #[test]
    fn disk_driver_settings_are_written_on_the_driver_and_read_back() {
        let mut d = sample();
        d.disks[0].driver = DiskDriver {
            cache: Some("unsafe".into()),
            discard: Some("unmap".into()),
            detect_zeroes: Some("unmap".into()),
        };
        let xml = d.to_xml();
        assert!(
            xml.contains("<driver name='qemu' type='qcow2' cache='unsafe' discard='unmap' detect_zeroes='unmap'/>"),
            "{xml}"
        );
        assert!(xml.contains("<driver name='qemu' type='raw'/>"), "{xml}");
        assert_eq!(DomainDef::from_xml(&xml).unwrap(), d);
    }

    #[test]
    fn only_the_disk_driver_settings_given_are_written() {
        let mut d = sample();
        d.disks[0].driver.discard = Some("ignore".into());
        let xml = d.to_xml();
        assert!(
            xml.contains("<driver name='qemu' type='qcow2' discard='ignore'/>"),
            "{xml}"
        );
        assert_eq!(DomainDef::from_xml(&xml).unwrap(), d);
    }

    #[test]
    fn qemu_arguments_are_written_in_the_qemu_namespace_and_read_back() {
        let mut d = sample();
        d.qemu_commandline.args = vec![
            "-device".into(),
            "usb-tablet".into(),
            "-smbios".into(),
            "type=2,x='<y>'".into(),
        ];
        let xml = d.to_xml();
        assert!(
            xml.starts_with(&format!("<domain xmlns:qemu='{QEMU_NS}' type='qemu'>")),
            "{xml}"
        );
        assert!(
            xml.ends_with(
                "</devices><qemu:commandline><qemu:arg value='-device'/><qemu:arg value='usb-tablet'/>\
                 <qemu:arg value='-smbios'/><qemu:arg value='type=2,x=&apos;&lt;y&gt;&apos;'/>\
                 </qemu:commandline></domain>"
            ),
            "{xml}"
        );
        assert_eq!(DomainDef::from_xml(&xml).unwrap(), d);
    }

    #[test]
    fn a_domain_without_qemu_arguments_declares_no_qemu_namespace() {
        let xml = sample().to_xml();
        assert!(!xml.contains("qemu:"), "{xml}");
        assert!(xml.starts_with("<domain type='qemu'>"), "{xml}");
    }

    #[test]
    fn qemu_arguments_are_read_by_namespace_not_by_prefix() {
        let xml = format!(
            "<domain type='kvm' xmlns:q='{QEMU_NS}'><name>a</name><memory unit='KiB'>1048576</memory>\
             <vcpu>1</vcpu><devices/><q:commandline><q:arg value='-S'/></q:commandline>\
             <commandline><arg value='not-qemu'/></commandline></domain>"
        );
        let d = DomainDef::from_xml(&xml).unwrap();
        assert_eq!(d.qemu_commandline.args, ["-S"]);
    }

    #[test]
    fn targets_are_named_per_bus() {
        let d = sample();
        assert_eq!(d.disks[0].target, "vda");
        assert_eq!(d.disks[1].target, "sda");
    }

    #[test]
    fn a_genid_is_written_and_read_back() {
        let mut d = plain_domain();
        d.genid = Some(GenId::Auto);
        let xml = d.to_xml();
        assert!(xml.contains("<genid/>"), "{xml}");
        assert_eq!(DomainDef::from_xml(&xml).unwrap().genid, Some(GenId::Auto));
        let id = "0d3c5d7e-8a54-4ec8-b0d2-2a6f1c3e9b77";
        d.genid = Some(GenId::Id(id.into()));
        let back = DomainDef::from_xml(&d.to_xml()).unwrap();
        assert_eq!(back.genid, Some(GenId::Id(id.into())));
        assert_eq!(
            DomainDef::from_xml(&plain_domain().to_xml()).unwrap().genid,
            None
        );
    }

    #[test]
    fn xml_round_trips_through_the_model() {
        let d = sample();
        let back = DomainDef::from_xml(&d.to_xml()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn libvirt_console_mirror_is_not_a_second_console() {
        let xml =
            "<domain type='kvm'><name>a</name><memory unit='KiB'>1048576</memory><vcpu>1</vcpu>\
            <devices><serial type='pty'><target port='0'/></serial>\
            <console type='pty'><target type='serial' port='0'/></console></devices></domain>";
        let d = DomainDef::from_xml(xml).unwrap();
        assert_eq!(d.memory_mib, 1024);
        assert_eq!(d.consoles.len(), 1);
        assert_eq!(d.consoles[0].target_type, "serial");
    }

    #[test]
    fn bad_mac_is_refused_naming_the_field() {
        let mut d = sample();
        d.interfaces[0].mac = Some("52:54:00".into());
        let err = d.validate().unwrap_err().to_string();
        assert!(err.starts_with("invalid interface.mac"), "{err}");
    }

    #[test]
    fn xslt_changes_the_xml() {
        let xslt = r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output omit-xml-declaration="yes"/>
  <xsl:template match="node()|@*"><xsl:copy><xsl:apply-templates select="node()|@*"/></xsl:copy></xsl:template>
  <xsl:template match="/domain/vcpu/text()">4</xsl:template>
</xsl:stylesheet>"#;
        let out = DomainDef::apply_xslt(&sample().to_xml(), xslt).unwrap();
        assert_eq!(DomainDef::from_xml(&out).unwrap().vcpu, 4);
        let err = DomainDef::apply_xslt("<domain/>", "not xslt")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid xslt"), "{err}");
    }

    const IDENTITY: &str = r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output omit-xml-declaration="yes" indent="yes"/>
  <xsl:template match="node()|@*"><xsl:copy><xsl:apply-templates select="node()|@*"/></xsl:copy></xsl:template>
  __RULE__
</xsl:stylesheet>"#;

    fn plain_domain() -> DomainDef {
        DomainDef {
            name: "w".into(),
            memory_mib: 256,
            vcpu: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_stylesheet_replacing_domain_cpu_works_on_a_domain_without_a_cpu_mode() {
        // The shape of a stylesheet written for dmacvicar/libvirt 0.8.3,
        // which writes <cpu/> into every domain.
        let sheet = IDENTITY.replace(
            "__RULE__",
            r#"<xsl:template match="/domain/cpu"><cpu mode="custom" match="exact" check="none"><model fallback="forbid">Haswell-noTSX-IBRS</model></cpu></xsl:template>"#,
        );
        let out = DomainDef::apply_xslt(&plain_domain().to_xml(), &sheet).unwrap();
        assert!(out.contains("Haswell-noTSX-IBRS"), "{out}");
        assert_eq!(
            DomainDef::from_xml(&out).unwrap().cpu_mode.as_deref(),
            Some("custom")
        );
    }

    #[test]
    fn a_stylesheet_that_leaves_cpu_alone_adds_no_cpu_element() {
        let sheet = IDENTITY.replace(
            "__RULE__",
            r#"<xsl:template match="/domain/vcpu/text()">2</xsl:template>"#,
        );
        let out = DomainDef::apply_xslt(&plain_domain().to_xml(), &sheet).unwrap();
        assert!(!out.contains("<cpu"), "{out}");
        let mut with_mode = plain_domain();
        with_mode.cpu_mode = Some("host-passthrough".into());
        let out = DomainDef::apply_xslt(&with_mode.to_xml(), &sheet).unwrap();
        assert_eq!(
            DomainDef::from_xml(&out).unwrap().cpu_mode.as_deref(),
            Some("host-passthrough")
        );
    }

    #[test]
    fn a_stylesheet_can_neither_write_files_nor_reach_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("planted");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let xslt = format!(
            r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl">
  <xsl:template match="/">
    <exsl:document href="{}"><x/></exsl:document>
    <xsl:copy-of select="document('http://127.0.0.1:{port}/x')"/>
    <domain/>
  </xsl:template>
</xsl:stylesheet>"#,
            planted.display()
        );
        let _ = DomainDef::apply_xslt("<domain/>", &xslt);
        assert!(!planted.exists(), "the stylesheet wrote a file");
        // XSLT 1.1's own xsl:document passes the checks; xsltproc's
        // --nowrite stops it.
        let xslt = format!(
            r#"<xsl:stylesheet version="1.1" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/"><xsl:document href="{}"><x/></xsl:document><domain/></xsl:template>
</xsl:stylesheet>"#,
            planted.display()
        );
        let err = DomainDef::apply_xslt("<domain/>", &xslt).unwrap_err();
        assert!(err.to_string().contains("xsltproc rejected"), "{err}");
        assert!(!planted.exists(), "the stylesheet wrote a file");
        assert!(
            listener.accept().is_err(),
            "the stylesheet opened a connection"
        );
    }

    /// A file in a fresh folder that only its owner may read (mode 0600),
    /// as the host's keys are, holding `content`.
    fn private_file(name: &str, content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (dir, path)
    }

    /// Asserts the stylesheet was refused on `xslt` and that `marker`
    /// reached neither the domain XML nor the message; returns the
    /// message.
    fn refused_without_leaking(out: Result<String>, marker: &str) -> String {
        let err = match out {
            Ok(xml) => panic!("the stylesheet ran and wrote: {xml}"),
            Err(e) => e.to_string(),
        };
        assert!(!err.contains(marker), "the file leaked into: {err}");
        assert!(err.starts_with("invalid xslt: "), "{err}");
        err
    }

    #[test]
    fn a_stylesheet_cannot_copy_a_host_file_in_through_an_external_entity() {
        let (_dir, key) = private_file("id_ed25519", "SECRET-KEY-BY-ENTITY");
        let xslt = format!(
            r#"<?xml version="1.0"?>
<!DOCTYPE xsl:stylesheet [<!ENTITY key SYSTEM "file://{}">]>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/"><domain><description>&key;</description></domain></xsl:template>
</xsl:stylesheet>"#,
            key.display()
        );
        let err = refused_without_leaking(
            DomainDef::apply_xslt("<domain/>", &xslt),
            "SECRET-KEY-BY-ENTITY",
        );
        assert!(err.contains("DOCTYPE"), "{err}");
    }

    #[test]
    fn a_stylesheet_cannot_copy_a_host_xml_file_in_with_document() {
        let (_dir, file) = private_file("secret.xml", "<secret>SECRET-BY-DOCUMENT</secret>");
        let xslt = format!(
            r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/"><domain><xsl:copy-of select="document('{}')"/></domain></xsl:template>
</xsl:stylesheet>"#,
            file.display()
        );
        let err = refused_without_leaking(
            DomainDef::apply_xslt("<domain/>", &xslt),
            "SECRET-BY-DOCUMENT",
        );
        assert!(err.contains("document()"), "{err}");
    }

    #[test]
    fn a_stylesheet_cannot_leak_a_host_file_that_is_not_xml_through_the_error() {
        // libxml2 quotes the line it could not parse; a stylesheet that
        // then fails carries that line into the error, logs and notes.
        let (_dir, file) = private_file("shadow", "root:SECRET-HASH-BY-ERROR:19000:0:99999:7:::\n");
        let xslt = format!(
            r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/">
    <xsl:copy-of select="document('{}')"/>
    <xsl:message terminate="yes">stop</xsl:message>
  </xsl:template>
</xsl:stylesheet>"#,
            file.display()
        );
        let err = refused_without_leaking(
            DomainDef::apply_xslt("<domain/>", &xslt),
            "SECRET-HASH-BY-ERROR",
        );
        assert!(err.contains("document()"), "{err}");
    }

    #[test]
    fn the_stylesheet_is_written_where_no_one_else_can_reach_it() {
        // A local user who made the old predictable work folders first
        // (as links to a folder of theirs) must get nothing.
        let theirs = tempfile::tempdir().unwrap();
        let tmp = std::env::temp_dir();
        let mut links = Vec::new();
        for n in 0..64 {
            let p = tmp.join(format!("kvmhost-xslt-{}-{n}", std::process::id()));
            if std::os::unix::fs::symlink(theirs.path(), &p).is_ok() {
                links.push(p);
            }
        }
        let xslt = r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/"><domain/></xsl:template>
</xsl:stylesheet>"#;
        let out = DomainDef::apply_xslt("<domain/>", xslt);
        for l in &links {
            let _ = std::fs::remove_file(l);
        }
        out.unwrap();
        let leaked: Vec<_> = std::fs::read_dir(theirs.path()).unwrap().collect();
        assert!(leaked.is_empty(), "{leaked:?}");
    }
}

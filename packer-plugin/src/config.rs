//! The builder's options: one table that gives both the HCL2 spec Packer
//! checks templates against and the parser that turns what `Prepare`
//! receives (a JSON template's map, or HCL2's cty JSON) into a typed
//! [`Config`]. Every problem is reported at once, each naming its option.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kvmhost::libvirt::Uri;
use serde_json::{Map, Value};

use crate::protocol::spec::{CtyType, ObjectSpec, Spec};
use crate::template;

mod groups;

/// The type of an option's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// A whole number (strings of digits are accepted too).
    Num,
    /// A boolean.
    Bool,
    /// A Go-style duration string: `90s`, `5m`, `1h30m`.
    Duration,
    /// A list of strings.
    StrList,
    /// A map of strings.
    StrMap,
    /// A list of lists of strings (`qemuargs`).
    StrListList,
}

/// One option of the builder.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// Its name in templates.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// What it does, with its default.
    pub doc: &'static str,
}

const fn opt(name: &'static str, kind: Kind, doc: &'static str) -> Opt {
    Opt { name, kind, doc }
}

/// Whether the libvirt daemon `uri` reaches runs qemu on this machine,
/// so the paths of its volumes, kernels and firmware are files here.
pub fn files_are_local(uri: &Uri) -> bool {
    uri.driver() == "qemu" && uri.is_local()
}

/// Every option the builder accepts.
pub const OPTIONS: &[Opt] = &[
    opt("libvirt_uri", Kind::Str, "libvirt connection URI (`qemu:///system`, `qemu+ssh://root@host/system`). Default `qemu:///system`."),
    opt("pool", Kind::Str, "Storage pool for the build's volumes. Default `default`."),
    opt("vm_name", Kind::Str, "Name of the build domain and of the output disk file. Default `packer-<build name>`."),
    opt("iso_url", Kind::Str, "Source image: a local path, `file://` URL or `http(s)://` URL. A cloud disk image with `disk_image = true`, otherwise a bootable ISO."),
    opt("iso_urls", Kind::StrList, "Like `iso_url`, tried in order; the first that works is used."),
    opt("iso_checksum", Kind::Str, "Checksum of the source: `sha256:HEX`, `sha512:HEX`, a bare hex digest, `file:URL` (a checksum list such as SHA256SUMS, local or http(s), holding the source's file name), or `none`. Required with `iso_url`."),
    opt("disk_image", Kind::Bool, "The source is a disk image to boot from (copied, never changed). Default false."),
    opt("disk_size", Kind::Str, "Size of the build disk: a number of MiB or a size with suffix `M`, `G`, `T`. Default: the source image's size (10G for an ISO install)."),
    opt("skip_resize_disk", Kind::Bool, "Keep the source disk's size even if `disk_size` is set. Default false."),
    opt("disk_interface", Kind::Str, "Bus of the build disk: `virtio`, `scsi`, `sata` or `ide`. Default `virtio`."),
    opt("format", Kind::Str, "Output disk format: `qcow2` or `raw`. Default `qcow2`."),
    opt("memory", Kind::Num, "Guest memory in MiB. Default 1024."),
    opt("cpus", Kind::Num, "Number of virtual CPUs. Default 1."),
    opt("accelerator", Kind::Str, "`kvm` (default) or `qemu`/`tcg` for software emulation where KVM is missing."),
    opt("machine_type", Kind::Str, "QEMU machine type (`q35`, `pc`, ...). Default: libvirt's choice."),
    opt("efi_boot", Kind::Bool, "Boot with UEFI firmware (OVMF) instead of BIOS. Default false."),
    opt("efi_firmware_code", Kind::Str, "UEFI code file on the libvirt host. Default `/usr/share/OVMF/OVMF_CODE.fd`."),
    opt("efi_firmware_vars", Kind::Str, "UEFI variables template on the libvirt host, copied per build. Default `/usr/share/OVMF/OVMF_VARS.fd`."),
    opt("kernel", Kind::Str, "Host path of a kernel for direct kernel boot."),
    opt("initrd", Kind::Str, "Host path of an initrd for direct kernel boot."),
    opt("kernel_args", Kind::Str, "Kernel command line for direct kernel boot."),
    opt("cd_files", Kind::StrList, "Host files put at the root of the extra CD (a NoCloud seed, say)."),
    opt("cd_content", Kind::StrMap, "Files put on the extra CD, path on the CD to content (`user-data`, `meta-data`)."),
    opt("cd_label", Kind::Str, "Volume label of the extra CD. Default `cidata`."),
    opt("network", Kind::Str, "libvirt network the guest's NIC joins. Default `default`."),
    opt("net_bridge", Kind::Str, "Host bridge the guest's NIC joins instead of a libvirt network."),
    opt("mac_address", Kind::Str, "MAC address of the guest's NIC. Default: generated."),
    opt("address_source", Kind::Str, "How the guest's IP is found: `lease` (the libvirt network's DHCP leases, default on a network) or `agent` (the QEMU guest agent, default on a bridge)."),
    opt("output_directory", Kind::Str, "Folder for the image; must not exist unless `-force`. Default `output-<build name>`."),
    opt("boot_wait", Kind::Duration, "Time to wait after start before typing `boot_command`. Default 10s."),
    opt("boot_command", Kind::StrList, "Keys typed into the console after `boot_wait`: text plus `<enter>`, `<tab>`, `<esc>`, `<wait>`, `<waitNs>`, `<f1>`..`<f12>`, ..."),
    opt("communicator", Kind::Str, "`ssh` (default), `winrm` (Windows guests) or `none` (no provisioners; the guest must power off by itself)."),
    opt("pause_before_connecting", Kind::Duration, "Wait this long once the guest's address is known before connecting the communicator, as Packer's. Default 0."),
    opt("domain_xslt", Kind::Str, "An XSLT stylesheet applied to the generated domain XML before it is defined (needs `xsltproc`), for what the options do not cover; the same as the Terraform provider's `xml { xslt }`, and like it refused when it could read files (a DOCTYPE, `document()`, `xsl:include`, `xsl:import`, extension elements)."),
    opt("ssh_host", Kind::Str, "Address to connect to instead of the discovered one."),
    opt("ssh_port", Kind::Num, "SSH port. Default 22."),
    opt("ssh_username", Kind::Str, "SSH user. Required with the ssh communicator."),
    opt("ssh_password", Kind::Str, "SSH password."),
    opt("ssh_private_key_file", Kind::Str, "Host path of a private key (OpenSSH format). Without it or a password, a throwaway ed25519 key pair is made for the build and its public key is written into the extra CD's `meta-data` as `public-keys`."),
    opt("ssh_timeout", Kind::Duration, "How long to wait for SSH to come up. Default 5m."),
    opt("ssh_handshake_attempts", Kind::Num, "How many SSH handshakes may fail before the build fails. Default 10."),
    opt("winrm_username", Kind::Str, "WinRM user. Required with the winrm communicator."),
    opt("winrm_password", Kind::Str, "WinRM password (Basic, or NTLM with `winrm_use_ntlm`)."),
    opt("winrm_host", Kind::Str, "Address to connect to instead of the discovered one."),
    opt("winrm_port", Kind::Num, "WinRM port. Default 5985, or 5986 with `winrm_use_ssl`."),
    opt("winrm_timeout", Kind::Duration, "How long to wait for WinRM to come up. Default 30m."),
    opt("winrm_use_ssl", Kind::Bool, "Connect with HTTPS. Default false."),
    opt("winrm_insecure", Kind::Bool, "With `winrm_use_ssl`: do not check the guest's certificate (a fresh Windows guest's is self-signed). Default false: the system's trusted certificates."),
    opt("winrm_use_ntlm", Kind::Bool, "NTLMv2 authentication instead of Basic, as Packer's: no message sealing, so plain HTTP needs `AllowUnencrypted` on the guest. Default false."),
    opt("winrm_no_proxy", Kind::Bool, "Connect directly, without the proxy `HTTP_PROXY`/`HTTPS_PROXY` name. Default false."),
    opt("shutdown_command", Kind::Str, "Command run over SSH or WinRM to power the guest off (`poweroff`, `sudo shutdown -P now`). Without it the guest gets an ACPI power-button press."),
    opt("shutdown_timeout", Kind::Duration, "How long to wait for the guest to power off. Default 5m."),
    opt("use_backing_file", Kind::Bool, "With `disk_image = true` and `format = \"qcow2\"`: the output holds only what the build changed, as a qcow2 overlay whose backing file is the source image (the cached download or the local file), as the QEMU builder writes it; it also lets the source image itself be an overlay. Default false: a full, standalone copy; a source image that is an overlay is then flattened first (as the QEMU builder copies it with `qemu-img convert`) when it is a file on this machine (not a download) and every file of its backing chain is a qcow2 image, as a chain of builds writes them, and refused otherwise."),
    opt("disk_cache", Kind::Str, "Cache mode of the build's hard disks: `writeback`, `writethrough`, `none`, `unsafe` or `directsync`. Default: QEMU's (`writeback`)."),
    opt("disk_discard", Kind::Str, "Whether the guest's discard (TRIM) requests free space in the disk file: `ignore` or `unmap`. Default `ignore`."),
    opt("disk_detect_zeroes", Kind::Str, "Whether QEMU turns written zeroes into holes: `off`, `on` or `unmap` (needs `disk_discard = \"unmap\"`). Default `off`."),
    opt("disk_additional_size", Kind::StrList, "Sizes of extra empty disks (`20G`, or MiB as a number), attached after the first and written to the output as `<vm_name>-1`, `<vm_name>-2`, ... like the QEMU builder names them."),
    opt("net_device", Kind::Str, "Model of the guest's NIC, as the QEMU builder names it: `virtio-net` (default), `e1000`, `e1000e`, `rtl8139`, `vmxnet3`, `i82551`, `i82557b`, `i82559er`, `ne2k_pci`, `pcnet`."),
    opt("boot_key_interval", Kind::Duration, "Pause between key presses while typing `boot_command`. Default: no pause beyond libvirt's own (about 10 ms a key)."),
    opt("efi_drop_efivars", Kind::Bool, "Leave the UEFI variables file out of the output. Accepted for templates from the QEMU builder; this builder never puts `efivars.fd` in the output, so it changes nothing."),
    opt("ssh_wait_timeout", Kind::Duration, "Older name of `ssh_timeout`; used when `ssh_timeout` is not set."),
    opt("qemuargs", Kind::StrListList, "Extra QEMU arguments, each a list (`[\"-device\", \"usb-tablet\"]`), passed through libvirt's `<qemu:commandline>` after the arguments libvirt makes. `{{ .HTTPIP }}`, `{{ .HTTPPort }}`, `{{ .Name }}` and `{{ .OutputDir }}` are filled in."),
    opt("http_directory", Kind::Str, "A folder served over HTTP to the guest during the build (preseed, kickstart); `{{ .HTTPIP }}` and `{{ .HTTPPort }}` in `boot_command` give its address."),
    opt("http_content", Kind::StrMap, "Files served over HTTP to the guest, URL path (`/preseed.cfg`) to content; wins over `http_directory` for the same path."),
    opt("http_port_min", Kind::Num, "Lowest port for the HTTP server. Default 8000."),
    opt("http_port_max", Kind::Num, "Highest port for the HTTP server. Default 9000."),
    opt("http_bind_address", Kind::Str, "Address the HTTP server listens on. Default: all addresses. `{{ .HTTPIP }}` is the host's address on the guest's network either way."),
];

/// Options of the QEMU builder that only mean something to its own QEMU
/// process (a port forward, a VNC display, a window): accepted, so that
/// templates move over unchanged, with a warning that says why they do
/// nothing here.
pub const IGNORED: &[Opt] = &[
    opt(
        "headless",
        Kind::Bool,
        "libvirt runs the guest without a window; the build domain has no display.",
    ),
    opt(
        "host_port_min",
        Kind::Num,
        "the guest's own address is used for SSH; there is no port forward on this machine.",
    ),
    opt(
        "host_port_max",
        Kind::Num,
        "the guest's own address is used for SSH; there is no port forward on this machine.",
    ),
    opt(
        "vnc_bind_address",
        Kind::Str,
        "the build domain has no VNC display; use `virsh console` for its serial console.",
    ),
    opt(
        "vnc_port_min",
        Kind::Num,
        "the build domain has no VNC display.",
    ),
    opt(
        "vnc_port_max",
        Kind::Num,
        "the build domain has no VNC display.",
    ),
    opt(
        "vnc_use_password",
        Kind::Bool,
        "the build domain has no VNC display.",
    ),
    opt(
        "display",
        Kind::Str,
        "libvirt runs the guest without a window.",
    ),
    opt(
        "use_default_display",
        Kind::Bool,
        "libvirt runs the guest without a window.",
    ),
    opt(
        "qemu_binary",
        Kind::Str,
        "libvirt chooses the QEMU binary (its domain capabilities).",
    ),
    opt(
        "skip_nat_mapping",
        Kind::Bool,
        "there is no port forward on this machine.",
    ),
];

/// NIC models by the QEMU builder's `net_device` names, as libvirt names them.
const NET_DEVICES: &[(&str, &str)] = &[
    ("virtio-net", "virtio"),
    ("virtio-net-pci", "virtio"),
    ("virtio", "virtio"),
    ("e1000", "e1000"),
    ("e1000e", "e1000e"),
    ("rtl8139", "rtl8139"),
    ("vmxnet3", "vmxnet3"),
    ("i82551", "i82551"),
    ("i82557b", "i82557b"),
    ("i82559er", "i82559er"),
    ("ne2k_pci", "ne2k_pci"),
    ("pcnet", "pcnet"),
];

/// The HCL2 spec of all options (every one optional: errors come from
/// [`Config::parse`] so they are all reported together).
pub fn hcl_spec() -> ObjectSpec {
    OPTIONS
        .iter()
        .chain(IGNORED)
        .map(|o| {
            let ty = match o.kind {
                Kind::Str | Kind::Duration => CtyType::String,
                Kind::Num => CtyType::Number,
                Kind::Bool => CtyType::Bool,
                Kind::StrList => CtyType::List(Box::new(CtyType::String)),
                Kind::StrMap => CtyType::Map(Box::new(CtyType::String)),
                Kind::StrListList => {
                    CtyType::List(Box::new(CtyType::List(Box::new(CtyType::String))))
                }
            };
            (
                o.name.to_string(),
                Spec::Attr {
                    ty,
                    required: false,
                },
            )
        })
        .collect()
}

/// How the guest is accelerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation (TCG).
    Qemu,
}

/// Output disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// qcow2, compressed-friendly and sparse.
    Qcow2,
    /// Raw bytes.
    Raw,
}

impl Format {
    /// The name qemu-img and libvirt use.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

/// A checksum to verify a download against.
pub use kvmhost::source::Checksum;

/// Where the guest's NIC is plugged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetAttach {
    /// A libvirt network by name.
    Network(String),
    /// A host bridge by name.
    Bridge(String),
}

/// How the guest's address is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// DHCP leases of the libvirt network.
    Lease,
    /// The QEMU guest agent.
    Agent,
}

/// SSH settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    /// Fixed address to use, if any.
    pub host: Option<String>,
    /// Port.
    pub port: u16,
    /// User.
    pub username: String,
    /// Password, if any.
    pub password: Option<String>,
    /// Private key file, if any.
    pub private_key_file: Option<PathBuf>,
    /// How long to wait for SSH.
    pub timeout: Duration,
    /// Failed handshakes allowed.
    pub handshake_attempts: u32,
}

/// WinRM settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WinRmConfig {
    /// Fixed address to use, if any.
    pub host: Option<String>,
    /// Port.
    pub port: u16,
    /// User.
    pub username: String,
    /// Password (empty when not given).
    pub password: String,
    /// How long to wait for WinRM.
    pub timeout: Duration,
    /// HTTPS instead of HTTP.
    pub use_ssl: bool,
    /// Skip the certificate check.
    pub insecure: bool,
    /// Ignore proxy settings.
    pub no_proxy: bool,
    /// NTLMv2 instead of Basic authentication.
    pub use_ntlm: bool,
}

/// How the build reaches the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommunicatorConfig {
    /// No communicator: the guest powers itself off.
    None,
    /// SSH.
    Ssh(SshConfig),
    /// WinRM.
    WinRm(WinRmConfig),
}

/// The settings Packer itself passes (`packer_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackerSettings {
    /// The build's name.
    pub build_name: String,
    /// `-force` was given.
    pub force: bool,
    /// `-on-error` value (`cleanup`, `abort`, `ask`, `run-cleanup-provisioner`).
    pub on_error: String,
    /// `-debug` was given.
    pub debug: bool,
}

/// A checked builder configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Packer's own settings.
    pub packer: PackerSettings,
    /// The template engine's context, for what is rendered during the build.
    pub template: template::Context,
    /// libvirt URI.
    pub libvirt_uri: Uri,
    /// Storage pool.
    pub pool: String,
    /// Domain and output file name.
    pub vm_name: String,
    /// Source URLs in order of preference.
    pub iso_urls: Vec<String>,
    /// Source checksum.
    pub iso_checksum: Checksum,
    /// The source is a bootable disk.
    pub disk_image: bool,
    /// Build disk size in bytes, if set.
    pub disk_size: Option<u64>,
    /// Keep the source size.
    pub skip_resize_disk: bool,
    /// Disk bus.
    pub disk_interface: String,
    /// Output format.
    pub format: Format,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Accelerator.
    pub accelerator: Accelerator,
    /// Machine type.
    pub machine_type: Option<String>,
    /// UEFI firmware: (code file, variables template), both on the host.
    pub efi: Option<(String, String)>,
    /// Direct kernel boot.
    pub kernel: Option<PathBuf>,
    /// Direct kernel boot initrd.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub kernel_args: Option<String>,
    /// Host files for the extra CD.
    pub cd_files: Vec<PathBuf>,
    /// Inline files for the extra CD.
    pub cd_content: BTreeMap<String, String>,
    /// Extra CD label.
    pub cd_label: String,
    /// NIC attachment.
    pub net: NetAttach,
    /// NIC MAC.
    pub mac_address: Option<String>,
    /// How the guest address is found.
    pub address_source: AddressSource,
    /// Output folder.
    pub output_directory: PathBuf,
    /// Wait before typing.
    pub boot_wait: Duration,
    /// Keys to type.
    pub boot_command: Vec<String>,
    /// XSLT applied to the generated domain XML.
    pub domain_xslt: Option<String>,
    /// How the guest is reached.
    pub communicator: CommunicatorConfig,
    /// Wait before connecting the communicator.
    pub pause_before_connecting: Duration,
    /// Shutdown command.
    pub shutdown_command: Option<String>,
    /// Shutdown wait.
    pub shutdown_timeout: Duration,
    /// Output as an overlay backed by the source image.
    pub use_backing_file: bool,
    /// Disk driver settings: cache, discard, detect_zeroes.
    pub disk_driver: DiskDriver,
    /// Sizes in bytes of the extra empty disks.
    pub disk_additional_sizes: Vec<u64>,
    /// NIC model as libvirt names it.
    pub net_model: String,
    /// Pause between key presses of the boot command.
    pub boot_key_interval: Option<Duration>,
    /// Extra QEMU arguments, rendered during the build.
    pub qemuargs: Vec<Vec<String>>,
    /// The HTTP server for the guest, if one is wanted.
    pub http: Option<HttpConfig>,
    /// Warnings for accepted options that do nothing here.
    pub ignored: Vec<String>,
}

/// The hard disks' driver settings (`None` = QEMU's default), as the
/// domain model carries them.
pub use kvmhost::libvirt::domain_xml::DiskDriver;

/// The HTTP server the guest can fetch files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Folder served, if any.
    pub directory: Option<PathBuf>,
    /// Inline files by URL path.
    pub content: BTreeMap<String, String>,
    /// Port range to pick from.
    pub ports: (u16, u16),
    /// Listen address, if fixed.
    pub bind: Option<String>,
}

/// All problems found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} error(s) in the libvirt builder's configuration:",
            self.0.len()
        )?;
        for e in &self.0 {
            write!(f, "\n* {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Raw values by option name, after type conversion.
#[derive(Default)]
struct Raw {
    strs: BTreeMap<&'static str, String>,
    nums: BTreeMap<&'static str, u64>,
    bools: BTreeMap<&'static str, bool>,
    durs: BTreeMap<&'static str, Duration>,
    lists: BTreeMap<&'static str, Vec<String>>,
    maps: BTreeMap<&'static str, BTreeMap<String, String>>,
    listlists: BTreeMap<&'static str, Vec<Vec<String>>>,
    /// Warnings for options given that do nothing here.
    ignored: Vec<String>,
}

/// Parses a Go duration string (`1h30m`, `90s`, `500ms`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Parses a disk size: plain MiB, or a number with `K`, `M`, `G`, `T`
/// (optionally followed by `B`/`iB`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit = s[digits..].trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let mult: u64 = match unit {
        "" | "M" => 1 << 20,
        "K" => 1 << 10,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn has_disk_extension(name: &str) -> bool {
    [".qcow2", ".raw", ".img"]
        .iter()
        .any(|e| name.len() > e.len() && name.ends_with(e))
}

/// The known option nearest to a misspelt one, if one is near.
fn suggestion(name: &str) -> Option<&'static str> {
    OPTIONS
        .iter()
        .chain(IGNORED)
        .map(|o| (edit_distance(name, o.name), o.name))
        .filter(|(d, _)| *d <= 2 || *d * 4 <= name.len())
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Options whose templates are rendered during the build, when
/// `{{ .HTTPIP }}`, `{{ .HTTPPort }}` and `{{ .Name }}` are known.
pub const RENDERED_AT_RUN_TIME: &[&str] = &["boot_command", "qemuargs"];

/// The template context from Packer's `packer_*` settings.
fn template_context(packer: &Map<String, Value>) -> template::Context {
    let text = |k: &str| packer.get(k).and_then(scalar_string).unwrap_or_default();
    let mut ctx = template::Context::now();
    ctx.build_name = text("packer_build_name");
    ctx.build_type = text("packer_builder_type");
    ctx.packer_version = text("packer_core_version");
    ctx.template_path = text("packer_template_path");
    if let Some(Value::Object(vars)) = packer.get("packer_user_variables") {
        for (k, v) in vars {
            if let Some(s) = scalar_string(v) {
                ctx.user.insert(k.clone(), s);
            }
        }
    }
    ctx
}

/// Renders every string inside `v`; an error says where (`[2]`, `["key"]`).
fn render_value(v: &Value, ctx: &template::Context) -> Result<Value, (String, String)> {
    Ok(match v {
        Value::String(s) => {
            Value::String(template::render(s, ctx).map_err(|e| (String::new(), e.to_string()))?)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, e)| render_value(e, ctx).map_err(|(at, e)| (format!("[{i}]{at}"), e)))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, e)| {
                    render_value(e, ctx)
                        .map(|e| (k.clone(), e))
                        .map_err(|(at, e)| (format!("[{k:?}]{at}"), e))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Config {
    /// Parses what `Prepare` received: the user's options (a JSON
    /// template's map, or the `value` of HCL2's cty JSON, where unset
    /// options are null) and Packer's `packer_*` settings.
    pub fn parse(
        user: &Map<String, Value>,
        packer: &Map<String, Value>,
    ) -> Result<Config, ConfigErrors> {
        let mut errs = Vec::new();
        let mut raw = Raw::default();
        let mut settings = PackerSettings::default();
        let template = template_context(packer);
        for (src, is_user) in [(packer, false), (user, true)] {
            for (k, v) in src {
                if k.starts_with("packer_") {
                    match k.as_str() {
                        "packer_build_name" => {
                            settings.build_name = scalar_string(v).unwrap_or_default()
                        }
                        "packer_force" => settings.force = v.as_bool().unwrap_or(false),
                        "packer_debug" => settings.debug = v.as_bool().unwrap_or(false),
                        "packer_on_error" => {
                            settings.on_error = scalar_string(v).unwrap_or_default()
                        }
                        _ => {}
                    }
                    continue;
                }
                if !is_user || v.is_null() {
                    continue;
                }
                if let Some(o) = IGNORED.iter().find(|o| o.name == k) {
                    raw.ignored
                        .push(format!("{k}: ignored by the libvirt builder: {}", o.doc));
                    continue;
                }
                let Some(o) = OPTIONS.iter().find(|o| o.name == k) else {
                    errs.push(format!(
                        "{k}: unknown option{} (see the builder's README for the list)",
                        suggestion(k)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default()
                    ));
                    continue;
                };
                // Options the build renders itself, once it knows
                // `{{ .HTTPIP }}` and friends.
                let v = if RENDERED_AT_RUN_TIME.contains(&o.name) {
                    v.clone()
                } else {
                    match render_value(v, &template) {
                        Ok(v) => v,
                        Err((at, e)) => {
                            errs.push(format!("{k}{at}: template: {e}"));
                            continue;
                        }
                    }
                };
                if let Err(e) = raw.take(o, &v) {
                    errs.push(format!("{k}: {e}"));
                }
            }
        }
        let cfg = groups::build(raw, settings, template, &mut errs);
        if errs.is_empty() {
            Ok(cfg.expect("a config when there are no errors"))
        } else {
            Err(ConfigErrors(errs))
        }
    }
}

impl Config {
    /// The output disk's file name: `vm_name` as given when it already
    /// ends in a disk extension (as QEMU builder templates write it),
    /// else `<vm_name>.<format>`.
    pub fn output_file_name(&self) -> String {
        if has_disk_extension(&self.vm_name) {
            self.vm_name.clone()
        } else {
            format!("{}.{}", self.vm_name, self.format.as_str())
        }
    }

    /// `vm_name` without a disk extension, for the build's volume names.
    pub fn volume_stem(&self) -> &str {
        if has_disk_extension(&self.vm_name) {
            self.vm_name
                .rsplit_once('.')
                .map(|(stem, _)| stem)
                .unwrap_or(&self.vm_name)
        } else {
            &self.vm_name
        }
    }

    /// The SSH settings, with the ssh communicator.
    pub fn ssh(&self) -> Option<&SshConfig> {
        match &self.communicator {
            CommunicatorConfig::Ssh(s) => Some(s),
            _ => None,
        }
    }

    /// Things that are allowed but probably not meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.ignored.clone();
        if let Some(ssh) = self.ssh() {
            if ssh.password.is_none()
                && ssh.private_key_file.is_none()
                && self.cd_content.is_empty()
                && self.cd_files.is_empty()
            {
                w.push(
                    "ssh_private_key_file: neither it nor ssh_password is set, and there is no cd_content: \
                     the throwaway key reaches the guest only through the seed CD's meta-data"
                        .to_string(),
                );
            }
        }
        w
    }
}

/// Why an option's value does not have the option's type; the parser
/// puts the option's name in front.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum ValueError {
    /// A value of the wrong shape, described by its JSON type.
    #[error("expected {expected}, got {got}")]
    Shape {
        /// What the option takes.
        expected: &'static str,
        /// The JSON type given.
        got: &'static str,
    },
    /// A scalar that is not the number or boolean wanted, shown as given.
    #[error("expected {expected}, got {got}")]
    Scalar {
        /// What the option takes.
        expected: &'static str,
        /// The value given.
        got: Value,
    },
    /// A string that is not a Go duration.
    #[error("`{0}` is not a duration: write it like 90s, 5m or 1h30m")]
    Duration(String),
    /// A list item that is not a string.
    #[error("list items must be strings, got {0}")]
    ListItem(&'static str),
    /// An item of a list of lists that is not a list.
    #[error(
        "item {index} must be a list of strings like [\"-device\", \"usb-tablet\"], got {got}"
    )]
    InnerList {
        /// The item's index.
        index: usize,
        /// The JSON type given.
        got: &'static str,
    },
    /// A list of lists whose inner item is not a string.
    #[error("item {index} holds {got}, not a string")]
    InnerItem {
        /// The outer item's index.
        index: usize,
        /// The JSON type given.
        got: &'static str,
    },
    /// A map value that is not a string.
    #[error("value of `{key}` must be a string, got {got}")]
    MapValue {
        /// The map key.
        key: String,
        /// The JSON type given.
        got: &'static str,
    },
}

impl ValueError {
    fn shape(expected: &'static str, v: &Value) -> ValueError {
        ValueError::Shape {
            expected,
            got: describe(v),
        }
    }

    fn scalar(expected: &'static str, v: &Value) -> ValueError {
        ValueError::Scalar {
            expected,
            got: v.clone(),
        }
    }
}

impl Raw {
    fn take(&mut self, o: &Opt, v: &Value) -> Result<(), ValueError> {
        match o.kind {
            Kind::Str => {
                let s = scalar_string(v).ok_or_else(|| ValueError::shape("a string", v))?;
                self.strs.insert(o.name, s);
            }
            Kind::Num => {
                let n = match v {
                    Value::Number(n) => n.as_u64().or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                            .map(|f| f as u64)
                    }),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                let n = n.ok_or_else(|| ValueError::scalar("a whole number", v))?;
                self.nums.insert(o.name, n);
            }
            Kind::Bool => {
                let b = match v {
                    Value::Bool(b) => Some(*b),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                };
                let b = b.ok_or_else(|| ValueError::scalar("true or false", v))?;
                self.bools.insert(o.name, b);
            }
            Kind::Duration => {
                let s = scalar_string(v).ok_or_else(|| ValueError::shape("a duration", v))?;
                let d = parse_duration(&s).ok_or(ValueError::Duration(s))?;
                self.durs.insert(o.name, d);
            }
            Kind::StrList => {
                let list = match v {
                    Value::Array(a) => a
                        .iter()
                        .map(|e| scalar_string(e).ok_or(ValueError::ListItem(describe(e))))
                        .collect::<Result<Vec<_>, _>>()?,
                    Value::String(s) => vec![s.clone()],
                    _ => return Err(ValueError::shape("a list of strings", v)),
                };
                self.lists.insert(o.name, list);
            }
            Kind::StrListList => {
                let Value::Array(outer) = v else {
                    return Err(ValueError::shape("a list of lists of strings", v));
                };
                let mut out = Vec::new();
                for (i, inner) in outer.iter().enumerate() {
                    let Value::Array(items) = inner else {
                        return Err(ValueError::InnerList {
                            index: i,
                            got: describe(inner),
                        });
                    };
                    out.push(
                        items
                            .iter()
                            .map(|e| {
                                scalar_string(e).ok_or(ValueError::InnerItem {
                                    index: i,
                                    got: describe(e),
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
                self.listlists.insert(o.name, out);
            }
            Kind::StrMap => {
                let Value::Object(m) = v else {
                    return Err(ValueError::shape("a map of strings", v));
                };
                let mut out = BTreeMap::new();
                for (k, e) in m {
                    let s = scalar_string(e).ok_or_else(|| ValueError::MapValue {
                        key: k.clone(),
                        got: describe(e),
                    })?;
                    out.insert(k.clone(), s);
                }
                self.maps.insert(o.name, out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Config, ConfigErrors> {
        let packer = json!({"packer_build_name": "img", "packer_force": true});
        Config::parse(v.as_object().unwrap(), packer.as_object().unwrap())
    }

    #[test]
    fn a_minimal_disk_image_config_gets_the_documented_defaults() {
        let c = parse(json!({
            "disk_image": true, "iso_url": "/tmp/x.qcow2", "iso_checksum": "none",
            "ssh_username": "root", "memory": "512"
        }))
        .unwrap();
        assert_eq!(c.vm_name, "packer-img");
        assert_eq!(c.output_directory, PathBuf::from("output-img"));
        assert_eq!(c.memory_mib, 512);
        assert_eq!(c.accelerator, Accelerator::Kvm);
        assert_eq!(c.format, Format::Qcow2);
        assert_eq!(c.net, NetAttach::Network("default".into()));
        assert!(c.packer.force);
        assert_eq!(c.ssh().unwrap().timeout, Duration::from_secs(300));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_with_what_the_option_takes() {
        let cases = [
            (json!({"vm_name": ["a"]}), "vm_name: expected a string, got a list"),
            (json!({"memory": "lots"}), "memory: expected a whole number, got \"lots\""),
            (json!({"disk_image": 3}), "disk_image: expected true or false, got 3"),
            (json!({"boot_wait": {}}), "boot_wait: expected a duration, got a map"),
            (
                json!({"boot_wait": "soon"}),
                "boot_wait: `soon` is not a duration: write it like 90s, 5m or 1h30m",
            ),
            (json!({"iso_urls": [{}]}), "iso_urls: list items must be strings, got a map"),
            (json!({"iso_urls": 3}), "iso_urls: expected a list of strings, got a number"),
            (
                json!({"qemuargs": "-S"}),
                "qemuargs: expected a list of lists of strings, got a string",
            ),
            (
                json!({"qemuargs": ["-S"]}),
                "qemuargs: item 0 must be a list of strings like [\"-device\", \"usb-tablet\"], got a string",
            ),
            (json!({"qemuargs": [[[]]]}), "qemuargs: item 0 holds a list, not a string"),
            (json!({"cd_content": []}), "cd_content: expected a map of strings, got a list"),
            (
                json!({"cd_content": {"user-data": []}}),
                "cd_content: value of `user-data` must be a string, got a list",
            ),
        ];
        for (user, want) in cases {
            let e = parse(user).unwrap_err();
            assert!(e.0.iter().any(|m| m == want), "{want}\nnot in {e}");
        }
    }

    #[test]
    fn problems_are_listed_in_the_order_of_the_option_groups() {
        let e = parse(json!({
            "efi_firmware_vars": "/v", "net_bridge": "br0", "address_source": "lease",
            "communicator": "winrm", "shutdown_command": "x", "iso_url": "/a.iso"
        }))
        .unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|m| m.split(':').next().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "efi_boot",
                "iso_checksum",
                "address_source",
                "winrm_username",
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_option() {
        let e = parse(json!({
            "iso_url": "ftp://x", "memory": "lots", "accelerator": "hyperv",
            "format": "vmdk", "bogus": 1, "ssh_timeout": "soon", "net_bridge": "br0", "network": "n",
            "libvirt_uri": "vmhost01"
        }))
        .unwrap_err();
        let text = e.to_string();
        for field in [
            "iso_url:",
            "memory:",
            "accelerator:",
            "format:",
            "bogus:",
            "ssh_timeout:",
            "iso_checksum:",
            "ssh_username:",
            "net_bridge:",
            "libvirt_uri: 'vmhost01' is not a libvirt URI",
        ] {
            assert!(text.contains(field), "{field} missing from:\n{text}");
        }
    }

    #[test]
    fn json_option_values_go_through_the_template_engine() {
        let packer = json!({
            "packer_build_name": "img", "packer_builder_type": "libvirt",
            "packer_user_variables": {"sum": "a".repeat(64), "mem": "512", "name": "Agent"}
        });
        let user = json!({
            "disk_image": true, "iso_url": "/tmp/x.qcow2", "ssh_username": "root",
            "iso_checksum": "sha256:{{user `sum`}}", "memory": "{{user `mem`}}",
            "vm_name": "{{user `name` | lower}}-{{build_name}}",
            "cd_content": {"meta-data": "local-hostname: {{build_type}}\n"},
            "boot_command": ["<wait>http://{{ .HTTPIP }}:{{ .HTTPPort }}/<enter>"]
        });
        let c = Config::parse(user.as_object().unwrap(), packer.as_object().unwrap()).unwrap();
        assert_eq!(c.iso_checksum, Checksum::Sha256("a".repeat(64)));
        assert_eq!(c.memory_mib, 512);
        assert_eq!(c.vm_name, "agent-img");
        assert_eq!(c.cd_content["meta-data"], "local-hostname: libvirt\n");
        // Rendered during the build, when the HTTP server runs.
        assert_eq!(
            c.boot_command[0],
            "<wait>http://{{ .HTTPIP }}:{{ .HTTPPort }}/<enter>"
        );

        let e = parse(json!({
            "disk_image": true, "iso_url": "/tmp/x.qcow2", "iso_checksum": "none",
            "ssh_username": "{{user `u`", "cd_content": {"user-data": "{{nope}}"},
            "shutdown_command": "{{ .HTTPIP }}"
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("ssh_username: template: unclosed action"), "{e}");
        assert!(
            e.contains("cd_content[\"user-data\"]: template: function `nope` is not defined"),
            "{e}"
        );
        assert!(
            e.contains("shutdown_command: template: `.HTTPIP` has no value here"),
            "{e}"
        );
    }

    /// The options of the seed's Debian agent template, as written for the
    /// QEMU builder.
    fn seed_debian() -> Value {
        json!({
            "iso_url": "/tmp/debian-13-genericcloud-amd64.qcow2", "iso_checksum": "none",
            "disk_image": true, "ssh_private_key_file": "/proc/self/exe",
            "cd_content": {"meta-data": "", "user-data": "#cloud-config\n"}, "cd_label": "cidata",
            "use_backing_file": false, "cpus": 4, "memory": 4096, "disk_size": 24000,
            "accelerator": "kvm", "headless": true, "host_port_min": 2222, "host_port_max": 2229,
            "ssh_username": "root", "ssh_wait_timeout": "1000s",
            "shutdown_command": "passwd -d root && /sbin/shutdown -hP now",
            "disk_discard": "unmap", "disk_detect_zeroes": "unmap", "disk_cache": "unsafe",
            "format": "qcow2", "output_directory": "out", "vm_name": "debian-build-agent.qcow2",
            "disk_additional_size": ["20G"], "net_device": "vmxnet3", "boot_key_interval": "50ms",
            "efi_boot": true, "efi_drop_efivars": true, "machine_type": "q35",
            "qemuargs": [["-device", "usb-tablet"], ["-smbios", "type=2"]]
        })
    }

    #[test]
    fn the_seed_templates_options_carry_the_qemu_builders_meaning() {
        let c = parse(seed_debian()).unwrap();
        assert_eq!(c.ssh().unwrap().timeout, Duration::from_secs(1000));
        assert_eq!(c.disk_driver.cache.as_deref(), Some("unsafe"));
        assert_eq!(c.disk_driver.discard.as_deref(), Some("unmap"));
        assert_eq!(c.disk_driver.detect_zeroes.as_deref(), Some("unmap"));
        assert_eq!(c.disk_additional_sizes, [20 << 30]);
        assert_eq!(c.net_model, "vmxnet3");
        assert_eq!(c.boot_key_interval, Some(Duration::from_millis(50)));
        assert_eq!(c.qemuargs.len(), 2);
        // vm_name is used as given: no second extension, volumes without it.
        assert_eq!(c.output_file_name(), "debian-build-agent.qcow2");
        assert_eq!(c.volume_stem(), "debian-build-agent");
        assert_eq!(
            parse(json!({"kernel": "/proc/self/exe", "communicator": "none", "vm_name": "v"}))
                .unwrap()
                .output_file_name(),
            "v.qcow2"
        );
        // QEMU-process options are accepted, each with a warning saying why
        // it does nothing.
        let w = c.warnings().join("\n");
        for o in ["headless:", "host_port_min:", "host_port_max:"] {
            assert!(w.contains(o) && w.contains("ignored"), "{o} in {w}");
        }
    }

    #[test]
    fn winrm_misspellings_and_bad_values_are_refused_by_name() {
        let mut v = seed_debian();
        v["communicator"] = json!("winrm");
        v["winrm_username"] = json!("Administrator");
        v["disk_chache"] = json!("unsafe");
        v["net_device"] = json!("tulip");
        v["disk_discard"] = json!("trim");
        v["use_backing_file"] = json!(true);
        v["format"] = json!("raw");
        v["qemuargs"] = json!([["usb-tablet"]]);
        v["disk_additional_size"] = json!(["lots"]);
        let e = parse(v).unwrap_err().to_string();
        for want in [
            "disk_chache: unknown option; did you mean `disk_cache`?",
            "net_device: `tulip` is not one of",
            "disk_discard: `trim` is not one of ignore, unmap",
            "use_backing_file: needs disk_image = true and format = \"qcow2\"",
            "qemuargs[0]:",
            "disk_additional_size[0]: `lots`",
        ] {
            assert!(e.contains(want), "{want} missing from:\n{e}");
        }
    }

    #[test]
    fn winrm_takes_packers_names_and_defaults() {
        let base = json!({
            "iso_url": "/w.qcow2", "iso_checksum": "none", "disk_image": true,
            "communicator": "winrm", "winrm_username": "Administrator",
            "winrm_password": "pw", "shutdown_command": "shutdown /s /t 5"
        });
        let c = parse(base.clone()).unwrap();
        let CommunicatorConfig::WinRm(w) = &c.communicator else {
            panic!("{:?}", c.communicator)
        };
        assert_eq!((w.port, w.use_ssl, w.insecure), (5985, false, false));
        assert_eq!(w.timeout, Duration::from_secs(1800));
        assert_eq!(
            (w.username.as_str(), w.password.as_str()),
            ("Administrator", "pw")
        );
        assert!(!w.use_ntlm);
        assert!(c.ssh().is_none());

        let mut v = base.clone();
        for (k, x) in [
            ("winrm_use_ssl", json!(true)),
            ("winrm_insecure", json!(true)),
            ("winrm_timeout", json!("2h")),
            ("winrm_host", json!("10.0.0.5")),
            ("winrm_no_proxy", json!(true)),
            ("winrm_use_ntlm", json!(true)),
            ("pause_before_connecting", json!("1m")),
            ("net_bridge", json!("br0")),
            ("address_source", json!("lease")),
        ] {
            v[k] = x;
        }
        let c = parse(v).unwrap();
        let CommunicatorConfig::WinRm(w) = &c.communicator else {
            panic!("{:?}", c.communicator)
        };
        assert_eq!(
            (w.port, w.use_ssl, w.insecure, w.no_proxy, w.use_ntlm),
            (5986, true, true, true, true)
        );
        assert_eq!(w.host.as_deref(), Some("10.0.0.5"));
        assert_eq!(w.timeout, Duration::from_secs(7200));
        assert_eq!(c.pause_before_connecting, Duration::from_secs(60));

        let mut v = base;
        v["winrm_username"] = json!("");
        v["winrm_port"] = json!(70000);
        v["winrm_use_ntlm"] = json!("yes");
        let e = parse(v).unwrap_err().0;
        assert!(
            e.contains(&"winrm_username: required with the winrm communicator".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(&"winrm_port: 70000 is not a port number".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(&"winrm_use_ntlm: expected true or false, got \"yes\"".to_string()),
            "{e:?}"
        );
    }

    #[test]
    fn hcl2_nulls_mean_unset() {
        let mut user = serde_json::Map::new();
        for o in OPTIONS.iter().chain(IGNORED) {
            user.insert(o.name.to_string(), Value::Null);
        }
        user.insert("kernel".into(), json!("/proc/self/exe"));
        user.insert("communicator".into(), json!("none"));
        user.insert("accelerator".into(), json!("tcg"));
        let c = Config::parse(&user, &Map::new()).unwrap();
        assert_eq!(c.accelerator, Accelerator::Qemu);
        assert_eq!(c.communicator, CommunicatorConfig::None);
    }

    #[test]
    fn the_readme_documents_every_option() {
        let readme = include_str!("../README.md");
        for o in OPTIONS.iter().chain(IGNORED) {
            assert!(
                readme.contains(&format!("| `{}` |", o.name)),
                "README misses {}",
                o.name
            );
        }
    }

    #[test]
    fn durations_sizes_and_checksums_parse_like_packer() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("40960"), Some(40960 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert!(matches!(
            Checksum::parse(&format!("sha256:{}", "a".repeat(64))),
            Ok(Checksum::Sha256(_))
        ));
        assert!(Checksum::parse("md5:abc").is_err());
        assert_eq!(Checksum::parse("NONE"), Ok(Checksum::None));
        assert_eq!(
            Checksum::parse("file:https://x/SHA256SUMS"),
            Ok(Checksum::File("https://x/SHA256SUMS".into()))
        );
    }
}

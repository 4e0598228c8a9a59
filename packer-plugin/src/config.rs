//! The builder's options: one table that gives both the HCL2 spec Packer
//! checks templates against and the parser that turns what `Prepare`
//! receives (a JSON template's map, or HCL2's cty JSON) into a typed
//! [`Config`]. Every problem is reported at once, each naming its option.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::spec::{CtyType, ObjectSpec, Spec};

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
    opt("headless", Kind::Bool, "Accepted for templates moved from the QEMU builder; the build domain never has a display."),
    opt("communicator", Kind::Str, "`ssh` (default) or `none` (no provisioners; the guest must power off by itself)."),
    opt("domain_xslt", Kind::Str, "An XSLT stylesheet applied to the generated domain XML before it is defined (needs `xsltproc`), for what the options do not cover; the same as the Terraform provider's `xml { xslt }`."),
    opt("ssh_host", Kind::Str, "Address to connect to instead of the discovered one."),
    opt("ssh_port", Kind::Num, "SSH port. Default 22."),
    opt("ssh_username", Kind::Str, "SSH user. Required with the ssh communicator."),
    opt("ssh_password", Kind::Str, "SSH password."),
    opt("ssh_private_key_file", Kind::Str, "Host path of a private key (OpenSSH format). Without it or a password, a throwaway ed25519 key pair is made for the build and its public key is written into the extra CD's `meta-data` as `public-keys`."),
    opt("ssh_timeout", Kind::Duration, "How long to wait for SSH to come up. Default 5m."),
    opt("ssh_handshake_attempts", Kind::Num, "How many SSH handshakes may fail before the build fails. Default 10."),
    opt("shutdown_command", Kind::Str, "Command run over SSH to power the guest off (`poweroff`, `sudo shutdown -P now`). Without it the guest gets an ACPI power-button press."),
    opt("shutdown_timeout", Kind::Duration, "How long to wait for the guest to power off. Default 5m."),
];

/// The HCL2 spec of all options (every one optional: errors come from
/// [`Config::parse`] so they are all reported together).
pub fn hcl_spec() -> ObjectSpec {
    OPTIONS
        .iter()
        .map(|o| {
            let ty = match o.kind {
                Kind::Str | Kind::Duration => CtyType::String,
                Kind::Num => CtyType::Number,
                Kind::Bool => CtyType::Bool,
                Kind::StrList => CtyType::List(Box::new(CtyType::String)),
                Kind::StrMap => CtyType::Map(Box::new(CtyType::String)),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// Verification explicitly turned off.
    None,
    /// SHA-256, lowercase hex.
    Sha256(String),
    /// SHA-512, lowercase hex.
    Sha512(String),
    /// A checksum list (`file:` URL or path) to look the source's name up in.
    File(String),
}

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
    /// libvirt URI.
    pub libvirt_uri: String,
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
    /// SSH settings, `None` with `communicator = "none"`.
    pub ssh: Option<SshConfig>,
    /// Shutdown command.
    pub shutdown_command: Option<String>,
    /// Shutdown wait.
    pub shutdown_timeout: Duration,
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

fn parse_checksum(s: &str) -> Result<Checksum, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(Checksum::None);
    }
    if let Some(list) = s.strip_prefix("file:") {
        if list.is_empty() {
            return Err("`file:` needs the URL or path of a checksum list after it".into());
        }
        return Ok(Checksum::File(list.to_string()));
    }
    let (algo, hex) = match s.split_once(':') {
        Some((a, h)) => (a.to_ascii_lowercase(), h.trim().to_ascii_lowercase()),
        None => (
            match s.len() {
                128 => "sha512".into(),
                _ => "sha256".into(),
            },
            s.to_ascii_lowercase(),
        ),
    };
    let want = match algo.as_str() {
        "sha256" => 64,
        "sha512" => 128,
        other => {
            return Err(format!(
                "checksum type `{other}` is not supported: use sha256:HEX, sha512:HEX or none"
            ))
        }
    };
    if hex.len() != want || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "a {algo} checksum is {want} hex digits, got `{hex}`"
        ));
    }
    Ok(match algo.as_str() {
        "sha256" => Checksum::Sha256(hex),
        _ => Checksum::Sha512(hex),
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
                let Some(o) = OPTIONS.iter().find(|o| o.name == k) else {
                    errs.push(format!(
                        "{k}: unknown option (see the builder's README for the list)"
                    ));
                    continue;
                };
                if let Err(e) = raw.take(o, v) {
                    errs.push(format!("{k}: {e}"));
                }
            }
        }
        let cfg = build(raw, settings, &mut errs);
        if errs.is_empty() {
            Ok(cfg.expect("a config when there are no errors"))
        } else {
            Err(ConfigErrors(errs))
        }
    }
}

impl Config {
    /// Things that are allowed but probably not meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(ssh) = &self.ssh {
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

impl Raw {
    fn take(&mut self, o: &Opt, v: &Value) -> Result<(), String> {
        match o.kind {
            Kind::Str => {
                let s = scalar_string(v)
                    .ok_or_else(|| format!("expected a string, got {}", describe(v)))?;
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
                let n = n.ok_or_else(|| format!("expected a whole number, got {}", v))?;
                self.nums.insert(o.name, n);
            }
            Kind::Bool => {
                let b = match v {
                    Value::Bool(b) => Some(*b),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                };
                let b = b.ok_or_else(|| format!("expected true or false, got {}", v))?;
                self.bools.insert(o.name, b);
            }
            Kind::Duration => {
                let s = scalar_string(v)
                    .ok_or_else(|| format!("expected a duration, got {}", describe(v)))?;
                let d = parse_duration(&s).ok_or_else(|| {
                    format!("`{s}` is not a duration: write it like 90s, 5m or 1h30m")
                })?;
                self.durs.insert(o.name, d);
            }
            Kind::StrList => {
                let list = match v {
                    Value::Array(a) => a
                        .iter()
                        .map(|e| {
                            scalar_string(e).ok_or_else(|| {
                                format!("list items must be strings, got {}", describe(e))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    Value::String(s) => vec![s.clone()],
                    _ => return Err(format!("expected a list of strings, got {}", describe(v))),
                };
                self.lists.insert(o.name, list);
            }
            Kind::StrMap => {
                let Value::Object(m) = v else {
                    return Err(format!("expected a map of strings, got {}", describe(v)));
                };
                let mut out = BTreeMap::new();
                for (k, e) in m {
                    let s = scalar_string(e).ok_or_else(|| {
                        format!("value of `{k}` must be a string, got {}", describe(e))
                    })?;
                    out.insert(k.clone(), s);
                }
                self.maps.insert(o.name, out);
            }
        }
        Ok(())
    }
}

fn build(mut raw: Raw, packer: PackerSettings, errs: &mut Vec<String>) -> Option<Config> {
    let mut s = |k: &str| raw.strs.remove(k).filter(|v| !v.is_empty());
    let build_name = if packer.build_name.is_empty() {
        "libvirt".to_string()
    } else {
        packer.build_name.clone()
    };

    let libvirt_uri = s("libvirt_uri").unwrap_or_else(|| "qemu:///system".into());
    let pool = s("pool").unwrap_or_else(|| "default".into());
    let vm_name = s("vm_name").unwrap_or_else(|| format!("packer-{build_name}"));
    if vm_name.contains('/') || vm_name.starts_with('.') {
        errs.push(format!(
            "vm_name: `{vm_name}` cannot be a file name: use letters, digits, `-`, `_` and `.`"
        ));
    }
    let mut iso_urls = Vec::new();
    if let Some(u) = s("iso_url") {
        iso_urls.push(u);
    }
    let checksum_s = s("iso_checksum");
    let disk_size_s = s("disk_size");
    let disk_interface = s("disk_interface").unwrap_or_else(|| "virtio".into());
    let format_s = s("format");
    let accel_s = s("accelerator");
    let machine_type = s("machine_type");
    let efi_code = s("efi_firmware_code");
    let efi_vars = s("efi_firmware_vars");
    let kernel = s("kernel").map(PathBuf::from);
    let initrd = s("initrd").map(PathBuf::from);
    let kernel_args = s("kernel_args");
    let cd_label = s("cd_label").unwrap_or_else(|| "cidata".into());
    let network = s("network");
    let net_bridge = s("net_bridge");
    let mac_address = s("mac_address");
    let address_source_s = s("address_source");
    let output_directory = s("output_directory").unwrap_or_else(|| format!("output-{build_name}"));
    let communicator = s("communicator").unwrap_or_else(|| "ssh".into());
    let domain_xslt = s("domain_xslt");
    let ssh_host = s("ssh_host");
    let ssh_username = s("ssh_username");
    let ssh_password = s("ssh_password");
    let ssh_key = s("ssh_private_key_file").map(PathBuf::from);
    let shutdown_command = s("shutdown_command");

    iso_urls.extend(raw.lists.remove("iso_urls").unwrap_or_default());
    let disk_image = raw.bools.remove("disk_image").unwrap_or(false);
    let skip_resize_disk = raw.bools.remove("skip_resize_disk").unwrap_or(false);
    let efi = if raw.bools.remove("efi_boot").unwrap_or(false) {
        Some((
            efi_code.unwrap_or_else(|| "/usr/share/OVMF/OVMF_CODE.fd".into()),
            efi_vars.unwrap_or_else(|| "/usr/share/OVMF/OVMF_VARS.fd".into()),
        ))
    } else {
        if efi_code.is_some() || efi_vars.is_some() {
            errs.push(
                "efi_boot: efi_firmware_code and efi_firmware_vars need efi_boot = true".into(),
            );
        }
        None
    };

    let iso_checksum = match (&checksum_s, iso_urls.is_empty()) {
        (Some(c), _) => match parse_checksum(c) {
            Ok(c) => c,
            Err(e) => {
                errs.push(format!("iso_checksum: {e}"));
                Checksum::None
            }
        },
        (None, false) => {
            errs.push(
                "iso_checksum: required with iso_url (write `none` to skip verification)".into(),
            );
            Checksum::None
        }
        (None, true) => Checksum::None,
    };
    if iso_urls.is_empty() && kernel.is_none() {
        errs.push("iso_url: required (a disk image with disk_image = true, or an ISO), unless kernel is set".into());
    }
    if disk_image && iso_urls.is_empty() {
        errs.push("disk_image: true needs iso_url pointing at the disk image".into());
    }
    for u in &iso_urls {
        if let Some((scheme, _)) = u.split_once("://") {
            if !matches!(scheme, "http" | "https" | "file") {
                errs.push(format!(
                    "iso_url: `{u}`: only local paths, file://, http:// and https:// are supported"
                ));
            }
        }
    }
    let disk_size = disk_size_s.as_deref().and_then(|d| {
        let v = parse_size(d);
        if v.is_none() {
            errs.push(format!(
                "disk_size: `{d}` is not a size: write MiB as a number, or like 10G"
            ));
        }
        v
    });
    if !matches!(disk_interface.as_str(), "virtio" | "scsi" | "sata" | "ide") {
        errs.push(format!(
            "disk_interface: `{disk_interface}` is not one of virtio, scsi, sata, ide"
        ));
    }
    let format = match format_s.as_deref() {
        None | Some("qcow2") => Format::Qcow2,
        Some("raw") => Format::Raw,
        Some(f) => {
            errs.push(format!("format: `{f}` is not one of qcow2, raw"));
            Format::Qcow2
        }
    };
    let memory_mib = raw.nums.remove("memory").unwrap_or(1024);
    if memory_mib < 16 {
        errs.push(format!(
            "memory: {memory_mib} MiB is too little: give at least 16"
        ));
    }
    let cpus = raw.nums.remove("cpus").unwrap_or(1);
    if cpus == 0 || cpus > 1024 {
        errs.push(format!("cpus: {cpus} is out of range 1..1024"));
    }
    let accelerator = match accel_s.as_deref() {
        None | Some("kvm") => Accelerator::Kvm,
        Some("qemu") | Some("tcg") => Accelerator::Qemu,
        Some(a) => {
            errs.push(format!("accelerator: `{a}` is not one of kvm, qemu, tcg"));
            Accelerator::Kvm
        }
    };
    if initrd.is_some() && kernel.is_none() {
        errs.push("initrd: needs kernel".into());
    }
    if kernel_args.is_some() && kernel.is_none() {
        errs.push("kernel_args: needs kernel".into());
    }
    // Kernel and initrd are read by the libvirt host: check them only when
    // that host is this machine.
    let local = libvirt_uri.starts_with("qemu:///") || libvirt_uri.starts_with("qemu+unix:///");
    for (name, p) in [("kernel", &kernel), ("initrd", &initrd)] {
        if let Some(p) = p.as_ref().filter(|_| local) {
            if !p.is_file() {
                errs.push(format!("{name}: `{}` is not a file", p.display()));
            }
        }
    }
    let cd_files: Vec<PathBuf> = raw
        .lists
        .remove("cd_files")
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    for f in &cd_files {
        if !f.is_file() {
            errs.push(format!(
                "cd_files: `{}` is not a file (the CD holds files at its root; list each file)",
                f.display()
            ));
        }
    }
    let cd_content = raw.maps.remove("cd_content").unwrap_or_default();
    if cd_label.is_empty()
        || cd_label.len() > 16
        || !cd_label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errs.push(format!(
            "cd_label: `{cd_label}` must be 1 to 16 ASCII letters, digits, `_` or `-`"
        ));
    }
    let net = match (network, net_bridge) {
        (Some(_), Some(_)) => {
            errs.push("net_bridge: cannot be combined with network: choose one".into());
            NetAttach::Network("default".into())
        }
        (None, Some(b)) => NetAttach::Bridge(b),
        (Some(n), None) => NetAttach::Network(n),
        (None, None) => NetAttach::Network("default".into()),
    };
    let address_source = match address_source_s.as_deref() {
        None => match net {
            NetAttach::Network(_) => AddressSource::Lease,
            NetAttach::Bridge(_) => AddressSource::Agent,
        },
        Some("lease") => AddressSource::Lease,
        Some("agent") => AddressSource::Agent,
        Some(a) => {
            errs.push(format!("address_source: `{a}` is not one of lease, agent"));
            AddressSource::Lease
        }
    };
    if address_source == AddressSource::Lease
        && matches!(net, NetAttach::Bridge(_))
        && ssh_host.is_none()
    {
        errs.push("address_source: `lease` needs a libvirt network; with net_bridge use `agent` or set ssh_host".into());
    }
    if let Some(m) = &mac_address {
        let ok = m.split(':').count() == 6
            && m.split(':')
                .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
        if !ok {
            errs.push(format!(
                "mac_address: `{m}` is not a MAC address like 52:54:00:12:34:56"
            ));
        }
    }
    let boot_wait = raw
        .durs
        .remove("boot_wait")
        .unwrap_or(Duration::from_secs(10));
    let boot_command = raw.lists.remove("boot_command").unwrap_or_default();
    let ssh = match communicator.as_str() {
        "ssh" => {
            if ssh_username.is_none() {
                errs.push("ssh_username: required with the ssh communicator".into());
            }
            if let Some(k) = &ssh_key {
                if !k.is_file() {
                    errs.push(format!(
                        "ssh_private_key_file: `{}` is not a file",
                        k.display()
                    ));
                }
            }
            let port = raw.nums.remove("ssh_port").unwrap_or(22);
            if port == 0 || port > 65535 {
                errs.push(format!("ssh_port: {port} is not a port number"));
            }
            Some(SshConfig {
                host: ssh_host,
                port: port as u16,
                username: ssh_username.unwrap_or_default(),
                password: ssh_password,
                private_key_file: ssh_key,
                timeout: raw
                    .durs
                    .remove("ssh_timeout")
                    .unwrap_or(Duration::from_secs(300)),
                handshake_attempts: raw.nums.remove("ssh_handshake_attempts").unwrap_or(10) as u32,
            })
        }
        "none" => None,
        c => {
            errs.push(format!(
                "communicator: `{c}` is not supported: use ssh or none"
            ));
            None
        }
    };
    if shutdown_command.is_some() && ssh.is_none() {
        errs.push("shutdown_command: needs the ssh communicator".into());
    }
    let shutdown_timeout = raw
        .durs
        .remove("shutdown_timeout")
        .unwrap_or(Duration::from_secs(300));
    if !errs.is_empty() {
        return None;
    }
    Some(Config {
        packer,
        libvirt_uri,
        pool,
        vm_name,
        iso_urls,
        iso_checksum,
        disk_image,
        disk_size,
        skip_resize_disk,
        disk_interface,
        format,
        memory_mib,
        cpus: cpus as u32,
        accelerator,
        machine_type,
        efi,
        kernel,
        initrd,
        kernel_args,
        cd_files,
        cd_content,
        cd_label,
        net,
        mac_address,
        address_source,
        output_directory: PathBuf::from(output_directory),
        boot_wait,
        boot_command,
        domain_xslt,
        ssh,
        shutdown_command,
        shutdown_timeout,
    })
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
        assert_eq!(c.ssh.unwrap().timeout, Duration::from_secs(300));
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_option() {
        let e = parse(json!({
            "iso_url": "ftp://x", "memory": "lots", "accelerator": "hyperv",
            "format": "vmdk", "bogus": 1, "ssh_timeout": "soon", "net_bridge": "br0", "network": "n"
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
        ] {
            assert!(text.contains(field), "{field} missing from:\n{text}");
        }
    }

    #[test]
    fn hcl2_nulls_mean_unset() {
        let mut user = serde_json::Map::new();
        for o in OPTIONS {
            user.insert(o.name.to_string(), Value::Null);
        }
        user.insert("kernel".into(), json!("/proc/self/exe"));
        user.insert("communicator".into(), json!("none"));
        user.insert("accelerator".into(), json!("tcg"));
        let c = Config::parse(&user, &Map::new()).unwrap();
        assert_eq!(c.accelerator, Accelerator::Qemu);
        assert!(c.ssh.is_none());
    }

    #[test]
    fn the_readme_documents_every_option() {
        let readme = include_str!("../README.md");
        for o in OPTIONS {
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
            parse_checksum(&format!("sha256:{}", "a".repeat(64))),
            Ok(Checksum::Sha256(_))
        ));
        assert!(parse_checksum("md5:abc").is_err());
        assert_eq!(parse_checksum("NONE"), Ok(Checksum::None));
        assert_eq!(
            parse_checksum("file:https://x/SHA256SUMS"),
            Ok(Checksum::File("https://x/SHA256SUMS".into()))
        );
    }
}

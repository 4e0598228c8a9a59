//! From raw option values to a [`Config`], one option group at a time.
//!
//! The groups run in a fixed order, and each pushes its problems to the
//! shared list as it finds them, so the errors a user sees keep the
//! order of the groups below.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kvmhost::libvirt::Uri;

use super::{
    files_are_local, parse_size, Accelerator, AddressSource, Checksum, CommunicatorConfig, Config,
    DiskDriver, Format, HttpConfig, NetAttach, PackerSettings, Raw, SshConfig, WinRmConfig,
    NET_DEVICES,
};
use crate::template;

impl Raw {
    /// Takes a string option; an empty string counts as unset.
    fn str(&mut self, name: &str) -> Option<String> {
        self.strs.remove(name).filter(|v| !v.is_empty())
    }
}

/// Turns the raw values into a [`Config`], or `None` when `errs` holds
/// any problem (its own or one found earlier).
pub(super) fn build(
    mut raw: Raw,
    packer: PackerSettings,
    template: template::Context,
    errs: &mut Vec<String>,
) -> Option<Config> {
    let build_name = if packer.build_name.is_empty() {
        "libvirt".to_string()
    } else {
        packer.build_name.clone()
    };
    let place = place(&mut raw, &build_name, errs);
    let efi = firmware(&mut raw, errs);
    let kernel = raw.str("kernel").map(PathBuf::from);
    let source = source(&mut raw, kernel.is_some(), errs);
    let disk = disk(&mut raw, errs);
    let machine = machine(&mut raw, errs);
    let local = place.libvirt_uri.as_ref().is_some_and(files_are_local);
    let kernel_boot = kernel_boot(&mut raw, kernel, local, errs);
    let cd = cd(&mut raw, errs);
    let ssh_host = raw.str("ssh_host");
    let winrm_host = raw.str("winrm_host");
    let network = network(&mut raw, ssh_host.is_some() || winrm_host.is_some(), errs);
    let boot = boot(&mut raw);
    let communicator = communicator(&mut raw, ssh_host, winrm_host, errs);
    let disk_driver = disk_driver(&mut raw, errs);
    let extra_disks = extra_disks(&mut raw, source.disk_image, disk.format, errs);
    let net_model = net_model(&mut raw, errs);
    let qemuargs = qemuargs(&mut raw, errs);
    let http = http(&mut raw, errs);
    if !errs.is_empty() {
        return None;
    }
    Some(Config {
        packer,
        template,
        libvirt_uri: place.libvirt_uri?,
        pool: place.pool,
        vm_name: place.vm_name,
        iso_urls: source.iso_urls,
        iso_checksum: source.iso_checksum,
        disk_image: source.disk_image,
        disk_size: disk.size,
        skip_resize_disk: disk.skip_resize,
        disk_interface: disk.interface,
        format: disk.format,
        memory_mib: machine.memory_mib,
        cpus: machine.cpus,
        accelerator: machine.accelerator,
        machine_type: machine.machine_type,
        efi,
        kernel: kernel_boot.kernel,
        initrd: kernel_boot.initrd,
        kernel_args: kernel_boot.kernel_args,
        cd_files: cd.files,
        cd_content: cd.content,
        cd_label: cd.label,
        net: network.net,
        mac_address: network.mac_address,
        address_source: network.address_source,
        output_directory: place.output_directory,
        boot_wait: boot.wait,
        boot_command: boot.command,
        domain_xslt: place.domain_xslt,
        communicator: communicator.config,
        pause_before_connecting: communicator.pause_before_connecting,
        shutdown_command: communicator.shutdown_command,
        shutdown_timeout: communicator.shutdown_timeout,
        use_backing_file: extra_disks.use_backing_file,
        disk_driver,
        disk_additional_sizes: extra_disks.sizes,
        net_model,
        boot_key_interval: boot.key_interval,
        qemuargs,
        http,
        ignored: std::mem::take(&mut raw.ignored),
    })
}

/// Where the build happens and what it is called.
struct Place {
    libvirt_uri: Option<Uri>,
    pool: String,
    vm_name: String,
    output_directory: PathBuf,
    domain_xslt: Option<String>,
}

fn place(raw: &mut Raw, build_name: &str, errs: &mut Vec<String>) -> Place {
    let libvirt_uri = raw
        .str("libvirt_uri")
        .unwrap_or_else(|| "qemu:///system".into());
    let libvirt_uri = match Uri::parse(&libvirt_uri) {
        Ok(u) => Some(u),
        Err(e) => {
            errs.push(format!("libvirt_uri: {e}"));
            None
        }
    };
    let vm_name = raw
        .str("vm_name")
        .unwrap_or_else(|| format!("packer-{build_name}"));
    if vm_name.contains('/') || vm_name.starts_with('.') {
        errs.push(format!(
            "vm_name: `{vm_name}` cannot be a file name: use letters, digits, `-`, `_` and `.`"
        ));
    }
    Place {
        libvirt_uri,
        pool: raw.str("pool").unwrap_or_else(|| "default".into()),
        vm_name,
        output_directory: PathBuf::from(
            raw.str("output_directory")
                .unwrap_or_else(|| format!("output-{build_name}")),
        ),
        domain_xslt: raw.str("domain_xslt"),
    }
}

/// The UEFI code and variables files, when booting with UEFI.
fn firmware(raw: &mut Raw, errs: &mut Vec<String>) -> Option<(String, String)> {
    let code = raw.str("efi_firmware_code");
    let vars = raw.str("efi_firmware_vars");
    // Accepted for the QEMU builder's templates; the variables file is
    // per build here anyway.
    let _ = raw.bools.remove("efi_drop_efivars");
    if raw.bools.remove("efi_boot").unwrap_or(false) {
        return Some((
            code.unwrap_or_else(|| "/usr/share/OVMF/OVMF_CODE.fd".into()),
            vars.unwrap_or_else(|| "/usr/share/OVMF/OVMF_VARS.fd".into()),
        ));
    }
    if code.is_some() || vars.is_some() {
        errs.push("efi_boot: efi_firmware_code and efi_firmware_vars need efi_boot = true".into());
    }
    None
}

/// The image or ISO the build starts from.
struct Source {
    iso_urls: Vec<String>,
    iso_checksum: Checksum,
    disk_image: bool,
}

fn source(raw: &mut Raw, has_kernel: bool, errs: &mut Vec<String>) -> Source {
    let mut iso_urls: Vec<String> = raw.str("iso_url").into_iter().collect();
    iso_urls.extend(raw.lists.remove("iso_urls").unwrap_or_default());
    let disk_image = raw.bools.remove("disk_image").unwrap_or(false);
    let iso_checksum = match (raw.str("iso_checksum"), iso_urls.is_empty()) {
        (Some(c), _) => match Checksum::parse(&c) {
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
    if iso_urls.is_empty() && !has_kernel {
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
    Source {
        iso_urls,
        iso_checksum,
        disk_image,
    }
}

/// The build's main disk.
struct Disk {
    size: Option<u64>,
    skip_resize: bool,
    interface: String,
    format: Format,
}

fn disk(raw: &mut Raw, errs: &mut Vec<String>) -> Disk {
    let size = raw.str("disk_size").and_then(|d| {
        let v = parse_size(&d);
        if v.is_none() {
            errs.push(format!(
                "disk_size: `{d}` is not a size: write MiB as a number, or like 10G"
            ));
        }
        v
    });
    let interface = raw.str("disk_interface").unwrap_or_else(|| "virtio".into());
    if !matches!(interface.as_str(), "virtio" | "scsi" | "sata" | "ide") {
        errs.push(format!(
            "disk_interface: `{interface}` is not one of virtio, scsi, sata, ide"
        ));
    }
    let format = match raw.str("format").as_deref() {
        None | Some("qcow2") => Format::Qcow2,
        Some("raw") => Format::Raw,
        Some(f) => {
            errs.push(format!("format: `{f}` is not one of qcow2, raw"));
            Format::Qcow2
        }
    };
    Disk {
        size,
        skip_resize: raw.bools.remove("skip_resize_disk").unwrap_or(false),
        interface,
        format,
    }
}

/// The virtual machine's size and kind.
struct Machine {
    memory_mib: u64,
    cpus: u32,
    accelerator: Accelerator,
    machine_type: Option<String>,
}

fn machine(raw: &mut Raw, errs: &mut Vec<String>) -> Machine {
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
    let accelerator = match raw.str("accelerator").as_deref() {
        None | Some("kvm") => Accelerator::Kvm,
        Some("qemu") | Some("tcg") => Accelerator::Qemu,
        Some(a) => {
            errs.push(format!("accelerator: `{a}` is not one of kvm, qemu, tcg"));
            Accelerator::Kvm
        }
    };
    Machine {
        memory_mib,
        cpus: cpus as u32,
        accelerator,
        machine_type: raw.str("machine_type"),
    }
}

/// Direct kernel boot.
struct KernelBoot {
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    kernel_args: Option<String>,
}

/// `local`: the libvirt host is this machine, so its files can be checked.
fn kernel_boot(
    raw: &mut Raw,
    kernel: Option<PathBuf>,
    local: bool,
    errs: &mut Vec<String>,
) -> KernelBoot {
    let initrd = raw.str("initrd").map(PathBuf::from);
    let kernel_args = raw.str("kernel_args");
    if initrd.is_some() && kernel.is_none() {
        errs.push("initrd: needs kernel".into());
    }
    if kernel_args.is_some() && kernel.is_none() {
        errs.push("kernel_args: needs kernel".into());
    }
    // Kernel and initrd are read by the libvirt host: check them only when
    // that host is this machine.
    for (name, p) in [("kernel", &kernel), ("initrd", &initrd)] {
        if let Some(p) = p.as_ref().filter(|_| local) {
            if !p.is_file() {
                errs.push(format!("{name}: `{}` is not a file", p.display()));
            }
        }
    }
    KernelBoot {
        kernel,
        initrd,
        kernel_args,
    }
}

/// The seed CD.
struct Cd {
    files: Vec<PathBuf>,
    content: BTreeMap<String, String>,
    label: String,
}

fn cd(raw: &mut Raw, errs: &mut Vec<String>) -> Cd {
    let label = raw.str("cd_label").unwrap_or_else(|| "cidata".into());
    let files: Vec<PathBuf> = raw
        .lists
        .remove("cd_files")
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    for f in &files {
        if !f.is_file() {
            errs.push(format!(
                "cd_files: `{}` is not a file (the CD holds files at its root; list each file)",
                f.display()
            ));
        }
    }
    let content = raw.maps.remove("cd_content").unwrap_or_default();
    if label.is_empty()
        || label.len() > 16
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errs.push(format!(
            "cd_label: `{label}` must be 1 to 16 ASCII letters, digits, `_` or `-`"
        ));
    }
    Cd {
        files,
        content,
        label,
    }
}

/// The guest's NIC and how its address is found.
struct Network {
    net: NetAttach,
    mac_address: Option<String>,
    address_source: AddressSource,
}

/// `fixed_host`: `ssh_host` is set, so no address needs finding.
fn network(raw: &mut Raw, fixed_host: bool, errs: &mut Vec<String>) -> Network {
    let net = match (raw.str("network"), raw.str("net_bridge")) {
        (Some(_), Some(_)) => {
            errs.push("net_bridge: cannot be combined with network: choose one".into());
            NetAttach::Network("default".into())
        }
        (None, Some(b)) => NetAttach::Bridge(b),
        (Some(n), None) => NetAttach::Network(n),
        (None, None) => NetAttach::Network("default".into()),
    };
    let address_source = match raw.str("address_source").as_deref() {
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
    if address_source == AddressSource::Lease && matches!(net, NetAttach::Bridge(_)) && !fixed_host
    {
        errs.push("address_source: `lease` needs a libvirt network; with net_bridge use `agent` or set ssh_host (winrm_host)".into());
    }
    let mac_address = raw.str("mac_address");
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
    Network {
        net,
        mac_address,
        address_source,
    }
}

/// What happens between starting the guest and waiting for it.
struct Boot {
    wait: Duration,
    command: Vec<String>,
    key_interval: Option<Duration>,
}

fn boot(raw: &mut Raw) -> Boot {
    Boot {
        wait: raw
            .durs
            .remove("boot_wait")
            .unwrap_or(Duration::from_secs(10)),
        command: raw.lists.remove("boot_command").unwrap_or_default(),
        key_interval: raw.durs.remove("boot_key_interval"),
    }
}

/// How the build reaches the guest and shuts it down.
struct Communicator {
    config: CommunicatorConfig,
    pause_before_connecting: Duration,
    shutdown_command: Option<String>,
    shutdown_timeout: Duration,
}

fn communicator(
    raw: &mut Raw,
    ssh_host: Option<String>,
    winrm_host: Option<String>,
    errs: &mut Vec<String>,
) -> Communicator {
    let config = match raw
        .str("communicator")
        .unwrap_or_else(|| "ssh".into())
        .as_str()
    {
        "ssh" => CommunicatorConfig::Ssh(ssh(raw, ssh_host, errs)),
        "winrm" => CommunicatorConfig::WinRm(winrm(raw, winrm_host, errs)),
        "none" => CommunicatorConfig::None,
        c => {
            errs.push(format!(
                "communicator: `{c}` is not supported: use ssh, winrm or none"
            ));
            CommunicatorConfig::None
        }
    };
    let shutdown_command = raw.str("shutdown_command");
    if shutdown_command.is_some() && config == CommunicatorConfig::None {
        errs.push("shutdown_command: needs the ssh or winrm communicator".into());
    }
    Communicator {
        config,
        pause_before_connecting: raw
            .durs
            .remove("pause_before_connecting")
            .unwrap_or(Duration::ZERO),
        shutdown_command,
        shutdown_timeout: raw
            .durs
            .remove("shutdown_timeout")
            .unwrap_or(Duration::from_secs(300)),
    }
}

fn ssh(raw: &mut Raw, host: Option<String>, errs: &mut Vec<String>) -> SshConfig {
    let username = raw.str("ssh_username");
    if username.is_none() {
        errs.push("ssh_username: required with the ssh communicator".into());
    }
    let key = raw.str("ssh_private_key_file").map(PathBuf::from);
    if let Some(k) = &key {
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
    // `ssh_wait_timeout` is the older name of `ssh_timeout`.
    let wait_timeout = raw.durs.remove("ssh_wait_timeout");
    SshConfig {
        host,
        port: port as u16,
        username: username.unwrap_or_default(),
        password: raw.str("ssh_password"),
        private_key_file: key,
        timeout: raw
            .durs
            .remove("ssh_timeout")
            .or(wait_timeout)
            .unwrap_or(Duration::from_secs(300)),
        handshake_attempts: raw.nums.remove("ssh_handshake_attempts").unwrap_or(10) as u32,
    }
}

fn winrm(raw: &mut Raw, host: Option<String>, errs: &mut Vec<String>) -> WinRmConfig {
    let username = raw.str("winrm_username");
    if username.is_none() {
        errs.push("winrm_username: required with the winrm communicator".into());
    }
    let use_ssl = raw.bools.remove("winrm_use_ssl").unwrap_or(false);
    let port = raw
        .nums
        .remove("winrm_port")
        .unwrap_or(if use_ssl { 5986 } else { 5985 });
    if port == 0 || port > 65535 {
        errs.push(format!("winrm_port: {port} is not a port number"));
    }
    WinRmConfig {
        host,
        port: port as u16,
        username: username.unwrap_or_default(),
        password: raw.str("winrm_password").unwrap_or_default(),
        timeout: raw
            .durs
            .remove("winrm_timeout")
            .unwrap_or(Duration::from_secs(30 * 60)),
        use_ssl,
        insecure: raw.bools.remove("winrm_insecure").unwrap_or(false),
        no_proxy: raw.bools.remove("winrm_no_proxy").unwrap_or(false),
        use_ntlm: raw.bools.remove("winrm_use_ntlm").unwrap_or(false),
    }
}

/// The hard disks' QEMU driver settings.
fn disk_driver(raw: &mut Raw, errs: &mut Vec<String>) -> DiskDriver {
    let mut one_of = |name: &str, allowed: &[&str]| {
        let v = raw.str(name);
        if let Some(x) = &v {
            if !allowed.contains(&x.as_str()) {
                errs.push(format!(
                    "{name}: `{x}` is not one of {}",
                    allowed.join(", ")
                ));
            }
        }
        v
    };
    DiskDriver {
        cache: one_of(
            "disk_cache",
            &["writeback", "writethrough", "none", "unsafe", "directsync"],
        ),
        discard: one_of("disk_discard", &["ignore", "unmap"]),
        detect_zeroes: one_of("disk_detect_zeroes", &["off", "on", "unmap"]),
    }
}

/// Disks beyond the main one, and whether the main one is an overlay.
struct ExtraDisks {
    use_backing_file: bool,
    sizes: Vec<u64>,
}

fn extra_disks(
    raw: &mut Raw,
    disk_image: bool,
    format: Format,
    errs: &mut Vec<String>,
) -> ExtraDisks {
    let use_backing_file = raw.bools.remove("use_backing_file").unwrap_or(false);
    if use_backing_file && (!disk_image || format != Format::Qcow2) {
        errs.push(
            "use_backing_file: needs disk_image = true and format = \"qcow2\" (the output is an overlay of the source image)".into(),
        );
    }
    let mut sizes = Vec::new();
    for (i, d) in raw
        .lists
        .remove("disk_additional_size")
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match parse_size(d) {
            Some(v) if v > 0 => sizes.push(v),
            _ => errs.push(format!(
                "disk_additional_size[{i}]: `{d}` is not a size: write MiB as a number, or like 20G"
            )),
        }
    }
    ExtraDisks {
        use_backing_file,
        sizes,
    }
}

/// The NIC's device model, from `net_device`'s QEMU name.
fn net_model(raw: &mut Raw, errs: &mut Vec<String>) -> String {
    let Some(d) = raw.str("net_device") else {
        return "virtio".to_string();
    };
    match NET_DEVICES.iter().find(|(n, _)| *n == d) {
        Some((_, m)) => m.to_string(),
        None => {
            errs.push(format!(
                "net_device: `{d}` is not one of {}",
                NET_DEVICES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            "virtio".to_string()
        }
    }
}

fn qemuargs(raw: &mut Raw, errs: &mut Vec<String>) -> Vec<Vec<String>> {
    let qemuargs = raw.listlists.remove("qemuargs").unwrap_or_default();
    for (i, a) in qemuargs.iter().enumerate() {
        if a.is_empty() || !a[0].starts_with('-') {
            errs.push(format!(
                "qemuargs[{i}]: each item is an option and its values, like [\"-device\", \"usb-tablet\"]"
            ));
        }
    }
    qemuargs
}

/// The HTTP server for the guest, when there is something to serve.
fn http(raw: &mut Raw, errs: &mut Vec<String>) -> Option<HttpConfig> {
    let directory = raw.str("http_directory").map(PathBuf::from);
    let content = raw.maps.remove("http_content").unwrap_or_default();
    let port_min = raw.nums.remove("http_port_min").unwrap_or(8000);
    let port_max = raw.nums.remove("http_port_max").unwrap_or(9000);
    if port_min == 0 || port_min > port_max || port_max > 65535 {
        errs.push(format!(
            "http_port_min: {port_min}..{port_max} is not a port range (1..65535, min <= max)"
        ));
    }
    if let Some(d) = &directory {
        if !d.is_dir() {
            errs.push(format!("http_directory: `{}` is not a folder", d.display()));
        }
    }
    if directory.is_none() && content.is_empty() {
        return None;
    }
    Some(HttpConfig {
        directory,
        content,
        ports: (port_min as u16, port_max as u16),
        bind: raw.str("http_bind_address"),
    })
}

//! The seed's template shapes under Packer 1.9 (built by the test bed's
//! peers), with our plugin installed in the layout `packer init` leaves
//! for `required_plugins`: a Debian-agent template (`packer {}` block,
//! `templatefile()` user-data in `cd_content` carrying the install key,
//! `file` and `shell` provisioners, a `shell-local` post-processor writing
//! `SHA256SUMS`) builds the tiny guest end to end; the FreeBSD
//! (`boot_command`, `.xz` image), macOS (`qemuargs`, EFI) and multi-disk
//! shapes validate.
//!
//! The seed takes its install key from the `sshkey` data source
//! (`github.com/ivoronin/sshkey` in `required_plugins`); the Go module
//! proxy serves none of its releases, so the bed installs its stand-in
//! (`bed-packer-sshkey`, our own `sshkey` data source) in that plugin's
//! place and the template asks for it exactly as the seed's does. The
//! same data source is offered by our plugin as `data "libvirt-sshkey"`.

use std::path::Path;
use std::process::Command;
use testbed::util::{OutputWithin, COMMAND_LIMIT};

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::packer::{show, workdir};
use testbed::peers;

/// Packer 1.9 working in `dir` with our plugin installed as `packer init`
/// installs it; inside `bed`'s namespace when given (guests are reachable
/// only there).
fn packer19(dir: &Path, bed: Option<&Libvirtd>, args: &[&str]) -> std::process::Output {
    let mut c = match bed {
        Some(b) => peers::packer_1_9_in(b.netns(), dir, args).unwrap(),
        None => {
            let mut c = peers::packer_1_9(dir).unwrap();
            c.args(args);
            c
        }
    };
    c.output_within(COMMAND_LIMIT).unwrap()
}

const REQUIRED_LIBVIRT: &str = r#"
    libvirt = {
      source  = "github.com/kvmbe/libvirt"
      version = ">= 0.1.0"
    }"#;

#[test]
fn a_debian_agent_shaped_template_builds_end_to_end_under_packer_1_9() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("seed19-debian").unwrap();
    // The tiny guest runs a user-data that starts with `#!`; the seed's
    // cloud-config does the same job (authorise the install key).
    std::fs::write(
        dir.join("user-data.tpl"),
        "#!/bin/sh\nmkdir -p /root/.ssh\necho '${ssh_public_key}' >> /root/.ssh/authorized_keys\n",
    )
    .unwrap();
    std::fs::write(dir.join("powernapd.conf"), "monitor users\n").unwrap();
    let vm_name = format!("debian-build-agent-{}", std::process::id());
    let template = format!(
        r#"packer {{
  required_plugins {{{REQUIRED_LIBVIRT}

    sshkey = {{
      source  = "github.com/ivoronin/sshkey"
      version = ">= 1.1.0"
    }}
  }}
}}

data "sshkey" "install" {{}}

data "libvirt-sshkey" "spare" {{
  name = "spare-{pid}"
}}

variable "output_dir" {{
  type    = string
  default = "output"
}}

source "libvirt" "debian" {{
  libvirt_uri  = "{uri}"
  pool         = "{POOL}"
  network      = "{NETWORK}"
  iso_url      = "{disk}"
  iso_checksum = "none"
  disk_image   = true
  kernel       = "{kernel}"
  initrd       = "{initrd}"
  kernel_args  = "{cmdline}"

  ssh_private_key_file = data.sshkey.install.private_key_path

  cd_content = {{
    "meta-data" = ""
    "user-data" = templatefile("user-data.tpl", {{ ssh_public_key = data.sshkey.install.public_key }})
    "spare.pub" = data.libvirt-sshkey.spare.public_key
  }}
  cd_label = "cidata"

  use_backing_file = false
  cpus             = 1
  memory           = 256
  accelerator      = "qemu"
  headless         = true
  host_port_min    = 2222
  host_port_max    = 2229
  ssh_username     = "root"
  ssh_wait_timeout = "3m"
  shutdown_command = "poweroff"

  disk_discard       = "unmap"
  disk_detect_zeroes = "unmap"
  disk_cache         = "unsafe"

  format           = "qcow2"
  output_directory = "${{var.output_dir}}"
  vm_name          = "{vm_name}.qcow2"
}}

build {{
  sources = ["source.libvirt.debian"]

  provisioner "file" {{
    sources     = ["powernapd.conf"]
    destination = "/tmp/"
  }}

  provisioner "shell" {{
    environment_vars = ["DEBIAN_FRONTEND=noninteractive"]
    inline = [
      "cp /tmp/powernapd.conf /root/powernapd.conf",
      "echo seed-shaped > /root/marker",
    ]
  }}

  post-processor "shell-local" {{
    keep_input_artifact = true
    inline = [
      "cd ${{var.output_dir}}/",
      "sha256sum {vm_name}.qcow2 > SHA256SUMS",
    ]
  }}
}}
"#,
        uri = bed.uri(),
        pid = std::process::id(),
        disk = guest.root_disk.display(),
        kernel = guest.kernel.display(),
        initrd = guest.root_initrd.display(),
        cmdline = guest.root_cmdline,
    );
    std::fs::write(dir.join("debian-build-agent.pkr.hcl"), template).unwrap();
    let out = packer19(
        &dir,
        Some(&bed),
        &[
            "build",
            "-var",
            "output_dir=builds/1",
            "debian-build-agent.pkr.hcl",
        ],
    );
    let text = show("packer 1.9 build (debian shape)", &out);
    assert!(out.status.success(), "build failed");
    let image = dir.join(format!("builds/1/{vm_name}.qcow2"));
    assert!(image.is_file(), "{text}");
    let sums = std::fs::read_to_string(dir.join("builds/1/SHA256SUMS")).unwrap();
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&image).unwrap(),
    ));
    assert_eq!(sums, format!("{want}  {vm_name}.qcow2\n"));
    assert!(!bed.domains().unwrap().iter().any(|d| d.contains(&vm_name)));
    // The provisioners' work is in the image.
    let files = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "qemu-img convert -O raw {} {}/check.raw && debugfs -R 'cat /root/marker' {}/check.raw 2>/dev/null; debugfs -R 'cat /root/powernapd.conf' {}/check.raw 2>/dev/null",
            image.display(),
            dir.display(),
            dir.display(),
            dir.display()
        ))
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let files = String::from_utf8_lossy(&files.stdout);
    assert!(
        files.contains("seed-shaped") && files.contains("monitor users"),
        "{files}"
    );
    // The data sources kept their keys in Packer's cache, private; the
    // SSH login above used the one `data.sshkey.install` made.
    let cache = testbed::util::cache_dir().join("packer_cache");
    let spare = cache.join(format!("sshkey-spare-{}-ed25519", std::process::id()));
    for key in [cache.join("sshkey-packer-ed25519"), spare.clone()] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }
    let _ = std::fs::remove_file(&spare);
    let _ = std::fs::remove_dir_all(&dir);
}

fn validate(dir: &Path, name: &str, source_body: &str) -> (bool, String) {
    let t = format!(
        "packer {{\n  required_plugins {{{REQUIRED_LIBVIRT}\n  }}\n}}\n\nvariable \"output_dir\" {{\n  type    = string\n  default = \"output\"\n}}\n\nvariable \"base_dir\" {{\n  type    = string\n  default = \"base\"\n}}\n\nsource \"libvirt\" \"{name}\" {{\n{source_body}\n}}\n\nbuild {{\n  sources = [\"source.libvirt.{name}\"]\n  post-processor \"shell-local\" {{\n    keep_input_artifact = true\n    inline = [\"cd ${{var.output_dir}}/\", \"sha256sum {name}.qcow2 > SHA256SUMS\"]\n  }}\n}}\n"
    );
    let path = format!("{name}.pkr.hcl");
    std::fs::write(dir.join(&path), t).unwrap();
    let out = packer19(dir, None, &["validate", &path]);
    let text = show(&format!("packer 1.9 validate ({name})"), &out);
    (out.status.success(), text)
}

const COMMON: &str = r#"
  cpus        = 4
  memory      = 4096
  accelerator = "kvm"
  headless    = true
  disk_discard       = "unmap"
  disk_detect_zeroes = "unmap"
  disk_cache         = "unsafe"
  format           = "qcow2"
  output_directory = "${var.output_dir}"
"#;

#[test]
fn the_freebsd_macos_and_multi_disk_shapes_validate_under_packer_1_9() {
    let dir = workdir("seed19-shapes").unwrap();

    let freebsd = format!(
        r#"  iso_url      = "https://download.freebsd.org/ftp/releases/VM-IMAGES/14.3-RELEASE/amd64/Latest/FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-ufs.qcow2.xz"
  iso_checksum = "none"
  disk_image   = true
  boot_wait         = "5m"
  boot_key_interval = "50ms"
  boot_command = [
    "root<enter>",
    "<wait>",
    "passwd root<enter>",
    "packer<enter>",
    "packer<enter>",
    "echo PermitRootLogin yes >> /etc/ssh/sshd_config<enter>",
    "/etc/rc.d/sshd restart<enter>",
  ]
  use_backing_file = false
  disk_size        = 24000
  vnc_bind_address = "0.0.0.0"
  host_port_min    = 2222
  host_port_max    = 2229
  ssh_username     = "root"
  ssh_password     = "packer"
  ssh_wait_timeout = "1000s"
  shutdown_command = "pw usermod root -w no && /sbin/shutdown -p now"
  vm_name          = "freebsd.qcow2"
{COMMON}"#
    );
    let (ok, text) = validate(&dir, "freebsd", &freebsd);
    assert!(ok, "{text}");
    assert!(text.contains("vnc_bind_address: ignored"), "{text}");

    let macos = format!(
        r#"  iso_url          = "${{var.base_dir}}/macos.qcow2"
  iso_checksum     = "none"
  disk_image       = true
  skip_resize_disk = true
  use_backing_file = false
  machine_type     = "q35"
  net_device       = "vmxnet3"
  efi_boot         = true
  efi_drop_efivars = true
  qemuargs = [
    [ "-device", "isa-applesmc,osk=notarealkey" ],
    [ "-smbios", "type=2" ],
    [ "-cpu", "Haswell-noTSX,kvm=on,vendor=GenuineIntel,+invtsc,vmware-cpuid-freq=on" ],
    [ "-usb" ],
    [ "-device", "usb-kbd" ],
    [ "-device", "usb-tablet" ],
    [ "-device", "ahci,id=ahci,bus=pcie.0,addr=4" ],
    [ "-drive", "if=none,id=disk2,format=qcow2,file=${{var.base_dir}}/OpenCore.qcow2" ],
    [ "-device", "ide-hd,drive=disk2,bus=ahci.2,rotation_rate=1" ],
  ]
  communicator     = "ssh"
  ssh_username     = "packer"
  ssh_password     = "packer"
  shutdown_command = "sudo shutdown -h now"
  shutdown_timeout = "30m"
  vm_name          = "macos.qcow2"
{COMMON}"#
    );
    let (ok, text) = validate(&dir, "macos", &macos);
    assert!(ok, "{text}");

    let multi_disk = |communicator: &str| {
        format!(
            r#"  iso_url      = "packer-Win2022/output-qemu/Win2022_20324.qcow2"
  iso_checksum = "none"
  disk_image   = true
  use_backing_file     = true
  disk_size            = "120G"
  disk_additional_size = [ "20G" ]
{communicator}
  shutdown_timeout = "30m"
  vm_name          = "msvc-build-tools.qcow2"
{COMMON}"#
        )
    };
    let (ok, text) = validate(
        &dir,
        "multidisk",
        &multi_disk(
            "  ssh_username = \"Administrator\"\n  ssh_password = \"packer\"\n  shutdown_command = \"shutdown /s /t 0\"",
        ),
    );
    assert!(ok, "{text}");
    // As the seed writes it, with WinRM.
    let (ok, text) = validate(
        &dir,
        "multidisk",
        &multi_disk(
            "  communicator = \"winrm\"\n  winrm_username = \"Administrator\"\n  winrm_password = \"packer\"\n  winrm_use_ssl = true\n  winrm_insecure = true\n  winrm_timeout = \"4h\"",
        ),
    );
    assert!(ok, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

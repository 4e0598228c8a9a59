//! The seed's template shapes under Packer 1.9 (built in the test bed as
//! `$KVMBE_CACHE/peers/bin/packer-1.9`), with our plugin installed in the
//! layout `packer init` leaves for `required_plugins`: a Debian-agent
//! template (`packer {}` block, `data "sshkey"`, `templatefile()` user-data
//! in `cd_content`, `file` and `shell` provisioners, a `shell-local`
//! post-processor writing `SHA256SUMS`) builds the tiny guest end to end;
//! the FreeBSD (`boot_command`, `.xz` image), macOS (`qemuargs`, EFI) and
//! multi-disk shapes validate.

use std::path::{Path, PathBuf};
use std::process::Command;

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::packer::{show, workdir};
use testbed::util;

fn peer_bin(name: &str) -> PathBuf {
    let p = util::cache_dir().join("peers/bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing: the test bed builds it (scripts/setup.sh, peers)",
        p.display()
    );
    p
}

/// Installs a plugin binary as `packer init` would for `source`
/// (`github.com/NS/NAME`): `<dir>/github.com/NS/NAME/packer-plugin-NAME_vVER_x5.0_linux_amd64`
/// and its `_SHA256SUM`, the version taken from the plugin's `describe`.
fn install_plugin(dir: &Path, source: &str, bin: &Path) {
    let out = Command::new(bin).arg("describe").output().unwrap();
    let desc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{} describe: {e}", bin.display()));
    let version = desc["version"].as_str().unwrap().to_string();
    let name = source.rsplit('/').next().unwrap();
    let folder = dir.join(source);
    std::fs::create_dir_all(&folder).unwrap();
    let file = format!("packer-plugin-{name}_v{version}_x5.0_linux_amd64");
    std::fs::copy(bin, folder.join(&file)).unwrap();
    let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(bin).unwrap(),
    ));
    std::fs::write(folder.join(format!("{file}_SHA256SUM")), sum).unwrap();
}

/// Packer 1.9 working in `dir`, seeing only the plugins installed under
/// `dir/plugins`; inside `bed`'s namespace when given (guests are reachable
/// only there).
fn packer19(dir: &Path, bed: Option<&Libvirtd>, args: &[&str]) -> std::process::Output {
    let bin = peer_bin("packer-1.9");
    let mut c = match bed {
        Some(b) => b.netns().cmd(&bin.to_string_lossy()),
        None => Command::new(&bin),
    };
    c.args(args)
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_PLUGIN_PATH", dir.join("plugins"))
        .env("PACKER_CONFIG_DIR", dir.join(".packer.d"))
        .env("PACKER_CACHE_DIR", dir.join("packer_cache"))
        .env("PACKER_NO_COLOR", "1");
    c.output().unwrap()
}

fn plugins(dir: &Path, with_sshkey: bool) {
    install_plugin(
        &dir.join("plugins"),
        "github.com/kvmbe/libvirt",
        &util::bin_dir().join("packer-plugin-libvirt"),
    );
    if with_sshkey {
        install_plugin(
            &dir.join("plugins"),
            "github.com/ivoronin/sshkey",
            &peer_bin("packer-plugin-sshkey"),
        );
    }
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
    plugins(&dir, true);
    // The tiny guest runs a user-data that starts with `#!`; the seed's
    // cloud-config does the same job (authorise the generated key).
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
      version = ">= 1.0.0"
    }}
  }}
}}

variable "output_dir" {{
  type    = string
  default = "output"
}}

data "sshkey" "install" {{}}

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
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&files.stdout);
    assert!(
        files.contains("seed-shaped") && files.contains("monitor users"),
        "{files}"
    );
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
    plugins(&dir, false);

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
    // As the seed writes it, with WinRM: refused until WinRM comes.
    let (ok, text) = validate(
        &dir,
        "multidisk",
        &multi_disk(
            "  communicator = \"winrm\"\n  winrm_username = \"Administrator\"\n  winrm_password = \"packer\"\n  winrm_use_ssl = true\n  winrm_insecure = true\n  winrm_timeout = \"4h\"",
        ),
    );
    assert!(!ok);
    assert!(
        text.contains("communicator: `winrm` is not supported yet"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

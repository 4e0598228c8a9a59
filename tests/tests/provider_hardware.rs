//! Firmware, NVRAM, machine, graphics, video and boot order map to the
//! domain and read back without a diff; `running` changes in place; a
//! volume smaller than its image is refused on `size`.

use std::process::Output;

use testbed::libvirtd::{Libvirtd, POOL};
use testbed::tools::{dev_overrides_config, terraforms, PROVIDER_SOURCE};

fn hcl(d: &Libvirtd, running: bool) -> String {
    format!(
        r##"terraform {{
  required_providers {{
    libvirt = {{
      source = "{PROVIDER_SOURCE}"
    }}
  }}
}}

provider "libvirt" {{
  uri = "{uri}"
}}

resource "libvirt_domain" "uefi" {{
  name     = "uefi"
  type     = "qemu"
  memory   = 256
  machine  = "q35"
  firmware = "/usr/share/OVMF/OVMF_CODE.fd"
  running  = {running}

  nvram {{
    file     = "{nvram}"
    template = "/usr/share/OVMF/OVMF_VARS.fd"
  }}

  boot_device {{
    dev = ["hd", "network"]
  }}

  graphics {{
    type           = "vnc"
    listen_type    = "address"
    listen_address = "127.0.0.1"
  }}

  video {{
    type = "virtio"
  }}
}}
"##,
        uri = d.uri(),
        nvram = d.dir().join("uefi_VARS.fd").display(),
    )
}

#[test]
fn uefi_graphics_and_boot_order_apply_cleanly_and_running_changes_in_place() {
    let d = Libvirtd::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cli = dev_overrides_config(work.path()).unwrap();
    let tf = terraforms()
        .unwrap()
        .into_iter()
        .find(|t| t.version == "1.11")
        .unwrap();
    let run = |args: &[&str]| -> Output {
        let out = tf.cmd(work.path(), &cli).args(args).output().unwrap();
        eprintln!(
            "== terraform {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    std::fs::write(work.path().join("main.tf"), hcl(&d, false)).unwrap();
    assert!(run(&["apply", "-auto-approve", "-no-color"])
        .status
        .success());
    let xml = d.virsh(&["dumpxml", "uefi", "--inactive"]).unwrap();
    for want in [
        "OVMF_CODE.fd",
        "uefi_VARS.fd",
        "type='vnc'",
        "<boot dev='network'/>",
        "type='virtio'",
    ] {
        assert!(xml.contains(want), "{want} missing in\n{xml}");
    }
    assert_eq!(
        run(&["plan", "-detailed-exitcode", "-no-color"])
            .status
            .code(),
        Some(0)
    );

    std::fs::write(work.path().join("main.tf"), hcl(&d, true)).unwrap();
    let plan = run(&["plan", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("1 to change, 0 to destroy"), "{text}");
    let uuid_before = d.virsh(&["domuuid", "uefi"]).unwrap();
    assert!(run(&["apply", "-auto-approve", "-no-color"])
        .status
        .success());
    assert!(d.virsh(&["domstate", "uefi"]).unwrap().contains("running"));
    assert_eq!(
        d.virsh(&["domuuid", "uefi"]).unwrap(),
        uuid_before,
        "changed in place"
    );
    assert_eq!(
        run(&["plan", "-detailed-exitcode", "-no-color"])
            .status
            .code(),
        Some(0)
    );
    assert!(run(&["destroy", "-auto-approve", "-no-color"])
        .status
        .success());
    assert!(d.domains().unwrap().is_empty());
}

#[test]
fn a_volume_smaller_than_its_image_is_refused_on_size() {
    let d = Libvirtd::start().unwrap();
    let image = d.dir().join("img.raw");
    std::fs::write(&image, vec![1u8; 2 << 20]).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cli = dev_overrides_config(work.path()).unwrap();
    let tf = terraforms()
        .unwrap()
        .into_iter()
        .find(|t| t.version == "1.11")
        .unwrap();
    std::fs::write(
        work.path().join("main.tf"),
        format!(
            "terraform {{\n  required_providers {{\n    libvirt = {{\n      source = \"{PROVIDER_SOURCE}\"\n    }}\n  }}\n}}\n\n\
             provider \"libvirt\" {{\n  uri = \"{}\"\n}}\n\n\
             resource \"libvirt_volume\" \"v\" {{\n  name   = \"small.raw\"\n  pool   = \"{POOL}\"\n  source = \"{}\"\n  size   = 1048576\n}}\n",
            d.uri(),
            image.display()
        ),
    )
    .unwrap();
    let out = tf
        .cmd(work.path(), &cli)
        .args(["apply", "-auto-approve", "-no-color"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("smaller than the source's virtual size"),
        "{err}"
    );
    assert!(err.contains("size"), "{err}");
    assert!(!d.volumes(POOL).unwrap().contains(&"small.raw".to_string()));
}

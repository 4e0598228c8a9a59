//! Firmware, NVRAM, machine, graphics, video and boot order map to the
//! domain and read back without a diff; `running` changes in place; a
//! volume smaller than its image is refused on `size`.

use testbed::libvirtd::{Libvirtd, POOL};
use testbed::terraform::{header, TfProject};

fn hcl(d: &Libvirtd, running: bool) -> String {
    format!(
        r##"{header}resource "libvirt_domain" "uefi" {{
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
        header = header(&d.uri()),
        nvram = d.dir().join("uefi_VARS.fd").display(),
    )
}

#[test]
fn uefi_graphics_and_boot_order_apply_cleanly_and_running_changes_in_place() {
    let d = Libvirtd::start().unwrap();
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&hcl(&d, false));
    tf.apply();
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
    assert_eq!(tf.plan_code().0, 0);

    tf.write_main(&hcl(&d, true));
    let plan = tf.run(&["plan", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("1 to change, 0 to destroy"), "{text}");
    let uuid_before = d.virsh(&["domuuid", "uefi"]).unwrap();
    tf.apply();
    assert!(d.virsh(&["domstate", "uefi"]).unwrap().contains("running"));
    assert_eq!(
        d.virsh(&["domuuid", "uefi"]).unwrap(),
        uuid_before,
        "changed in place"
    );
    assert_eq!(tf.plan_code().0, 0);
    tf.destroy();
    assert!(d.domains().unwrap().is_empty());
}

#[test]
fn a_volume_smaller_than_its_image_is_refused_on_size() {
    let d = Libvirtd::start().unwrap();
    let image = d.dir().join("img.raw");
    std::fs::write(&image, vec![1u8; 2 << 20]).unwrap();
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&format!(
        "{}resource \"libvirt_volume\" \"v\" {{\n  name   = \"small.raw\"\n  pool   = \"{POOL}\"\n  source = \"{}\"\n  size   = 1048576\n}}\n",
        header(&d.uri()),
        image.display()
    ));
    let out = tf.run(&["apply", "-auto-approve", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("smaller than the source's virtual size"),
        "{err}"
    );
    assert!(err.contains("size"), "{err}");
    assert!(!d.volumes(POOL).unwrap().contains(&"small.raw".to_string()));
}

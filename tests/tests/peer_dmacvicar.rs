//! dmacvicar's terraform-provider-libvirt 0.8.3 (the version the seed
//! pins), built from its Go module, installs from a filesystem mirror and
//! applies a volume and a domain (type qemu: TCG) against the namespaced
//! libvirtd, which boots; destroy removes both.

use std::time::Duration;

use testbed::guest::{TinyGuest, READY};
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::peers::{dmacvicar_mirror_config, DMACVICAR_SOURCE, DMACVICAR_VERSION};
use testbed::terraform::{terraform, TfProject};

#[test]
fn dmacvicar_0_8_3_applies_a_volume_and_a_domain_and_destroys_them() {
    let guest = TinyGuest::ensure().unwrap();
    let bed = Libvirtd::start().unwrap();
    let tf = TfProject::new(terraform("1.11").unwrap()).unwrap();
    let cli = dmacvicar_mirror_config(tf.dir(), DMACVICAR_VERSION).unwrap();
    let tf = tf.with_cli_config(cli);
    let name = format!("dm-{}", std::process::id());
    // 0.8.3 gives a file console's path as a device source, which
    // libvirt stats before starting the domain: the file must exist.
    let console = bed.dir().join(format!("{name}.console.log"));
    std::fs::write(&console, "").unwrap();
    tf.write_main(&format!(
        r#"terraform {{
  required_providers {{
    libvirt = {{
      source  = "{DMACVICAR_SOURCE}"
      version = "{DMACVICAR_VERSION}"
    }}
  }}
}}

provider "libvirt" {{
  uri = "{uri}"
}}

resource "libvirt_volume" "disk" {{
  name   = "{name}.qcow2"
  pool   = "{POOL}"
  size   = 33554432
  format = "qcow2"
}}

resource "libvirt_domain" "vm" {{
  name    = "{name}"
  type    = "qemu"
  memory  = 256
  vcpu    = 1
  kernel  = "{kernel}"
  initrd  = "{initrd}"
  cmdline = [{{ "_" = "{cmdline}" }}]

  disk {{
    volume_id = libvirt_volume.disk.id
  }}

  network_interface {{
    network_name = "{NETWORK}"
  }}

  console {{
    type        = "file"
    target_port = "0"
    target_type = "serial"
    source_path = "{console}"
  }}
}}
"#,
        uri = bed.uri(),
        kernel = guest.kernel.display(),
        initrd = guest.initrd.display(),
        cmdline = guest.cmdline,
        console = console.display(),
    ));
    tf.ok(&["init", "-no-color"]);
    let lock = std::fs::read_to_string(tf.dir().join(".terraform.lock.hcl")).unwrap();
    assert!(
        lock.contains(&format!(
            "provider \"registry.terraform.io/{DMACVICAR_SOURCE}\""
        )) && lock.contains(&format!("version     = \"{DMACVICAR_VERSION}\"")),
        "{lock}"
    );
    tf.apply();
    assert!(bed.domains().unwrap().contains(&name));
    assert!(bed
        .volumes(POOL)
        .unwrap()
        .contains(&format!("{name}.qcow2")));
    let xml = bed.virsh(&["dumpxml", &name]).unwrap();
    assert!(xml.contains("type='qemu'"), "{xml}");
    Libvirtd::wait_for_text(&console, READY, Duration::from_secs(90)).unwrap();

    tf.destroy();
    assert!(!bed.domains().unwrap().contains(&name));
    assert!(!bed
        .volumes(POOL)
        .unwrap()
        .contains(&format!("{name}.qcow2")));
}

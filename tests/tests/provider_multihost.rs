//! HCL written the way the seed deploys agents: one aliased provider per
//! host, an image volume, a cloud-init disk and a domain per host, the
//! domain replaced when its image or its seed changes
//! (`replace_triggered_by`; without it a new seed only swaps the CD).
//! Terraform 1.15 applies it to two hosts; a new seed replaces the disk
//! and the domain, and the guest boots with the new seed.

use std::time::Duration;

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::terraform::{required_providers, TfProject};

fn host_block(alias: &str, d: &Libvirtd, g: &TinyGuest, image: &str) -> String {
    let serial = d.serial_log(&format!("agent-{alias}"));
    format!(
        r##"
provider "libvirt" {{
  alias = "{alias}"
  uri   = "{uri}"
}}

resource "libvirt_volume" "image_{alias}" {{
  provider = libvirt.{alias}
  name     = "agent-{alias}.raw"
  pool     = "{POOL}"
  source   = "{image}"
  format   = "raw"
}}

resource "libvirt_cloudinit_disk" "seed_{alias}" {{
  provider  = libvirt.{alias}
  name      = "agent-{alias}-seed.iso"
  pool      = "{POOL}"
  user_data = templatefile("${{path.module}}/user-data.tpl", {{ hostname = "agent-{alias}" }})
}}

resource "libvirt_domain" "agent_{alias}" {{
  provider  = libvirt.{alias}
  name      = "agent-{alias}"
  type      = "qemu"
  memory    = 256
  vcpu      = 1
  running   = true
  autostart = false
  kernel    = "{kernel}"
  initrd    = "{initrd}"
  cmdline   = [{{ "_" = "{cmdline}" }}]
  cloudinit = libvirt_cloudinit_disk.seed_{alias}.id

  cpu {{
    mode = "custom"
  }}

  disk {{
    volume_id = libvirt_volume.image_{alias}.id
  }}

  network_interface {{
    network_name = "{NETWORK}"
  }}

  console {{
    type        = "file"
    target_port = "0"
    target_type = "serial"
    source_path = "{serial}"
  }}

  lifecycle {{
    replace_triggered_by = [
      libvirt_volume.image_{alias}.id,
      libvirt_cloudinit_disk.seed_{alias}.id,
    ]
  }}
}}
"##,
        uri = d.uri(),
        kernel = g.kernel.display(),
        initrd = g.initrd.display(),
        cmdline = g.cmdline,
        serial = serial.display(),
    )
}

#[test]
fn seed_style_hcl_applies_to_two_aliased_hosts_and_follows_a_new_seed() {
    let g = TinyGuest::ensure().unwrap();
    let a = Libvirtd::start().unwrap();
    let b = Libvirtd::start().unwrap();
    let image = a.dir().join("agent.raw");
    std::fs::write(&image, vec![0u8; 4 << 20]).unwrap();
    let tf = TfProject::with_version("1.15").unwrap();
    let mut hcl = required_providers();
    hcl += &host_block("a", &a, &g, &image.display().to_string());
    hcl += &host_block("b", &b, &g, &image.display().to_string());
    tf.write_main(&hcl);
    tf.write(
        "user-data.tpl",
        "#cloud-config\nhostname: ${hostname}\nrelease: one\n",
    );

    tf.apply();
    for (d, alias) in [(&a, "a"), (&b, "b")] {
        let log = d.serial_log(&format!("agent-{alias}"));
        Libvirtd::wait_for_text(&log, "release: one", Duration::from_secs(120)).unwrap();
        assert!(d.domains().unwrap().contains(&format!("agent-{alias}")));
    }
    assert_eq!(tf.plan_code().0, 0);

    // A new seed replaces both cloud-init disks and, through
    // replace_triggered_by, both domains.
    tf.write(
        "user-data.tpl",
        "#cloud-config\nhostname: ${hostname}\nrelease: two\n",
    );
    let plan = tf.run(&["plan", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains(
            "libvirt_domain.agent_b will be replaced due to changes in replace_triggered_by"
        ),
        "{text}"
    );
    assert!(
        text.contains("4 to add, 0 to change, 4 to destroy"),
        "{text}"
    );
    let _ = std::fs::remove_file(b.serial_log("agent-b"));
    tf.apply();
    Libvirtd::wait_for_text(
        &b.serial_log("agent-b"),
        "release: two",
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(tf.plan_code().0, 0);

    tf.destroy();
    for d in [&a, &b] {
        assert!(d.domains().unwrap().is_empty());
        assert!(d
            .volumes(POOL)
            .unwrap()
            .iter()
            .all(|v| !v.starts_with("agent-")));
    }
}

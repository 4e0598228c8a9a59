//! The seed's resources as dmacvicar's provider 0.8.3 wrote them move to
//! ours, step by step as `provider/docs/index.md` tells users to migrate:
//! root volumes from a file `source`, cloud-init disks, and three domains
//! (an agent: `running = false`, bridge NIC, disk by `volume_id`,
//! `cloudinit`, `cpu { mode }`, `xml { xslt }`; an always-on VM:
//! `running = true`, `autostart = true`, memory as a string like the
//! seed's) and a UEFI one (`firmware`,
//! `nvram`, `machine = "q35"`) are applied by 0.8.3, then
//! 1. `required_providers` names `kvmbe/libvirt` (the version pin changes),
//! 2. `terraform state replace-provider dmacvicar/libvirt kvmbe/libvirt`,
//! 3. `terraform init`,
//! 4. `terraform plan` shows no changes.
//!
//! An apply afterwards keeps every id (nothing replaced) and the running
//! VM keeps running.

use std::process::Command;

use testbed::libvirtd::{Libvirtd, POOL};
use testbed::peers::{dmacvicar_mirror_config, DMACVICAR_SOURCE, DMACVICAR_VERSION};
use testbed::terraform::{terraform, TfProject};
use testbed::tools::{mirror_config, PROVIDER_SOURCE, PROVIDER_VERSION};

/// The bed's NAT network bridge, standing in for the seed's host bridge.
const BRIDGE: &str = "virbr-bed";

const XSLT: &str = r#"<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output omit-xml-declaration="yes" indent="yes"/>
  <xsl:template match="node()|@*">
    <xsl:copy><xsl:apply-templates select="node()|@*"/></xsl:copy>
  </xsl:template>
  <xsl:template match="/domain/devices">
    <xsl:copy>
      <xsl:apply-templates select="node()|@*"/>
      <memballoon model="none"/>
    </xsl:copy>
  </xsl:template>
  <xsl:template match="/domain/devices/memballoon"/>
</xsl:stylesheet>
"#;

/// The seed's Windows agents pin their CPU model by replacing the
/// `<cpu>` that 0.8.3 writes into every domain.
const WINDOWS_XSLT: &str = r#"<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output omit-xml-declaration="yes" indent="yes"/>
  <xsl:template match="node()|@*">
    <xsl:copy><xsl:apply-templates select="node()|@*"/></xsl:copy>
  </xsl:template>
  <xsl:template match="/domain/cpu">
    <cpu mode="custom" match="exact" check="none">
      <model fallback="forbid">Haswell-noTSX-IBRS</model>
    </cpu>
  </xsl:template>
</xsl:stylesheet>
"#;

struct Seed {
    uri: String,
    nvram: String,
    image: String,
    prefix: String,
}

fn hcl(source: &str, version: &str, s: &Seed) -> String {
    let Seed {
        uri,
        nvram,
        image,
        prefix,
    } = s;
    format!(
        r##"terraform {{
  required_providers {{
    libvirt = {{
      source  = "{source}"
      version = "{version}"
    }}
  }}
}}

provider "libvirt" {{
  uri = "{uri}"
}}

resource "libvirt_volume" "agent_root" {{
  name   = "{prefix}-agent-root.qcow2"
  pool   = "{POOL}"
  source = "{image}"
  format = "qcow2"
}}

resource "libvirt_cloudinit_disk" "agent_seed" {{
  name      = "{prefix}-agent-seed.iso"
  pool      = "{POOL}"
  user_data = "#cloud-config\nhostname: agent\n"
  meta_data = "instance-id: {prefix}-agent\nlocal-hostname: agent\n"
}}

resource "libvirt_domain" "agent" {{
  name      = "{prefix}-agent"
  type      = "qemu"
  memory    = 256
  vcpu      = 2
  running   = false
  autostart = false
  cloudinit = libvirt_cloudinit_disk.agent_seed.id

  cpu {{
    mode = "host-model"
  }}

  disk {{
    volume_id = libvirt_volume.agent_root.id
  }}

  network_interface {{
    bridge = "{BRIDGE}"
    mac    = "52:54:00:7a:00:01"
  }}

  xml {{
    xslt = <<-EOT
{XSLT}    EOT
  }}

  lifecycle {{
    replace_triggered_by = [libvirt_cloudinit_disk.agent_seed.id]
  }}
}}

resource "libvirt_domain" "windows" {{
  name     = "{prefix}-windows"
  type     = "qemu"
  memory   = 256
  vcpu     = 1
  running  = false
  machine  = "q35"
  firmware = "/usr/share/OVMF/OVMF_CODE.fd"

  nvram {{
    file     = "{nvram}"
    template = "/usr/share/OVMF/OVMF_VARS.fd"
  }}

  network_interface {{
    bridge = "{BRIDGE}"
  }}

  xml {{
    xslt = <<-EOT
{WINDOWS_XSLT}    EOT
  }}
}}

resource "libvirt_cloudinit_disk" "infra_seed" {{
  name           = "{prefix}-infra-seed.iso"
  pool           = "{POOL}"
  user_data      = "#cloud-config\nhostname: infra\n"
  network_config = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
}}

resource "libvirt_volume" "infra_root" {{
  name   = "{prefix}-infra-root.qcow2"
  pool   = "{POOL}"
  source = "{image}"
  format = "qcow2"
}}

resource "libvirt_domain" "infra" {{
  name      = "{prefix}-infra"
  type      = "qemu"
  memory    = "256"
  vcpu      = 1
  running   = true
  autostart = true
  cloudinit = libvirt_cloudinit_disk.infra_seed.id

  disk {{
    volume_id = libvirt_volume.infra_root.id
  }}

  network_interface {{
    bridge = "{BRIDGE}"
  }}
}}
"##
    )
}

fn ids(tf: &TfProject) -> Vec<(String, serde_json::Value)> {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tf.dir().join("terraform.tfstate")).unwrap())
            .unwrap();
    s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!(
                    "{}.{}",
                    r["type"].as_str().unwrap(),
                    r["name"].as_str().unwrap()
                ),
                r["instances"][0]["attributes"]["id"].clone(),
            )
        })
        .collect()
}

#[test]
fn seed_state_of_dmacvicar_0_8_3_migrates_and_plans_empty() {
    let bed = Libvirtd::start().unwrap();
    let image = bed.dir().join("base.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&image)
        .arg("32M")
        .status()
        .unwrap();
    assert!(made.success());
    let seed = Seed {
        uri: bed.uri(),
        nvram: bed.dir().join("windows_VARS.fd").display().to_string(),
        image: image.display().to_string(),
        prefix: format!("seed{}", std::process::id()),
    };
    let tf = TfProject::new(terraform("1.11").unwrap()).unwrap();
    let cli = dmacvicar_mirror_config(tf.dir(), DMACVICAR_VERSION).unwrap();
    let tf = tf.with_cli_config(cli);
    tf.write_main(&hcl(DMACVICAR_SOURCE, DMACVICAR_VERSION, &seed));
    tf.ok(&["init", "-no-color"]);
    // 0.8.3 makes the state users come with. One resource at a time: in
    // 1 of 9 runs under load its parallel apply (seed uploads beside a
    // UEFI define) stopped making progress for 10 minutes; how the state
    // was made does not matter to the migration.
    tf.ok(&["apply", "-auto-approve", "-no-color", "-parallelism=1"]);
    let before = ids(&tf);
    let infra = format!("{}-infra", seed.prefix);
    let agent = format!("{}-agent", seed.prefix);
    let running = bed.virsh(&["list", "--name"]).unwrap();
    assert!(running.lines().any(|l| l.trim() == infra), "{running}");
    assert!(!running.lines().any(|l| l.trim() == agent), "{running}");
    let seed_id = before
        .iter()
        .find(|(a, _)| a == "libvirt_cloudinit_disk.agent_seed")
        .unwrap()
        .1
        .clone();
    assert!(
        seed_id.as_str().unwrap().contains(';'),
        "0.8.3's cloud-init id is `<path>;<uuid>`: {seed_id}"
    );

    // 1. The provider's source and version pin change.
    tf.write_main(&hcl(PROVIDER_SOURCE, PROVIDER_VERSION, &seed));
    // 2. The state names the new provider.
    tf.ok(&[
        "state",
        "replace-provider",
        "-auto-approve",
        "-no-color",
        &format!("registry.terraform.io/{DMACVICAR_SOURCE}"),
        &format!("registry.terraform.io/{PROVIDER_SOURCE}"),
    ]);
    // 3. init installs ours (here from a mirror holding only ours).
    let ours = mirror_config(tf.dir()).unwrap();
    let tf = tf.with_cli_config(ours);
    tf.ok(&["init", "-no-color"]);
    // 4. The plan is empty.
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "0.8.3's seed state plans empty with ours:\n{plan}");
    let windows = format!("{}-windows", seed.prefix);
    let model = "<model fallback='forbid'>Haswell-noTSX-IBRS</model>";
    let xml = bed.virsh(&["dumpxml", "--inactive", &windows]).unwrap();
    assert!(xml.contains(model), "0.8.3 applied the stylesheet: {xml}");

    // Nothing is replaced by an apply either, and the VM keeps running.
    tf.apply();
    assert_eq!(ids(&tf), before);
    let running = bed.virsh(&["list", "--name"]).unwrap();
    assert!(running.lines().any(|l| l.trim() == infra), "{running}");
    assert!(!running.lines().any(|l| l.trim() == agent), "{running}");
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "plan after apply:\n{plan}");

    // Redefined by ours (a memory change is applied in place), the
    // Windows domain still gets the stylesheet's CPU model.
    tf.write_main(&hcl(PROVIDER_SOURCE, PROVIDER_VERSION, &seed).replacen(
        "memory   = 256\n  vcpu     = 1\n  running  = false\n  machine  = \"q35\"",
        "memory   = 320\n  vcpu     = 1\n  running  = false\n  machine  = \"q35\"",
        1,
    ));
    tf.apply();
    let xml = bed.virsh(&["dumpxml", "--inactive", &windows]).unwrap();
    assert!(xml.contains("<memory unit='KiB'>327680</memory>"), "{xml}");
    assert!(xml.contains(model), "ours applied the stylesheet: {xml}");
    assert_eq!(ids(&tf), before, "nothing replaced");

    tf.destroy();
    let domains = bed.domains().unwrap();
    assert!(
        !domains.contains(&infra) && !domains.contains(&agent),
        "{domains:?}"
    );
    let vols = bed.volumes(POOL).unwrap();
    assert!(
        !vols.iter().any(|v| v.starts_with(&seed.prefix)),
        "{vols:?}"
    );
}

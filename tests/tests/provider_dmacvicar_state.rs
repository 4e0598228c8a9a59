//! State written by dmacvicar's provider 0.8.3 moves to ours with
//! `terraform state replace-provider` and plans empty: its `libvirt_pool`
//! (schema version 0, directory in `target { path }`) upgrades to our
//! version 1, its `libvirt_volume` (attributes we do not have) is shaped to
//! our schema.

use testbed::libvirtd::Libvirtd;
use testbed::peers::{dmacvicar_mirror_config, DMACVICAR_SOURCE, DMACVICAR_VERSION};
use testbed::terraform::{terraform, TfProject};
use testbed::tools::{dev_overrides_config, PROVIDER_SOURCE};

fn hcl(source: &str, uri: &str, dir: &str) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    libvirt = {{
      source = "{source}"
    }}
  }}
}}

provider "libvirt" {{
  uri = "{uri}"
}}

resource "libvirt_pool" "images" {{
  name = "migrated"
  type = "dir"
  target {{
    path = "{dir}"
  }}
}}

resource "libvirt_volume" "disk" {{
  name   = "disk.qcow2"
  pool   = libvirt_pool.images.name
  size   = 33554432
  format = "qcow2"
}}
"#
    )
}

fn pool_of(tf: &TfProject) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tf.dir().join("terraform.tfstate")).unwrap())
            .unwrap();
    s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "libvirt_pool")
        .map(|r| r["instances"][0].clone())
        .unwrap()
}

#[test]
fn dmacvicar_state_replaces_provider_and_plans_empty() {
    let bed = Libvirtd::start().unwrap();
    let dir = bed.dir().join("migrated-pool").display().to_string();
    let tf = TfProject::new(terraform("1.11").unwrap()).unwrap();
    let cli = dmacvicar_mirror_config(tf.dir(), DMACVICAR_VERSION).unwrap();
    let tf = tf.with_cli_config(cli);
    tf.write_main(&hcl(DMACVICAR_SOURCE, &bed.uri(), &dir));
    tf.ok(&["init", "-no-color"]);
    tf.apply();
    let before = pool_of(&tf);
    assert_eq!(before["schema_version"], 0, "{before}");

    tf.write_main(&hcl(PROVIDER_SOURCE, &bed.uri(), &dir));
    tf.ok(&[
        "state",
        "replace-provider",
        "-auto-approve",
        &format!("registry.terraform.io/{DMACVICAR_SOURCE}"),
        &format!("registry.terraform.io/{PROVIDER_SOURCE}"),
    ]);
    let dev = dev_overrides_config(tf.dir()).unwrap();
    let tf = tf.with_cli_config(dev);
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "dmacvicar's state plans empty with ours:\n{plan}");

    tf.apply();
    let after = pool_of(&tf);
    assert_eq!(after["schema_version"], 1, "{after}");
    assert_eq!(after["attributes"]["path"], dir.as_str(), "{after}");
    assert_eq!(
        after["attributes"]["target"][0]["path"],
        dir.as_str(),
        "{after}"
    );
    assert_eq!(after["attributes"]["id"], before["attributes"]["id"]);
    tf.destroy();
    let pools = bed.virsh(&["pool-list", "--all", "--name"]).unwrap();
    assert!(!pools.lines().any(|l| l.trim() == "migrated"), "{pools}");
}

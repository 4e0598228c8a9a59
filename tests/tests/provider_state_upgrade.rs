//! `libvirt_pool` is at schema version 1. State of version 0, as the
//! provider built on `tf-provider` wrote it (recorded in
//! `tests/testdata/pool-v0.tfstate`), upgrades on the next plan: the plan is
//! empty, and the next apply stores version 1.
//!
//! The fixture was recorded with
//! `KVMBE_PROVIDER_V0_DIR=<dir holding that old terraform-provider-libvirt>
//! cargo test -p kvmbe-tests --test provider_state_upgrade -- --ignored`.

use std::path::{Path, PathBuf};

use testbed::libvirtd::Libvirtd;
use testbed::terraform::{header, TfProject};
use testbed::util::workspace_root;

const NAME: &str = "upgraded";

fn fixture() -> PathBuf {
    workspace_root().join("tests/testdata/pool-v0.tfstate")
}

fn hcl(d: &Libvirtd, dir: &Path) -> String {
    format!(
        "{}resource \"libvirt_pool\" \"p\" {{\n  name = \"{NAME}\"\n  type = \"dir\"\n  path = \"{}\"\n}}\n",
        header(&d.uri()),
        dir.display()
    )
}

fn state(p: &TfProject) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.dir().join("terraform.tfstate")).unwrap()).unwrap()
}

fn pool_instance(s: &serde_json::Value) -> &serde_json::Value {
    s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "libvirt_pool")
        .map(|r| &r["instances"][0])
        .expect("a libvirt_pool in the state")
}

#[test]
fn version_0_pool_state_upgrades_and_plans_empty() {
    let recorded = std::fs::read_to_string(fixture()).unwrap();
    for version in ["1.11", "1.15"] {
        let d = Libvirtd::start().unwrap();
        let dir = d.dir().join("upgraded-pool");
        let dir_s = dir.display().to_string();
        d.virsh(&["pool-define-as", NAME, "dir", "--target", &dir_s])
            .unwrap();
        d.virsh(&["pool-build", NAME]).unwrap();
        d.virsh(&["pool-start", NAME]).unwrap();
        let uuid = d.virsh(&["pool-uuid", NAME]).unwrap().trim().to_string();

        let p = TfProject::with_version(version).unwrap();
        p.write_main(&hcl(&d, &dir));
        p.write(
            "terraform.tfstate",
            &recorded.replace("@ID@", &uuid).replace("@PATH@", &dir_s),
        );
        assert_eq!(pool_instance(&state(&p))["schema_version"], 0);

        let (code, plan) = p.plan_code();
        assert_eq!(
            code, 0,
            "Terraform {version}: the upgraded state must plan empty:\n{plan}"
        );

        p.apply();
        let s = state(&p);
        let pool = pool_instance(&s);
        assert_eq!(pool["schema_version"], 1, "Terraform {version}: {s}");
        assert_eq!(pool["attributes"]["path"], dir_s.as_str());
        assert_eq!(pool["attributes"]["id"], uuid.as_str());
        assert_eq!(pool["attributes"]["target"], serde_json::json!([]));
        let (code, plan) = p.plan_code();
        assert_eq!(code, 0, "Terraform {version}: plan after apply:\n{plan}");
        p.destroy();
        assert!(!dir.exists(), "destroy removes the pool's directory");
    }
}

/// Records the fixture with the provider build from before schema
/// version 1; placeholders replace what differs between runs.
#[test]
#[ignore = "records tests/testdata/pool-v0.tfstate with an old provider build"]
fn record_pool_state_of_schema_version_0() {
    let old = std::env::var("KVMBE_PROVIDER_V0_DIR").expect("KVMBE_PROVIDER_V0_DIR");
    let d = Libvirtd::start().unwrap();
    let dir = d.dir().join("upgraded-pool");
    let p = TfProject::with_version("1.11").unwrap();
    // Point the project's dev_overrides at the old build.
    p.write(
        "dev.tfrc",
        &format!(
            "provider_installation {{\n  dev_overrides {{\n    \"{}\" = \"{old}\"\n  }}\n  direct {{}}\n}}\n",
            testbed::tools::PROVIDER_SOURCE
        ),
    );
    p.write_main(&hcl(&d, &dir));
    p.apply();
    let s = state(&p);
    let pool = pool_instance(&s);
    assert_eq!(pool["schema_version"], 0);
    let uuid = pool["attributes"]["id"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(p.dir().join("terraform.tfstate"))
        .unwrap()
        .replace(&uuid, "@ID@")
        .replace(&dir.display().to_string(), "@PATH@");
    std::fs::create_dir_all(fixture().parent().unwrap()).unwrap();
    std::fs::write(fixture(), text).unwrap();
    p.destroy();
}

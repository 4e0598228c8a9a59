//! A template kept inside libvirt by Terraform, then instantiated through
//! kvmhost as the launcher does: the instance runs on an overlay of the
//! base with its own seed, where `{{hostname}}` became its name.

use std::collections::BTreeMap;

use kvmhost::libvirt::domain::PowerState;
use kvmhost::libvirt::Host;
use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::terraform::{header, TfProject};

#[test]
fn a_template_applies_instantiates_imports_and_destroys() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    let base = d.dir().join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let hcl = format!(
        r##"{header}resource "libvirt_volume" "base" {{
  name   = "tmpl-base.raw"
  pool   = "{POOL}"
  source = "{base}"
}}

resource "libvirt_domain_template" "agent" {{
  name           = "agent-template"
  pool           = "{POOL}"
  base_volume_id = libvirt_volume.base.id
  type           = "qemu"
  memory         = 256
  kernel         = "{kernel}"
  initrd         = "{initrd}"
  cmdline        = "{cmdline}"
  network_name   = "{NETWORK}"
  user_data      = "#cloud-config\nhostname: {{{{hostname}}}}\n"
}}
"##,
        header = header(&d.uri()),
        base = base.display(),
        kernel = g.kernel.display(),
        initrd = g.initrd.display(),
        cmdline = g.cmdline,
    );
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&hcl);
    tf.apply();
    assert_eq!(tf.plan_code().0, 0);
    // State written before disks, firmware and cloud-init files were
    // added lacks their attributes: it still plans no change.
    forget_newer_attributes(&tf.dir().join("terraform.tfstate"));
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "{plan}");
    assert!(d.domains().unwrap().contains(&"agent-template".to_string()));
    // user_data (the agent token) is not in the XML every local user can read.
    let xml = d.virsh(&["dumpxml", "agent-template"]).unwrap();
    assert!(!xml.contains("#cloud-config"), "{xml}");

    let host = Host::open(&d.uri()).unwrap();
    let inst = host
        .instantiate("agent-template", "agent-1", &BTreeMap::new())
        .unwrap();
    assert_eq!(
        host.domain_status(&inst.uuid).unwrap().state,
        PowerState::Running
    );
    let seed = std::fs::read(&inst.seed_key).unwrap();
    let seed = String::from_utf8_lossy(&seed);
    assert!(
        seed.contains("hostname: agent-1"),
        "the seed holds the instance's name"
    );
    assert_eq!(
        host.volume_by_key(&inst.overlay_key).unwrap().backing_path,
        Some(host.volume(POOL, "tmpl-base.raw").unwrap().path)
    );
    host.remove_instance("agent-1").unwrap();
    assert!(!d.domains().unwrap().contains(&"agent-1".to_string()));

    tf.ok(&["state", "rm", "libvirt_domain_template.agent"]);
    tf.ok(&[
        "import",
        "-no-color",
        "libvirt_domain_template.agent",
        "agent-template",
    ]);
    // user_data cannot be told apart from the host's copy: it is stored there.
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "{plan}");

    tf.destroy();
    assert!(!d.domains().unwrap().contains(&"agent-template".to_string()));
    let vols = d.volumes(POOL).unwrap();
    assert!(
        !vols
            .iter()
            .any(|v| v.starts_with("tmpl") || v.starts_with("agent-1")),
        "{vols:?}"
    );
}

/// Removes from the template's stored state the attributes added after
/// the first release, as that release wrote it.
fn forget_newer_attributes(state: &std::path::Path) {
    let mut st: serde_json::Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    let mut found = false;
    for r in st["resources"].as_array_mut().unwrap() {
        if r["type"] != "libvirt_domain_template" {
            continue;
        }
        for i in r["instances"].as_array_mut().unwrap() {
            let attrs = i["attributes"].as_object_mut().unwrap();
            for k in [
                "disk",
                "firmware",
                "nvram_template",
                "network_model",
                "cpu_model",
                "qemu_agent",
                "xml",
                "cloudinit_files",
                "cloudinit_label",
            ] {
                assert!(attrs.remove(k).is_some(), "state has no {k}");
            }
            found = true;
        }
    }
    assert!(found, "no template in the state");
    std::fs::write(state, serde_json::to_vec_pretty(&st).unwrap()).unwrap();
}

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

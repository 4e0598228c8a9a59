//! A template kept inside libvirt by Terraform, then instantiated through
//! kvmhost as the launcher does: the instance runs on an overlay of the
//! base with its own seed, where `{{hostname}}` became its name.

use std::collections::BTreeMap;
use std::process::Output;

use kvmhost::libvirt::domain::PowerState;
use kvmhost::libvirt::Host;
use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::tools::{dev_overrides_config, terraforms, PROVIDER_SOURCE};

#[test]
fn a_template_applies_instantiates_imports_and_destroys() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    let base = d.dir().join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cli = dev_overrides_config(work.path()).unwrap();
    let tf = terraforms()
        .unwrap()
        .into_iter()
        .find(|t| t.version == "1.11")
        .unwrap();
    let hcl = format!(
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

resource "libvirt_volume" "base" {{
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
        uri = d.uri(),
        base = base.display(),
        kernel = g.kernel.display(),
        initrd = g.initrd.display(),
        cmdline = g.cmdline,
    );
    std::fs::write(work.path().join("main.tf"), hcl).unwrap();
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
    assert!(run(&["apply", "-auto-approve", "-no-color"])
        .status
        .success());
    let plan = run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.status.code(), Some(0));
    assert!(d.domains().unwrap().contains(&"agent-template".to_string()));

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

    assert!(run(&["state", "rm", "libvirt_domain_template.agent"])
        .status
        .success());
    assert!(run(&[
        "import",
        "-no-color",
        "libvirt_domain_template.agent",
        "agent-template"
    ])
    .status
    .success());
    // user_data cannot be told apart from the host's copy: it is stored there.
    let plan = run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.status.code(), Some(0));

    assert!(run(&["destroy", "-auto-approve", "-no-color"])
        .status
        .success());
    assert!(!d.domains().unwrap().contains(&"agent-template".to_string()));
    let vols = d.volumes(POOL).unwrap();
    assert!(
        !vols
            .iter()
            .any(|v| v.starts_with("tmpl") || v.starts_with("agent-1")),
        "{vols:?}"
    );
}

//! Domains whose power belongs to others, and changes made in place.
//!
//! `running = false`: the launcher starts the domain for a job and
//! powernap stops it; an apply while it runs (here with an unrelated
//! change) must leave it running, and plans stay empty.

use testbed::libvirtd::{Libvirtd, POOL};
use testbed::terraform::{header, terraform, TfProject};

fn agent(uri: &str, name: &str, autostart: bool, memory: u32, vcpu: u32) -> String {
    format!(
        r#"{header}resource "libvirt_volume" "root" {{
  name = "{name}.qcow2"
  pool = "{POOL}"
  size = 16777216
}}

resource "libvirt_domain" "agent" {{
  name      = "{name}"
  type      = "qemu"
  memory    = {memory}
  vcpu      = {vcpu}
  running   = false
  autostart = {autostart}

  disk {{
    volume_id = libvirt_volume.root.id
  }}
}}

output "id" {{
  value = libvirt_domain.agent.id
}}
"#,
        header = header(uri)
    )
}

fn state(bed: &Libvirtd, name: &str) -> String {
    bed.virsh(&["domstate", name]).unwrap().trim().to_string()
}

#[test]
fn apply_never_stops_a_domain_with_running_false() {
    let bed = Libvirtd::start().unwrap();
    let name = format!("power{}", std::process::id());
    let tf = TfProject::new(terraform("1.11").unwrap()).unwrap();
    tf.write_main(&agent(&bed.uri(), &name, false, 128, 1));
    tf.apply();
    assert_eq!(
        state(&bed, &name),
        "shut off",
        "running = false is not started"
    );

    // The launcher starts it for a job.
    bed.virsh(&["start", &name]).unwrap();
    assert_eq!(state(&bed, &name), "running");
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "a running agent plans no change:\n{plan}");

    // An unrelated change is applied while the job runs.
    tf.write_main(&agent(&bed.uri(), &name, true, 128, 1));
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.lines()
            .any(|l| l.contains("~ autostart") && l.contains("false -> true")),
        "{plan}"
    );
    assert!(
        !plan.contains("running"),
        "the plan touches no power:\n{plan}"
    );
    tf.apply();
    assert_eq!(
        state(&bed, &name),
        "running",
        "the apply left the job's VM running"
    );
    let auto = bed.virsh(&["dominfo", &name]).unwrap();
    assert!(
        auto.lines()
            .any(|l| l.starts_with("Autostart:") && l.contains("enable")),
        "{auto}"
    );
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "{plan}");

    // powernap stops it: still nothing to do.
    bed.virsh(&["destroy", &name]).unwrap();
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "{plan}");
    tf.destroy();
    assert!(!bed.domains().unwrap().contains(&name));
}

//! Domains whose power belongs to others, and changes made in place.
//!
//! `running = false`: the launcher starts the domain for a job and
//! powernap stops it; an apply while it runs (here with an unrelated
//! change) must leave it running, and plans stay empty.
//!
//! `memory`, `vcpu` and `cloudinit` change in place: the definition of a
//! running and a stopped domain, and live where libvirt can.

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

fn resized(uri: &str, tag: &str, memory: u32, vcpu: u32, seed: &str) -> String {
    format!(
        r##"{header}resource "libvirt_cloudinit_disk" "a" {{
  name      = "{tag}-a.iso"
  pool      = "{POOL}"
  user_data = "#cloud-config\nmessage: a\n"
}}

resource "libvirt_cloudinit_disk" "b" {{
  name      = "{tag}-b.iso"
  pool      = "{POOL}"
  user_data = "#cloud-config\nmessage: b\n"
}}

resource "libvirt_domain" "vm" {{
  name      = "{tag}-vm"
  type      = "qemu"
  memory    = {memory}
  vcpu      = {vcpu}
  cloudinit = libvirt_cloudinit_disk.{seed}.id
}}

resource "libvirt_domain" "stopped" {{
  name    = "{tag}-stopped"
  type    = "qemu"
  memory  = {memory}
  vcpu    = {vcpu}
  running = false
}}

output "ids" {{
  value = [libvirt_domain.vm.id, libvirt_domain.stopped.id]
}}
"##,
        header = header(uri)
    )
}

fn inactive_sizes(bed: &Libvirtd, name: &str) -> (String, String) {
    let xml = bed.virsh(&["dumpxml", "--inactive", name]).unwrap();
    let text = |tag: &str| {
        let start = xml.find(&format!("<{tag}")).unwrap();
        let rest = &xml[start..];
        let open = rest.find('>').unwrap() + 1;
        rest[open..].split('<').next().unwrap().to_string()
    };
    (text("memory"), text("vcpu"))
}

#[test]
fn memory_vcpu_and_cloudinit_change_in_place() {
    let bed = Libvirtd::start().unwrap();
    let tag = format!("size{}", std::process::id());
    let vm = format!("{tag}-vm");
    let stopped = format!("{tag}-stopped");
    let tf = TfProject::new(terraform("1.11").unwrap()).unwrap();
    tf.write_main(&resized(&bed.uri(), &tag, 128, 1, "a"));
    tf.apply();
    let ids = tf.ok(&["output", "-json", "ids"]);
    let qemu_id = bed.virsh(&["domid", &vm]).unwrap();
    assert_eq!(state(&bed, &vm), "running");

    // Less memory, one more vCPU, the other seed.
    tf.write_main(&resized(&bed.uri(), &tag, 96, 2, "b"));
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("Plan: 0 to add, 2 to change, 0 to destroy."),
        "memory, vcpu and cloudinit change in place:\n{plan}"
    );
    assert!(plan.contains("memory and vcpu change in place"), "{plan}");
    let out = tf.run(&["apply", "-auto-approve", "-no-color"]);
    assert!(out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Same domains, the running one never restarted.
    assert_eq!(tf.ok(&["output", "-json", "ids"]), ids);
    assert_eq!(
        bed.virsh(&["domid", &vm]).unwrap(),
        qemu_id,
        "not restarted"
    );
    assert_eq!(state(&bed, &vm), "running");
    assert_eq!(state(&bed, &stopped), "shut off");
    // Both definitions hold the new sizes.
    for name in [&vm, &stopped] {
        assert_eq!(
            inactive_sizes(&bed, name),
            ("98304".to_string(), "2".to_string()),
            "{name}"
        );
    }
    // The running domain: libvirt took the lower memory as the balloon
    // target without a word (the guest gives the memory back through its
    // balloon driver; this one runs no OS, so `Used memory` is not
    // checked); one vCPU more than it started with waits for the next
    // start, and the apply says so.
    assert!(!said.contains("MiB is more than"), "{said}");
    let info = bed.virsh(&["dominfo", &vm]).unwrap();
    assert!(
        info.lines()
            .any(|l| l.starts_with("CPU(s):") && l.trim_end().ends_with('1')),
        "{info}"
    );
    assert!(said.contains("Changed in the definition only"), "{said}");
    assert!(said.contains("2 vCPUs is more than"), "{said}");
    assert_eq!(
        said.matches("Changed in the definition only").count(),
        1,
        "{said}"
    );
    // The new seed is in the running domain's CD-ROM drive.
    let disks = bed.virsh(&["domblklist", &vm]).unwrap();
    assert!(disks.contains(&format!("{tag}-b.iso")), "{disks}");
    assert!(!disks.contains(&format!("{tag}-a.iso")), "{disks}");

    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "{plan}");
    tf.destroy();
}

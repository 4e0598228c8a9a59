//! OpenTofu, built from its Go module, installs our provider from a
//! filesystem mirror and runs `examples/quickstart` against the namespaced
//! libvirtd: init, plan, apply (the VM boots and reads its seed), a plan
//! with no changes, destroy.

use std::time::Duration;

use testbed::guest::{TinyGuest, READY};
use testbed::libvirtd::{Libvirtd, NETWORK};
use testbed::peers::opentofu;
use testbed::terraform::TfProject;
use testbed::util::workspace_root;

#[test]
fn opentofu_runs_the_quickstart_with_our_provider_from_a_mirror() {
    let tofu = opentofu().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let bed = Libvirtd::start().unwrap();
    let tf = TfProject::from_mirror(tofu).unwrap();
    let example = workspace_root().join("examples/quickstart");
    for name in ["main.tf", "variables.tf"] {
        std::fs::copy(example.join(name), tf.dir().join(name)).unwrap();
    }
    let console = bed.dir().join("quickstart-console.log");
    tf.write(
        "terraform.tfvars",
        &format!(
            "libvirt_uri = \"{}\"\nnetwork     = \"{NETWORK}\"\ndomain_type = \"qemu\"\n\
             pool_path   = \"{}\"\nkernel      = \"{}\"\ninitrd      = \"{}\"\n\
             cmdline     = \"{}\"\nconsole_log = \"{}\"\n",
            bed.uri(),
            bed.dir().join("quickstart-pool").display(),
            guest.kernel.display(),
            guest.initrd.display(),
            guest.cmdline,
            console.display()
        ),
    );

    let init = tf.ok(&["init", "-no-color"]);
    assert!(
        init.contains("OpenTofu has been successfully initialized"),
        "{init}"
    );
    let lock = std::fs::read_to_string(tf.dir().join(".terraform.lock.hcl")).unwrap();
    assert!(
        lock.contains("provider \"registry.opentofu.org/kvmbe/libvirt\""),
        "{lock}"
    );

    let (code, plan) = tf.plan_code();
    assert_eq!(code, 2, "the first plan has changes: {plan}");
    assert!(plan.contains("4 to add"), "{plan}");

    tf.apply();
    let (text, _) = Libvirtd::wait_for_text(&console, READY, Duration::from_secs(90)).unwrap();
    assert!(text.contains("hello from the quickstart VM"), "{text}");
    assert!(bed.domains().unwrap().contains(&"quickstart".to_string()));

    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "a plan after apply has no changes: {plan}");

    tf.destroy();
    assert!(!bed.domains().unwrap().contains(&"quickstart".to_string()));
    let pools = bed.virsh(&["pool-list", "--all", "--name"]).unwrap();
    assert!(!pools.lines().any(|l| l.trim() == "quickstart"), "{pools}");
}

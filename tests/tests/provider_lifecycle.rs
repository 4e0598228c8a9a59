//! The real Terraform (1.11 and 1.15) and OpenTofu drive our provider against the
//! namespaced libvirtd: plan, apply, an empty second plan, drift after a
//! domain is deleted outside Terraform, import, destroy; the domain boots
//! and its guest prints the cloud-init seed it was given.

use std::path::Path;
use std::time::Duration;

use testbed::guest::{TinyGuest, SEED_BEGIN};
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::terraform::{header, TfProject};
use testbed::tools::{terraforms, Terraform};

fn hcl(d: &Libvirtd, g: &TinyGuest, tag: &str, serial: &Path) -> String {
    format!(
        r##"{header}resource "libvirt_volume" "data" {{
  name = "{tag}-data.qcow2"
  pool = "{POOL}"
  size = 16777216
}}

resource "libvirt_cloudinit_disk" "seed" {{
  name      = "{tag}-seed.iso"
  pool      = "{POOL}"
  user_data = "#cloud-config\nmessage: hello-from-{tag}\n"
}}

resource "libvirt_domain" "vm" {{
  name      = "{tag}-vm"
  type      = "qemu"
  memory    = 256
  vcpu      = 1
  kernel    = "{kernel}"
  initrd    = "{initrd}"
  cmdline   = [{{ "_" = "{cmdline}" }}]
  cloudinit = libvirt_cloudinit_disk.seed.id

  disk {{
    volume_id = libvirt_volume.data.id
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
}}

output "domain_id" {{
  value = libvirt_domain.vm.id
}}
"##,
        header = header(&d.uri()),
        kernel = g.kernel.display(),
        initrd = g.initrd.display(),
        cmdline = g.cmdline,
        serial = serial.display(),
    )
}

fn lifecycle(d: &Libvirtd, g: &TinyGuest, tf: Terraform) {
    let tag = format!("tf{}", tf.version.replace('.', ""));
    let serial = d.serial_log(&format!("{tag}-vm"));
    let project = TfProject::new(tf).unwrap();
    project.write_main(&hcl(d, g, &tag, &serial));

    let (code, plan) = project.plan_code();
    assert_eq!(code, 2, "the first plan creates");
    assert!(plan.contains("3 to add"), "{plan}");

    project.apply();
    let (text, _) = Libvirtd::wait_for_text(
        &serial,
        &format!("hello-from-{tag}"),
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(text.contains(&format!("{SEED_BEGIN} user-data")), "{text}");
    assert!(d.domains().unwrap().contains(&format!("{tag}-vm")));

    let (code, plan) = project.plan_code();
    assert_eq!(code, 0, "a second plan is empty:\n{plan}");

    // Drift: the domain deleted outside Terraform is planned again.
    d.virsh(&["destroy", &format!("{tag}-vm")]).unwrap();
    d.virsh(&["undefine", &format!("{tag}-vm")]).unwrap();
    let (code, plan) = project.plan_code();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("libvirt_domain.vm will be created"), "{plan}");
    project.apply();

    // Import: forget the domain, import it by UUID, and the plan is empty.
    let id = project.ok(&["output", "-raw", "domain_id"]);
    project.ok(&["state", "rm", "libvirt_domain.vm"]);
    project.ok(&["import", "-no-color", "libvirt_domain.vm", id.trim()]);
    let (code, plan) = project.plan_code();
    assert_eq!(code, 0, "the plan after import is empty:\n{plan}");

    // Drift: memory changed and a volume removed outside Terraform.
    d.virsh(&["setmaxmem", &format!("{tag}-vm"), "300M", "--config"])
        .unwrap();
    let (code, plan) = project.plan_code();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("~ memory")
            && plan.contains("update in-place")
            && !plan.contains("forces replacement"),
        "memory changes in place:\n{plan}"
    );
    d.virsh(&["vol-delete", "--pool", POOL, &format!("{tag}-data.qcow2")])
        .unwrap();
    let (code, plan) = project.plan_code();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("libvirt_volume.data will be created"),
        "{plan}"
    );

    project.destroy();
    assert!(!d.domains().unwrap().contains(&format!("{tag}-vm")));
    let vols = d.volumes(POOL).unwrap();
    assert!(
        !vols.iter().any(|v| v.starts_with(&tag)),
        "volumes left: {vols:?}"
    );
}

#[test]
fn terraform_plans_applies_detects_drift_imports_and_destroys() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    for tf in terraforms().unwrap() {
        lifecycle(&d, &g, tf);
    }
}

#[test]
fn opentofu_plans_applies_detects_drift_imports_and_destroys() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    lifecycle(&d, &g, testbed::peers::opentofu().unwrap());
}

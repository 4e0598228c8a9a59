//! OpenTofu drives the provider like Terraform: its go-plugin client passes
//! the required client certificate, and a pool, a volume from a source
//! (private state), a cloud-init seed (sensitive) and a data source apply,
//! plan empty, import and destroy.
//!
//! OpenTofu is the test bed's peer build (`testbed::peers::opentofu`).

use testbed::libvirtd::{Libvirtd, POOL};
use testbed::peers::opentofu;
use testbed::terraform::{header, TfProject};

#[test]
fn opentofu_applies_plans_empty_imports_and_destroys() {
    let tofu = opentofu().unwrap();
    let d = Libvirtd::start().unwrap();
    let pool_dir = d.dir().join("tofu-pool");
    let source = d.dir().join("src.raw");
    std::fs::write(&source, vec![0x5a; 64 << 10]).unwrap();
    let hcl = format!(
        "{}resource \"libvirt_pool\" \"p\" {{\n  name = \"tofu\"\n  type = \"dir\"\n  path = \"{}\"\n}}\n\n\
         resource \"libvirt_volume\" \"disk\" {{\n  name   = \"disk.raw\"\n  pool   = libvirt_pool.p.name\n  source = \"{}\"\n}}\n\n\
         resource \"libvirt_cloudinit_disk\" \"seed\" {{\n  name      = \"seed.iso\"\n  pool      = \"{POOL}\"\n  user_data = \"#cloud-config\\n\"\n}}\n\n\
         data \"libvirt_node_info\" \"host\" {{}}\n\n\
         output \"cpus\" {{\n  value = data.libvirt_node_info.host.cpus\n}}\n",
        header(&d.uri()),
        pool_dir.display(),
        source.display()
    );
    let tf = TfProject::new(tofu).unwrap();
    tf.write_main(&hcl);
    let out = tf.apply();
    assert!(out.contains("cpus"), "{out}");
    assert_eq!(d.volumes("tofu").unwrap(), vec!["disk.raw".to_string()]);
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "{plan}");
    tf.ok(&["state", "rm", "libvirt_pool.p"]);
    tf.ok(&["import", "libvirt_pool.p", "tofu"]);
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "after import: {plan}");
    tf.destroy();
    assert!(!pool_dir.exists());
}

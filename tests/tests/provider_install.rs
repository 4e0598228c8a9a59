//! The provider installs as users install it: from a filesystem mirror,
//! by `terraform init` of both Terraform versions, which writes a lock
//! file; the data sources then read the host.

use testbed::libvirtd::Libvirtd;
use testbed::terraform::{pinned_required_providers, provider, TfProject};
use testbed::tools::{terraforms, PROVIDER_SOURCE};

#[test]
fn terraform_init_installs_from_a_mirror_and_reads_node_info() {
    let d = Libvirtd::start().unwrap();
    for tf in terraforms().unwrap() {
        let tf = TfProject::from_mirror(tf).unwrap();
        tf.write_main(&format!(
            "{}\n{}\n\
             data \"libvirt_node_info\" \"host\" {{}}\n\n\
             output \"cpus\" {{\n  value = data.libvirt_node_info.host.cpus\n}}\n",
            pinned_required_providers(),
            provider(&d.uri())
        ));
        tf.ok(&["init", "-no-color"]);
        let lock = std::fs::read_to_string(tf.dir().join(".terraform.lock.hcl")).unwrap();
        assert!(lock.contains(PROVIDER_SOURCE), "{lock}");
        tf.apply();
        let cpus: u32 = tf.ok(&["output", "-raw", "cpus"]).trim().parse().unwrap();
        assert!(cpus > 0);
    }
}

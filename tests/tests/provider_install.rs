//! The provider installs as users install it: from a filesystem mirror,
//! by `terraform init` of both Terraform versions, which writes a lock
//! file; the data sources then read the host.

use testbed::libvirtd::Libvirtd;
use testbed::tools::{mirror_config, terraforms, PROVIDER_SOURCE, PROVIDER_VERSION};

#[test]
fn terraform_init_installs_from_a_mirror_and_reads_node_info() {
    let d = Libvirtd::start().unwrap();
    for tf in terraforms().unwrap() {
        let work = tempfile::tempdir().unwrap();
        let cli = mirror_config(work.path()).unwrap();
        std::fs::write(
            work.path().join("main.tf"),
            format!(
                "terraform {{\n  required_providers {{\n    libvirt = {{\n      source  = \"{PROVIDER_SOURCE}\"\n      version = \"{PROVIDER_VERSION}\"\n    }}\n  }}\n}}\n\n\
                 provider \"libvirt\" {{\n  uri = \"{}\"\n}}\n\n\
                 data \"libvirt_node_info\" \"host\" {{}}\n\n\
                 output \"cpus\" {{\n  value = data.libvirt_node_info.host.cpus\n}}\n",
                d.uri()
            ),
        )
        .unwrap();
        let out = tf
            .cmd(work.path(), &cli)
            .args(["init", "-no-color"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            tf.version,
            String::from_utf8_lossy(&out.stderr)
        );
        let lock = std::fs::read_to_string(work.path().join(".terraform.lock.hcl")).unwrap();
        assert!(lock.contains(PROVIDER_SOURCE), "{lock}");
        let out = tf
            .cmd(work.path(), &cli)
            .args(["apply", "-auto-approve", "-no-color"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            tf.version,
            String::from_utf8_lossy(&out.stderr)
        );
        let out = tf
            .cmd(work.path(), &cli)
            .args(["output", "-raw", "cpus"])
            .output()
            .unwrap();
        let cpus: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(cpus > 0);
    }
}

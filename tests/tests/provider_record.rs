//! Records what real Terraform sends the provider and what it answered, as
//! protobuf bytes, into `tfplugin/testdata/terraform-<version>/`: the test
//! vectors of the `tfplugin` crate's unit tests. Run it again when the
//! protocol layer or the Terraform versions change:
//! `cargo test -p kvmbe-tests --test provider_record -- --ignored`.

use testbed::libvirtd::{Libvirtd, POOL};
use testbed::terraform::{header, TfProject};
use testbed::util::workspace_root;

#[test]
#[ignore = "records tfplugin/testdata; run by hand"]
fn record_terraform_exchanges() {
    for version in ["1.11", "1.15"] {
        let out = workspace_root().join(format!("tfplugin/testdata/terraform-{version}"));
        let _ = std::fs::remove_dir_all(&out);
        // Terraform passes its environment on to the provider it starts.
        std::env::set_var("TFPLUGIN_RECORD_DIR", &out);
        let d = Libvirtd::start().unwrap();
        let pool_dir = d.dir().join("rec-pool");
        // A volume from a source keeps private state (the source's size and
        // time) that Terraform hands back on each read.
        let source = d.dir().join("src.raw");
        std::fs::write(&source, vec![0x5a; 64 << 10]).unwrap();
        let hcl = format!(
            "{}resource \"libvirt_pool\" \"rec\" {{\n  name = \"rec\"\n  type = \"dir\"\n  path = \"{}\"\n}}\n\n\
             resource \"libvirt_volume\" \"disk\" {{\n  name   = \"disk.raw\"\n  pool   = libvirt_pool.rec.name\n  source = \"{}\"\n}}\n\n\
             resource \"libvirt_cloudinit_disk\" \"seed\" {{\n  name      = \"seed.iso\"\n  pool      = \"{POOL}\"\n  user_data = \"#cloud-config\\n\"\n}}\n\n\
             data \"libvirt_node_info\" \"host\" {{}}\n",
            header(&d.uri()),
            pool_dir.display(),
            source.display()
        );
        let tf = TfProject::with_version(version).unwrap();
        tf.write_main(&hcl);
        tf.apply();
        let (code, plan) = tf.plan_code();
        assert_eq!(code, 0, "{plan}");
        tf.ok(&["state", "rm", "libvirt_pool.rec"]);
        tf.ok(&["import", "libvirt_pool.rec", "rec"]);
        tf.destroy();
        std::env::remove_var("TFPLUGIN_RECORD_DIR");
        let n = std::fs::read_dir(&out).unwrap().count();
        assert!(n > 20, "only {n} files recorded in {}", out.display());
        // One schema answer is enough (each provider start asks again).
        let mut schemas: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("-GetProviderSchema."))
            .collect();
        schemas.sort();
        for p in schemas.into_iter().skip(2) {
            std::fs::remove_file(p).unwrap();
        }
    }
}

//! The real Terraform (1.11 and 1.15) and Packer (1.6.6) run here.

use testbed::tools::{packer_without_plugins, terraforms};

#[test]
fn terraform_1_11_and_1_15_report_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let tfs = terraforms().unwrap();
    for tf in &tfs {
        let out = tf
            .cmd(dir.path(), std::path::Path::new("/dev/null"))
            .arg("version")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.starts_with(&format!("Terraform v{}.", tf.version)),
            "{text}"
        );
    }
    assert_eq!(tfs.len(), 2);
}

#[test]
fn packer_1_6_6_reports_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = packer_without_plugins(dir.path())
        .unwrap()
        .arg("version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Packer v1.6.6");
}

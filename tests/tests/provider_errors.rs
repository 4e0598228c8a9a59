//! libvirt's own errors reach the user on the attribute they concern.

use testbed::libvirtd::{Libvirtd, NETWORK};
use testbed::terraform::{header, TfProject};

#[test]
fn a_network_that_does_not_exist_is_reported_on_its_network_name() {
    let d = Libvirtd::start().unwrap();
    let hcl = format!(
        "{}resource \"libvirt_domain\" \"vm\" {{\n  name   = \"netless\"\n  type   = \"qemu\"\n  memory = 64\n\n  network_interface {{\n    network_name = \"{NETWORK}\"\n  }}\n\n  network_interface {{\n    network_name = \"no-such-net\"\n  }}\n}}\n",
        header(&d.uri())
    );
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&hcl);
    let out = tf.run(&["apply", "-auto-approve", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // libvirt's message, not a lookup of the domain that was removed.
    assert!(err.contains("no-such-net"), "{err}");
    assert!(!err.contains("does not exist on the host"), "{err}");
    // Terraform shows the offending line when the diagnostic names it.
    assert!(err.contains("network_name = \"no-such-net\""), "{err}");
    // Nothing is left behind.
    assert!(!d.domains().unwrap().iter().any(|n| n == "netless"));
}

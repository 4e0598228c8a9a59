//! The host key is always verified: a host whose key does not match the
//! given known_hosts is refused, and a known_hosts the transport would
//! ignore (`qemu+ssh://`, which runs OpenSSH) is refused up front.

use testbed::hosts::Lab;
use testbed::terraform::{required_providers, TfProject};

fn config(uri: &str, lab: &Lab, known_hosts: &std::path::Path) -> String {
    format!(
        "{}\nprovider \"libvirt\" {{\n  uri         = \"{uri}\"\n  keyfile     = \"{}\"\n  known_hosts = \"{}\"\n}}\n\n\
         data \"libvirt_node_info\" \"n\" {{}}\n",
        required_providers(),
        lab.keyfile().display(),
        known_hosts.display()
    )
}

#[test]
fn a_host_whose_key_does_not_match_is_refused_on_every_transport() {
    let mut lab = Lab::new().unwrap();
    let ip = lab.add_host("impostor", true).unwrap().ip;
    // A known_hosts that pins some other key for the host's address.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut f = pubkey.split_whitespace();
    let wrong = dir.path().join("known_hosts");
    std::fs::write(
        &wrong,
        format!("{ip} {} {}\n", f.next().unwrap(), f.next().unwrap()),
    )
    .unwrap();

    // libssh reads known_hosts and refuses the mismatch.
    let tf = TfProject::with_version("1.11").unwrap();
    let uri = format!("qemu+libssh://root@{ip}/system?sshauth=privkey");
    tf.write_main(&config(&uri, &lab, &wrong));
    let out = tf.run_in(lab.client(), &["plan", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "connected to a host with the wrong key"
    );
    assert!(err.to_lowercase().contains("host key"), "{err}");

    // The right key connects (so the refusal above was the key's doing).
    tf.write_main(&config(&uri, &lab, &lab.known_hosts()));
    let out = tf.run_in(lab.client(), &["plan", "-no-color"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // OpenSSH's transport would ignore the file: refused, naming the fix.
    let uri = format!("qemu+ssh://root@{ip}/system");
    tf.write_main(&config(&uri, &lab, &wrong));
    let out = tf.run_in(lab.client(), &["plan", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("known_hosts") && err.contains("qemu+libssh://"),
        "{err}"
    );
}

//! Hosts reached over `qemu+libssh://` with a pinned host key, woken by
//! the provider's `wake {}` block: a sleeping host is woken by
//! `terraform apply`; a host that never wakes fails the apply within the
//! timeout, naming the host.

use std::time::{Duration, Instant};

use testbed::hosts::Lab;
use testbed::libvirtd::POOL;
use testbed::terraform::{header, required_providers, TfProject};

fn config(uri: &str, lab: &Lab, mac: &str, timeout: u32) -> String {
    format!(
        r#"{required_providers}
provider "libvirt" {{
  uri         = "{uri}"
  keyfile     = "{key}"
  known_hosts = "{kh}"

  wake {{
    mac       = "{mac}"
    broadcast = "{bcast}"
    timeout   = {timeout}
  }}
}}

resource "libvirt_volume" "v" {{
  name = "woken.qcow2"
  pool = "{POOL}"
  size = 1048576
}}
"#,
        required_providers = required_providers(),
        key = lab.keyfile().display(),
        kh = lab.known_hosts().display(),
        bcast = lab.broadcast(),
    )
}

#[test]
fn apply_wakes_a_sleeping_host_and_reaches_it_over_ssh() {
    let mut lab = Lab::new().unwrap();
    let (ip, mac) = {
        let h = lab.add_host("sleepy", false).unwrap();
        (h.ip, h.mac.clone())
    };
    assert!(!lab.hosts()[0].is_awake());
    let tf = TfProject::with_version("1.11").unwrap();
    let uri = format!("qemu+libssh://root@{ip}/system?sshauth=privkey");
    tf.write_main(&config(&uri, &lab, &mac, 60));

    let t0 = Instant::now();
    let out = tf.run_in(lab.client(), &["apply", "-auto-approve", "-no-color"]);
    eprintln!("apply with wake-up took {:?}", t0.elapsed());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("libvirt's libssh transport is unreliable for volume transfers"),
        "a qemu+libssh:// host gets the warning: {text}"
    );
    assert!(lab.hosts()[0].is_awake());
    let vols = lab.hosts()[0].daemon().volumes(POOL).unwrap();
    assert!(vols.contains(&"woken.qcow2".to_string()), "{vols:?}");

    let out = tf.run_in(lab.client(), &["destroy", "-auto-approve", "-no-color"]);
    assert!(out.status.success());
}

#[test]
fn a_host_that_never_wakes_fails_within_the_timeout_naming_it() {
    let mut lab = Lab::new().unwrap();
    let ip = lab.add_host("gone", false).unwrap().ip;
    let tf = TfProject::with_version("1.11").unwrap();
    let uri = format!("qemu+libssh://root@{ip}/system?sshauth=privkey");
    // Nobody listens for this MAC: the host stays asleep.
    tf.write_main(&config(&uri, &lab, "52:54:00:de:ad:01", 5));
    let t0 = Instant::now();
    let out = tf.run_in(lab.client(), &["apply", "-auto-approve", "-no-color"]);
    let took = t0.elapsed();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not wake up"), "{err}");
    assert!(err.contains(&ip.to_string()), "{err}");
    assert!(took < Duration::from_secs(40), "took {took:?}");
    assert!(!lab.hosts()[0].is_awake());
}

#[test]
fn a_host_no_resource_uses_is_not_woken() {
    let mut lab = Lab::new().unwrap();
    let (ip, mac) = {
        let h = lab.add_host("idle", false).unwrap();
        (h.ip, h.mac.clone())
    };
    let local = testbed::libvirtd::Libvirtd::start().unwrap();
    let tf = TfProject::with_version("1.11").unwrap();
    let uri = format!("qemu+libssh://root@{ip}/system?sshauth=privkey");
    // The sleeping host is a second, aliased provider that nothing uses.
    let mut hcl = format!(
        "{}resource \"libvirt_volume\" \"v\" {{\n  name = \"woken.qcow2\"\n  pool = \"{POOL}\"\n  size = 1048576\n}}\n",
        header(&local.uri())
    );
    hcl += &format!(
        "\nprovider \"libvirt\" {{\n  alias       = \"idle\"\n  uri         = \"{uri}\"\n  keyfile     = \"{}\"\n  known_hosts = \"{}\"\n\n  wake {{\n    mac       = \"{mac}\"\n    broadcast = \"{}\"\n  }}\n}}\n",
        lab.keyfile().display(),
        lab.known_hosts().display(),
        lab.broadcast()
    );
    tf.write_main(&hcl);
    let out = tf.run_in(lab.client(), &["apply", "-auto-approve", "-no-color"]);
    assert!(out.status.success());
    assert!(local
        .volumes(POOL)
        .unwrap()
        .contains(&"woken.qcow2".to_string()));
    // Long enough for a wake sent by mistake to show (bed hosts wake within 1 s).
    std::thread::sleep(Duration::from_secs(2));
    assert!(!lab.hosts()[0].is_awake(), "the unused host was woken");
    let out = tf.run_in(lab.client(), &["destroy", "-auto-approve", "-no-color"]);
    assert!(out.status.success());
}

//! The namespaced libvirtd: it answers, has its pool and NAT network, and
//! leaves nothing behind, not even in the host's networking.

use std::process::Command;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::netns::run;

fn host_networking() -> String {
    let mut s = String::new();
    for argv in [
        &["ip", "route"][..],
        &["ip", "-br", "link"],
        &["iptables-save"],
        &["sysctl", "net.ipv4.ip_forward"],
    ] {
        s += &run(Command::new(argv[0]).args(&argv[1..])).unwrap_or_default();
    }
    // Counters move with traffic; the rules themselves must not.
    s.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_daemon_comes_up_with_pool_and_network_and_leaves_nothing() {
    let before = host_networking();
    let (dir, ns) = {
        let d = Libvirtd::start().unwrap();
        assert!(d.virsh(&["pool-info", POOL]).unwrap().contains("running"));
        assert!(d
            .virsh(&["net-info", NETWORK])
            .unwrap()
            .contains("Active:         yes"));
        let fwd = d
            .netns()
            .run(&["sysctl", "-n", "net.ipv4.ip_forward"])
            .unwrap();
        assert_eq!(fwd.trim(), "1", "NAT forwarding is on inside the namespace");
        (d.dir().to_path_buf(), d.netns().name().to_string())
    };
    assert!(!dir.exists(), "{} is left", dir.display());
    let nss = run(Command::new("ip").args(["netns", "list"])).unwrap();
    assert!(!nss.contains(&ns), "namespace {ns} is left");
    assert_eq!(host_networking(), before, "the host's networking changed");
}

//! VM hosts on the lab LAN: reachable over `qemu+ssh` with a pinned host
//! key, a sleeping host wakes on a Wake-on-LAN magic packet, and a napping
//! host's powernapd puts it back to sleep once no domain runs.

use std::time::Duration;
use testbed::hosts::Lab;

/// Sends a magic packet for `mac` to the LAN broadcast from the client
/// namespace, laid out by hand so the bed does not test our code with our code.
fn send_magic_packet(lab: &Lab, mac: &str) {
    let script = format!(
        "import socket\n\
         mac = bytes.fromhex('{}')\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n\
         s.sendto(b'\\xff' * 6 + mac * 16, ('{}', 9))\n",
        mac.replace(':', ""),
        lab.broadcast()
    );
    lab.client().run(&["python3", "-c", &script]).unwrap();
}

fn virsh_over_ssh(lab: &Lab, uri: &str) -> anyhow::Result<String> {
    lab.client()
        .run(&["virsh", "-c", uri, "-q", "pool-list", "--name"])
}

#[test]
fn an_awake_host_answers_qemu_ssh_with_its_pinned_key() {
    let mut lab = Lab::new().unwrap();
    lab.add_host("h1", true).unwrap();
    let host = &lab.hosts()[0];
    let pools = virsh_over_ssh(&lab, &lab.ssh_uri(host)).unwrap();
    assert_eq!(pools.trim(), "bed");

    // A host key that does not match the pinned one is refused.
    std::fs::write(
        lab.known_hosts(),
        std::fs::read_to_string(lab.known_hosts())
            .unwrap()
            .replace(&host.ip.to_string(), "10.77.0.99"),
    )
    .unwrap();
    let err = virsh_over_ssh(&lab, &lab.ssh_uri(host)).unwrap_err();
    assert!(err.to_string().contains("was not accepted"), "{err}");
}

#[test]
fn a_sleeping_host_wakes_on_a_magic_packet_and_answers_qemu_ssh() {
    let mut lab = Lab::new().unwrap();
    lab.add_host("sleepy", false).unwrap();
    let host = &lab.hosts()[0];
    assert!(!host.is_awake());
    assert!(virsh_over_ssh(&lab, &lab.ssh_uri(host)).is_err());

    send_magic_packet(&lab, &host.mac);
    let took = host.wait_awake(Duration::from_secs(1)).unwrap();
    eprintln!("host woke {took:?} after the magic packet was sent");
    let pools = virsh_over_ssh(&lab, &lab.ssh_uri(host)).unwrap();
    assert_eq!(pools.trim(), "bed");
}

#[test]
fn a_napping_host_sleeps_when_no_domain_runs_and_wakes_again() {
    let mut lab = Lab::new().unwrap();
    lab.add_napping_host("nappy", true, Duration::from_secs(2))
        .unwrap();
    let host = &lab.hosts()[0];
    assert_eq!(
        virsh_over_ssh(&lab, &lab.ssh_uri(host)).unwrap().trim(),
        "bed"
    );

    // Asleep: no address (a connection would hang until TCP gives up,
    // as with a real sleeping machine that clients still know the MAC of).
    host.let_nap();
    let took = host.wait_asleep(Duration::from_secs(20)).unwrap();
    eprintln!("asleep {took:?} after the bed let it nap");

    // Woken, it stays up while a domain runs and sleeps again after.
    host.hold_awake().unwrap();
    send_magic_packet(&lab, &host.mac);
    host.wait_awake(Duration::from_secs(10)).unwrap();
    assert_eq!(
        virsh_over_ssh(&lab, &lab.ssh_uri(host)).unwrap().trim(),
        "bed"
    );
    let xml = "<domain type='qemu'><name>busy</name><memory unit='MiB'>64</memory>\
               <os><type arch='x86_64'>hvm</type></os></domain>";
    let path = host.daemon().dir().join("busy.xml");
    std::fs::write(&path, xml).unwrap();
    host.daemon()
        .virsh(&["create", &path.to_string_lossy(), "--paused"])
        .unwrap();
    host.let_nap();
    // Two and a half idle times: long enough for a host that ignored the
    // domain to have gone to sleep.
    std::thread::sleep(Duration::from_secs(5));
    assert!(host.is_awake(), "the host slept while a domain ran");
    host.daemon().virsh(&["destroy", "busy"]).unwrap();
    let took = host.wait_asleep(Duration::from_secs(20)).unwrap();
    eprintln!("asleep {took:?} after its last domain stopped");
}

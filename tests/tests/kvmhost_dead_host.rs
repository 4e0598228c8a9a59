//! A host that vanishes while a connection to it is open (powered off,
//! cable pulled: no FIN, no RST) fails the next libvirt call within
//! libvirt's keepalive window instead of blocking it for as long as TCP
//! retries, which is a hung `terraform apply`, Packer build or launcher.

use std::time::{Duration, Instant};

use kvmhost::libvirt::Host;
use testbed::hosts::Lab;

#[test]
fn a_call_to_a_host_that_vanished_fails_within_half_a_minute() {
    let mut lab = Lab::new().unwrap();
    lab.add_host("gone", true).unwrap();
    let host = &lab.hosts()[0];
    host.wait_awake(Duration::from_secs(20)).unwrap();
    let uri = lab.ssh_uri(host);
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let _worker = lab
        .client()
        .spawn_in(move || {
            let h = Host::open(&uri).expect("the awake host answers");
            tx.send(
                h.node_info()
                    .map(|_| Duration::ZERO)
                    .map_err(|e| e.to_string()),
            )
            .unwrap();
            go_rx.recv().unwrap();
            let t0 = Instant::now();
            let r = h
                .node_info()
                .map(|_| t0.elapsed())
                .map_err(|e| (e.to_string(), t0.elapsed()));
            let _ = tx.send(r.map_err(|(e, t)| format!("{e} after {t:?}")));
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the first call returns")
        .expect("the first call succeeds");

    // The host drops off the LAN without closing anything.
    host.daemon()
        .netns()
        .run(&["ip", "link", "set", "eth0", "down"])
        .unwrap();
    let t0 = Instant::now();
    go_tx.send(()).unwrap();
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(e)) => {
            let waited = t0.elapsed();
            eprintln!("the call failed after {waited:?}: {e}");
            assert!(waited < Duration::from_secs(35), "{waited:?}");
        }
        Ok(Ok(t)) => panic!("a call to a host off the LAN succeeded after {t:?}"),
        Err(_) => panic!("the call to a vanished host still blocks after 60 s"),
    }
}

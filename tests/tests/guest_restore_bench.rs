//! How long the agent's program takes to start in the tiny guest before
//! and after the guest is saved and restored (under TCG, a restored QEMU
//! has none of the code it translated before the save): a benchmark,
//! run by hand.
//!
//! `cargo test -p kvmbe-tests --test guest_restore_bench -- --ignored --nocapture`

use std::time::Duration;

use kvmhost::libvirt::instance::InstanceSpec;
use kvmhost::libvirt::Host;
use testbed::guest::TinyGuest;
use testbed::hosts::Lab;
use testbed::launcher::define_agent_template_sized;
use testbed::libvirtd::Libvirtd;
use testbed::peers::buildkite_agent;

/// Runs `buildkite-agent --version` every 3 s, printing how long each
/// run took by the guest's uptime clock.
const USER_DATA: &str = "#!/bin/sh\n\
i=0\n\
while true; do\n\
  i=$((i+1))\n\
  a=$(cut -d' ' -f1 /proc/uptime)\n\
  buildkite-agent --version >/dev/null\n\
  b=$(cut -d' ' -f1 /proc/uptime)\n\
  echo \"AGENT-VERSION-RUN $i $a $b\"\n\
  sleep 3\n\
done\n";

/// The runs' durations (seconds) in the console text, by run number.
fn runs(text: &str) -> Vec<(u32, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split("AGENT-VERSION-RUN ").nth(1)?;
            let mut f = rest.split_whitespace();
            let i: u32 = f.next()?.parse().ok()?;
            let a: f64 = f.next()?.parse().ok()?;
            let b: f64 = f.next()?.parse().ok()?;
            Some((i, b - a))
        })
        .collect()
}

#[test]
#[ignore = "benchmark: cargo test -p kvmbe-tests --test guest_restore_bench -- --ignored --nocapture"]
fn agent_start_before_and_after_a_restore() {
    const BEFORE: u32 = 5;
    const AFTER: u32 = 5;
    let mut lab = Lab::new().unwrap();
    lab.add_host("vmhost", true).unwrap();
    let daemon = lab.hosts()[0].daemon();
    let agent = buildkite_agent().unwrap();
    let guest = TinyGuest::ensure()
        .unwrap()
        .carrying(&[(&agent, "/usr/bin/buildkite-agent")], daemon.dir())
        .unwrap();
    let host = Host::open(&daemon.uri()).unwrap();
    define_agent_template_sized(&host, &guest, "ver", daemon.dir(), USER_DATA, 512).unwrap();
    host.launch_instance(&InstanceSpec {
        template: "ver".into(),
        name: "ver-1".into(),
        ..Default::default()
    })
    .unwrap();
    let console = daemon.serial_log("ver-1");
    let (text, _) = Libvirtd::wait_for_text(
        &console,
        &format!("AGENT-VERSION-RUN {BEFORE} "),
        Duration::from_secs(240),
    )
    .unwrap();
    let before = runs(&text);
    // Saved while it sleeps between runs, restored at once.
    let state = daemon.dir().join("ver.state");
    let state = state.to_string_lossy();
    daemon.virsh(&["save", "ver-1", &state]).unwrap();
    daemon.virsh(&["restore", &state]).unwrap();
    let last = BEFORE + AFTER;
    let (text, _) = Libvirtd::wait_for_text(
        &console,
        &format!("AGENT-VERSION-RUN {last} "),
        Duration::from_secs(240),
    )
    .unwrap();
    let after: Vec<(u32, f64)> = runs(&text)
        .into_iter()
        .filter(|(i, _)| *i > BEFORE)
        .collect();
    host.remove_instance("ver-1").unwrap();
    eprintln!(
        "buildkite-agent --version in the tiny guest (512 MiB, TCG), seconds, load {}:",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    eprintln!("  after boot:    {before:.2?}");
    eprintln!("  after restore: {after:.2?}");
    assert_eq!(before.len() as u32, BEFORE, "{text}");
    assert!(!after.is_empty(), "{text}");
}

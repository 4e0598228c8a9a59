//! Two launchers share one host with `max_vms = 1`, each with a job
//! waiting when they start, so that both first passes find the host empty
//! and start a VM at the same moment (the Stacks reservation does not
//! keep them apart: they hold different jobs). The room check and the
//! start call happen under the host lock kept in libvirt, so the host
//! never runs two agent VMs at once, and the job that found the host full
//! gets its VM once the first one is gone. On a real libvirtd, a holder
//! that works longer than the lock's hold time keeps it by renewing it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kvmhost::libvirt::Host;
use testbed::buildkite::{BuildSpec, Config, JobSpec};
use testbed::launcher::{Bed, LauncherDir};
use testbed::libvirtd::Libvirtd;
use testbed::util::poll_until;

#[test]
fn two_launchers_never_put_two_vms_on_a_host_with_max_vms_1() {
    let Bed { bk, host, d, .. } =
        Bed::start(Config::default(), "#!/bin/sh\nsleep 6\npoweroff\n").unwrap();
    // Both jobs wait before either launcher starts, so both launchers'
    // first passes each take one and find the host empty.
    let build = bk
        .add_build(
            "app",
            BuildSpec::new(vec![
                JobSpec::new(&["queue=linux"]),
                JobSpec::new(&["queue=arm"]),
            ]),
        )
        .unwrap();
    let config = |queue: &str| {
        format!(
            r#"[buildkite]
agent_endpoint = "{url}/v3"
agent_token_file = "token"
stack_key = "bed"
poll_interval = 1

[launcher]
boot_timeout = 60
wake_timeout = 20

[[host]]
name = "h1"
uri = "{uri}"
max_vms = 1

[[agent]]
name = "{queue}"
tags = ["queue={queue}"]
template = "agent-template"
"#,
            url = bk.url(),
            uri = d.uri()
        )
    };
    let one = LauncherDir::new(&config("linux"), bk.cluster_token()).unwrap();
    let two = LauncherDir::new(&config("arm"), bk.cluster_token()).unwrap();
    let mut a = one.spawn(None, &["run"]).unwrap();
    let mut b = two.spawn(None, &["run"]).unwrap();
    let logs = |a: &testbed::launcher::Running, b: &testbed::launcher::Running| {
        format!("{}\n---\n{}", a.log_text(), b.log_text())
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut most = 0;
    let t0 = Instant::now();
    // Every look at the host counts towards the most VMs seen at once.
    let both = poll_until(Duration::from_secs(120), || {
        let now = host.instances().unwrap();
        most = most.max(now.len());
        assert!(
            now.len() <= 1,
            "two VMs at once on a host with max_vms = 1: {now:?}\n{}",
            logs(&a, &b)
        );
        seen.extend(now.into_iter().map(|i| i.labels["job"].clone()));
        (seen.len() >= 2).then_some(())
    });
    assert!(
        both.is_some(),
        "jobs with a VM so far: {seen:?}\n{}",
        logs(&a, &b)
    );
    let want: BTreeSet<String> = build.job_ids.iter().cloned().collect();
    assert_eq!(seen, want);
    assert_eq!(most, 1);
    let text = logs(&a, &b);
    let full = text.matches("has no room after all").count();
    eprintln!(
        "starts refused under the host lock: {full}; both jobs ran one after the other in {:?}",
        t0.elapsed()
    );
    assert!(a.stop(Duration::from_secs(20)).is_some_and(|s| s.success()));
    assert!(b.stop(Duration::from_secs(20)).is_some_and(|s| s.success()));
    for i in host.instances().unwrap() {
        host.remove_instance(&i.name).unwrap();
    }
    // The lock is not left behind.
    assert_eq!(d.domains().unwrap(), vec!["agent-template".to_string()]);
}

#[test]
fn a_holder_busy_for_longer_than_the_hold_time_keeps_the_lock_on_a_real_libvirtd() {
    let d = Libvirtd::start().unwrap();
    let holder = Host::open(&d.uri()).unwrap();
    let taker = Host::open(&d.uri()).unwrap();
    let hold = Duration::from_secs(1);
    let lock = holder
        .lock("bed-lock", "holder", hold, Duration::ZERO)
        .unwrap()
        .unwrap();
    // The taker watches for four hold times; the holder renews meanwhile.
    let seen = taker
        .lock("bed-lock", "taker", hold, Duration::from_secs(4))
        .unwrap()
        .unwrap_err();
    assert!(
        seen.0.starts_with("lock held by holder; renewal "),
        "{seen}"
    );
    assert_ne!(seen.0, "lock held by holder; renewal 0", "never renewed");
    lock.release().unwrap();
    // Released, it is the taker's at once.
    let lock = taker
        .lock("bed-lock", "taker", hold, Duration::ZERO)
        .unwrap()
        .unwrap();
    lock.release().unwrap();
    assert!(d.domains().unwrap().is_empty());
}

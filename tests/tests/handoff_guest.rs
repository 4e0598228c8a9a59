//! The hand-off in a real VM: the tiny guest carries `kvmbe-handoff`
//! (built on this machine, with the libraries it links) and a stand-in
//! agent script; an instance with the `org.kvmbe.handoff` channel boots
//! and its user-data runs `kvmbe-handoff`. Through libvirt's channel
//! stream (`virDomainOpenChannel`) the test sees it wait (`ready`, no
//! agent started), gets `error …` for a message it cannot use, then hands
//! over a job: the guest's clock, host name and machine id change, its DHCP renewal
//! command runs and the agent is exec'd as `start --acquire-job JOB
//! EXTRA-ARGS` with the token in `BUILDKITE_AGENT_TOKEN`. Asked to sync
//! (`sync`, as before a save) it answers `synced` and keeps waiting. A VM without
//! the program fails the hand-off within its time limit.
//!
//! Needs `cargo build -p kvmbe-handoff` first.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kvmhost::libvirt::channel::{Message, CHANNEL};
use kvmhost::libvirt::instance::InstanceSpec;
use kvmhost::libvirt::Host;
use testbed::guest::TinyGuest;
use testbed::hosts::Lab;
use testbed::launcher::define_agent_template_sized;
use testbed::libvirtd::Libvirtd;

/// Prints what the agent would start with; the token only as a check.
const FAKE_AGENT: &str = "#!/bin/sh\n\
echo \"FAKE-AGENT args: $*\"\n\
[ \"$BUILDKITE_AGENT_TOKEN\" = bkjat_warm_token ] && echo FAKE-AGENT token ok\n\
echo \"FAKE-AGENT hostname: $(hostname)\"\n\
echo \"FAKE-AGENT year: $(date -u +%Y)\"\n\
echo \"FAKE-AGENT machine-id: $(cat /etc/machine-id)\"\n\
echo FAKE-AGENT done\n";

/// The warm guest's user-data: nothing secret, only the program to wait.
const USER_DATA: &str = "#!/bin/sh\n\
echo 0123456789abcdef0123456789abcdef > /etc/machine-id\n\
exec /usr/bin/kvmbe-handoff --agent /usr/bin/fake-agent \
--renew-dhcp 'echo FAKE-DHCP renewed as $(hostname)' -- --tags queue=warm\n";

fn message(hostname: &str) -> Message {
    Message {
        job: "0190abcd-0000-4000-8000-000000000042".into(),
        token: "bkjat_warm_token".into(),
        hostname: hostname.into(),
        // 2031-01-01: the guest's clock must jump there.
        time: 1_924_992_000.0,
        renew_dhcp: true,
    }
}

#[test]
fn a_warm_guest_waits_then_becomes_the_jobs_agent() {
    let mut lab = Lab::new().unwrap();
    lab.add_host("vmhost", true).unwrap();
    let daemon = lab.hosts()[0].daemon();
    let guest = TinyGuest::ensure()
        .unwrap()
        .with_handoff_and_fake_agent(FAKE_AGENT, daemon.dir())
        .unwrap();
    let host = Host::open(&daemon.uri()).unwrap();
    define_agent_template_sized(&host, &guest, "warm", daemon.dir(), USER_DATA, 256).unwrap();
    define_agent_template_sized(&host, &guest, "plain", daemon.dir(), "", 256).unwrap();
    let launch = |template: &str, name: &str| {
        host.launch_instance(&InstanceSpec {
            template: template.into(),
            name: name.into(),
            channels: vec![CHANNEL.into()],
            ..Default::default()
        })
        .unwrap()
    };
    let warm = launch("warm", "warm-1");
    let plain = launch("plain", "plain-1");
    let xml = daemon.virsh(&["-r", "dumpxml", "warm-1"]).unwrap();
    assert!(xml.contains("name='org.kvmbe.handoff'"), "{xml}");
    assert!(!xml.contains("bkjat_"), "{xml}");

    // It boots and waits: ready, and no agent.
    let console = daemon.serial_log("warm-1");
    let (text, boot) = Libvirtd::wait_for_text(
        &console,
        "kvmbe-handoff: waiting on /dev/vport",
        Duration::from_secs(180),
    )
    .unwrap();
    // The agent ran once, with --version only, before the wait.
    assert!(
        text.contains("kvmbe-handoff: warmed up /usr/bin/fake-agent in "),
        "{text}"
    );
    host.handoff_ready(&warm.uuid, Duration::from_secs(10))
        .unwrap();
    // Closing and opening again at once, before the guest has run and
    // seen the close, still finds it: it answers the host's hello on
    // whichever connection it reads.
    for _ in 0..5 {
        host.handoff_ready(&warm.uuid, Duration::from_secs(10))
            .unwrap();
    }
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        !text.contains("FAKE-AGENT"),
        "an agent started unasked:\n{text}"
    );

    // Asked to sync its file systems (as before a save), it does so and
    // keeps waiting; the plain guest never answers.
    host.handoff_sync(&warm.uuid, Duration::from_secs(10))
        .unwrap();
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(!text.contains("FAKE-AGENT"), "{text}");

    // A message it cannot use is refused, and it keeps waiting.
    let err = host
        .hand_off(&warm.uuid, &message("bad_name"), Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the guest refused the job: hostname: \"bad_name\" is not a host name"),
        "{err}"
    );

    let t0 = Instant::now();
    host.hand_off(
        &warm.uuid,
        &message("linux-0190abcd-x7"),
        Duration::from_secs(10),
    )
    .unwrap();
    let handed = t0.elapsed();
    let (text, _) =
        Libvirtd::wait_for_text(&console, "FAKE-AGENT done", Duration::from_secs(30)).unwrap();
    assert!(
        text.contains("FAKE-AGENT args: start --acquire-job 0190abcd-0000-4000-8000-000000000042 --tags queue=warm"),
        "{text}"
    );
    assert!(text.contains("FAKE-AGENT token ok"), "{text}");
    assert!(
        text.contains("FAKE-AGENT hostname: linux-0190abcd-x7"),
        "{text}"
    );
    assert!(text.contains("FAKE-AGENT year: 2031"), "{text}");
    // A fresh machine id, not the one the VM booted with.
    let id = text
        .split("FAKE-AGENT machine-id: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "machine id {id:?}: {text}"
    );
    assert_ne!(id, "0123456789abcdef0123456789abcdef", "{text}");
    assert!(
        text.contains("FAKE-DHCP renewed as linux-0190abcd-x7"),
        "{text}"
    );
    assert!(
        !text.contains("bkjat_warm_token"),
        "the token was printed:\n{text}"
    );

    // A guest that does not run the program: no ready, a failure in time.
    let t1 = Instant::now();
    let err = host
        .hand_off(&plain.uuid, &message("plain-job"), Duration::from_secs(3))
        .unwrap_err()
        .to_string();
    let failed = t1.elapsed();
    // Silence until the deadline, or, while the guest's kernel still sets
    // its port up, a hang-up that reads as the channel closed: either way
    // no `ready`, and the hand-off fails in time.
    assert!(
        err.contains("no answer in time")
            || err.contains("the guest closed the channel before saying \"ready\""),
        "{err}"
    );
    assert!(failed < Duration::from_secs(6), "{failed:?}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    eprintln!(
        "boot to waiting {boot:.1?}, hand-off {handed:.2?}, failed hand-off {failed:.1?} (at {})",
        now.as_secs()
    );
}

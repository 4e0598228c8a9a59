//! Saved slots on a real libvirtd: a tiny guest carrying `kvmbe-handoff`
//! and a stand-in agent boots until it waits for a job, syncs, and is
//! saved (a state file next to its disk; no domain runs afterwards, no
//! agent started). A clone restored onto a fresh overlay takes a job over
//! the hand-off channel and powers off after its agent; the sweep then
//! deletes only the used overlay, and a second clone takes a second job.
//! Only one clone runs at a time; removing a clone as an instance leaves
//! the slot; a slot without its state file fails at once, leaving nothing.
//! A slot's version changes with its template, base image or variables.
//!
//! Needs `cargo build -p kvmbe-handoff` first.

use std::time::{Duration, Instant};

use kvmhost::libvirt::channel::{Message, CHANNEL};
use kvmhost::libvirt::instance::InstanceSpec;
use kvmhost::libvirt::Host;
use testbed::guest::TinyGuest;
use testbed::hosts::Lab;
use testbed::launcher::define_agent_template_sized;
use testbed::libvirtd::{Libvirtd, POOL};
use testbed::util::poll_until;

const SLOT: &str = "linux-saved-0";

/// Prints what the agent would start with.
const FAKE_AGENT: &str = "#!/bin/sh\n\
echo \"FAKE-AGENT args: $*\"\n\
echo \"FAKE-AGENT hostname: $(hostname)\"\n";

/// Waits for a job, runs the agent, powers off.
const USER_DATA: &str = "#!/bin/sh\n\
/usr/bin/kvmbe-handoff --agent /usr/bin/fake-agent -- --tags queue=saved\n\
echo agent-exit=$?\n\
poweroff\n";

fn message(job: &str) -> Message {
    Message {
        job: job.into(),
        token: "bkjat_saved_token".into(),
        hostname: format!("linux-{}", &job[..4]),
        time: 1_924_992_000.0,
        renew_dhcp: false,
    }
}

fn volumes(d: &Libvirtd) -> Vec<String> {
    let out = d.virsh(&["vol-list", "--pool", POOL]).unwrap();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(SLOT))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_saved_slot_gives_one_clone_at_a_time_each_on_its_own_overlay() {
    let mut lab = Lab::new().unwrap();
    lab.add_host("vmhost", true).unwrap();
    let daemon = lab.hosts()[0].daemon();
    let guest = TinyGuest::ensure()
        .unwrap()
        .with_handoff_and_fake_agent(FAKE_AGENT, daemon.dir())
        .unwrap();
    let host = Host::open(&daemon.uri()).unwrap();
    define_agent_template_sized(&host, &guest, "linux", daemon.dir(), USER_DATA, 256).unwrap();
    let spec = InstanceSpec {
        template: "linux".into(),
        name: SLOT.into(),
        channels: vec![CHANNEL.into()],
        ..Default::default()
    };

    let t0 = Instant::now();
    let slot = host.build_slot(&spec, Duration::from_secs(180)).unwrap();
    let built = t0.elapsed();
    let size = std::fs::metadata(&slot.state_file).unwrap().len();
    assert!(size > 1 << 20, "state file of {size} bytes");
    assert_eq!(
        slot.state_file.parent(),
        std::path::Path::new(&slot.base.path).parent(),
        "the state file is next to the disk"
    );
    assert!(!host.domain_active(SLOT).unwrap_or(false));
    assert!(daemon.virsh(&["list", "--name"]).unwrap().trim().is_empty());
    let console = daemon.serial_log(SLOT);
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(!text.contains("FAKE-AGENT"), "{text}");
    assert_eq!(host.slot(POOL, SLOT).unwrap(), slot);
    assert_eq!(slot.version, host.slot_version(&spec).unwrap());
    // The sweep keeps a slot's files while no clone runs.
    host.sweep_instance_volumes(POOL, Duration::ZERO).unwrap();
    let files = volumes(daemon);
    assert_eq!(files.len(), 3, "{files:?}");

    let mut restores = Vec::new();
    let mut handed = Vec::new();
    let mut overlays = Vec::new();
    for job in [
        "0190aaaa-0000-4000-8000-000000000001",
        "0190bbbb-0000-4000-8000-000000000002",
    ] {
        let t = Instant::now();
        let clone = host.restore_slot(&slot).unwrap();
        restores.push(t.elapsed());
        assert_ne!(clone.overlay.path, slot.base.path);
        overlays.push(clone.overlay.key.clone());
        // One clone at a time.
        let err = host.restore_slot(&slot).unwrap_err().to_string();
        assert!(err.contains("already runs a clone"), "{err}");
        host.hand_off(SLOT, &message(job), Duration::from_secs(10))
            .unwrap();
        // From the restore call to the guest's `started` (agent exec).
        handed.push(t.elapsed());
        let (text, _) =
            Libvirtd::wait_for_text(&console, "agent-exit=", Duration::from_secs(60)).unwrap();
        assert!(
            text.contains(&format!(
                "FAKE-AGENT args: start --acquire-job {job} --tags queue=saved"
            )),
            "{text}"
        );
        assert_eq!(text.matches("FAKE-AGENT args").count(), 1, "{text}");
        poll_until(Duration::from_secs(30), || {
            (!host.domain_active(SLOT).unwrap_or(false)).then_some(())
        })
        .expect("the clone powers off after its agent");
        // The clone is gone: the sweep takes its overlay and keeps the slot.
        let removed = host.sweep_instance_volumes(POOL, Duration::ZERO).unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(removed[0].ends_with("-clone.qcow2"), "{removed:?}");
        assert_eq!(volumes(daemon), files);
    }

    // Removing a clone as an instance deletes its overlay, not the slot.
    host.restore_slot(&slot).unwrap();
    host.remove_instance(SLOT).unwrap();
    assert!(!host.domain_active(SLOT).unwrap_or(false));
    assert_eq!(volumes(daemon), files);

    // A slot whose state file is gone fails at once and leaves nothing.
    std::fs::remove_file(&slot.state_file).unwrap();
    let t = Instant::now();
    let err = host.restore_slot(&slot).unwrap_err().to_string();
    let failed = t.elapsed();
    assert!(failed < Duration::from_secs(5), "{failed:?}: {err}");
    assert!(!host.domain_active(SLOT).unwrap_or(false));
    assert!(
        !volumes(daemon).iter().any(|v| v.ends_with("-clone.qcow2")),
        "{err}"
    );
    host.remove_slot(POOL, SLOT).unwrap();
    assert!(volumes(daemon).is_empty(), "{:?}", volumes(daemon));

    // What a slot is built from changes its version: the instance's
    // variables, the template's user-data, its base image's contents.
    let mut other = spec.clone();
    other.vars.insert("buildkite_queue".into(), "other".into());
    assert_ne!(host.slot_version(&other).unwrap(), slot.version);
    assert_eq!(host.slot_version(&spec).unwrap(), slot.version);
    define_agent_template_sized(
        &host,
        &guest,
        "linux",
        daemon.dir(),
        &USER_DATA.replace("queue=saved", "queue=other"),
        256,
    )
    .unwrap();
    let retemplated = host.slot_version(&spec).unwrap();
    assert_ne!(retemplated, slot.version);
    // A wait for time itself, not for an event: the upload must land in a
    // later moment than the image was written, so its time stamp differs.
    std::thread::sleep(Duration::from_millis(20));
    let base = host.volume(POOL, "agent-base.raw").unwrap();
    host.upload_bytes(&base.key, &[7u8; 4096]).unwrap();
    assert_ne!(host.slot_version(&spec).unwrap(), retemplated);

    eprintln!(
        "slot built in {built:.1?} (boot, sync, save); state file {:.1} MiB; restores {restores:.2?}; restore to started {handed:.2?}; broken slot failed in {failed:.2?}",
        size as f64 / (1 << 20) as f64
    );
}

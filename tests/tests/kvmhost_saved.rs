//! Saved domains on a real libvirtd: the tiny guest booted from its root
//! disk is saved to a state file, its disk frozen, and clones of it are
//! restored one after the other, each onto its own overlay of that disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kvmhost::libvirt::domain::PowerState;
use kvmhost::libvirt::domain_xml::{DomainDef, GenId};
use kvmhost::libvirt::saved::{HostPath, OverlayRestore, Restored, ResumeAs};
use kvmhost::libvirt::volume::{VolumeInfo, VolumeSpec};
use kvmhost::libvirt::Host;
use sha2::{Digest, Sha256};
use testbed::guest::{TinyGuest, READY};
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::util::poll_until;

const SLOT: &str = "slot-1";
const MAC: &str = "52:54:00:5a:00:01";
const AGENT: &str = "org.qemu.guest_agent.0";

/// A tiny guest saved while it waits, and the disk it was saved with.
struct SavedSlot {
    /// How long the save call took.
    save_took: Duration,
    guest: TinyGuest,
    d: Libvirtd,
    host: Host,
    base: VolumeInfo,
    state: PathBuf,
}

/// The root-disk tiny guest as domain `name` on `disk`, with an agent
/// channel whose socket is in the bed's folder.
fn guest_xml(d: &Libvirtd, g: &TinyGuest, name: &str, disk: &Path) -> String {
    format!(
        "<domain type='qemu'>\
           <name>{name}</name><genid/><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
           <os><type arch='x86_64' machine='q35'>hvm</type>\
             <kernel>{k}</kernel><initrd>{i}</initrd><cmdline>{c}</cmdline></os>\
           <features><acpi/></features>\
           <on_poweroff>destroy</on_poweroff>\
           <devices>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
               <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>\
             <interface type='network'><mac address='{MAC}'/><source network='{NETWORK}'/>\
               <model type='virtio'/></interface>\
             <channel type='unix'><source mode='bind' path='{socket}'/>\
               <target type='virtio' name='{AGENT}'/></channel>\
             <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\
             {serial}\
           </devices></domain>",
        k = g.kernel.display(),
        i = g.root_initrd.display(),
        c = g.root_cmdline,
        disk = disk.display(),
        socket = d.dir().join(format!("{name}.agent.sock")).display(),
        serial = d.serial_xml(name),
    )
}

/// Starts the root-disk guest as a transient domain and waits until it
/// is up (its console says [`READY`]).
fn boot(d: &Libvirtd, g: &TinyGuest, name: &str, disk: &str) {
    let xml = d.dir().join(format!("{name}.xml"));
    std::fs::write(&xml, guest_xml(d, g, name, Path::new(disk))).unwrap();
    d.virsh(&["create", &xml.to_string_lossy()]).unwrap();
    Libvirtd::wait_for_text(&d.serial_log(name), READY, Duration::from_secs(90)).unwrap();
}

/// Boots the root-disk guest, waits for it to be up and saves it to
/// come back running.
fn saved_slot() -> SavedSlot {
    saved_slot_as(ResumeAs::Running)
}

/// Boots the root-disk guest, waits for it to be up and saves it to
/// come back as `resume` says.
fn saved_slot_as(resume: ResumeAs) -> SavedSlot {
    let guest = TinyGuest::ensure().unwrap();
    guest.check_reachable_by_others().unwrap();
    let d = Libvirtd::start().unwrap();
    let host = Host::open(&d.uri()).unwrap();
    guest
        .copy_root_disk(&d.pool_dir().join("frozen.qcow2"))
        .unwrap();
    let base = host.volume(POOL, "frozen.qcow2").unwrap();
    boot(&d, &guest, SLOT, &base.path);
    let state = d.dir().join("slot-1.state");
    let t0 = Instant::now();
    host.save_domain(SLOT, &state, resume).unwrap();
    let save_took = t0.elapsed();
    SavedSlot {
        save_took,
        guest,
        d,
        host,
        base,
        state,
    }
}

/// Restores the saved slot onto a new overlay `overlay` of `base`.
fn restore_clone(
    host: &Host,
    state: &Path,
    base: &VolumeInfo,
    overlay: &str,
    changes: &[HostPath],
) -> kvmhost::libvirt::Result<Restored> {
    host.restore_on_overlay(&OverlayRestore {
        state_file: state,
        base,
        target: "vda",
        pool: POOL,
        overlay,
        changes,
    })
}

/// The agent channel's socket moved to `path`.
fn agent_socket(path: &Path) -> HostPath {
    HostPath::ChannelSocket {
        name: AGENT.into(),
        path: path.to_string_lossy().into_owned(),
    }
}

/// Asks the guest agent, through the channel's socket, and returns its
/// answer; tries again while the agent's port reconnects after a restore.
fn agent(d: &Libvirtd, command: serde_json::Value) -> String {
    let command = command.to_string();
    let mut refused = String::new();
    let answer = poll_until(Duration::from_secs(60), || {
        d.virsh(&["qemu-agent-command", SLOT, &command])
            .map_err(|e| refused = e.to_string())
            .ok()
    });
    answer.unwrap_or_else(|| panic!("the guest agent did not answer {command}: {refused}"))
}

fn contains(path: &str, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn sha256(path: &str) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn a_saved_guest_restores_twice_each_time_onto_its_own_overlay_of_the_frozen_disk() {
    let SavedSlot {
        d,
        host,
        base,
        state,
        ..
    } = saved_slot();
    assert!(
        !d.domains().unwrap().contains(&SLOT.to_string()),
        "the saved domain is gone"
    );
    let size = std::fs::metadata(&state).unwrap().len();
    assert!(size > 1 << 20, "state file of {size} bytes");
    let genid = |xml: &str| DomainDef::from_xml(xml).unwrap().genid;
    let saved_genid = genid(&host.saved_domain_xml(&state).unwrap());
    assert!(matches!(saved_genid, Some(GenId::Id(_))), "{saved_genid:?}");
    let base_sum = sha256(&base.path);

    let mut overlays = Vec::new();
    for clone in 1..=2 {
        let socket = d.dir().join(format!("clone-{clone}.agent.sock"));
        let restored = restore_clone(
            &host,
            &state,
            &base,
            &format!("clone-{clone}.qcow2"),
            &[agent_socket(&socket)],
        )
        .unwrap();
        assert_eq!(restored.domain.name, SLOT);
        assert_eq!(restored.domain.state, PowerState::Running);
        assert_eq!(restored.overlay.backing_path.as_deref(), Some(&*base.path));
        let live = host.domain_xml(SLOT).unwrap();
        assert!(live.contains(&restored.overlay.path), "{live}");
        assert!(live.contains(&*socket.to_string_lossy()), "{live}");
        // A new generation ID: the guest kernel reseeds its RNG.
        let live_genid = genid(&d.virsh(&["dumpxml", SLOT]).unwrap());
        assert!(
            matches!(&live_genid, Some(GenId::Id(_))) && live_genid != saved_genid,
            "saved {saved_genid:?}, live {live_genid:?}"
        );

        // Only a running guest answers its agent and writes its console.
        let ping = agent(&d, serde_json::json!({"execute": "guest-ping"}));
        assert_eq!(ping.trim(), r#"{"return":{}}"#);
        let mark = format!("KVMBE-CLONE-{clone}-RUNS");
        let data = format!("clone-{clone}-wrote-this-to-its-disk");
        let script = format!("echo {data} > /clone-data && sync && echo {mark} > /dev/ttyS0");
        run_and_wait_for(&d, SLOT, &script, &mark);
        host.stop_domain(SLOT, Duration::ZERO).unwrap();
        assert!(!d.domains().unwrap().contains(&SLOT.to_string()));
        overlays.push((restored.overlay.path, data));
    }

    let [(first, first_data), (second, second_data)] = &overlays[..] else {
        unreachable!()
    };
    assert!(contains(first, first_data) && !contains(first, second_data));
    assert!(contains(second, second_data) && !contains(second, first_data));
    assert!(!contains(&base.path, first_data) && !contains(&base.path, second_data));
    assert_eq!(sha256(&base.path), base_sum, "the frozen disk is unchanged");
}

#[test]
fn a_restore_that_changes_identity_or_reads_a_missing_file_is_refused_leaving_nothing() {
    let SavedSlot {
        d,
        host,
        base,
        state,
        ..
    } = saved_slot();
    let saved = host.saved_domain_xml(&state).unwrap();
    let volumes = d.volumes(POOL).unwrap();

    let renamed = saved.replace(&format!("<name>{SLOT}</name>"), "<name>slot-2</name>");
    let err = host.restore_domain_xml(&state, &renamed).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "invalid xml: the restore XML changes /domain/name from 'slot-1' to 'slot-2'"
        ),
        "{err}"
    );
    let new_mac = saved.replace(MAC, "52:54:00:5a:00:02");
    let err = host.restore_domain_xml(&state, &new_mac).unwrap_err();
    assert!(
        err.to_string().contains(
            "changes /domain/devices/interface/mac/@address from '52:54:00:5a:00:01' to '52:54:00:5a:00:02'"
        ),
        "{err}"
    );

    // A new disk under the saved <backingStore/> would read as zeros.
    let moved = saved.replace(
        &base.path,
        &format!("{}/elsewhere.qcow2", d.pool_dir().display()),
    );
    let err = host.restore_domain_xml(&state, &moved).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "invalid xml: disk 'vda' gets a new source but keeps the saved <backingStore>"
        ),
        "{err}"
    );

    let missing = d.dir().join("no-such.state");
    let err = restore_clone(&host, &missing, &base, "clone-x.qcow2", &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("read the saved domain in {}: ", missing.display())),
        "{msg}"
    );
    assert!(d.domains().unwrap().is_empty(), "no domain is left");
    assert_eq!(d.volumes(POOL).unwrap(), volumes, "no volume is left");
}

#[test]
fn a_second_clone_while_the_first_runs_is_refused_and_its_overlay_deleted() {
    let SavedSlot {
        d,
        host,
        base,
        state,
        ..
    } = saved_slot();
    let restore = |overlay: &str| restore_clone(&host, &state, &base, overlay, &[]);
    let first = restore("clone-a.qcow2").unwrap();
    assert_eq!(first.domain.state, PowerState::Running);
    let volumes = d.volumes(POOL).unwrap();

    let err = restore("clone-b.qcow2").unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "restore domain '{SLOT}' from {}: ",
            state.display()
        )) && err.contains("already active"),
        "{err}"
    );
    assert_eq!(
        d.volumes(POOL).unwrap(),
        volumes,
        "the refused overlay is deleted"
    );
    assert_eq!(
        host.domain_status(SLOT).unwrap(),
        first.domain,
        "the first clone runs on"
    );
}

#[test]
fn a_domain_saved_to_come_back_paused_is_restored_paused() {
    // The daemon is bound so that it lives to the end of the test.
    let SavedSlot {
        d: _daemon,
        host,
        base,
        state,
        ..
    } = saved_slot_as(ResumeAs::Paused);

    let restored = restore_clone(&host, &state, &base, "clone.qcow2", &[]).unwrap();
    assert_eq!(restored.domain.state, PowerState::Paused);
}

/// Runs `script` in the guest through its agent and waits until its
/// console shows `mark`, which the script is to print.
fn run_and_wait_for(d: &Libvirtd, name: &str, script: &str, mark: &str) {
    agent(
        d,
        serde_json::json!({
            "execute": "guest-exec",
            "arguments": {"path": "/bin/sh", "arg": ["-c", script]},
        }),
    );
    Libvirtd::wait_for_text(&d.serial_log(name), mark, Duration::from_secs(60)).unwrap();
}

/// Sorted samples' median and 95th percentile (nearest rank).
fn p50_p95(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let rank = |p: usize| v[(v.len() * p).div_ceil(100).max(1) - 1];
    (rank(50), rank(95))
}

#[test]
#[ignore = "benchmark: cargo test -p kvmbe-tests --test kvmhost_saved -- --ignored --nocapture"]
fn bench_cold_boot_against_restore_of_the_tiny_guest() {
    const RUNS: usize = 10;
    let SavedSlot {
        save_took,
        guest,
        d,
        host,
        base,
        state,
    } = saved_slot();
    let state_size = std::fs::metadata(&state).unwrap().len();

    // A cold boot: a fresh overlay of the same disk, started until up.
    let mut boots = Vec::new();
    for i in 0..RUNS {
        let name = format!("boot-{i}");
        let t0 = Instant::now();
        let spec = VolumeSpec::overlay(&format!("{name}.qcow2"), &base).unwrap();
        let overlay = host.create_volume(POOL, &spec).unwrap();
        boot(&d, &guest, &name, &overlay.path);
        boots.push(t0.elapsed());
        host.stop_domain(&name, Duration::ZERO).unwrap();
        host.delete_volume(&overlay.key).unwrap();
    }

    // A restore: a fresh overlay, the restore call, then output of the guest.
    let (mut calls, mut running) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let t0 = Instant::now();
        let spec = VolumeSpec::overlay(&format!("clone-{i}.qcow2"), &base).unwrap();
        let overlay = host.create_volume(POOL, &spec).unwrap();
        let socket = d.dir().join(format!("clone-{i}.agent.sock"));
        let changes = [
            HostPath::Disk {
                target: "vda".into(),
                file: overlay.path.clone(),
            },
            agent_socket(&socket),
        ];
        let t1 = Instant::now();
        host.restore_domain(&state, &changes).unwrap();
        calls.push(t1.elapsed());
        let mark = format!("KVMBE-RESTORED-{i}");
        run_and_wait_for(&d, SLOT, &format!("echo {mark} > /dev/ttyS0"), &mark);
        running.push(t0.elapsed());
        host.stop_domain(SLOT, Duration::ZERO).unwrap();
        host.delete_volume(&overlay.key).unwrap();
    }

    let (boot50, boot95) = p50_p95(boots);
    let (run50, run95) = p50_p95(running);
    let (call50, call95) = p50_p95(calls);
    eprintln!(
        "tiny guest (root disk, 256 MiB, 1 vCPU, TCG), {RUNS} runs each, load {}:\n\
         cold boot to {READY}:            p50 {boot50:?}  p95 {boot95:?}\n\
         restore to guest output:        p50 {run50:?}  p95 {run95:?}\n\
         restore_domain call (read XML, virDomainRestoreFlags): p50 {call50:?}  p95 {call95:?}\n\
         cold boot / restore (p50):      {:.1}x\n\
         state file: {state_size} bytes ({:.1} MiB), written by a save call of {save_took:?}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
        boot50.as_secs_f64() / run50.as_secs_f64(),
        state_size as f64 / (1 << 20) as f64,
    );
    assert!(run50 < boot50, "a restore is quicker than a cold boot");
}

//! The tiny guest under the namespaced libvirtd: it boots in a couple of
//! seconds, prints the NoCloud seed it was given, answers the guest agent
//! and powers off on an ACPI request.

use kvmhost::nocloud::Seed;
use std::time::{Duration, Instant};
use testbed::guest::{TinyGuest, BOOT, READY};
use testbed::libvirtd::{Libvirtd, NETWORK};
use testbed::util::wait_until;

/// The seed sits on a virtio-scsi CD-ROM: the cloud kernel has no AHCI
/// driver for q35's SATA bus.
fn domain_xml(d: &Libvirtd, g: &TinyGuest, name: &str, seed: &std::path::Path) -> String {
    format!(
        "<domain type='qemu'>\
           <name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
           <os><type arch='x86_64' machine='q35'>hvm</type>\
             <kernel>{k}</kernel><initrd>{i}</initrd><cmdline>{c}</cmdline></os>\
           <features><acpi/></features>\
           <on_poweroff>destroy</on_poweroff>\
           <devices>\
             <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
               <source file='{s}'/><target dev='sda' bus='scsi'/><readonly/></disk>\
             <controller type='scsi' model='virtio-scsi'/>\
             <interface type='network'><source network='{NETWORK}'/><model type='virtio'/></interface>\
             <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\
             {serial}\
           </devices></domain>",
        k = g.kernel.display(),
        i = g.initrd.display(),
        c = g.cmdline,
        s = seed.display(),
        serial = d.serial_xml(name),
    )
}

#[test]
fn a_tiny_guest_boots_prints_its_seed_and_powers_off() {
    let guest = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    let seed = d.pool_dir().join("seed.iso");
    let user_data = "#cloud-config\nruncmd: [echo hello from the seed]\n";
    let iso = Seed::nocloud(
        user_data,
        "instance-id: smoke-1\nlocal-hostname: smoke\n",
        None,
    )
    .to_iso()
    .unwrap();
    std::fs::write(&seed, iso).unwrap();
    let xml = d.dir().join("smoke.xml");
    std::fs::write(&xml, domain_xml(&d, &guest, "smoke", &seed)).unwrap();

    // Transient: libvirt forgets the domain once it powers off.
    let t0 = Instant::now();
    d.virsh(&["create", &xml.to_string_lossy()]).unwrap();
    Libvirtd::wait_for_text(&d.serial_log("smoke"), BOOT, Duration::from_secs(60)).unwrap();
    let booted = t0.elapsed();
    let (console, _) =
        Libvirtd::wait_for_text(&d.serial_log("smoke"), READY, Duration::from_secs(60)).unwrap();
    eprintln!(
        "tiny guest: start to {BOOT} in {booted:?}, to {READY} (seed read, DHCP lease) in {:?}",
        t0.elapsed()
    );
    assert!(console.contains("hello from the seed"), "{console}");
    assert!(console.contains("instance-id: smoke-1"), "{console}");

    let ping = d
        .virsh(&["qemu-agent-command", "smoke", r#"{"execute":"guest-ping"}"#])
        .unwrap();
    assert!(ping.contains("return"), "{ping}");

    let t1 = Instant::now();
    d.virsh(&["shutdown", "smoke", "--mode", "acpi"]).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the guest powering off on ACPI",
        || {
            format!(
                "the guest ignored ACPI power-off; console:\n{}",
                std::fs::read_to_string(d.serial_log("smoke")).unwrap_or_default()
            )
        },
        || (!d.domains().unwrap().contains(&"smoke".to_string())).then_some(()),
    );
    eprintln!("tiny guest: ACPI power-off took {:?}", t1.elapsed());
}

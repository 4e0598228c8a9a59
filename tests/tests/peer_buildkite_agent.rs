//! The real buildkite-agent, built from its Go module as a static binary,
//! rides in the tiny guest's initramfs and runs there: `buildkite-agent
//! --version`, started by the seed's user-data script, prints its version
//! on the serial console.

use std::time::Duration;

use kvmhost::nocloud::Seed;
use testbed::guest::{TinyGuest, SCRIPT_END};
use testbed::libvirtd::{Libvirtd, NETWORK};
use testbed::peers::{buildkite_agent, BUILDKITE_AGENT_VERSION};

#[test]
fn buildkite_agent_version_runs_inside_the_tiny_guest() {
    let agent = buildkite_agent().unwrap();
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure()
        .unwrap()
        .carrying(&[(&agent, "/usr/bin/buildkite-agent")], bed.dir())
        .unwrap();
    let seed = bed.dir().join("agent-seed.iso");
    let iso = Seed::nocloud(
        "#!/bin/sh\n/usr/bin/buildkite-agent --version\n",
        "instance-id: agent-1\n",
        None,
    )
    .to_iso()
    .unwrap();
    std::fs::write(&seed, iso).unwrap();
    let name = "agent";
    let xml = format!(
        "<domain type='qemu'>\
           <name>{name}</name><memory unit='MiB'>512</memory><vcpu>1</vcpu>\
           <os><type arch='x86_64' machine='q35'>hvm</type>\
             <kernel>{k}</kernel><initrd>{i}</initrd><cmdline>{c}</cmdline></os>\
           <features><acpi/></features>\
           <on_poweroff>destroy</on_poweroff>\
           <devices>\
             <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
               <source file='{s}'/><target dev='sda' bus='scsi'/><readonly/></disk>\
             <controller type='scsi' model='virtio-scsi'/>\
             <interface type='network'><source network='{NETWORK}'/><model type='virtio'/></interface>\
             {serial}\
           </devices></domain>",
        k = guest.kernel.display(),
        i = guest.initrd.display(),
        c = guest.cmdline,
        s = seed.display(),
        serial = bed.serial_xml(name),
    );
    let xml_path = bed.dir().join("agent.xml");
    std::fs::write(&xml_path, xml).unwrap();
    bed.virsh(&["create", &xml_path.to_string_lossy()]).unwrap();
    let (console, took) =
        Libvirtd::wait_for_text(&bed.serial_log(name), SCRIPT_END, Duration::from_secs(120))
            .unwrap();
    eprintln!("the agent ran {:.1}s after start", took.as_secs_f64());
    let want = format!("buildkite-agent version {BUILDKITE_AGENT_VERSION}");
    assert!(
        console.contains(&want),
        "no {want:?} on the console:\n{console}"
    );
    assert!(
        console.contains(&format!("{SCRIPT_END} 0")),
        "the script failed:\n{console}"
    );
    let _ = bed.virsh(&["destroy", name]);
}

//! A template shaped like the seed's Windows and macOS agents, applied by
//! Terraform and started through kvmhost as the launcher does: two
//! overlay disks on the right bases, the NIC model, the guest-agent
//! channel, the stylesheet's change, cloud-init files (one in a folder) on a CD labelled
//! `config-2`; with firmware, an NVRAM file per instance. Every volume of
//! an instance goes when it does.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use kvmhost::libvirt::domain::PowerState;
use kvmhost::libvirt::instance::InstanceSpec;
use kvmhost::libvirt::Host;
use kvmhost::nocloud::Seed;
use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::terraform::{header, TfProject};

const CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
const VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// Adds a `<description>` and, as the seed's Windows stylesheet does, a
/// USB tablet to the devices.
const STYLESHEET: &str = r#"<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output omit-xml-declaration="yes" indent="yes"/>
  <xsl:template match="node()|@*">
    <xsl:copy><xsl:apply-templates select="node()|@*"/></xsl:copy>
  </xsl:template>
  <xsl:template match="/domain">
    <xsl:copy>
      <xsl:apply-templates select="@*"/>
      <description>styled by the template</description>
      <xsl:apply-templates select="node()"/>
    </xsl:copy>
  </xsl:template>
  <xsl:template match="/domain/devices">
    <xsl:copy>
      <xsl:apply-templates select="node()|@*"/>
      <input type="tablet" bus="usb"/>
    </xsl:copy>
  </xsl:template>
</xsl:stylesheet>
"#;

fn instance_volumes(d: &Libvirtd, name: &str) -> Vec<String> {
    let prefix = format!("{name}--inst-");
    d.volumes(POOL)
        .unwrap()
        .into_iter()
        .filter(|v| v.starts_with(&prefix))
        .collect()
}

fn launch(host: &Host, template: &str, name: &str) -> kvmhost::libvirt::template::Instance {
    let t0 = std::time::Instant::now();
    let inst = host
        .launch_instance(&InstanceSpec {
            template: template.into(),
            name: name.into(),
            vars: BTreeMap::from([("token".to_string(), "t0ken-for-the-job".to_string())]),
            labels: BTreeMap::from([("job".to_string(), "job-1".to_string())]),
            ..Default::default()
        })
        .unwrap();
    eprintln!("launched {name} from {template} in {:?}", t0.elapsed());
    inst
}

#[test]
fn a_seed_shaped_template_gives_instances_every_disk_device_and_file_and_leaves_nothing() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    for (file, size) in [("boot.raw", 1 << 20), ("data.raw", 2 << 20)] {
        std::fs::write(d.dir().join(file), vec![0u8; size]).unwrap();
    }
    let style = d.dir().join("agent.xsl");
    std::fs::write(&style, STYLESHEET).unwrap();
    let guest = format!(
        r#"  type         = "qemu"
  memory       = 256
  kernel       = "{kernel}"
  initrd       = "{initrd}"
  cmdline      = "{cmdline}"
  network_name = "{NETWORK}""#,
        kernel = g.kernel.display(),
        initrd = g.initrd.display(),
        cmdline = g.cmdline,
    );
    let hcl = format!(
        r##"{header}resource "libvirt_volume" "boot" {{
  name   = "rich-boot.raw"
  pool   = "{POOL}"
  source = "{dir}/boot.raw"
}}

resource "libvirt_volume" "data" {{
  name   = "rich-data.raw"
  pool   = "{POOL}"
  source = "{dir}/data.raw"
}}

resource "libvirt_domain_template" "windows" {{
  name           = "windows-template"
  pool           = "{POOL}"
  base_volume_id = libvirt_volume.boot.id
  disk {{
    volume_id = libvirt_volume.data.id
  }}
{guest}
  network_model  = "e1000"
  cpu_model      = "core2duo"
  qemu_agent     = true
  xml {{
    xslt = file("{style}")
  }}
  cloudinit_label = "config-2"
  cloudinit_files = {{
    "user-data"  = "#cloud-config\nhostname: {{{{hostname}}}}\ntoken: {{{{token}}}}\n"
    "meta-data"  = "instance-id: {{{{name}}}}\n"
    "openstack/latest/meta_data.json" = "{{\"uuid\": \"{{{{name}}}}\"}}"
  }}
}}

resource "libvirt_domain_template" "uefi" {{
  name           = "uefi-template"
  pool           = "{POOL}"
  base_volume_id = libvirt_volume.boot.id
{guest}
  firmware       = "{CODE}"
  nvram_template = "{VARS}"
  user_data      = "#cloud-config\nhostname: {{{{hostname}}}}\n"
}}
"##,
        header = header(&d.uri()),
        dir = d.dir().display(),
        style = style.display(),
    );
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&hcl);
    tf.apply();
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "{plan}");
    // The files (the token among them) are not in the XML every local
    // user can read.
    let template_xml = d.virsh(&["dumpxml", "windows-template"]).unwrap();
    assert!(!template_xml.contains("cloud-config"), "{template_xml}");

    let host = Host::open(&d.uri()).unwrap();
    let inst = launch(&host, "windows-template", "win-1");
    assert_eq!(
        host.domain_status(&inst.uuid).unwrap().state,
        PowerState::Running
    );
    let def = host.domain_def("win-1").unwrap();
    let xml = d.virsh(&["dumpxml", "win-1"]).unwrap();

    // Two overlays, in order, on the two bases.
    let disks: Vec<&str> = def
        .disks
        .iter()
        .filter(|x| x.device == kvmhost::libvirt::domain_xml::DiskDevice::Disk)
        .map(|x| x.source.path())
        .collect();
    assert_eq!(disks, inst.overlay_keys, "{xml}");
    assert_eq!(inst.overlay_keys.len(), 2);
    for (key, base) in inst
        .overlay_keys
        .iter()
        .zip(["rich-boot.raw", "rich-data.raw"])
    {
        assert_eq!(
            host.volume_by_key(key).unwrap().backing_path,
            Some(host.volume(POOL, base).unwrap().path),
            "overlay {key}"
        );
    }
    assert_eq!(def.interfaces[0].model.as_deref(), Some("e1000"), "{xml}");
    assert!(def.qemu_agent, "{xml}");
    assert!(xml.contains("org.qemu.guest_agent.0"), "{xml}");
    assert_eq!(def.cpu_model.as_deref(), Some("core2duo"), "{xml}");
    assert!(
        xml.contains("<description>styled by the template</description>"),
        "{xml}"
    );
    assert!(xml.contains("<input type='tablet' bus='usb'>"), "{xml}");

    // The CD: label config-2, every file with this instance's values.
    let cd = Seed::from_iso(&std::fs::read(&inst.seed_key).unwrap()).unwrap();
    assert_eq!(cd.volume_label(), "config-2");
    let file = |n: &str| String::from_utf8_lossy(cd.get(n).unwrap_or_default()).into_owned();
    assert_eq!(
        file("user-data"),
        "#cloud-config\nhostname: win-1\ntoken: t0ken-for-the-job\n"
    );
    assert_eq!(file("meta-data"), "instance-id: win-1\n");
    assert_eq!(
        file("openstack/latest/meta_data.json"),
        "{\"uuid\": \"win-1\"}"
    );

    // Powered off (as the guest does when its job is done), the instance
    // is gone from libvirt; the launcher's sweep takes its volumes.
    let vols = instance_volumes(&d, "win-1");
    assert_eq!(vols.len(), 3, "{vols:?}");
    d.virsh(&["destroy", "win-1"]).unwrap();
    assert!(!d.domains().unwrap().contains(&"win-1".to_string()));
    let swept = host
        .sweep_instance_volumes(POOL, std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(swept.len(), 3, "{swept:?}");
    assert_eq!(instance_volumes(&d, "win-1"), Vec::<String>::new());

    // Firmware: each instance its own NVRAM, made from the template.
    let a = launch(&host, "uefi-template", "uefi-1");
    let b = launch(&host, "uefi-template", "uefi-2");
    let (pa, pb) = (a.nvram_path.clone().unwrap(), b.nvram_path.clone().unwrap());
    assert_ne!(pa, pb);
    let xml = d.virsh(&["dumpxml", "uefi-1"]).unwrap();
    assert!(
        xml.contains(&format!("<nvram template='{VARS}'>{pa}</nvram>")),
        "{xml}"
    );
    assert!(xml.contains(CODE), "{xml}");
    let mark = host.volume_mark().unwrap();
    assert_eq!(
        instance_volumes(&d, "uefi-1"),
        ["disk0.qcow2", "nvram.fd", "seed.iso"]
            .map(|part| kvmhost::libvirt::instance::instance_volume_name("uefi-1", &mark, part))
    );
    assert_eq!(
        std::fs::metadata(&pa).unwrap().len(),
        std::fs::metadata(VARS).unwrap().len(),
        "the NVRAM starts as a copy of the template"
    );
    let mode = std::fs::metadata(&pa).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "NVRAM mode {mode:o}: only QEMU's user may read it"
    );
    host.remove_instance("uefi-1").unwrap();
    assert_eq!(instance_volumes(&d, "uefi-1"), Vec::<String>::new());
    assert!(
        std::path::Path::new(&pb).exists(),
        "the other instance's NVRAM stays"
    );
    d.virsh(&["destroy", "uefi-2"]).unwrap();
    host.sweep_instance_volumes(POOL, std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(instance_volumes(&d, "uefi-2"), Vec::<String>::new());

    tf.destroy();
    let left = d.volumes(POOL).unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert!(d.domains().unwrap().is_empty());
}

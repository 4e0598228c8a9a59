//! Pools, networks and volumes through the real Terraform: a sparse image
//! is uploaded without its holes, an overlay names its base, every
//! resource imports with an empty plan after, and bad input fails as a
//! diagnostic on the attribute, without a backtrace.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use testbed::libvirtd::{Libvirtd, POOL};
use testbed::terraform::{header, TfProject};

/// A 64 MiB raw image holding 1 MiB of data in the middle.
fn sparse_image(path: &Path) -> String {
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(64 << 20).unwrap();
    f.seek(SeekFrom::Start(32 << 20)).unwrap();
    f.write_all(&vec![0x5a; 1 << 20]).unwrap();
    drop(f);
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn pools_networks_and_sparse_volumes_apply_import_and_destroy() {
    let d = Libvirtd::start().unwrap();
    let image = d.dir().join("image.raw");
    let sha = sparse_image(&image);
    let pool_dir = d.dir().join("extra-pool");
    let hcl = format!(
        "{}resource \"libvirt_pool\" \"extra\" {{\n  name = \"extra\"\n  type = \"dir\"\n  path = \"{}\"\n}}\n\n\
         resource \"libvirt_network\" \"lab\" {{\n  name      = \"lab\"\n  mode      = \"nat\"\n  addresses = [\"10.91.7.0/24\"]\n}}\n\n\
         resource \"libvirt_volume\" \"base\" {{\n  name   = \"base.raw\"\n  pool   = libvirt_pool.extra.name\n  source = \"{}\"\n}}\n\n\
         resource \"libvirt_volume\" \"overlay\" {{\n  name             = \"overlay.qcow2\"\n  pool             = \"{POOL}\"\n  base_volume_name = libvirt_volume.base.name\n  base_volume_pool = libvirt_pool.extra.name\n}}\n\n\
         resource \"libvirt_cloudinit_disk\" \"seed\" {{\n  name      = \"seed.iso\"\n  pool      = \"{POOL}\"\n  user_data = \"#cloud-config\\nmessage: imported\\n\"\n}}\n\n\
         resource \"libvirt_cloudinit_disk\" \"full\" {{\n  name           = \"full.iso\"\n  pool           = \"{POOL}\"\n  user_data      = \"#cloud-config\\n\"\n  meta_data      = \"instance-id: full-1\\n\"\n  network_config = \"version: 2\\nethernets: {{}}\\n\"\n}}\n\n\
         output \"seed_id\" {{\n  value = libvirt_cloudinit_disk.seed.id\n}}\n\n\
         output \"full_id\" {{\n  value = libvirt_cloudinit_disk.full.id\n}}\n",
        header(&d.uri()),
        pool_dir.display(),
        image.display()
    );
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&hcl);
    tf.apply();

    // The upload kept the content and the holes.
    let uploaded = pool_dir.join("base.raw");
    let bytes = std::fs::read(&uploaded).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&uploaded).unwrap().blocks() * 512
    };
    assert!(
        allocated < 8 << 20,
        "the volume is not sparse: {allocated} bytes allocated"
    );
    let state = tf.ok(&["state", "show", "-no-color", "libvirt_volume.base"]);
    assert!(state.contains("source_checksum"), "{state}");
    let overlay = d
        .virsh(&["vol-dumpxml", "overlay.qcow2", "--pool", POOL])
        .unwrap();
    assert!(
        overlay.contains(&uploaded.display().to_string()),
        "{overlay}"
    );
    assert_eq!(tf.plan_code().0, 0);

    // Changing the image's content replaces the volume (and its overlay).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"changed").unwrap();
    drop(f);
    let plan = tf.run(&["plan", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("libvirt_volume.base must be replaced"),
        "{text}"
    );

    // Every resource imports back with an empty plan.
    for (addr, id) in [
        ("libvirt_pool.extra", "extra".to_string()),
        ("libvirt_network.lab", "lab".to_string()),
        ("libvirt_volume.overlay", format!("{POOL}/overlay.qcow2")),
    ] {
        tf.ok(&["state", "rm", addr]);
        tf.ok(&["import", "-no-color", addr, &id]);
    }
    tf.apply();
    assert_eq!(tf.plan_code().0, 0);

    // Cloud-init disks import with their content read from the seed image:
    // by volume key (the id's digest is computed again) and by full id.
    let seed_id = tf.ok(&["output", "-raw", "seed_id"]);
    let full_id = tf.ok(&["output", "-raw", "full_id"]);
    let seed_key = seed_id.split(';').next().unwrap().to_string();
    for (addr, id) in [
        ("libvirt_cloudinit_disk.seed", seed_key.as_str()),
        ("libvirt_cloudinit_disk.full", full_id.as_str()),
    ] {
        tf.ok(&["state", "rm", addr]);
        tf.ok(&["import", "-no-color", addr, id]);
    }
    let (code, plan) = tf.plan_code();
    assert_eq!(
        code, 0,
        "the plan after importing the seeds is empty:\n{plan}"
    );
    assert_eq!(tf.ok(&["output", "-raw", "seed_id"]), seed_id);
    // meta_data and network_config are sensitive: `state show` hides them,
    // the state file holds them.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tf.dir().join("terraform.tfstate")).unwrap())
            .unwrap();
    let full = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "libvirt_cloudinit_disk" && r["name"] == "full")
        .map(|r| r["instances"][0]["attributes"].clone())
        .unwrap();
    assert_eq!(full["meta_data"], "instance-id: full-1\n", "{full}");
    assert_eq!(
        full["network_config"], "version: 2\nethernets: {}\n",
        "{full}"
    );
    let seed = tf.ok(&["state", "show", "-no-color", "libvirt_cloudinit_disk.seed"]);
    assert!(!seed.contains("meta_data"), "{seed}");

    // A seed whose content changed on the host is planned for replacement.
    d.virsh(&["vol-delete", "--pool", POOL, "full.iso"])
        .unwrap();
    let other = d.dir().join("other-seed.iso");
    let iso = kvmhost::nocloud::Seed::nocloud("#cloud-config\n", "instance-id: full-2\n", None)
        .to_iso()
        .unwrap();
    std::fs::write(&other, &iso).unwrap();
    d.virsh(&[
        "vol-create-as",
        POOL,
        "full.iso",
        &iso.len().to_string(),
        "--format",
        "raw",
    ])
    .unwrap();
    d.virsh(&[
        "vol-upload",
        "--pool",
        POOL,
        "full.iso",
        &other.display().to_string(),
    ])
    .unwrap();
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("libvirt_cloudinit_disk.full must be replaced"),
        "{plan}"
    );

    tf.destroy();
    assert!(!pool_dir.exists(), "the pool's directory is left");
    assert!(d
        .virsh(&["net-list", "--all", "--name"])
        .unwrap()
        .lines()
        .all(|l| l.trim() != "lab"));
}

#[test]
fn a_missing_pool_is_a_diagnostic_on_the_attribute_without_backtrace() {
    let d = Libvirtd::start().unwrap();
    let hcl = format!(
        "{}resource \"libvirt_volume\" \"v\" {{\n  name = \"v.qcow2\"\n  pool = \"nosuchpool\"\n  size = 1048576\n}}\n",
        header(&d.uri())
    );
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&hcl);
    let out = tf.run(&["apply", "-auto-approve", "-no-color"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage pool 'nosuchpool' does not exist"),
        "{err}"
    );
    assert!(err.contains("with libvirt_volume.v"), "{err}");
    // The diagnostic points at the attribute that caused it.
    assert!(err.contains("pool = \"nosuchpool\""), "{err}");
    assert!(
        !err.contains("backtrace") && !err.contains("panicked"),
        "{err}"
    );

    tf.write_main(&format!(
            "{}resource \"libvirt_network\" \"n\" {{\n  name      = \"n\"\n  addresses = [\"10.1.2.3\"]\n}}\n",
            header(&d.uri())
    ));
    let out = tf.run(&["plan", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is not an IPv4 subnet like 10.17.3.0/24"),
        "{err}"
    );
    assert!(err.contains("addresses"), "{err}");

    // A stylesheet that is not one fails the create on xml.xslt and
    // leaves no domain behind.
    tf.write_main(&format!(
            "{}resource \"libvirt_domain\" \"x\" {{\n  name = \"xslt-bad\"\n  type = \"qemu\"\n\n  xml {{\n    xslt = \"not a stylesheet\"\n  }}\n}}\n",
            header(&d.uri())
    ));
    let out = tf.run(&["apply", "-auto-approve", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("invalid xml.xslt: it is not well-formed XML"),
        "{err}"
    );
    assert!(!d.domains().unwrap().contains(&"xslt-bad".to_string()));

    // One that would copy a file only root may read into the domain XML
    // through an entity is refused on xml.xslt, and the file's content
    // appears nowhere.
    let key = d.dir().join("id_ed25519");
    std::fs::write(&key, "SECRET-KEY-THROUGH-TERRAFORM\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    tf.write_main(&format!(
        "{}resource \"libvirt_domain\" \"x\" {{\n  name = \"xslt-entity\"\n  type = \"qemu\"\n\n  xml {{\n    xslt = <<-EOT\n\
         <!DOCTYPE xsl:stylesheet [<!ENTITY key SYSTEM \"file://{}\">]>\n\
         <xsl:stylesheet version=\"1.0\" xmlns:xsl=\"http://www.w3.org/1999/XSL/Transform\">\n\
         <xsl:template match=\"@*|node()\"><xsl:copy><xsl:apply-templates select=\"@*|node()\"/></xsl:copy></xsl:template>\n\
         <xsl:template match=\"/domain\"><xsl:copy><xsl:apply-templates select=\"@*|node()\"/><description>&key;</description></xsl:copy></xsl:template>\n\
         </xsl:stylesheet>\n\
         EOT\n  }}\n}}\n",
        header(&d.uri()),
        key.display()
    ));
    let out = tf.run(&["apply", "-auto-approve", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("invalid xml.xslt: it has a DOCTYPE"), "{err}");
    assert!(!err.contains("SECRET-KEY"), "{err}");
    assert!(!d.domains().unwrap().contains(&"xslt-entity".to_string()));

    // A source image that is an overlay of that file would hand it to
    // the guest as its disk: refused on source, no volume made.
    let overlay = d.dir().join("overlay.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&key)
        .arg(&overlay)
        .arg("1M")
        .status()
        .unwrap();
    assert!(made.success());
    tf.write_main(&format!(
        "{}resource \"libvirt_volume\" \"v\" {{\n  name   = \"overlaid.qcow2\"\n  pool   = \"{POOL}\"\n  source = \"{}\"\n}}\n",
        header(&d.uri()),
        overlay.display()
    ));
    let out = tf.run(&["apply", "-auto-approve", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Terraform wraps the detail's lines.
    let words = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(&format!(
            "invalid source: {}: the image names the backing file '{}'",
            overlay.display(),
            key.display()
        )),
        "{err}"
    );
    assert!(err.contains("with libvirt_volume.v"), "{err}");
    assert!(d
        .virsh(&["vol-list", POOL])
        .unwrap()
        .lines()
        .all(|l| !l.contains("overlaid.qcow2")));
}

/// The seed's Windows agents pin a CPU model with a stylesheet matching
/// `/domain/cpu` (dmacvicar/libvirt writes a `<cpu>` into every domain)
/// and add a USB tablet under `/domain/devices`. On a domain without a
/// `cpu` block the stylesheet has the same effect here, and the domain
/// reads back with an empty plan.
#[test]
fn a_seed_shaped_stylesheet_pins_the_cpu_model_and_plans_empty() {
    let d = Libvirtd::start().unwrap();
    let sheet = r#"<?xml version="1.0" ?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output omit-xml-declaration="yes" indent="yes"/>
  <xsl:template match="node()|@*">
    <xsl:copy><xsl:apply-templates select="node()|@*"/></xsl:copy>
  </xsl:template>
  <xsl:template match="/domain/cpu">
    <cpu mode="custom" match="exact" check="none">
      <model fallback="forbid">Haswell-noTSX-IBRS</model>
    </cpu>
  </xsl:template>
  <xsl:template match="/domain/devices">
    <xsl:copy>
      <xsl:copy-of select="@*"/>
      <xsl:copy-of select="node()"/>
      <input type="tablet" bus="usb"/>
    </xsl:copy>
  </xsl:template>
</xsl:stylesheet>
"#;
    let hcl = format!(
        "{}resource \"libvirt_domain\" \"windows\" {{\n  name    = \"xslt-cpu\"\n  type    = \"qemu\"\n  memory  = 128\n  running = false\n\n  xml {{\n    xslt = <<-EOT\n{sheet}    EOT\n  }}\n}}\n",
        header(&d.uri())
    );
    let tf = TfProject::with_version("1.15").unwrap();
    tf.write_main(&hcl);
    tf.apply();
    let xml = d.virsh(&["dumpxml", "--inactive", "xslt-cpu"]).unwrap();
    assert!(
        xml.contains("<model fallback='forbid'>Haswell-noTSX-IBRS</model>"),
        "{xml}"
    );
    assert!(xml.contains("<input type='tablet' bus='usb'>"), "{xml}");
    let (code, plan) = tf.plan_code();
    assert_eq!(code, 0, "the plan is not empty:\n{plan}");
    tf.destroy();
    assert!(!d.domains().unwrap().contains(&"xslt-cpu".to_string()));
}

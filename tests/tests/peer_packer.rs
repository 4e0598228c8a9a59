//! Packer 1.9, built from its Go module, finds our plugin where
//! `packer init` installs it for a template's `required_plugins`
//! (`<plugins>/github.com/kvmbe/libvirt/packer-plugin-libvirt_v<ver>_x5.0_linux_amd64`
//! with its `_SHA256SUM`), validates a template that asks for it (and
//! uses a data source and `templatefile()`, which Debian's 1.6.6 lacks),
//! and builds an image of the tiny root-disk guest on the namespaced
//! libvirtd.

use std::path::Path;
use std::time::{Duration, Instant};

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, POOL};
use testbed::packer::{hcl_attributes, show, spawn_interruptible, tiny_guest_source, workdir};
use testbed::peers::{packer_1_9, packer_1_9_in, required_plugins, PLUGIN_SOURCE};
use testbed::util::wait_until;

const MARKER: &str = "built-by-packer-1.9";

fn template(bed: &Libvirtd, guest: &TinyGuest, dir: &Path, vm_name: &str) -> String {
    let body = hcl_attributes(&tiny_guest_source(bed, guest, vm_name, &dir.join("output")));
    // What Debian's Packer 1.6.6 lacks besides `required_plugins`: a data
    // source and templatefile().
    std::fs::write(dir.join("marker.pkrtpl"), "echo ${marker} > /root/marker\n").unwrap();
    format!(
        r#"{}
data "null" "marker" {{
  input = "{MARKER}"
}}

locals {{
  write_marker = templatefile("${{path.root}}/marker.pkrtpl", {{ marker = data.null.marker.output }})
}}

source "libvirt" "tiny" {{
{body}}}

build {{
  sources = ["source.libvirt.tiny"]
  provisioner "shell" {{
    inline = [local.write_marker, "echo marker=$(cat /root/marker)"]
  }}
}}
"#,
        required_plugins()
    )
}

#[test]
fn packer_1_9_loads_our_plugin_from_the_required_plugins_layout_and_builds() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("peer19").unwrap();
    let vm_name = format!("pk19-{}", std::process::id());
    let path = dir.join("tiny.pkr.hcl");
    std::fs::write(&path, template(&bed, &guest, &dir, &vm_name)).unwrap();

    // The installed plugin is the one the template's requirement picks.
    let out = packer_1_9(&dir)
        .unwrap()
        .args(["plugins", "required", "tiny.pkr.hcl"])
        .output()
        .unwrap();
    let text = show("packer plugins required", &out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(PLUGIN_SOURCE), "{text}");
    let out = packer_1_9(&dir)
        .unwrap()
        .args(["plugins", "installed"])
        .output()
        .unwrap();
    let text = show("packer plugins installed", &out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("github.com/kvmbe/libvirt/packer-plugin-libvirt_v"),
        "{text}"
    );

    let out = packer_1_9(&dir)
        .unwrap()
        .args(["validate", "tiny.pkr.hcl"])
        .output()
        .unwrap();
    let text = show("packer validate", &out);
    assert!(out.status.success(), "{text}");

    // A broken checksum file makes Packer refuse the plugin.
    let plugin_dir = dir.join(".packer.d/plugins").join(PLUGIN_SOURCE);
    let sum_file = std::fs::read_dir(&plugin_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_SHA256SUM"))
        .unwrap();
    // packer_1_9 installs the plugin afresh: break its sum after that.
    let mut c = packer_1_9(&dir).unwrap();
    std::fs::write(&sum_file, "0".repeat(64)).unwrap();
    let out = c.args(["validate", "tiny.pkr.hcl"]).output().unwrap();
    let text = show("packer validate (bad _SHA256SUM)", &out);
    assert!(!out.status.success(), "{text}");

    let t0 = Instant::now();
    let out = packer_1_9_in(bed.netns(), &dir, &["build", "tiny.pkr.hcl"])
        .unwrap()
        .output()
        .unwrap();
    let text = show("packer 1.9 build", &out);
    eprintln!("packer 1.9 build took {:.1}s", t0.elapsed().as_secs_f64());
    assert!(out.status.success(), "packer build failed");
    assert!(text.contains(&format!("marker={MARKER}")), "{text}");
    let image = dir.join(format!("output/{vm_name}.qcow2"));
    assert!(image.is_file(), "no {}", image.display());
    let sums = std::fs::read_to_string(dir.join("output/SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("{vm_name}.qcow2")), "{sums}");
    assert!(!bed.domains().unwrap().contains(&vm_name));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cancelling_a_packer_1_9_build_leaves_no_domain_or_volume() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("peer19-cancel").unwrap();
    let vm_name = format!("pk19c-{}", std::process::id());
    // A provisioner that would keep the build going for minutes.
    let hcl = template(&bed, &guest, &dir, &vm_name).replace(
        "inline = [local.write_marker,",
        "inline = [\"sleep 120\", local.write_marker,",
    );
    assert!(hcl.contains("sleep 120"), "{hcl}");
    std::fs::write(dir.join("tiny.pkr.hcl"), hcl).unwrap();
    let cmd = packer_1_9_in(bed.netns(), &dir, &["build", "tiny.pkr.hcl"]).unwrap();
    let child = spawn_interruptible(cmd).unwrap();
    // Interrupted once its VM runs, the build is under way and has a
    // running domain and its volumes for the cleanup to remove.
    wait_until(
        Duration::from_secs(120),
        "the build domain running",
        || format!("the build domain never ran; domains: {:?}", bed.domains()),
        || {
            bed.virsh(&["domstate", &vm_name])
                .is_ok_and(|s| s.contains("running"))
                .then_some(())
        },
    );
    testbed::util::signal(-(child.id() as i32), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let text = show("packer 1.9 build (cancelled)", &out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.to_lowercase().contains("cancel") || text.contains("interrupt"),
        "{text}"
    );
    assert!(!bed.domains().unwrap().contains(&vm_name));
    let vols = bed.volumes(POOL).unwrap();
    assert!(!vols.iter().any(|v| v.starts_with(&vm_name)), "{vols:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

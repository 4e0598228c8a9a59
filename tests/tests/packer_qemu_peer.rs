//! Packer's own QEMU builder plugin (`packer-plugin-qemu` 1.0.9, built by
//! the bed's peers) beside ours: under the real Packer 1.9, every template
//! under `packer/` validates (`validate -evaluate-datasources`) as written
//! with our plugin, and with its source renamed `libvirt` -> `qemu` (and
//! `required_plugins` asking for the QEMU plugin) with the QEMU plugin,
//! with the same variables and files. A misspelt option is refused by
//! both, each naming it, so neither pass is vacuous.
//!
//! The QEMU plugin has no libvirt connection: `libvirt_uri`, `pool` and
//! `network`, which ours adds, are all it refuses in our templates, and
//! the QEMU variants leave those three out; every other setting is the
//! QEMU builder's own.
//!
//! The tiny guest also builds with both, side by side, from one template
//! (ours on the bed's libvirtd, the QEMU plugin running QEMU itself under
//! TCG with user networking): the outputs have the same shape, format and
//! virtual size.
//!
//! The QEMU plugin fetches `iso_checksum = "file:https://..."` files when
//! it validates: both run where the bed's mirror (`bed-mirror`) stands in
//! for the download sites, in a namespace with only loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testbed::guest::TinyGuest;
use testbed::libvirtd::Libvirtd;
use testbed::mirror::{write_checksum_file, Mirror};
use testbed::packer::{hcl_attributes, show, tiny_guest_source, ScratchDir};
use testbed::peers;
use testbed::util::{bin_dir, workspace_root, OutputWithin, COMMAND_LIMIT};

/// The settings of ours the QEMU builder does not have.
const LIBVIRT_ONLY: [&str; 3] = ["libvirt_uri", "pool", "network"];

/// The checksum files our templates name (`file:https://...`), as
/// `(host, path, image names listed in it)`.
const CHECKSUM_FILES: [(&str, &str, &str); 2] = [
    (
        "cloud.debian.org",
        "images/cloud/bookworm/latest/SHA512SUMS",
        "debian-12-genericcloud-amd64.qcow2",
    ),
    (
        "download.freebsd.org",
        "releases/VM-IMAGES/14.2-RELEASE/amd64/Latest/CHECKSUM.SHA512",
        "FreeBSD-14.2-RELEASE-amd64-BASIC-CLOUDINIT-ufs.qcow2.xz",
    ),
];

const REQUIRED_LIBVIRT: &str = r#"    libvirt = {
      source  = "github.com/kvmbe/libvirt"
      version = ">= 0.1.0"
    }"#;

/// The template for the QEMU plugin: the source type renamed, the
/// `required_plugins` entry pointed at the QEMU plugin, and the settings
/// in `drop` left out.
fn for_qemu(text: &str, drop: &[&str]) -> String {
    assert!(text.contains(REQUIRED_LIBVIRT), "no required_plugins entry");
    let required_qemu = format!(
        "    qemu = {{\n      source  = \"{}\"\n      version = \"{}\"\n    }}",
        peers::QEMU_PLUGIN_SOURCE,
        peers::QEMU_PLUGIN_VERSION
    );
    let text = text
        .replace(REQUIRED_LIBVIRT, &required_qemu)
        .replace("source \"libvirt\" ", "source \"qemu\" ")
        .replace("\"source.libvirt.", "\"source.qemu.");
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if line.contains('=') && drop.contains(&key) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every template under `<top>/packer`, sorted.
fn templates(top: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for group in ["build-agents", "build-infrastructure"] {
        for image in std::fs::read_dir(top.join("packer").join(group)).unwrap() {
            for f in std::fs::read_dir(image.unwrap().path()).unwrap() {
                let f = f.unwrap().path();
                if f.to_string_lossy().ends_with(".pkr.hcl") {
                    found.push(f);
                }
            }
        }
    }
    found.sort();
    found
}

/// Packer 1.9 with our plugin, the `sshkey` stand-in and the QEMU plugin
/// installed under `<dir>/.packer.d/plugins`, run in the mirror's
/// namespace.
struct Packer<'a> {
    mirror: &'a Mirror,
    plain: Command,
}

impl<'a> Packer<'a> {
    fn new(mirror: &'a Mirror, dir: &Path) -> Self {
        let plain = peers::packer_1_9(dir).unwrap();
        peers::install_qemu_plugin(&dir.join(".packer.d/plugins")).unwrap();
        Packer { mirror, plain }
    }

    /// `packer validate -evaluate-datasources` of `template` in its
    /// folder, with the variables the templates need.
    fn validate(&self, template: &Path) -> (Output, Duration) {
        let mut c = self.mirror.cmd(&self.plain.get_program().to_string_lossy());
        for (k, v) in self.plain.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.current_dir(template.parent().unwrap())
            .args(["validate", "-evaluate-datasources"])
            .args(["-var", "output_dir=builds/validate"]);
        if template.to_string_lossy().contains("debian-agent") {
            c.arg("-var").arg(format!(
                "powernapd_path={}",
                bin_dir().join("powernapd").display()
            ));
            c.arg("-var").arg(format!(
                "handoff_path={}",
                bin_dir().join("kvmbe-handoff").display()
            ));
        }
        c.arg(template.file_name().unwrap());
        let start = Instant::now();
        let out = c.output_within(COMMAND_LIMIT).unwrap();
        let took = start.elapsed();
        show(&format!("packer validate {}", template.display()), &out);
        (out, took)
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn start_mirror(top: &Path) -> Mirror {
    let root = top.join("mirror");
    for (_, path, image) in CHECKSUM_FILES {
        write_checksum_file(&root.join(path), &[image]).unwrap();
    }
    let hosts: Vec<&str> = CHECKSUM_FILES.iter().map(|(h, _, _)| *h).collect();
    Mirror::start(&root, &hosts).unwrap()
}

fn copy_packer_dir(dest: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(workspace_root().join("packer"))
        .arg(dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp: {out:?}");
}

fn verdict(out: &Output, took: Duration) -> String {
    format!(
        "{} {:>5.2} s",
        if out.status.success() {
            "valid "
        } else {
            "FAILED"
        },
        took.as_secs_f64()
    )
}

#[test]
fn every_template_validates_with_ours_and_renamed_with_the_qemu_plugin() {
    let work = ScratchDir::new("qemu-peer").unwrap();
    copy_packer_dir(&work);
    let mirror = start_mirror(&work);
    let packer = Packer::new(&mirror, &work);
    let found = templates(&work);
    assert_eq!(found.len(), 4, "the templates under packer/: {found:?}");

    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for template in &found {
        let name = template.file_name().unwrap().to_string_lossy().into_owned();
        let written = std::fs::read_to_string(template).unwrap();
        let (ours, ours_took) = packer.validate(template);

        // Renamed only: the QEMU plugin refuses exactly our connection
        // settings the template uses, naming each.
        let renamed = template.with_file_name(name.replace(".pkr.hcl", "-renamed.pkr.hcl"));
        std::fs::write(&renamed, for_qemu(&written, &[])).unwrap();
        let (out, _) = packer.validate(&renamed);
        let said = text(&out);
        let used: Vec<&str> = LIBVIRT_ONLY
            .iter()
            .copied()
            .filter(|k| written.lines().any(|l| l.trim_start().starts_with(k)))
            .collect();
        assert_eq!(
            out.status.success(),
            used.is_empty(),
            "{name} renamed: {said}"
        );
        for k in &used {
            assert!(
                said.contains(&format!("An argument named \"{k}\" is not expected here.")),
                "{name} renamed: the QEMU plugin does not name {k}: {said}"
            );
        }
        assert_eq!(
            said.matches("Unsupported argument").count(),
            used.len(),
            "{name} renamed: the QEMU plugin refuses more than our connection settings: {said}"
        );
        std::fs::remove_file(&renamed).unwrap();

        let qemu_file = template.with_file_name(name.replace(".pkr.hcl", "-qemu.pkr.hcl"));
        std::fs::write(&qemu_file, for_qemu(&written, &LIBVIRT_ONLY)).unwrap();
        let (qemu, qemu_took) = packer.validate(&qemu_file);
        if !ours.status.success() {
            failed.push(format!("{name} with ours: {}", text(&ours)));
        }
        if !qemu.status.success() {
            failed.push(format!("{name} with the QEMU plugin: {}", text(&qemu)));
        }
        rows.push(format!(
            "{name:<24} | {:<14} | {:<14} | {}",
            verdict(&ours, ours_took),
            verdict(&qemu, qemu_took),
            used.join(", ")
        ));
    }
    println!(
        "{:<24} | {:<14} | {:<14} | left out for QEMU\n{}",
        "template",
        "ours (libvirt)",
        format!("qemu {}", peers::QEMU_PLUGIN_VERSION),
        "-".repeat(80)
    );
    for r in &rows {
        println!("{r}");
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_misspelt_option_is_refused_by_both_naming_it() {
    let work = ScratchDir::new("qemu-peer-bad").unwrap();
    copy_packer_dir(&work);
    let mirror = start_mirror(&work);
    let packer = Packer::new(&mirror, &work);
    let template = work.join("packer/build-infrastructure/cache-image/cache.pkr.hcl");
    let written = std::fs::read_to_string(&template).unwrap();
    assert!(written.contains("  memory "), "cache.pkr.hcl sets memory");
    let misspelt = written.replacen("  memory ", "  memroy ", 1);
    let bad_ours = template.with_file_name("bad.pkr.hcl");
    std::fs::write(&bad_ours, &misspelt).unwrap();
    let bad_qemu = template.with_file_name("bad-qemu.pkr.hcl");
    std::fs::write(&bad_qemu, for_qemu(&misspelt, &LIBVIRT_ONLY)).unwrap();
    for (who, file) in [("ours", &bad_ours), ("the QEMU plugin", &bad_qemu)] {
        let (out, _) = packer.validate(file);
        let said = text(&out);
        assert!(!out.status.success(), "{who} takes memroy: {said}");
        assert!(
            said.contains("An argument named \"memroy\" is not expected here."),
            "{who} does not name memroy: {said}"
        );
    }
}

/// `qemu-img info` of `image`: its format and virtual size.
fn shape(image: &Path) -> (String, u64) {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(image)
        .output_within(COMMAND_LIMIT)
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img info {}: {out:?}",
        image.display()
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        info["format"].as_str().unwrap_or_default().to_owned(),
        info["virtual-size"].as_u64().unwrap_or_default(),
    )
}

#[test]
fn the_tiny_guest_builds_with_both_to_the_same_shape() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let work = ScratchDir::new("qemu-peer-build").unwrap();
    let vm_name = format!("qemu-peer-{}.qcow2", std::process::id());
    let ours_out = work.join("out-libvirt");
    let qemu_out = work.join("out-qemu");

    let mut ours = tiny_guest_source(&bed, &guest, &vm_name, &ours_out);
    ours.insert("disk_size".into(), "320M".into());
    ours.insert("format".into(), "qcow2".into());
    // The same build for the QEMU plugin: no libvirt, QEMU's own TCG, the
    // kernel through qemuargs (1.0.9 has no kernel options), SSH through
    // its forwarded port.
    let mut qemu = ours.clone();
    for k in LIBVIRT_ONLY
        .iter()
        .chain(&["kernel", "initrd", "kernel_args"])
    {
        qemu.remove(*k);
    }
    // Its own copy of the source: the QEMU plugin takes a local source
    // where it lies.
    let source = work.join("root.qcow2");
    guest.copy_root_disk(&source).unwrap();
    qemu.insert("iso_url".into(), source.display().to_string().into());
    qemu.insert("accelerator".into(), "tcg".into());
    qemu.insert("headless".into(), true.into());
    qemu.insert(
        "qemuargs".into(),
        serde_json::json!([
            ["-kernel", guest.kernel.display().to_string()],
            ["-initrd", guest.root_initrd.display().to_string()],
            ["-append", guest.root_cmdline],
        ]),
    );
    qemu.insert(
        "output_directory".into(),
        qemu_out.display().to_string().into(),
    );
    // One `packer {}` block asking for both plugins.
    let required = peers::required_plugins().replacen(
        "  required_plugins {\n",
        &format!(
            "  required_plugins {{\n    qemu = {{\n      source  = \"{}\"\n      version = \"{}\"\n    }}\n",
            peers::QEMU_PLUGIN_SOURCE,
            peers::QEMU_PLUGIN_VERSION
        ),
        1,
    );
    let template = format!(
        "{required}\nsource \"libvirt\" \"tiny\" {{\n{}}}\n\nsource \"qemu\" \"tiny\" {{\n{}}}\n\nbuild {{\n  sources = [\"source.libvirt.tiny\", \"source.qemu.tiny\"]\n}}\n",
        hcl_attributes(&ours),
        hcl_attributes(&qemu),
    );
    std::fs::write(work.join("tiny.pkr.hcl"), &template).unwrap();
    peers::packer_1_9(&work).unwrap();
    peers::install_qemu_plugin(&work.join(".packer.d/plugins")).unwrap();

    let start = Instant::now();
    let out = peers::packer_1_9_in(bed.netns(), &work, &["build", "tiny.pkr.hcl"])
        .unwrap()
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let took = start.elapsed();
    let said = show("packer build (libvirt and qemu side by side)", &out);
    assert!(out.status.success(), "{template}\n{said}");

    let a = shape(&ours_out.join(&vm_name));
    let b = shape(&qemu_out.join(&vm_name));
    println!(
        "{:<10} | {:<8} | virtual size\n{}\n{:<10} | {:<8} | {}\n{:<10} | {:<8} | {}\n(both built in {:.1} s)",
        "builder",
        "format",
        "-".repeat(40),
        "libvirt",
        a.0,
        a.1,
        format!("qemu {}", peers::QEMU_PLUGIN_VERSION),
        b.0,
        b.1,
        took.as_secs_f64()
    );
    assert_eq!(a, ("qcow2".to_owned(), 320 << 20));
    assert_eq!(a, b, "ours and the QEMU plugin's outputs differ in shape");
}

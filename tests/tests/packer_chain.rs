//! A chain of Packer 1.9 builds through our builder, each starting from
//! the image the one before wrote, as the seed builds its Windows agents
//! in five steps: an overlay on the tiny guest's root disk
//! (`use_backing_file = true`), an overlay on that one with an extra disk
//! given through `qemuargs`, and a standalone image
//! (`use_backing_file = false`) flattened from the whole chain. Each step
//! finds the marker files of the steps before it and writes its own; the
//! last image holds all three and names no backing file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, POOL};
use testbed::packer::{hcl_attributes, show, tiny_guest_source, ScratchDir};
use testbed::peers;
use testbed::util::{OutputWithin, COMMAND_LIMIT};

/// One step of the chain: the settings on top of the tiny guest's and the
/// shell provisioner's commands.
struct Step {
    name: &'static str,
    settings: serde_json::Value,
    inline: Vec<String>,
}

/// Writes `<step>.pkr.hcl` into `dir` and builds it with Packer 1.9 in
/// `bed`'s namespace; returns the output image and what Packer printed.
fn build(bed: &Libvirtd, guest: &TinyGuest, dir: &Path, step: &Step) -> (PathBuf, String) {
    let vm_name = format!("{}-{}.qcow2", step.name, std::process::id());
    let output = dir.join(format!("output-{}", step.name));
    let mut source = tiny_guest_source(bed, guest, &vm_name, &output);
    source.insert("format".into(), "qcow2".into());
    source.insert("disk_cache".into(), "unsafe".into());
    source.insert("ssh_timeout".into(), "3m".into());
    source.extend(step.settings.as_object().unwrap().clone());
    let template = format!(
        "{}\nsource \"libvirt\" \"{name}\" {{\n{}}}\n\nbuild {{\n  sources = [\"source.libvirt.{name}\"]\n\n  provisioner \"shell\" {{\n    inline = {}\n  }}\n}}\n",
        peers::required_plugins(),
        hcl_attributes(&source),
        serde_json::Value::from(step.inline.clone()),
        name = step.name,
    );
    let file = format!("{}.pkr.hcl", step.name);
    std::fs::write(dir.join(&file), template).unwrap();
    let started = Instant::now();
    let out = peers::packer_1_9_in(bed.netns(), dir, &["build", &file])
        .unwrap()
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show(&format!("packer 1.9 build ({})", step.name), &out);
    eprintln!("{} built in {:?}", step.name, started.elapsed());
    assert!(out.status.success(), "{} failed", step.name);
    let image = output.join(&vm_name);
    assert!(image.is_file(), "{text}");
    (image, text)
}

/// `qemu-img info --backing-chain` of `image`: one entry per file, the
/// image first.
fn backing_chain(image: &Path) -> Vec<serde_json::Value> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "--backing-chain", "-U"])
        .arg(image)
        .output_within(COMMAND_LIMIT)
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    match serde_json::from_slice(&out.stdout).unwrap() {
        serde_json::Value::Array(chain) => chain,
        other => panic!("not a chain: {other}"),
    }
}

/// The contents of `path` in the ext4 file system on `image`, read with
/// debugfs from a raw copy in `scratch`; empty when it is missing.
fn read_file(image: &Path, scratch: &Path, path: &str) -> String {
    let raw = scratch.join("check.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(&raw)
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let _ = std::fs::remove_file(&raw);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn three_builds_in_a_row_each_start_from_the_image_before_and_the_last_stands_alone() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = ScratchDir::new("chain").unwrap();
    let pid = std::process::id();
    let t0 = Instant::now();

    // Step 1: on the tiny guest's root disk, as an overlay of it.
    let (step1, _) = build(
        &bed,
        &guest,
        &dir,
        &Step {
            name: "step1",
            settings: serde_json::json!({ "use_backing_file": true }),
            inline: vec!["echo marker-one > /step1".into(), "sync".into()],
        },
    );

    // Step 2: on step 1's image, named relative to the template's folder
    // as the seed names it, as an overlay, with an extra disk QEMU is
    // given through qemuargs (a relative path too, and a file only its
    // owner may write, as the QEMU builder's QEMU runs as that owner).
    let extra = dir.join("extra.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&extra)
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success());
    let step1_rel = step1.strip_prefix(&*dir).unwrap().display().to_string();
    let (step2, text2) = build(
        &bed,
        &guest,
        &dir,
        &Step {
            name: "step2",
            settings: serde_json::json!({
                "iso_url": step1_rel,
                "use_backing_file": true,
                "qemuargs": [[
                    "-drive",
                    "file=extra.qcow2,if=virtio,cache=unsafe,discard=unmap,format=qcow2,detect-zeroes=unmap"
                ]],
            }),
            inline: vec![
                "cat /step1".into(),
                // 16 MiB: 32768 sectors of 512 bytes.
                "grep -lx 32768 /sys/block/vd*/size && echo extra-disk-seen".into(),
                "echo marker-two > /step2".into(),
                "sync".into(),
            ],
        },
    );
    assert!(text2.contains("marker-one"), "{text2}");
    // The extra disk comes after the build disk, as under the QEMU builder.
    assert!(
        text2.contains("/sys/block/vdb/size") && text2.contains("extra-disk-seen"),
        "{text2}"
    );

    // Step 3: standalone, from step 2's image (an overlay of an overlay).
    let step2_rel = step2.strip_prefix(&*dir).unwrap().display().to_string();
    let (step3, text3) = build(
        &bed,
        &guest,
        &dir,
        &Step {
            name: "step3",
            settings: serde_json::json!({
                "iso_url": step2_rel,
                "use_backing_file": false,
            }),
            inline: vec![
                "cat /step1 /step2".into(),
                "echo marker-three > /step3".into(),
                "sync".into(),
            ],
        },
    );
    assert!(
        text3.contains("marker-one") && text3.contains("marker-two"),
        "{text3}"
    );
    eprintln!("the chain built in {:?}", t0.elapsed());

    // Step 2's image is an overlay of step 1's, which is one of the root
    // disk: backing files by absolute path, where they were.
    let chain = backing_chain(&step2);
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert_eq!(
        chain[0]["backing-filename"].as_str(),
        Some(step1.to_str().unwrap()),
        "{chain:?}"
    );
    assert_eq!(
        chain[1]["backing-filename"].as_str(),
        Some(guest.root_disk.to_str().unwrap()),
        "{chain:?}"
    );
    // Step 3's stands alone and holds every step's work.
    let chain = backing_chain(&step3);
    assert_eq!(chain.len(), 1, "{chain:?}");
    assert!(chain[0].get("backing-filename").is_none(), "{chain:?}");
    assert_eq!(chain[0]["format"].as_str(), Some("qcow2"), "{chain:?}");
    for (path, want) in [
        ("/step1", "marker-one"),
        ("/step2", "marker-two"),
        ("/step3", "marker-three"),
    ] {
        assert_eq!(read_file(&step3, &dir, path).trim(), want, "{path}");
    }
    // The extra disk stayed where it was, not copied into any output.
    assert!(extra.is_file());
    let mut written: Vec<String> = std::fs::read_dir(step2.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "SHA256SUMS".to_string(),
            step2.file_name().unwrap().to_string_lossy().into_owned()
        ]
    );
    // The flattened copy of step 3's source is gone from Packer's cache.
    let cache = testbed::util::cache_dir().join("packer_cache");
    let flat: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".flat-"))
        .collect();
    assert!(flat.is_empty(), "{flat:?}");

    let domains = bed.domains().unwrap();
    assert!(domains.is_empty(), "{domains:?}");
    let vols = bed.volumes(POOL).unwrap();
    assert!(
        !vols.iter().any(|v| v.contains(&format!("-{pid}"))),
        "{vols:?}"
    );
}

//! `kvmbe` drives the real Packer (our builder, the tiny guest) and the real
//! Terraform (our provider) on the namespaced libvirtd: a build lands in
//! `builds/<timestamp>/` and becomes the latest; a deploy records which
//! build the state uses; a later build keeps that build however few builds
//! `--keep` allows, and once the state moves on, pruning removes it; the
//! rebuild check says fresh, then stale when the template changes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testbed::util::{OutputWithin, COMMAND_LIMIT};

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, POOL};
use testbed::packer::{hcl_attributes, show, tiny_guest_source, ScratchDir};
use testbed::terraform::{header, TfProject};
use testbed::tools;
use testbed::util::bin_dir;

/// `kvmbe ARGS` in the daemon's namespace, with Packer set up to load our
/// builder and Terraform set up to load our provider.
fn kvmbe(bed: &Libvirtd, work: &Path, tf: &TfProject, args: &[&str]) -> Output {
    let mut c = bed
        .netns()
        .cmd(&bin_dir().join("kvmbe").display().to_string());
    let packer = tools::packer(work).unwrap();
    let terraform = tf.cmd();
    for (k, v) in packer.get_envs().chain(terraform.get_envs()) {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.env("TERRAFORM", terraform.get_program());
    c.args(args);
    let out = c.output_within(COMMAND_LIMIT).expect("kvmbe runs");
    show(&format!("kvmbe {}", args.join(" ")), &out);
    out
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "kvmbe failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn template(bed: &Libvirtd, guest: &TinyGuest, vm_name: &str) -> String {
    let mut source = tiny_guest_source(bed, guest, vm_name, Path::new("-"));
    source.remove("output_directory");
    format!(
        r#"variable "output_dir" {{
  type = string
}}

source "libvirt" "agent" {{
{}  output_directory = var.output_dir
}}

build {{
  sources = ["source.libvirt.agent"]
  provisioner "shell" {{
    inline = ["echo built > /root/marker"]
  }}
}}
"#,
        hcl_attributes(&source)
    )
}

fn builds(image: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(image.join("builds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with('Z'))
        .collect();
    v.sort();
    v
}

fn latest(image: &Path) -> String {
    std::fs::read_to_string(image.join("builds/latest-version"))
        .unwrap()
        .trim()
        .to_string()
}

/// The one image file a build holds (besides its log and digest).
fn image_file(build: &Path) -> PathBuf {
    std::fs::read_dir(build)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n != "build.log" && n != "template.sha256" && n != "SHA256SUMS"
        })
        .unwrap_or_else(|| panic!("no image in {}", build.display()))
}

#[test]
fn retention_keeps_the_deployed_build_until_the_state_moves_on() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let work = ScratchDir::new("kvmbe").unwrap();
    let image = work.join("agent-image");
    std::fs::create_dir_all(&image).unwrap();
    let vm_name = format!("kvmbe-agent-{}.qcow2", std::process::id());
    std::fs::write(
        image.join("agent.pkr.hcl"),
        template(&bed, &guest, &vm_name),
    )
    .unwrap();
    let tf = TfProject::from_mirror(testbed::terraform::terraform("1.11").unwrap()).unwrap();
    tf.write_main(&format!(
        r#"{header}
locals {{
  image   = "{image}"
  version = trimspace(file("${{local.image}}/builds/latest-version"))
}}

resource "libvirt_volume" "agent" {{
  name   = "kvmbe-agent-${{local.version}}.qcow2"
  pool   = "{POOL}"
  source = "${{local.image}}/builds/${{local.version}}/{vm_name}"
  format = "qcow2"
}}
"#,
        header = header(&bed.uri()),
        image = image.display(),
    ));
    let image_arg = image.display().to_string();
    let root_arg = tf.dir().display().to_string();

    // First build: the latest, nothing to remove.
    let text = ok(&kvmbe(
        &bed,
        &work,
        &tf,
        &["build", "--keep", "0", &image_arg],
    ));
    let first = latest(&image);
    assert!(text.contains(&format!("built {first}")), "{text}");
    assert!(text.contains("no old builds to remove"), "{text}");
    assert_eq!(builds(&image), [first.as_str()]);
    let log = std::fs::read_to_string(image.join("builds").join(&first).join("build.log")).unwrap();
    assert!(
        log.contains("Builds finished"),
        "the build's log is kept: {log}"
    );
    assert_eq!(
        image_file(&image.join("builds").join(&first))
            .file_name()
            .unwrap()
            .to_string_lossy(),
        vm_name,
        "the template writes its image under var.output_dir"
    );

    // Deploy: the state's volume comes from the first build.
    let text = ok(&kvmbe(&bed, &work, &tf, &["deploy", "-y", &root_arg]));
    assert!(text.contains(&format!("deployed {first}")), "{text}");

    // The rebuild check: fresh now; stale once the template changes.
    let out = kvmbe(&bed, &work, &tf, &["check", "--max-age", "1d", &image_arg]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("fresh (build {first}")));
    let mut t = std::fs::read_to_string(image.join("agent.pkr.hcl")).unwrap();
    t.push_str("# a change\n");
    std::fs::write(image.join("agent.pkr.hcl"), t).unwrap();
    let out = kvmbe(&bed, &work, &tf, &["check", "--max-age", "1d", &image_arg]);
    assert_eq!(out.status.code(), Some(1), "a stale image exits 1");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "stale: the template folder changed since build {first}"
        )),
        "{out:?}"
    );

    // Second build with --keep 0: the deployed first build stays.
    // Builds are named by the second they start in: the next one needs a new one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let text = ok(&kvmbe(
        &bed,
        &work,
        &tf,
        &["rebuild", "--keep", "0", &image_arg],
    ));
    let second = latest(&image);
    assert_ne!(second, first);
    assert!(text.contains("no old builds to remove"), "{text}");
    assert_eq!(builds(&image), [first.clone(), second.clone()]);
    let out = kvmbe(&bed, &work, &tf, &["check", "--max-age", "1d", &image_arg]);
    assert_eq!(out.status.code(), Some(0), "fresh again after the rebuild");

    // Deploy again: the state moves to the second build, and the first goes.
    let text = ok(&kvmbe(&bed, &work, &tf, &["deploy", "-y", &root_arg]));
    assert!(text.contains(&format!("deployed {second}")), "{text}");
    let text = ok(&kvmbe(
        &bed,
        &work,
        &tf,
        &["prune", "--keep", "0", &image_arg],
    ));
    assert!(text.contains(&format!("removed build {first}")), "{text}");
    assert_eq!(builds(&image), [second.as_str()]);

    tf.destroy();
    assert!(bed
        .volumes(POOL)
        .unwrap()
        .iter()
        .all(|v| !v.starts_with("kvmbe-agent")));
}

#[test]
fn a_failed_build_keeps_its_log_and_changes_nothing() {
    let work = ScratchDir::new("kvmbe-fail").unwrap();
    let image = work.join("broken-image");
    std::fs::create_dir_all(&image).unwrap();
    std::fs::write(
        image.join("broken.pkr.hcl"),
        "variable \"output_dir\" {\n  type = string\n}\n\nsource \"libvirt\" \"x\" {\n  no_such_option = 1\n}\n\nbuild {\n  sources = [\"source.libvirt.x\"]\n}\n",
    )
    .unwrap();
    let mut c = Command::new(bin_dir().join("kvmbe"));
    for (k, v) in tools::packer(&work).unwrap().get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = c
        .args(["build", "--quiet"])
        .arg(&image)
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("kvmbe build (broken)", &out);
    assert_eq!(out.status.code(), Some(2));
    assert!(text.contains("packer build failed"), "{text}");
    assert!(
        text.contains("no_such_option"),
        "a quiet build that fails prints Packer's output: {text}"
    );
    assert!(!image.join("builds/latest-version").exists());
    let logs: Vec<_> = std::fs::read_dir(image.join("builds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(logs.len(), 1, "only the failed build's log: {logs:?}");
    assert!(
        text.contains(&logs[0]),
        "the error says where the log is: {text}"
    );
}

/// `kvmbe deploy` reads what Terraform 1.11, Terraform 1.15 and OpenTofu
/// print for `show -json`: the build a state uses is recorded as deployed
/// however its image folder is named, and `kvmbe prune` keeps it while
/// the older build goes. (No guest: a `terraform_data` holds the path.)
#[test]
fn a_deployed_build_under_a_path_with_a_space_an_equals_sign_and_a_comma_is_not_pruned() {
    let mut terraforms = tools::terraforms().unwrap();
    terraforms.push(testbed::peers::opentofu().unwrap());
    for tf in terraforms {
        let version = tf.version.clone();
        let work = ScratchDir::new(&format!("kvmbe-odd-{version}")).unwrap();
        let image = work.join("agent images/os=debian,arch=amd64");
        let (old, used, newest) = (
            "2026-11-01T00:00:00Z",
            "2026-11-02T00:00:00Z",
            "2026-11-03T00:00:00Z",
        );
        for b in [old, used, newest] {
            std::fs::create_dir_all(image.join("builds").join(b)).unwrap();
            std::fs::write(image.join("builds").join(b).join("agent.qcow2"), "").unwrap();
        }
        std::fs::write(image.join("agent.pkr.hcl"), "").unwrap();
        std::os::unix::fs::symlink(newest, image.join("builds/latest")).unwrap();
        std::fs::write(image.join("builds/latest-version"), format!("{newest}\n")).unwrap();
        let project = TfProject::new(tf).unwrap();
        project.write_main(&format!(
            "resource \"terraform_data\" \"image\" {{\n  input = \"{}\"\n}}\n",
            image
                .join("builds")
                .join(used)
                .join("agent.qcow2")
                .display()
        ));
        let run = |args: &[&str]| {
            let terraform = project.cmd();
            let mut c = Command::new(bin_dir().join("kvmbe"));
            for (k, v) in terraform.get_envs() {
                if let Some(v) = v {
                    c.env(k, v);
                }
            }
            c.env("TERRAFORM", terraform.get_program()).args(args);
            let out = c.output_within(COMMAND_LIMIT).expect("kvmbe runs");
            let text = show(&format!("kvmbe {} ({version})", args.join(" ")), &out);
            assert!(out.status.success(), "kvmbe failed ({version})");
            text
        };

        let deployed = run(&["deploy", "-y", &project.dir().display().to_string()]);
        let pruned = run(&["prune", "--keep", "0", &image.display().to_string()]);

        assert!(
            deployed.contains(&format!("deployed {used}")),
            "{version}: {deployed}"
        );
        assert!(
            pruned.contains(&format!("removed build {old}")),
            "{version}: {pruned}"
        );
        assert_eq!(builds(&image), [used, newest], "{version}");
    }
}

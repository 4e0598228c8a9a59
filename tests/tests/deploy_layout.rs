//! The deployment under `packer/` and `terraform/`: every root module
//! initialises from a filesystem mirror and validates under Terraform 1.11
//! and OpenTofu, and is `terraform fmt` clean; every Packer template
//! validates under Packer 1.9 with our builder, the Windows one over
//! WinRM too. The agent
//! template module takes no token: the applied template's user-data, in
//! its root-only volume on the host, leaves `{{buildkite_agent_token}}` to
//! the launcher (which fills in each VM's job acquisition token).
//!
//! Validation runs in a network namespace of its own with only loopback:
//! nothing it does can reach the network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::netns::Netns;
use testbed::packer::ScratchDir;
use testbed::peers;
use testbed::terraform::terraform;
use testbed::tools::{mirror_config, Terraform};
use testbed::util::{bin_dir, workspace_root};

/// The repository's `packer/` and `terraform/` copied into a fresh folder,
/// so that `terraform init` writes nothing into the checkout.
fn copy_deployment(dest: &Path) {
    for part in ["packer", "terraform"] {
        let out = Command::new("cp")
            .arg("-a")
            .arg(workspace_root().join(part))
            .arg(dest)
            .output()
            .unwrap();
        assert!(out.status.success(), "cp: {out:?}");
    }
}

fn show(what: &str, out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("== {what} -> {:?}\n{text}", out.status.code());
    text
}

fn tf(ns: &Netns, t: &Terraform, dir: &Path, cli: &Path, args: &[&str]) -> Output {
    let mut c = ns.cmd(&t.program.display().to_string());
    t.configure(&mut c, dir, cli);
    c.args(args);
    let out = c.output().unwrap();
    show(
        &format!("{} {} in {}", t.version, args.join(" "), dir.display()),
        &out,
    );
    out
}

fn roots(top: &Path) -> Vec<PathBuf> {
    ["build-agents", "build-infrastructure"]
        .iter()
        .map(|r| top.join("terraform").join(r))
        .collect()
}

#[test]
fn every_root_module_validates_under_terraform_and_opentofu() {
    let work = tempfile::tempdir().unwrap();
    copy_deployment(work.path());
    let cli = mirror_config(work.path()).unwrap();
    let ns = Netns::new("validate").unwrap();
    let mut tfs = vec![terraform("1.11").unwrap()];
    tfs.push(peers::opentofu().unwrap());
    for t in &tfs {
        for root in roots(work.path()) {
            let _ = std::fs::remove_dir_all(root.join(".terraform"));
            let _ = std::fs::remove_file(root.join(".terraform.lock.hcl"));
            let out = tf(
                &ns,
                t,
                &root,
                &cli,
                &["init", "-backend=false", "-input=false", "-no-color"],
            );
            assert!(
                out.status.success(),
                "{} init {}",
                t.version,
                root.display()
            );
            let out = tf(&ns, t, &root, &cli, &["validate", "-no-color"]);
            assert!(
                out.status.success(),
                "{} validate {}",
                t.version,
                root.display()
            );
        }
    }
    let out = tf(
        &ns,
        &tfs[0],
        &work.path().join("terraform"),
        &cli,
        &["fmt", "-check", "-recursive", "-diff", "-no-color"],
    );
    assert!(out.status.success(), "terraform/ is not fmt clean");
}

fn templates(top: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for group in ["build-agents", "build-infrastructure"] {
        for image in std::fs::read_dir(top.join("packer").join(group)).unwrap() {
            let image = image.unwrap().path();
            for f in std::fs::read_dir(&image).unwrap() {
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

#[test]
fn every_packer_template_validates_under_packer_1_9() {
    let work = ScratchDir::new("layout").unwrap();
    copy_deployment(&work);
    let ns = Netns::new("validate").unwrap();
    let plain = peers::packer_1_9(&work).unwrap();
    let found = templates(&work);
    let names: Vec<_> = found
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "debian-agent.pkr.hcl",
            "freebsd-agent.pkr.hcl",
            "windows-agent.pkr.hcl",
            "cache.pkr.hcl"
        ]
    );
    for template in &found {
        let dir = template.parent().unwrap();
        let mut c = ns.cmd(&plain.get_program().to_string_lossy());
        for (k, v) in plain.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.current_dir(dir).arg("validate");
        c.args(["-var", "output_dir=builds/validate"]);
        if template.ends_with("debian-agent.pkr.hcl") {
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
        let out = c.output().unwrap();
        let text = show(&format!("packer validate {}", template.display()), &out);
        assert!(out.status.success(), "{}: {text}", template.display());
    }
}

#[test]
fn the_agent_template_holds_no_token_and_leaves_it_to_the_launcher() {
    const PLACEHOLDER: &str = "BUILDKITE_AGENT_TOKEN={{buildkite_agent_token}}";
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let work = ScratchDir::new("secrets").unwrap();
    copy_deployment(&work);
    // An image folder with one build of the tiny guest, as kvmbe build
    // leaves it.
    let image = work.join("images/debian-agent-image");
    let build = image.join("builds/2026-12-01T00:00:00Z");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::copy(&guest.root_disk, build.join("debian-agent.qcow2")).unwrap();
    let root = work.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("main.tf"),
        format!(
            r#"terraform {{
  required_providers {{
    libvirt = {{
      source = "kvmbe/libvirt"
    }}
  }}
}}

provider "libvirt" {{
  uri = "{uri}"
}}

module "agent" {{
  source             = "../terraform/build-agents/agent-template"
  name               = "debian-agent"
  image_dir          = "{image}"
  user_data_template = "../terraform/build-agents/user-data/debian-agent.tftpl"
  pool               = "{POOL}"
  network_name       = "{NETWORK}"
  type               = "qemu"
  memory             = 256
  vcpu               = 1
}}
"#,
            uri = bed.uri(),
            image = image.display(),
        ),
    )
    .unwrap();
    let t = terraform("1.11").unwrap();
    let cli = mirror_config(&work).unwrap();
    let run = |args: &[&str]| {
        let mut c = t.cmd(&root, &cli);
        c.args(args);
        let out = c.output().unwrap();
        let text = show(&format!("terraform {}", args.join(" ")), &out);
        assert!(out.status.success(), "terraform {}", args.join(" "));
        text
    };
    run(&["init", "-input=false", "-no-color"]);
    run(&["plan", "-no-color", "-out=tfplan"]);
    run(&["apply", "-no-color", "-auto-approve", "tfplan"]);

    // The template's user-data is in its root-only volume, with the
    // placeholder the launcher fills per VM where a token used to be.
    let mut in_a_volume = Vec::new();
    for entry in std::fs::read_dir(bed.pool_dir()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes
            .windows(PLACEHOLDER.len())
            .any(|w| w == PLACEHOLDER.as_bytes())
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(
                meta.mode() & 0o077,
                0,
                "{} is readable by others",
                path.display()
            );
            assert_eq!(meta.uid(), 0, "{} is not root's", path.display());
            in_a_volume.push(path);
        }
    }
    assert_eq!(
        in_a_volume.len(),
        1,
        "the user-data is in one volume: {in_a_volume:?}"
    );

    run(&["destroy", "-no-color", "-auto-approve"]);
}

#[test]
fn the_images_powernapd_configs_pass_powernapds_own_check() {
    let conf = workspace_root().join("packer/build-agents/debian-agent-image/files/powernapd.conf");
    let out = Command::new(bin_dir().join("powernapd"))
        .arg("--check")
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    let text = show("powernapd --check", &out);
    assert!(out.status.success(), "{text}");
    for line in [
        "monitor process ^/usr/bin/buildkite-agent",
        "monitor process ^/usr/local/sbin/kvmbe-handoff",
    ] {
        assert!(text.contains(line), "{text}");
    }
}

/// What the Debian image's `install.sh` installs of its own, put into a
/// scratch root as the build puts it into the image: the units are
/// enabled, `systemd-analyze verify` (with this machine's systemd units
/// beside them) finds nothing to say, a VM started for its job runs the
/// one-job agent unit and a warm VM (with the hand-off channel) runs
/// kvmbe-handoff instead, never both.
#[test]
fn the_debian_image_installs_the_agent_the_hand_off_and_powernapd() {
    let work = ScratchDir::new("image-files").unwrap();
    let files = work.join("files");
    let root = work.join("root");
    let src = workspace_root().join("packer/build-agents/debian-agent-image/files");
    let cp = |from: &Path, to: &Path| {
        let out = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .output()
            .unwrap();
        assert!(out.status.success(), "cp: {out:?}");
    };
    cp(&src, &files);
    // As the template's file provisioners upload them.
    cp(&bin_dir().join("powernapd"), &files.join("powernapd"));
    cp(
        &bin_dir().join("kvmbe-handoff"),
        &files.join("kvmbe-handoff"),
    );
    let out = Command::new("sh")
        .arg(files.join("install-files.sh"))
        .arg(&root)
        .output()
        .unwrap();
    let text = show("install-files.sh", &out);
    assert!(out.status.success(), "{text}");

    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [
        ("usr/local/sbin/kvmbe-handoff", 0o755),
        ("usr/local/sbin/powernapd", 0o755),
        ("usr/local/libexec/kvmbe-agent", 0o755),
        ("usr/local/libexec/kvmbe-renew-dhcp", 0o755),
        ("etc/powernap/powernapd.conf", 0o644),
        ("etc/buildkite-agent/buildkite-agent.cfg", 0o644),
    ] {
        let meta = std::fs::metadata(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{path}");
    }
    let unit_dir = root.join("etc/systemd/system");
    let units = [
        "buildkite-agent-job.service",
        "kvmbe-handoff.service",
        "powernapd.service",
    ];
    for unit in units {
        let wants = unit_dir.join("multi-user.target.wants").join(unit);
        let link = std::fs::read_link(&wants).unwrap_or_else(|e| panic!("{unit} not enabled: {e}"));
        assert_eq!(link, Path::new("/etc/systemd/system").join(unit));
    }
    for script in ["kvmbe-agent", "kvmbe-renew-dhcp", "install-files.sh"] {
        let out = Command::new("sh")
            .arg("-n")
            .arg(files.join(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            show(&format!("sh -n {script}"), &out)
        );
    }

    // systemd-analyze resolves the units' targets and programs in the root.
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    cp(
        Path::new("/usr/lib/systemd/system"),
        &root.join("usr/lib/systemd/system"),
    );
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/buildkite-agent"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        root.join("usr/bin/buildkite-agent"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units.map(|u| format!("/etc/systemd/system/{u}")))
        .output()
        .unwrap();
    let text = show("systemd-analyze verify", &out);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");

    // Which of the two runs the agent: the hand-off channel decides.
    let conditions = |unit: &str| -> Vec<String> {
        std::fs::read_to_string(unit_dir.join(unit))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("ConditionPathExists="))
            .map(str::to_owned)
            .collect()
    };
    const PORT: &str = "/dev/virtio-ports/org.kvmbe.handoff";
    assert!(conditions("kvmbe-handoff.service").contains(&format!("ConditionPathExists={PORT}")));
    assert!(
        conditions("buildkite-agent-job.service").contains(&format!("ConditionPathExists=!{PORT}"))
    );
}

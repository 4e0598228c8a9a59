//! The commands: run Packer and Terraform the way the deployment needs,
//! keep their output, and keep `builds/` tidy.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::image::write_atomic;
use crate::{deployed_builds, prune_plan, Build, Deployed, Error, ImageDir, Result, ShowJson};

/// The programs to run.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Packer (`packer`, or `$PACKER`).
    pub packer: String,
    /// Terraform or OpenTofu (`terraform`, or `$TERRAFORM`).
    pub terraform: String,
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Builds to keep besides the latest and the deployed ones.
    pub keep: usize,
    /// Print Packer's output only when it fails.
    pub quiet: bool,
    /// More `-var NAME=VALUE` for Packer.
    pub vars: Vec<String>,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The new build.
    pub build: Build,
    /// The builds it removed afterwards.
    pub removed: Vec<Build>,
}

/// Builds `dir`'s template into `builds/<now>/` with its log, records its
/// sources' digest, makes it the latest, then prunes.
pub fn build(dir: &ImageDir, programs: &Programs, opts: &BuildOptions) -> Result<BuildReport> {
    let template = dir.template()?;
    let template_name = template.file_name().unwrap_or_default().to_owned();
    let now = SystemTime::now();
    let version = ImageDir::next_version(now);
    let builds = dir.builds_dir();
    std::fs::create_dir_all(&builds).map_err(Error::io(&builds))?;
    let out_rel = format!("builds/{version}");
    let out = dir.root().join(&out_rel);
    if out.exists() {
        return Err(Error::Exists(out));
    }
    // Packer makes the output folder itself and refuses an existing one:
    // the log waits beside it until the build is done.
    let log_path = builds.join(format!(".{version}.log"));
    if packer_has_init(&programs.packer)? {
        let mut c = Command::new(&programs.packer);
        c.current_dir(dir.root()).arg("init").arg(&template_name);
        run_logged(c, &log_path, opts.quiet, "packer init")?;
    }
    let mut c = Command::new(&programs.packer);
    c.current_dir(dir.root())
        .args(["build", "-timestamp-ui", "-var"])
        .arg(format!("output_dir={out_rel}"));
    for v in &opts.vars {
        c.arg("-var").arg(v);
    }
    c.arg(&template_name);
    run_logged(c, &log_path, opts.quiet, "packer build")?;
    if !out.is_dir() {
        return Err(Error::Output {
            what: "packer build".into(),
            detail: format!(
                "{} was not made: the template must write its image to var.output_dir",
                out.display()
            ),
        });
    }
    let log = out.join("build.log");
    std::fs::rename(&log_path, &log).map_err(Error::io(&log))?;
    dir.record_sources(&out)?;
    dir.set_latest(&version)?;
    let removed = prune(dir, opts.keep)?;
    let build = Build {
        time: crate::parse_utc(&version).unwrap_or(now),
        version,
        path: out,
    };
    Ok(BuildReport { build, removed })
}

/// Removes every build but the newest `keep`, the latest and the deployed
/// ones; returns what it removed.
pub fn prune(dir: &ImageDir, keep: usize) -> Result<Vec<Build>> {
    let builds = dir.builds()?;
    let latest = dir.latest()?;
    let deployed = dir.deployed()?;
    let plan = prune_plan(&builds, keep, latest.as_deref(), &deployed);
    for b in &plan {
        std::fs::remove_dir_all(&b.path).map_err(Error::io(&b.path))?;
    }
    Ok(plan)
}

/// `terraform init`, `validate` and `apply` in `root`, then records in
/// each image folder which of its builds the state now uses.
pub fn deploy(root: &Path, programs: &Programs, auto_approve: bool) -> Result<Deployed> {
    let tf = |args: &[&str]| {
        let mut c = Command::new(&programs.terraform);
        c.current_dir(root).args(args);
        c
    };
    run(tf(&["init", "-input=false"]), "terraform init")?;
    run(tf(&["validate"]), "terraform validate")?;
    let mut apply = tf(&["apply", "-input=false"]);
    if auto_approve {
        apply.arg("-auto-approve");
    }
    run(apply, "terraform apply")?;
    record_state(root, programs)
}

/// Reads `root`'s state and records the builds it uses in each image
/// folder (`builds/deployed/<root>`), forgetting images it no longer uses.
pub fn record_state(root: &Path, programs: &Programs) -> Result<Deployed> {
    let what = "terraform show -json";
    let out = Command::new(&programs.terraform)
        .current_dir(root)
        .args(["show", "-json"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| Error::Spawn {
            program: programs.terraform.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Failed {
            what: what.into(),
            status: out.status,
            log: String::new(),
        });
    }
    let state = ShowJson::parse(&out.stdout).map_err(|e| Error::Output {
        what: what.into(),
        detail: match e.classify() {
            serde_json::error::Category::Data => {
                format!("not the shape of a state (values.root_module.resources): {e}")
            }
            _ => format!("not JSON: {e}"),
        },
    })?;
    let root = root.canonicalize().map_err(Error::io(root))?;
    let deployed = deployed_builds(&state, &root);
    let key = root_key(&root);
    // The image folders this root used last time, so that one it no longer
    // uses is told so.
    let memo = root.join(".kvmbe-deployed-images");
    let before: BTreeSet<PathBuf> = std::fs::read_to_string(&memo)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    for image in before
        .iter()
        .filter(|i| !deployed.by_image.contains_key(*i))
    {
        if let Ok(dir) = ImageDir::open(image) {
            dir.record_deployed(&key, &BTreeSet::new())?;
        }
    }
    for (image, versions) in &deployed.by_image {
        ImageDir::open(image)?.record_deployed(&key, versions)?;
    }
    let list: String = deployed
        .by_image
        .keys()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    write_atomic(&memo, list.as_bytes())?;
    Ok(deployed)
}

/// A file name for a Terraform root: its folder name and a digest of its
/// path, so two roots named alike stay apart.
fn root_key(root: &Path) -> String {
    // Files starting with a dot in `builds/deployed/` are writes under way.
    let name = root.file_name().unwrap_or_default().to_string_lossy();
    let name = name.trim_start_matches('.');
    let digest = hex::encode(Sha256::digest(root.as_os_str().as_encoded_bytes()));
    format!("{name}-{}", &digest[..8])
}

/// Whether this Packer has `packer init` (1.7 and newer).
fn packer_has_init(packer: &str) -> Result<bool> {
    let out = Command::new(packer)
        .arg("version")
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .map_err(|source| Error::Spawn {
            program: packer.into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find_map(|w| {
            w.strip_prefix('v')
                .or(Some(w))
                .filter(|w| w.starts_with("1."))
        })
        .unwrap_or("");
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    Ok(minor >= 7)
}

/// Runs `c` with its output on ours.
fn run(mut c: Command, what: &str) -> Result<()> {
    let status = c.status().map_err(|source| Error::Spawn {
        program: c.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed {
            what: what.into(),
            status,
            log: String::new(),
        })
    }
}

/// Runs `c` with stdout and stderr together appended to `log` and, unless
/// `quiet`, copied to our stdout; a quiet run that fails prints the log.
fn run_logged(mut c: Command, log: &Path, quiet: bool, what: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(Error::io(log))?;
    let (mut reader, writer) = std::io::pipe().map_err(Error::io(log))?;
    let writer2 = writer.try_clone().map_err(Error::io(log))?;
    c.stdout(writer).stderr(writer2).stdin(Stdio::null());
    let mut child = c.spawn().map_err(|source| Error::Spawn {
        program: c.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    // Our copies of the pipe's writing end must go, or the read never ends.
    drop(c);
    let mut buf = [0u8; 8192];
    let stdout = std::io::stdout();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(log)(e)),
        };
        file.write_all(&buf[..n]).map_err(Error::io(log))?;
        if !quiet {
            let mut out = stdout.lock();
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    }
    let status = child.wait().map_err(Error::io(log))?;
    if status.success() {
        return Ok(());
    }
    if quiet {
        if let Ok(text) = std::fs::read(log) {
            let _ = stdout.lock().write_all(&text);
        }
    }
    Err(Error::Failed {
        what: what.into(),
        status,
        log: format!("; its output is in {}", log.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `terraform` that only answers `show -json` with `json`. `install`
    /// writes the script: had this process written it, a child another test
    /// thread forks at that moment could hold it open for writing, and
    /// running it would fail with "Text file busy".
    fn fake_terraform(dir: &Path, json: &str) -> Programs {
        let script = dir.join("terraform");
        let text = dir.join("terraform.sh");
        std::fs::write(dir.join("show.json"), json).unwrap();
        std::fs::write(
            &text,
            format!(
                "#!/bin/sh\n[ \"$1 $2\" = \"show -json\" ] || exit 1\nexec cat '{}'\n",
                dir.join("show.json").display()
            ),
        )
        .unwrap();
        let status = std::process::Command::new("install")
            .args(["-m", "0755"])
            .arg(&text)
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success(), "install: {status}");
        Programs {
            packer: "packer".into(),
            terraform: script.display().to_string(),
        }
    }

    #[test]
    fn a_deployed_build_under_a_path_with_a_space_an_equals_sign_and_a_comma_is_not_pruned() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("agent images/os=debian,arch=amd64");
        let (old, used, new) = (
            "2026-11-01T00:00:00Z",
            "2026-11-02T00:00:00Z",
            "2026-11-03T00:00:00Z",
        );
        for v in [old, used, new] {
            std::fs::create_dir_all(image.join("builds").join(v)).unwrap();
        }
        std::fs::write(image.join("agent.pkr.hcl"), "").unwrap();
        let dir = ImageDir::open(&image).unwrap();
        dir.set_latest(new).unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let source = image.join("builds").join(used).join("agent.qcow2");
        let json = serde_json::json!({
            "format_version": "1.0",
            "values": {"root_module": {"resources": [{
                "address": "libvirt_volume.base",
                "values": {"source": source.display().to_string()}
            }]}}
        });
        let programs = fake_terraform(t.path(), &json.to_string());

        record_state(&root, &programs).unwrap();
        let removed: Vec<String> = prune(&dir, 0)
            .unwrap()
            .into_iter()
            .map(|b| b.version)
            .collect();

        assert_eq!(removed, [old]);
        assert!(image.join("builds").join(used).is_dir());
    }

    #[test]
    fn output_that_is_not_a_state_says_so() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let e = record_state(&root, &fake_terraform(t.path(), r#"{"values": 3}"#)).unwrap_err();
        assert!(e.to_string().contains("not the shape of a state"), "{e}");
        let e = record_state(&root, &fake_terraform(t.path(), "Error: no state")).unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
    }
}

//! Packer builds of our `libvirt` builder: a work folder QEMU can read,
//! Packer started where the guests are reachable, and its output logged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Result;

use crate::netns::Netns;
use crate::tools;

/// A fresh work folder `/tmp/kvmbe-packer-NAME-PID` that QEMU (running as
/// libvirt-qemu) can read; the caller removes it.
pub fn workdir(name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = PathBuf::from(format!("/tmp/kvmbe-packer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// A [`workdir`] removed when dropped, a failing test's too.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A fresh `/tmp/kvmbe-packer-NAME-PID` as [`workdir`] makes it.
    pub fn new(name: &str) -> Result<ScratchDir> {
        workdir(name).map(ScratchDir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `packer ARGS` working in `dir` inside the network namespace `ns` (where
/// the guests are reachable), set up as [`tools::packer`] sets it up.
pub fn packer_in(ns: &Netns, dir: &Path, args: &[&str]) -> Result<Command> {
    let plain = tools::packer(dir)?;
    let mut c = ns.cmd("packer");
    c.args(args).current_dir(dir);
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    Ok(c)
}

/// What Packer printed (stdout, then stderr), also logged under `what` so a
/// failing test shows it.
pub fn show(what: &str, out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("== {what} -> {:?}\n{text}", out.status.code());
    text
}

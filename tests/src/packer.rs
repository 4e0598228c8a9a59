//! Packer builds of our `libvirt` builder: a work folder QEMU can read,
//! Packer started where the guests are reachable, and its output logged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Result;

use crate::guest::TinyGuest;
use crate::libvirtd::{Libvirtd, NETWORK, POOL};
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

/// Our `libvirt` builder's settings that build from the tiny root-disk
/// guest on `bed` (TCG, direct kernel boot, root over SSH with the guest's
/// key, `poweroff`), naming the build `vm_name` and writing to `output`.
/// Tests add or change settings on top.
pub fn tiny_guest_source(
    bed: &Libvirtd,
    guest: &TinyGuest,
    vm_name: &str,
    output: &Path,
) -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "libvirt_uri": bed.uri(),
        "pool": POOL,
        "network": NETWORK,
        "vm_name": vm_name,
        "disk_image": true,
        "iso_url": guest.root_disk.display().to_string(),
        "iso_checksum": "none",
        "accelerator": "qemu",
        "machine_type": "q35",
        "memory": 256,
        "kernel": guest.kernel.display().to_string(),
        "initrd": guest.root_initrd.display().to_string(),
        "kernel_args": guest.root_cmdline,
        "ssh_username": "root",
        "ssh_private_key_file": guest.ssh_key.display().to_string(),
        "ssh_timeout": "2m",
        "shutdown_command": "poweroff",
        "shutdown_timeout": "1m",
        "output_directory": output.display().to_string(),
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

/// `settings` as the body of an HCL2 block: one `  key = value` line each
/// (JSON values are valid HCL expressions).
pub fn hcl_attributes(settings: &serde_json::Map<String, serde_json::Value>) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("  {k} = {v}\n"))
        .collect()
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

/// Starts `cmd` (a `packer build`) in its own process group with its
/// output piped, so that signalling the group interrupts every Packer
/// process as a terminal's Ctrl-C would.
pub fn spawn_interruptible(mut cmd: Command) -> Result<std::process::Child> {
    use std::process::Stdio;
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    Ok(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
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

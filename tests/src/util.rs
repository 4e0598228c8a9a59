//! Small helpers shared by the test bed.

use std::path::PathBuf;

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// True when `pid` has exited but was not reaped.
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(true)
}

/// The workspace root (the folder holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the workspace's binaries are built (`CARGO_TARGET_DIR` or
/// `target/`, debug profile).
pub fn bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

/// The cache shared by test runs (`KVMBE_CACHE`, default
/// `/var/cache/kvmbe` for root, else `~/.cache/kvmbe`): guest images,
/// libvirt's capability cache, venvs. QEMU runs as `libvirt-qemu` and reads
/// the guest's kernel from here, so root's default is outside `/root`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KVMBE_CACHE") {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/kvmbe");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/kvmbe")
}

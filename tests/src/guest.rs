//! The tiny guest: Debian's kernel with a busybox userland, built by
//! `tests/guest/build.sh` from Debian packages and cached between runs.
//!
//! The kernel is the ELF `vmlinux` from Debian's generic kernel package,
//! which QEMU boots through PVH (`-kernel`, or libvirt's `<kernel>`):
//! unpacking its xz bzImage would cost seconds under TCG, and the cloud
//! kernel lacks the AHCI driver that a CD-ROM on q35's SATA bus needs. A
//! NoCloud seed can sit on a SATA, IDE or virtio-scsi CD-ROM or a virtio
//! disk.
//!
//! Two variants share the kernel. The seed variant lives entirely in its
//! initramfs (`initrd` + `cmdline`, no disk); the root-disk variant boots
//! `root_initrd` + `root_cmdline` with a copy of `root_disk` as its first
//! virtio disk and serves SSH on port 22 for the key `ssh_key` (or the
//! password [`ROOT_PASSWORD`]; `scp` and `/usr/lib/sftp-server` are there).
//!
//! Both print the markers below on ttyS0, and also `KVMBE-SEED <device>
//! <fs>`, `KVMBE-QGA <port>` (or `KVMBE-QGA-NONE`), `KVMBE-NET <nic> <ip>`
//! per lease and `KVMBE-SSH 22`. A user-data that starts with `#!` runs on
//! every boot, after [`READY`]. The ACPI power button, qemu-ga's
//! `guest-shutdown` and `poweroff` power off within a second; `reboot`
//! powers off too. Give the guest a `virtio-rng` device (libvirt adds one
//! by default): without it the first SSH session waits about a second for
//! entropy.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::util::cache_dir;

/// First line the guest's userland prints.
pub const BOOT: &str = "KVMBE-BOOT";
/// Printed once the seed is read and qemu-ga, acpid, DHCP (and SSH) run.
pub const READY: &str = "KVMBE-READY";
/// Printed when no disk labelled `cidata`/`CIDATA` is attached.
pub const SEED_NONE: &str = "KVMBE-SEED-NONE";
/// Opens a seed file's contents: `KVMBE-SEED-BEGIN user-data`.
pub const SEED_BEGIN: &str = "KVMBE-SEED-BEGIN";
/// Closes a seed file's contents: `KVMBE-SEED-END user-data`.
pub const SEED_END: &str = "KVMBE-SEED-END";
/// Printed when meta-data's `local-hostname` was applied: `KVMBE-HOSTNAME name`.
pub const HOSTNAME: &str = "KVMBE-HOSTNAME";
/// Printed before a user-data that starts with `#!` runs (after [`READY`]).
pub const SCRIPT_BEGIN: &str = "KVMBE-SCRIPT-BEGIN";
/// Printed with the script's exit status when it ends: `KVMBE-SCRIPT-END 0`.
pub const SCRIPT_END: &str = "KVMBE-SCRIPT-END";
/// Printed when the guest starts to power off (ACPI button, qemu-ga, `poweroff`).
pub const POWEROFF: &str = "KVMBE-POWEROFF";
/// Root password of the root-disk variant.
pub const ROOT_PASSWORD: &str = "kvmbe";

/// The built images of the tiny guest, inside the cache.
#[derive(Debug, Clone)]
pub struct TinyGuest {
    /// The kernel (ELF `vmlinux`, booted through PVH), for both variants.
    pub kernel: PathBuf,
    /// The seed variant's initramfs: the whole guest, no disk needed.
    pub initrd: PathBuf,
    /// The root-disk variant's initramfs: mounts `root=` and switches to it.
    pub root_initrd: PathBuf,
    /// The root-disk variant's ext4 disk (qcow2); boot a copy, not this file.
    pub root_disk: PathBuf,
    /// Private key (OpenSSH format) that logs in as root on the root disk.
    pub ssh_key: PathBuf,
    /// Kernel command line for the seed variant.
    pub cmdline: String,
    /// Kernel command line for the root-disk variant.
    pub root_cmdline: String,
}

impl TinyGuest {
    /// Returns the cached guest, building it first if this version of the
    /// scripts and of the kernel package has not been built yet.
    ///
    /// The cache is `<cache>/guest/<key>` (see [`cache_dir`]); `key` hashes
    /// the files in `tests/guest/` and the kernel package and version.
    /// Parallel test processes wait on a lock instead of building twice.
    /// QEMU running as another user (libvirt's `libvirt-qemu`) can read
    /// everything but the private key, provided it can reach the cache
    /// folder: see [`TinyGuest::check_reachable_by_others`].
    pub fn ensure() -> Result<TinyGuest> {
        let scripts = guest_scripts_dir();
        let base = cache_dir().join("guest");
        create_dir_0755(&base)?;
        let key = cache_key(&scripts, &base)?;
        let dir = base.join(&key);
        if !dir.join("MANIFEST").is_file() {
            let lock_path = base.join(format!("{key}.lock"));
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("opening {}", lock_path.display()))?;
            flock_exclusive(&lock, &lock_path)?;
            // Another process may have finished the build while we waited.
            if !dir.join("MANIFEST").is_file() {
                build(&scripts, &base, &key)?;
                prune(&base, &key);
            }
        }
        Self::load(&dir)
    }

    /// Reads a built guest from `dir` (a folder `build.sh` wrote).
    pub fn load(dir: &Path) -> Result<TinyGuest> {
        let manifest_path = dir.join("MANIFEST");
        let manifest = fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let field = |name: &str| -> Result<String> {
            manifest
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .map(str::to_owned)
                .with_context(|| {
                    format!(
                        "{} has no `{name}` line: delete {} to rebuild it",
                        manifest_path.display(),
                        dir.display()
                    )
                })
        };
        Ok(TinyGuest {
            kernel: dir.join("vmlinux"),
            initrd: dir.join("initrd.img"),
            root_initrd: dir.join("root-initrd.img"),
            root_disk: dir.join("root.qcow2"),
            ssh_key: dir.join("id_ed25519"),
            cmdline: field("cmdline")?,
            root_cmdline: field("root_cmdline")?,
        })
    }

    /// Copies the root disk to `dest` (mode 0644) so a guest can write to
    /// its own copy.
    pub fn copy_root_disk(&self, dest: &Path) -> Result<()> {
        fs::copy(&self.root_disk, dest).with_context(|| {
            format!("copying {} to {}", self.root_disk.display(), dest.display())
        })?;
        fs::set_permissions(dest, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod 0644 {}", dest.display()))
    }

    /// The seed variant carrying extra programs: for each `(file, path)`,
    /// `file` (e.g. the real `buildkite-agent`) appears at the absolute
    /// `path` in the guest, mode 0755. The initramfs is written to
    /// `<dir>/initrd-carrying.img` as the guest's own initramfs followed by
    /// a second, uncompressed newc archive with the files (the kernel
    /// unpacks both); `dir` must be readable by QEMU's user. The root-disk
    /// variant is unchanged.
    pub fn carrying(&self, files: &[(&Path, &str)], dir: &Path) -> Result<TinyGuest> {
        let mut image =
            fs::read(&self.initrd).with_context(|| format!("reading {}", self.initrd.display()))?;
        // The next archive starts on a 4-byte boundary; the kernel skips
        // zero bytes between archives.
        image.resize(image.len().next_multiple_of(4), 0);
        let mut cpio = Cpio::default();
        for (file, path) in files {
            let Some(rel) = path.strip_prefix('/').filter(|r| !r.is_empty()) else {
                bail!(
                    "guest path {path:?} for {} must be absolute",
                    file.display()
                );
            };
            let data = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let mut parent = String::new();
            let parts: Vec<&str> = rel.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(part);
                cpio.entry(&parent, 0o040755, &[]);
            }
            cpio.entry(rel, 0o100755, &data);
        }
        image.extend_from_slice(&cpio.finish());
        let out = dir.join("initrd-carrying.img");
        fs::write(&out, &image).with_context(|| format!("writing {}", out.display()))?;
        fs::set_permissions(&out, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod 0644 {}", out.display()))?;
        Ok(TinyGuest {
            initrd: out,
            ..self.clone()
        })
    }

    /// The seed variant carrying a program built on this machine at
    /// `path` with the libraries `ldd` says it needs (glibc's and
    /// libgcc's, which the guest may lack), plus `extra` files as
    /// [`Self::carrying`] takes them.
    pub fn carrying_host_program(
        &self,
        program: &Path,
        path: &str,
        extra: &[(&Path, &str)],
        dir: &Path,
    ) -> Result<TinyGuest> {
        let libs = shared_libraries(program)?;
        let mut files: Vec<(&Path, &str)> = vec![(program, path)];
        files.extend(libs.iter().map(|l| (Path::new(l.as_str()), l.as_str())));
        files.extend_from_slice(extra);
        self.carrying(&files, dir)
    }

    /// The seed variant carrying this workspace's `kvmbe-handoff` (as
    /// `/usr/bin/kvmbe-handoff`, from the build's binaries) and the
    /// script `fake_agent` (as `/usr/bin/fake-agent`), both written into
    /// `dir`, for warm VMs whose agent is a stand-in.
    pub fn with_handoff_and_fake_agent(&self, fake_agent: &str, dir: &Path) -> Result<TinyGuest> {
        let program = crate::util::bin_dir().join("kvmbe-handoff");
        anyhow::ensure!(
            program.is_file(),
            "{} is missing: cargo build -p kvmbe-handoff",
            program.display()
        );
        let fake = dir.join("fake-agent");
        crate::util::write_executable(&fake, fake_agent)?;
        self.carrying_host_program(
            &program,
            "/usr/bin/kvmbe-handoff",
            &[(&fake, "/usr/bin/fake-agent")],
            dir,
        )
    }

    /// Fails, saying what to change, when a user other than the owner
    /// (such as `libvirt-qemu`) cannot reach the kernel and disks, e.g.
    /// because the cache is under root's 0700 home.
    pub fn check_reachable_by_others(&self) -> Result<()> {
        let dir = self.kernel.parent().context("kernel path has no folder")?;
        for folder in dir.ancestors() {
            let mode = fs::metadata(folder)
                .with_context(|| format!("reading {}", folder.display()))?
                .permissions()
                .mode();
            if mode & 0o001 == 0 {
                bail!(
                    "{} (mode {:o}) keeps other users such as libvirt-qemu out of the tiny guest in {}: \
                     set KVMBE_CACHE to a folder everyone can reach, e.g. /var/cache/kvmbe",
                    folder.display(),
                    mode & 0o7777,
                    dir.display()
                );
            }
        }
        Ok(())
    }
}

/// `tests/guest/` in the source tree.
fn guest_scripts_dir() -> PathBuf {
    crate::util::tests_dir().join("guest")
}

/// Hash of every file in `tests/guest/` (name and bytes, sorted) and of
/// the kernel package apt would download.
fn cache_key(scripts: &Path, base: &Path) -> Result<String> {
    let mut names: Vec<PathBuf> = fs::read_dir(scripts)
        .with_context(|| format!("reading {}", scripts.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    let mut hash = Sha256::new();
    for path in names.iter().filter(|p| p.is_file()) {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        hash.update(path.file_name().unwrap_or_default().as_encoded_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    let (package, version) = kernel_package_cached(scripts, base)?;
    hash.update(package.as_bytes());
    hash.update(b" ");
    hash.update(version.as_bytes());
    Ok(hex::encode(&hash.finalize()[..12]))
}

/// [`kernel_package`], remembered in `base/apt-kernel` until apt's package
/// lists or `build.sh` change: asking apt-cache takes about a second here,
/// and a cached guest should cost nothing.
fn kernel_package_cached(scripts: &Path, base: &Path) -> Result<(String, String)> {
    let lists = Path::new("/var/lib/apt/lists");
    let lists_changed = fs::metadata(lists)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading {}", lists.display()))?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // The script chooses the package: a new script asks again.
    let script = scripts.join("build.sh");
    let script_hash =
        Sha256::digest(fs::read(&script).with_context(|| format!("reading {}", script.display()))?);
    let stamp = format!("{lists_changed} {}", hex::encode(script_hash));
    let memo = base.join("apt-kernel");
    if let Ok(text) = fs::read_to_string(&memo) {
        let mut lines = text.lines();
        if let (Some(s), Some(p), Some(v)) = (lines.next(), lines.next(), lines.next()) {
            if s == stamp {
                return Ok((p.to_owned(), v.to_owned()));
            }
        }
    }
    let (package, version) = kernel_package(scripts)?;
    let tmp = base.join(format!(".apt-kernel-{}", std::process::id()));
    fs::write(&tmp, format!("{stamp}\n{package}\n{version}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &memo)
        .with_context(|| format!("renaming {} to {}", tmp.display(), memo.display()))?;
    Ok((package, version))
}

/// The kernel package and version `build.sh` would use, e.g.
/// (`linux-image-6.1.0-56-amd64`, `6.1.192-2`): the script is the one
/// place that chooses it.
fn kernel_package(scripts: &Path) -> Result<(String, String)> {
    let script = scripts.join("build.sh");
    let script = script.to_str().context("build.sh path is not UTF-8")?;
    let answer = run_stdout("bash", &[script, "--kernel-package"])?;
    match answer.split_whitespace().collect::<Vec<_>>()[..] {
        [package, version] if version != "(none)" => Ok((package.to_owned(), version.to_owned())),
        _ => bail!("build.sh --kernel-package answered {answer:?}, not `PACKAGE VERSION`: run apt-get update"),
    }
}

fn run_stdout(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `build.sh` into a temporary folder beside the final one, then
/// renames it into place so readers never see half a guest.
fn build(scripts: &Path, base: &Path, key: &str) -> Result<()> {
    let tmp = base.join(format!(".build-{key}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let script = scripts.join("build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&tmp)
        .env("KVMBE_DEB_CACHE", cache_dir().join("debs"))
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", tmp.display()))?;
    let dir = base.join(key);
    // A folder without MANIFEST is what an interrupted rename leaves.
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))
}

/// How long a guest built from other scripts is kept, for other checkouts
/// sharing the cache.
const KEEP_OTHER_BUILDS: std::time::Duration = std::time::Duration::from_secs(2 * 24 * 3600);

/// Removes guests built from other scripts more than [`KEEP_OTHER_BUILDS`]
/// ago. Best effort: a guest that cannot be removed costs only disk space.
fn prune(base: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_build = name.len() == keep.len() && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_build || name == keep {
            continue;
        }
        let old = fs::metadata(entry.path().join("MANIFEST"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP_OTHER_BUILDS);
        if old {
            // The lock file stays: a process may be waiting on it.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Creates `dir` and its missing parents with mode 0755 whatever the umask.
fn create_dir_0755(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for d in missing {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 0755 {}", d.display()))?;
    }
    Ok(())
}

fn flock_exclusive(file: &File, path: &Path) -> Result<()> {
    loop {
        // SAFETY: flock(2) on a descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
    }
}

/// A newc ("070701") cpio archive, as the kernel's initramfs unpacker
/// reads it: owner root, fixed times, directories listed before files.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let name_len = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,                 // uid
            0,                 // gid
            1,                 // nlink
            1_700_000_000,     // mtime
            data.len() as u32, // filesize
            0,
            0,
            0,
            0,
            name_len as u32,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        let len = self.out.len().next_multiple_of(4);
        self.out.resize(len, 0);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// The shared libraries `program` loads, with the dynamic loader: their
/// paths on this machine, which are also their paths in a guest.
pub fn shared_libraries(program: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .with_context(|| format!("running ldd {}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not found") {
        bail!("ldd {}: {text}", program.display());
    }
    // `name => /lib/x/libfoo.so (0x…)` and `/lib64/ld-linux… (0x…)`.
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::Cpio;

    #[test]
    fn newc_entries_are_aligned_and_end_with_the_trailer() {
        let mut c = Cpio::default();
        c.entry("usr", 0o040755, &[]);
        c.entry("usr/x", 0o100755, b"abc");
        let out = c.finish();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        // Header (110 bytes) + "usr\0" = 114, padded to 116.
        assert_eq!(&out[116..122], b"070701");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("usr/x\0"), "{text}");
        assert!(text.contains("abc"));
        assert!(text.contains("TRAILER!!!"));
        // filesize field of the second entry.
        assert_eq!(&out[116 + 6 + 6 * 8..116 + 6 + 7 * 8], b"00000003");
    }
}

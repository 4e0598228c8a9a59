//! The build's host work through `kvmhost::libvirt`, each blocking libvirt
//! call on a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvmhost::libvirt::address::{wait_for_addresses_async, AddressWait, Family};
use kvmhost::libvirt::domain::{AddressSource as LvAddressSource, PowerState};
use kvmhost::libvirt::domain_xml::{
    ConsoleDef, DiskBus, DiskDef, DiskDevice, DiskDriver, DiskSource, DomainDef, DomainKind,
    InterfaceDef, InterfaceSource, NvramDef, OsDef, QemuCommandline,
};
use kvmhost::libvirt::handle::{self, Connection, HostAddress, OpenError};
use kvmhost::libvirt::image::{image_info, HostFileKind, ImageInfo, Overlay};
use kvmhost::libvirt::volume::{VolumeFormat, VolumeInfo, VolumeSpec};
use kvmhost::libvirt::{Error as LvError, Host, Uri};

use super::BuildError;
use crate::config::{files_are_local, Accelerator, AddressSource, Config, Format, NetAttach};

/// Something on the host that the build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A volume, by key.
    Volume(String),
    /// A domain, by name.
    Domain(String),
}

/// The build's host, reached through `kvmhost`'s handle: a connection
/// that died (a host that restarted libvirtd mid-build) is opened again
/// for the next step, so the cleanup still runs.
#[derive(Clone)]
pub struct HostHandle {
    handle: Arc<handle::HostHandle>,
}

/// Default size of an empty install disk.
const DEFAULT_DISK: u64 = 10 << 30;

/// Why a host step failed; each message names the setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A libvirt call about one setting failed.
    #[error("{field}: {source}")]
    Setting {
        /// The setting, e.g. `pool` or `disk_additional_size[1]`.
        field: String,
        /// libvirt's error.
        source: LvError,
    },
    /// A libvirt call that no single setting explains failed.
    #[error("{0}")]
    Libvirt(#[from] LvError),
    /// `vm_name` is taken on the host.
    #[error("vm_name: a domain named `{0}` already exists on the host: choose another vm_name or remove it")]
    NameTaken(String),
    /// A local file could not be uploaded into its volume.
    #[error("uploading {}: {source}", path.display())]
    Upload {
        /// The local file.
        path: PathBuf,
        /// libvirt's error.
        source: LvError,
    },
    /// The seed CD could not be uploaded.
    #[error("uploading the CD: {0}")]
    UploadSeed(LvError),
    /// The ISO to upload cannot be read.
    #[error("iso_url: {}: {source}", path.display())]
    IsoUnreadable {
        /// The local ISO.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// libvirt refused the domain definition.
    #[error("defining domain {name}: {source}")]
    Define {
        /// The domain.
        name: String,
        /// libvirt's error.
        source: LvError,
    },
    /// libvirt refused the definition `domain_xslt` made.
    #[error("domain_xslt: defining the transformed domain {name}: {source}")]
    DefineTransformed {
        /// The domain.
        name: String,
        /// libvirt's error.
        source: LvError,
    },
    /// The network has no bridge to serve HTTP on.
    #[error("network: `{0}` has no bridge device")]
    NoBridge(String),
    /// `boot_command` does not parse.
    #[error("boot_command: {0}")]
    BootCommand(#[from] super::keystrokes::KeystrokeError),
    /// The guest got no address before `ssh_timeout`.
    #[error("ssh_timeout: the guest's NIC {mac} got no IPv4 address (from the {from}) in time")]
    NoAddress {
        /// The NIC's MAC, lower case.
        mac: String,
        /// Where the address was looked for.
        from: &'static str,
    },
    /// The guest ignored the power button.
    #[error("shutdown_timeout: the guest did not power off within {0:?} after the power button; set shutdown_command")]
    PowerButtonIgnored(Duration),
    /// The guest did not shut off before the deadline.
    #[error("the guest is still running")]
    StillRunning,
    /// The build disk could not be downloaded from a remote host.
    #[error("downloading the disk: {0}")]
    Download(LvError),
    /// The disk image is an overlay of a host file and `use_backing_file`
    /// is off.
    #[error("iso_url: {0}; or, to build on it as an overlay, set use_backing_file = true")]
    OverlaySource(LvError),
    /// The source image to back the output on cannot be used.
    #[error("use_backing_file: {0}")]
    Backing(String),
    /// qemu-img could not be run.
    #[error("running qemu-img (install qemu-utils): {0}")]
    QemuImgMissing(std::io::Error),
    /// qemu-img failed.
    #[error("qemu-img convert {} -> {}: {stderr}", src.display(), out.display())]
    Convert {
        /// The disk read.
        src: PathBuf,
        /// The file written.
        out: PathBuf,
        /// qemu-img's standard error, trimmed.
        stderr: String,
    },
    /// A blocking host call panicked or was cancelled.
    #[error("host task failed: {0}")]
    Task(String),
}

/// `map_err` for a libvirt error about `field`.
fn setting(field: impl Into<String>) -> impl FnOnce(LvError) -> HostError {
    let field = field.into();
    move |source| HostError::Setting { field, source }
}

impl HostHandle {
    /// Opens the connection.
    pub async fn open(uri: &Uri) -> Result<HostHandle, BuildError> {
        let this = HostHandle {
            handle: Arc::new(handle::HostHandle::new(HostAddress::new(uri.clone()))),
        };
        this.conn().await?;
        Ok(this)
    }

    /// The open connection, opened again if it died.
    async fn conn(&self) -> Result<Connection, HostError> {
        self.handle.connect().await.map_err(|e| match e {
            OpenError::Connect(e) => setting("libvirt_uri")(e),
            // The builder never wakes hosts: only the task can fail.
            other => HostError::Task(other.to_string()),
        })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: FnOnce(&Host) -> Result<T, HostError> + Send + 'static,
    {
        self.conn()
            .await?
            .run(f)
            .await
            .map_err(|e| HostError::Task(e.to_string()))?
    }

    /// Whether the connection reaches the libvirt of this machine, so
    /// volume paths are local files.
    pub fn is_local(&self) -> bool {
        files_are_local(&self.handle.address().uri)
    }

    /// Creates a volume in `pool` and records it as the build's; a
    /// refusal names `field`.
    async fn new_volume(
        &self,
        pool: &str,
        spec: VolumeSpec,
        field: String,
        record: &(dyn Fn(Leftover) + Sync),
    ) -> Result<VolumeInfo, HostError> {
        let pool = pool.to_string();
        let vol = self
            .with(move |h| h.create_volume(&pool, &spec).map_err(setting(field)))
            .await?;
        record(Leftover::Volume(vol.key.clone()));
        Ok(vol)
    }

    /// Fails if a domain named `name` exists already.
    pub async fn check_free_name(&self, name: &str) -> Result<(), BuildError> {
        let name = name.to_string();
        self.with(move |h| match h.domain_status(&name) {
            Ok(_) => Err(HostError::NameTaken(name)),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await
        .map_err(BuildError::from)
    }

    /// Creates the build disk: a copy of the source image (resized to
    /// `disk_size` when larger), or an empty disk for an ISO install.
    pub async fn create_disk(
        &self,
        cfg: &Config,
        source: Option<&Path>,
        record: &(dyn Fn(Leftover) + Sync),
    ) -> Result<VolumeInfo, BuildError> {
        let name = format!("{}.qcow2", cfg.volume_stem());
        let want = cfg.disk_size.filter(|_| !cfg.skip_resize_disk);
        let vol = match source {
            Some(src) => {
                let downloads = super::source::cache_dir();
                let (src, info, _flat) = match source_disk(cfg, src, &downloads)? {
                    SourceDisk::AsIs(info) => (src.to_path_buf(), info, None),
                    SourceDisk::Flatten => {
                        let flat = flatten(src, &downloads).await?;
                        let info = image_info(&flat).map_err(setting("iso_url"))?;
                        (flat.to_path_buf(), info, Some(flat))
                    }
                };
                let name = match info.format {
                    VolumeFormat::Qcow2 => name,
                    _ => format!("{}.img", cfg.volume_stem()),
                };
                let spec = VolumeSpec::new(&name, info.virtual_size, info.format);
                let vol = self
                    .new_volume(&cfg.pool, spec, "pool".into(), record)
                    .await?;
                let key = vol.key.clone();
                self.with(move |h| {
                    h.upload_file(&key, &src)
                        .map_err(|source| HostError::Upload { path: src, source })
                })
                .await?;
                if let Some(size) = want.filter(|s| *s > info.virtual_size) {
                    let key = vol.key.clone();
                    self.with(move |h| h.resize_volume(&key, size).map_err(setting("disk_size")))
                        .await?;
                }
                vol
            }
            None => {
                let spec =
                    VolumeSpec::new(&name, want.unwrap_or(DEFAULT_DISK), VolumeFormat::Qcow2);
                let vol = self
                    .new_volume(&cfg.pool, spec, "pool".into(), record)
                    .await?;
                vol
            }
        };
        let key = vol.key.clone();
        Ok(self
            .with(move |h| h.volume_by_key(&key).map_err(HostError::from))
            .await?)
    }

    /// Creates the empty extra disks of `disk_additional_size`.
    pub async fn create_additional_disks(
        &self,
        cfg: &Config,
        record: &(dyn Fn(Leftover) + Sync),
    ) -> Result<Vec<VolumeInfo>, BuildError> {
        let mut out = Vec::new();
        for (i, size) in cfg.disk_additional_sizes.iter().enumerate() {
            let spec = VolumeSpec::new(
                &format!("{}-{}.qcow2", cfg.volume_stem(), i + 1),
                *size,
                VolumeFormat::Qcow2,
            );
            let vol = self
                .new_volume(
                    &cfg.pool,
                    spec,
                    format!("disk_additional_size[{i}]"),
                    record,
                )
                .await?;
            out.push(vol);
        }
        Ok(out)
    }

    /// Uploads a local ISO into a volume; returns its path on the host.
    pub async fn upload_iso(
        &self,
        cfg: &Config,
        name: &str,
        path: &Path,
        record: &(dyn Fn(Leftover) + Sync),
    ) -> Result<String, BuildError> {
        let size = std::fs::metadata(path)
            .map_err(|source| HostError::IsoUnreadable {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let spec = VolumeSpec::new(name, size, VolumeFormat::Raw);
        let vol = self
            .new_volume(&cfg.pool, spec, "pool".into(), record)
            .await?;
        let key = vol.key.clone();
        let p = path.to_path_buf();
        self.with(move |h| {
            h.upload_file(&key, &p)
                .map_err(|source| HostError::Upload { path: p, source })
        })
        .await?;
        Ok(vol.path)
    }

    /// Uploads the seed CD; returns its path on the host.
    pub async fn upload_seed(
        &self,
        cfg: &Config,
        iso: &[u8],
        record: &(dyn Fn(Leftover) + Sync),
    ) -> Result<String, BuildError> {
        let mut spec = VolumeSpec::new(
            &format!("{}-cd.iso", cfg.volume_stem()),
            iso.len() as u64,
            VolumeFormat::Raw,
        );
        // cd_content may hold secrets: owner-only, as the provider's seeds.
        spec.mode = Some(0o600);
        let vol = self
            .new_volume(&cfg.pool, spec, "pool".into(), record)
            .await?;
        let key = vol.key.clone();
        let bytes = iso.to_vec();
        self.with(move |h| h.upload_bytes(&key, &bytes).map_err(HostError::UploadSeed))
            .await?;
        Ok(vol.path)
    }

    /// Defines the build domain.
    #[allow(clippy::too_many_arguments)]
    pub async fn define(
        &self,
        cfg: &Config,
        disks: &[&str],
        install_iso: Option<&str>,
        seed: Option<&str>,
        mac: &str,
        qemuargs: &[Vec<String>],
        record: &(dyn Fn(Leftover) + Sync),
    ) -> Result<(), BuildError> {
        let def = domain_def(cfg, disks, install_iso, seed, mac, qemuargs);
        let xml = def.to_xml();
        let name = cfg.vm_name.clone();
        let xslt = cfg.domain_xslt.clone();
        self.with(move |h| match &xslt {
            None => h
                .define_domain_xml(&xml)
                .map(|_| ())
                .map_err(|source| HostError::Define {
                    name: def.name,
                    source,
                }),
            Some(sheet) => {
                let xml = DomainDef::apply_xslt(&xml, sheet).map_err(setting("domain_xslt"))?;
                h.define_domain_xml(&xml).map(|_| ()).map_err(|source| {
                    HostError::DefineTransformed {
                        name: def.name,
                        source,
                    }
                })
            }
        })
        .await?;
        record(Leftover::Domain(name));
        Ok(())
    }

    /// The bridge device of the libvirt network `name`.
    pub async fn network_bridge(&self, name: &str) -> Result<String, BuildError> {
        let n = name.to_string();
        self.with(move |h| {
            h.network(&n)
                .map_err(setting("network"))?
                .def
                .bridge
                .ok_or(HostError::NoBridge(n))
        })
        .await
        .map_err(BuildError::from)
    }

    /// Starts the domain.
    pub async fn start(&self, name: &str) -> Result<(), BuildError> {
        let name = name.to_string();
        Ok(self
            .with(move |h| h.start_domain(&name).map_err(HostError::from))
            .await?)
    }

    /// Types the boot command into the guest's keyboard.
    pub async fn type_boot_command(
        &self,
        name: &str,
        lines: &[String],
        interval: Option<Duration>,
    ) -> Result<(), BuildError> {
        let actions =
            crate::build::keystrokes::parse(&lines.concat()).map_err(HostError::BootCommand)?;
        for a in actions {
            match a {
                crate::build::keystrokes::Action::Keys(codes) => {
                    let name = name.to_string();
                    self.with(move |h| h.send_keys(&name, &codes).map_err(setting("boot_command")))
                        .await?;
                    if let Some(d) = interval {
                        tokio::time::sleep(d).await;
                    }
                }
                crate::build::keystrokes::Action::Wait(d) => tokio::time::sleep(d).await,
            }
        }
        Ok(())
    }

    /// Waits until the guest's NIC with `mac` has an IPv4 address.
    pub async fn wait_address(
        &self,
        cfg: &Config,
        mac: &str,
        deadline: Instant,
    ) -> Result<String, BuildError> {
        let (source, from) = match cfg.address_source {
            AddressSource::Lease => (LvAddressSource::Lease, "network's DHCP leases"),
            AddressSource::Agent => (LvAddressSource::Agent, "guest agent"),
        };
        let wait = AddressWait {
            domain: cfg.vm_name.clone(),
            macs: vec![mac.to_string()],
            source,
            family: Family::Ipv4,
            deadline,
        };
        match wait_for_addresses_async(&self.conn().await?, wait).await {
            Ok(mut found) => Ok(found.remove(0)),
            Err(missing) => Err(HostError::NoAddress {
                mac: missing.mac,
                from,
            }
            .into()),
        }
    }

    /// Presses the guest's power button and waits for it to power off.
    pub async fn acpi_shutdown(&self, name: &str, timeout: Duration) -> Result<(), BuildError> {
        let name = name.to_string();
        let started = Instant::now();
        self.with(move |h| h.stop_domain(&name, timeout).map_err(HostError::from))
            .await?;
        if started.elapsed() >= timeout {
            return Err(HostError::PowerButtonIgnored(timeout).into());
        }
        Ok(())
    }

    /// Waits until the domain is shut off, or, for a disk on this machine,
    /// until QEMU has let go of it: QEMU holds a lock on its disk images
    /// while it runs, and releases it when it exits, after flushing.
    /// libvirt takes a second or more after that to report the domain
    /// shut off (it tears down the NIC, labels and cgroups first); the
    /// disk can be read meanwhile, and removing the domain later waits for
    /// libvirt to finish.
    pub async fn wait_shut_off(
        &self,
        name: &str,
        disk: &str,
        deadline: Instant,
    ) -> Result<(), BuildError> {
        // Trust the lock only if QEMU holds it now.
        let watch_lock = self.is_local() && disk_locked(Path::new(disk)) == Some(true);
        loop {
            if watch_lock && disk_locked(Path::new(disk)) == Some(false) {
                return Ok(());
            }
            let n = name.to_string();
            let state = self
                .with(move |h| {
                    h.domain_status(&n)
                        .map(|s| s.state)
                        .map_err(HostError::from)
                })
                .await?;
            if state == PowerState::ShutOff {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HostError::StillRunning.into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes the build disk to `out` in `format`, compacted: only data
    /// the guest holds is copied; unused and zero clusters are dropped.
    pub async fn export_disk(
        &self,
        disk: &VolumeInfo,
        out: &Path,
        format: Format,
        backing: Option<&Path>,
    ) -> Result<(), BuildError> {
        let (src, src_format, _tmp) = if self.is_local() && Path::new(&disk.path).exists() {
            (PathBuf::from(&disk.path), disk.format.clone(), None)
        } else {
            let tmp = out.with_extension("download");
            // Removed when the export ends, also when the download fails
            // half-way.
            let guard = tempfile::TempPath::try_from_path(&tmp).map_err(|source| {
                HostError::Download(LvError::Io {
                    path: tmp.clone(),
                    source,
                })
            })?;
            let key = disk.key.clone();
            let t = tmp.clone();
            self.with(move |h| h.download_volume(&key, &t).map_err(HostError::Download))
                .await?;
            (tmp, disk.format.clone(), Some(guard))
        };
        let src_format = if src_format.is_empty() {
            "qcow2".to_string()
        } else {
            src_format
        };
        let out_s = out.to_path_buf();
        let fmt = format.as_str();
        // A cancelled build must not leave qemu-img running.
        let mut cmd = tokio::process::Command::new("qemu-img");
        cmd.kill_on_drop(true)
            .args(["convert", "-f", &src_format, "-O", fmt])
            .args(if format == Format::Qcow2 {
                &["-c"][..]
            } else {
                &[][..]
            });
        if let Some(b) = backing {
            // Only what differs from the source image is written; the
            // overlay names the source as its backing file.
            let info = image_info(b).map_err(setting("use_backing_file"))?;
            let abs = std::path::absolute(b).map_err(|e| HostError::Backing(e.to_string()))?;
            cmd.arg("-B").arg(abs).args(["-F", info.format.as_str()]);
        }
        let output = cmd
            .arg(&src)
            .arg(&out_s)
            .output()
            .await
            .map_err(HostError::QemuImgMissing)?;
        if !output.status.success() {
            return Err(HostError::Convert {
                src,
                out: out_s,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            }
            .into());
        }
        Ok(())
    }

    /// Removes one leftover; a thing already gone is fine.
    pub async fn remove(&self, item: Leftover) -> Result<(), HostError> {
        self.with(move |h| {
            let r = match &item {
                Leftover::Domain(name) => h.undefine_domain(name),
                Leftover::Volume(key) => h.delete_volume(key),
            };
            match r {
                Ok(()) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }
}

/// How the disk image `iso_url` gave becomes the build disk.
#[derive(Debug)]
enum SourceDisk {
    /// Uploaded as it is; its header.
    AsIs(ImageInfo),
    /// An overlay whose backing chain is all qcow2 images, built on
    /// without `use_backing_file`: flattened into one image first, as the
    /// QEMU builder copies it (`qemu-img convert`), and that uploaded.
    Flatten,
}

/// The longest backing chain followed; a longer one (or a loop) is
/// refused as any other overlay is.
const MAX_CHAIN: usize = 64;

/// The header of the disk image `iso_url` gave (the user's file or a
/// cached download). It becomes the build disk as it is, so one naming a
/// host file QEMU would read as part of the disk (and `qemu-img convert`
/// copy into the output) is refused: a backing file unless
/// `use_backing_file` asks for an overlay, an external data file always.
/// An overlay the user gave as a file on this machine (not one downloaded
/// into `downloads`, Packer's cache folder), whose backing files are all
/// qcow2 images (as each step of a chain of builds writes them), is
/// flattened instead when `use_backing_file` is off: the user named that
/// chain. A downloaded image naming a file here is refused as before: its
/// server chose the name, which could be another VM's disk.
fn source_disk(cfg: &Config, src: &Path, downloads: &Path) -> Result<SourceDisk, HostError> {
    let info = image_info(src).map_err(setting("iso_url"))?;
    let overlay = if cfg.use_backing_file {
        Overlay::Allowed
    } else {
        Overlay::Refused
    };
    match info.refuse_host_files(overlay) {
        Ok(()) => Ok(SourceDisk::AsIs(info)),
        Err(LvError::NamesHostFile {
            kind: HostFileKind::Backing,
            ..
        }) if !src.starts_with(downloads) && backed_by_qcow2_images(src, &info) => {
            Ok(SourceDisk::Flatten)
        }
        Err(
            e @ LvError::NamesHostFile {
                kind: HostFileKind::Backing,
                ..
            },
        ) => Err(HostError::OverlaySource(e)),
        Err(e) => Err(setting("iso_url")(e)),
    }
}

/// Whether every file in the backing chain of `image` (whose header is
/// `info`) is a qcow2 image on this machine with no external data file,
/// the last one with no backing file. A relative backing file name is
/// taken from the folder of the image naming it, as QEMU takes it.
fn backed_by_qcow2_images(image: &Path, info: &ImageInfo) -> bool {
    let mut dir = image.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut next = info.backing_file.clone();
    for _ in 0..MAX_CHAIN {
        let Some(name) = next else { return true };
        let path = dir.join(&name);
        let Ok(layer) = image_info(&path) else {
            return false;
        };
        if layer.format != VolumeFormat::Qcow2 || layer.data_file.is_some() {
            return false;
        }
        dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        next = layer.backing_file;
    }
    false
}

/// Writes the overlay `src` and its backing chain as one qcow2 image,
/// into a temporary file in `dir` (Packer's cache folder, beside
/// downloaded images), removed when dropped.
async fn flatten(src: &Path, dir: &Path) -> Result<tempfile::TempPath, HostError> {
    let dir = dir.to_path_buf();
    let io = |source| {
        setting("iso_url")(LvError::Io {
            path: dir.clone(),
            source,
        })
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let flat = tempfile::Builder::new()
        .prefix(".flat-")
        .suffix(".qcow2")
        .tempfile_in(&dir)
        .map_err(io)?
        .into_temp_path();
    // A cancelled build must not leave qemu-img running.
    let output = tokio::process::Command::new("qemu-img")
        .kill_on_drop(true)
        .args(["convert", "-f", "qcow2", "-O", "qcow2"])
        .arg(src)
        .arg(&*flat)
        .output()
        .await
        .map_err(HostError::QemuImgMissing)?;
    if !output.status.success() {
        return Err(HostError::Convert {
            src: src.to_path_buf(),
            out: flat.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(flat)
}

/// Whether some process holds a lock on `path` (QEMU's image locking uses
/// open file description locks); `None` when that cannot be told.
pub fn disk_locked(path: &Path) -> Option<bool> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: an all-zero flock is a valid value to fill in below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_OFD_GETLK reads and writes the flock we own.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return None;
    }
    Some(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// The build domain's definition, with `qemuargs` already rendered.
pub fn domain_def(
    cfg: &Config,
    hard_disks: &[&str],
    install_iso: Option<&str>,
    seed: Option<&str>,
    mac: &str,
    qemuargs: &[Vec<String>],
) -> DomainDef {
    let bus = match cfg.disk_interface.as_str() {
        "scsi" => DiskBus::Scsi,
        "sata" => DiskBus::Sata,
        "ide" => DiskBus::Ide,
        _ => DiskBus::Virtio,
    };
    let mut disks: Vec<DiskDef> = hard_disks
        .iter()
        .map(|disk| DiskDef {
            device: DiskDevice::Disk,
            source: DiskSource::File(disk.to_string()),
            format: Some(
                if disk.ends_with(".qcow2") {
                    "qcow2"
                } else {
                    "raw"
                }
                .into(),
            ),
            bus,
            target: String::new(),
            wwn: None,
            driver: cfg.disk_driver.clone(),
        })
        .collect();
    // qemuargs drives libvirt can attach, after the build's own disks.
    let (qemuargs, drives) = super::drives::drives_as_disks(qemuargs);
    disks.extend(drives);
    for cd in [install_iso, seed].into_iter().flatten() {
        disks.push(DiskDef {
            device: DiskDevice::Cdrom,
            source: DiskSource::File(cd.to_string()),
            format: Some("raw".into()),
            bus: DiskBus::Sata,
            target: String::new(),
            wwn: None,
            driver: DiskDriver::default(),
        });
    }
    let boot_devices = if install_iso.is_some() && !cfg.disk_image {
        vec!["hd".to_string(), "cdrom".to_string()]
    } else {
        vec!["hd".to_string()]
    };
    let mut def = DomainDef {
        name: cfg.vm_name.clone(),
        kind: match cfg.accelerator {
            Accelerator::Kvm => DomainKind::Kvm,
            Accelerator::Qemu => DomainKind::Qemu,
        },
        memory_mib: cfg.memory_mib,
        vcpu: cfg.cpus,
        os: OsDef {
            machine: cfg.machine_type.clone(),
            boot_devices,
            firmware: cfg.efi.as_ref().map(|(code, _)| code.clone()),
            nvram: cfg.efi.as_ref().map(|(_, vars)| NvramDef {
                file: format!("/var/lib/libvirt/qemu/nvram/{}_VARS.fd", cfg.vm_name),
                template: Some(vars.clone()),
            }),
            kernel: cfg.kernel.as_ref().map(|p| p.display().to_string()),
            initrd: cfg.initrd.as_ref().map(|p| p.display().to_string()),
            cmdline: cfg.kernel_args.clone(),
            ..Default::default()
        },
        cpu_mode: match cfg.accelerator {
            Accelerator::Kvm => Some("host-passthrough".into()),
            Accelerator::Qemu => None,
        },
        disks,
        interfaces: vec![InterfaceDef {
            source: match &cfg.net {
                NetAttach::Network(n) => InterfaceSource::Network(n.clone()),
                NetAttach::Bridge(b) => InterfaceSource::Bridge(b.clone()),
            },
            mac: Some(mac.to_string()),
            model: Some(cfg.net_model.clone()),
        }],
        consoles: vec![ConsoleDef {
            kind: "pty".into(),
            target_type: "serial".into(),
            target_port: 0,
            source_path: None,
            source_host: None,
            source_service: None,
            log_file: None,
        }],
        qemu_agent: cfg.address_source == AddressSource::Agent,
        qemu_commandline: QemuCommandline {
            args: qemuargs.iter().flatten().cloned().collect(),
        },
        ..Default::default()
    };
    def.metadata
        .insert("packer-build".into(), cfg.vm_name.clone());
    def.assign_targets();
    def
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmhost::libvirt::domain_xml::DiskDevice;
    use serde_json::json;

    #[test]
    fn host_errors_name_the_setting_to_look_at() {
        let lv = || LvError::Invalid {
            field: "size",
            message: "too big".into(),
        };
        let cases = [
            (setting("pool")(lv()), "pool: invalid size: too big"),
            (
                setting("disk_additional_size[1]")(lv()),
                "disk_additional_size[1]: invalid size: too big",
            ),
            (
                HostError::NameTaken("b".into()),
                "vm_name: a domain named `b` already exists on the host: choose another vm_name or remove it",
            ),
            (
                HostError::NoAddress {
                    mac: "52:54:00:aa:bb:01".into(),
                    from: "guest agent",
                },
                "ssh_timeout: the guest's NIC 52:54:00:aa:bb:01 got no IPv4 address (from the guest agent) in time",
            ),
            (
                HostError::Convert {
                    src: "/a".into(),
                    out: "/b".into(),
                    stderr: "no space".into(),
                },
                "qemu-img convert /a -> /b: no space",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(BuildError::from(e).to_string(), text);
        }
    }

    fn config(user: serde_json::Value) -> Config {
        Config::parse(user.as_object().unwrap(), &serde_json::Map::new()).unwrap()
    }

    #[test]
    fn an_iso_install_boots_the_disk_then_the_cd_with_kvm_by_default() {
        let c = config(
            json!({"iso_url": "/i.iso", "iso_checksum": "none", "ssh_username": "u", "vm_name": "v"}),
        );
        let d = domain_def(
            &c,
            &["/p/v.qcow2"],
            Some("/p/v-install.iso"),
            Some("/p/v-cd.iso"),
            "52:54:00:00:00:01",
            &[],
        );
        assert_eq!(d.kind, DomainKind::Kvm);
        assert_eq!(d.cpu_mode.as_deref(), Some("host-passthrough"));
        assert_eq!(d.os.boot_devices, ["hd", "cdrom"]);
        assert_eq!(d.disks.len(), 3);
        assert_eq!(d.disks[0].format.as_deref(), Some("qcow2"));
        assert!(d.disks[1..].iter().all(|x| x.device == DiskDevice::Cdrom));
        assert_eq!(d.interfaces[0].mac.as_deref(), Some("52:54:00:00:00:01"));
        assert!(matches!(&d.interfaces[0].source, InterfaceSource::Network(n) if n == "default"));
        assert!(d.to_xml().contains("<name>v</name>"));
    }

    #[test]
    fn software_emulation_a_bridge_and_kernel_boot_map_to_the_domain() {
        let c = config(json!({
            "kernel": "/proc/self/exe", "kernel_args": "console=ttyS0", "accelerator": "tcg",
            "net_bridge": "br0", "ssh_username": "u", "disk_interface": "scsi", "memory": 512, "cpus": 2
        }));
        let d = domain_def(&c, &["/p/v.img"], None, None, "52:54:00:00:00:02", &[]);
        assert_eq!(d.kind, DomainKind::Qemu);
        assert_eq!(d.cpu_mode, None);
        assert_eq!((d.memory_mib, d.vcpu), (512, 2));
        assert_eq!(d.os.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(d.disks[0].bus, DiskBus::Scsi);
        assert_eq!(d.disks[0].format.as_deref(), Some("raw"));
        assert!(matches!(&d.interfaces[0].source, InterfaceSource::Bridge(b) if b == "br0"));
        // On a bridge the address comes from the guest agent.
        assert!(d.qemu_agent);
        assert!(d.os.firmware.is_none() && d.os.nvram.is_none());
    }

    #[test]
    fn disk_driver_settings_go_on_every_hard_disk_and_not_on_cds() {
        let c = config(json!({
            "iso_url": "/i.iso", "iso_checksum": "none", "ssh_username": "u", "vm_name": "v",
            "disk_cache": "unsafe", "disk_discard": "unmap", "disk_detect_zeroes": "unmap",
            "disk_additional_size": ["1G"]
        }));
        let d = domain_def(
            &c,
            &["/p/v.qcow2", "/p/v-1.qcow2"],
            Some("/p/v-install.iso"),
            None,
            "52:54:00:00:00:04",
            &[],
        );
        let x = d.to_xml();
        assert_eq!(
            x.matches("<driver name='qemu' type='qcow2' cache='unsafe' discard='unmap' detect_zeroes='unmap'/>")
                .count(),
            2,
            "{x}"
        );
        assert!(x.contains("<driver name='qemu' type='raw'/>"), "{x}");
    }

    #[test]
    fn qemuargs_become_a_qemu_commandline_in_the_qemu_namespace() {
        let c = config(json!({"kernel": "/proc/self/exe", "communicator": "none", "vm_name": "q"}));
        let args = vec![
            vec!["-device".to_string(), "usb-tablet".to_string()],
            vec!["-smbios".to_string(), "type=2,x='<y>'".to_string()],
        ];
        let x = domain_def(&c, &["/p/q.qcow2"], None, None, "52:54:00:00:00:05", &args).to_xml();
        assert!(
            x.starts_with(
                "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' type='kvm'>"
            ),
            "{x}"
        );
        assert!(x.ends_with(
            "<qemu:commandline><qemu:arg value='-device'/><qemu:arg value='usb-tablet'/>\
             <qemu:arg value='-smbios'/><qemu:arg value='type=2,x=&apos;&lt;y&gt;&apos;'/></qemu:commandline></domain>"
        ), "{x}");
    }

    #[test]
    fn a_qemuargs_virtio_drive_is_a_disk_after_the_build_disks_and_before_the_cds() {
        let c = config(
            json!({"iso_url": "/i.iso", "iso_checksum": "none", "ssh_username": "u", "vm_name": "v", "machine_type": "q35"}),
        );
        let args = vec![
            vec![
                "-drive".to_string(),
                "file=/w/extra.qcow2,if=virtio,format=qcow2,cache=unsafe".to_string(),
            ],
            vec!["-device".to_string(), "usb-tablet".to_string()],
        ];
        let d = domain_def(
            &c,
            &["/p/v.qcow2", "/p/v-1.qcow2"],
            Some("/p/v-install.iso"),
            None,
            "52:54:00:00:00:06",
            &args,
        );
        let disks: Vec<(&DiskSource, &str)> = d
            .disks
            .iter()
            .map(|x| (&x.source, x.target.as_str()))
            .collect();
        assert_eq!(
            disks,
            [
                (&DiskSource::File("/p/v.qcow2".into()), "vda"),
                (&DiskSource::File("/p/v-1.qcow2".into()), "vdb"),
                (&DiskSource::File("/w/extra.qcow2".into()), "vdc"),
                (&DiskSource::File("/p/v-install.iso".into()), "sda"),
            ]
        );
        assert_eq!(d.disks[2].driver.cache.as_deref(), Some("unsafe"));
        assert_eq!(d.qemu_commandline.args, ["-device", "usb-tablet"]);
    }

    #[test]
    fn a_held_image_lock_is_seen_and_its_release_too() {
        use std::os::unix::io::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.qcow2");
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(disk_locked(&p), Some(false));
        // A shared lock on one byte, as QEMU takes them.
        let holder = std::fs::OpenOptions::new().read(true).open(&p).unwrap();
        // SAFETY: a zeroed flock filled in below; the fd is open.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_RDLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = 100;
        fl.l_len = 1;
        let r = unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        assert_eq!(r, 0);
        assert_eq!(disk_locked(&p), Some(true));
        drop(holder);
        assert_eq!(disk_locked(&p), Some(false));
        assert_eq!(disk_locked(&dir.path().join("missing")), None);
    }

    /// A qcow2 disk image in a fresh folder that is an overlay of a file
    /// only its owner may read there.
    fn overlay_of_a_private_file() -> (tempfile::TempDir, PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "SECRET-KEY").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let image = dir.path().join("cloud.qcow2");
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&key)
            .arg(&image)
            .arg("1M")
            .status()
            .unwrap();
        assert!(made.success());
        (dir, key, image)
    }

    /// A disk-image build of `image` on libvirt's test driver.
    fn disk_image_build(image: &Path, more: serde_json::Value) -> Config {
        let mut user = json!({
            "iso_url": image.display().to_string(), "iso_checksum": "none", "disk_image": true,
            "ssh_username": "u", "libvirt_uri": "test:///default", "pool": "default-pool",
            "vm_name": "overlay-source",
        });
        user.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        config(user)
    }

    #[tokio::test]
    async fn a_disk_image_naming_a_backing_file_is_refused_on_iso_url_before_any_volume() {
        let (_dir, key, image) = overlay_of_a_private_file();
        let cfg = disk_image_build(&image, json!({}));
        let host = HostHandle::open(&cfg.libvirt_uri).await.unwrap();
        let made = std::sync::Mutex::new(Vec::new());
        let err = host
            .create_disk(&cfg, Some(&image), &|l| made.lock().unwrap().push(l))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "iso_url: the image names the backing file '{}', a host file QEMU would read as part \
                 of the disk; flatten it where that file exists (`qemu-img convert -O qcow2 IMAGE \
                 FLAT.qcow2`) and use the flat image; or, to build on it as an overlay, set \
                 use_backing_file = true",
                key.display()
            )
        );
        assert!(made.lock().unwrap().is_empty(), "a volume was made");
    }

    #[test]
    fn a_disk_image_that_is_an_overlay_is_taken_when_use_backing_file_asks_for_one() {
        let (_dir, key, image) = overlay_of_a_private_file();
        let cfg = disk_image_build(&image, json!({"use_backing_file": true}));
        let Ok(SourceDisk::AsIs(info)) =
            source_disk(&cfg, &image, Path::new("/nonexistent/packer_cache"))
        else {
            panic!("not taken as it is");
        };
        assert_eq!(info.backing_file, Some(key.display().to_string()));
    }

    /// `qemu-img create -f qcow2 [-b BACKING -F FORMAT] IMAGE 1M` in `dir`.
    fn qcow2(dir: &Path, image: &str, backing: Option<(&str, &str)>) -> PathBuf {
        let mut c = std::process::Command::new("qemu-img");
        c.current_dir(dir).args(["create", "-q", "-f", "qcow2"]);
        if let Some((file, format)) = backing {
            c.args(["-b", file, "-F", format]);
        }
        assert!(c.args([image, "1M"]).status().unwrap().success());
        dir.join(image)
    }

    /// Fills the 512 bytes at `offset` of the guest's view of `image`
    /// with `byte`.
    fn write_at(image: &Path, offset: u64, byte: u8) {
        let done = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c"])
            .arg(format!("write -P {byte} {offset} 512"))
            .arg(image)
            .output()
            .unwrap();
        assert!(done.status.success(), "{done:?}");
    }

    #[tokio::test]
    async fn an_overlay_of_qcow2_images_is_flattened_without_use_backing_file_as_the_qemu_builder_copies_it(
    ) {
        // A chain of builds: a base image, an overlay of it named by a
        // relative path, an overlay of that by an absolute one.
        let dir = tempfile::tempdir().unwrap();
        let step = dir.path().join("step");
        std::fs::create_dir(&step).unwrap();
        let base = qcow2(dir.path(), "base.qcow2", None);
        write_at(&base, 0, 1);
        let mid = qcow2(dir.path(), "mid.qcow2", Some(("base.qcow2", "qcow2")));
        write_at(&mid, 512, 2);
        let top = qcow2(&step, "top.qcow2", Some((mid.to_str().unwrap(), "qcow2")));
        write_at(&top, 1024, 3);

        let cfg = disk_image_build(&top, json!({}));
        assert!(matches!(
            source_disk(&cfg, &top, Path::new("/nonexistent/packer_cache")),
            Ok(SourceDisk::Flatten)
        ));
        let cache = tempfile::tempdir().unwrap();
        let flat = flatten(&top, cache.path()).await.unwrap();
        let info = image_info(&flat).unwrap();
        assert_eq!(info.format, VolumeFormat::Qcow2);
        assert_eq!((info.backing_file, info.virtual_size), (None, 1 << 20));
        // The same disk the guest saw on the chain.
        let same = std::process::Command::new("qemu-img")
            .args(["compare", "-f", "qcow2", "-F", "qcow2"])
            .arg(&top)
            .arg(&*flat)
            .output()
            .unwrap();
        assert!(same.status.success(), "{same:?}");
        let path = flat.to_path_buf();
        drop(flat);
        assert!(!path.exists());

        // The same chain downloaded (in Packer's cache folder) is refused:
        // a server named those files.
        assert!(matches!(
            source_disk(&cfg, &top, dir.path()),
            Err(HostError::OverlaySource(_))
        ));

        // With use_backing_file the overlay is taken as it is.
        let cfg = disk_image_build(&top, json!({"use_backing_file": true}));
        assert!(matches!(
            source_disk(&cfg, &top, Path::new("/nonexistent/packer_cache")),
            Ok(SourceDisk::AsIs(_))
        ));
    }

    #[test]
    fn a_chain_that_reaches_a_file_that_is_no_qcow2_image_is_refused_as_before() {
        let (_dir, key, image) = overlay_of_a_private_file();
        let dir = image.parent().unwrap();
        let top = qcow2(dir, "top.qcow2", Some(("cloud.qcow2", "qcow2")));
        let cfg = disk_image_build(&top, json!({}));
        let err = source_disk(&cfg, &top, Path::new("/nonexistent/packer_cache"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "iso_url: the image names the backing file 'cloud.qcow2', a host file QEMU would read"
            ),
            "{err}"
        );
        // A chain whose file is missing, or that loops, is refused too.
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(
            source_disk(&cfg, &top, Path::new("/nonexistent/packer_cache")),
            Err(HostError::OverlaySource(_))
        ));
        let a = qcow2(dir, "a.qcow2", None);
        let b = qcow2(dir, "b.qcow2", Some(("a.qcow2", "qcow2")));
        let rebase = std::process::Command::new("qemu-img")
            .args([
                "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", "b.qcow2",
            ])
            .arg(&a)
            .status()
            .unwrap();
        assert!(rebase.success());
        let cfg = disk_image_build(&b, json!({}));
        assert!(matches!(
            source_disk(&cfg, &b, Path::new("/nonexistent/packer_cache")),
            Err(HostError::OverlaySource(_))
        ));
    }

    #[test]
    fn efi_boot_adds_the_firmware_and_a_per_build_variables_file() {
        let c = config(
            json!({"kernel": "/proc/self/exe", "communicator": "none", "efi_boot": true, "vm_name": "e"}),
        );
        let d = domain_def(&c, &["/p/e.qcow2"], None, None, "52:54:00:00:00:03", &[]);
        assert_eq!(
            d.os.firmware.as_deref(),
            Some("/usr/share/OVMF/OVMF_CODE.fd")
        );
        let nv = d.os.nvram.unwrap();
        assert_eq!(nv.file, "/var/lib/libvirt/qemu/nvram/e_VARS.fd");
        assert_eq!(nv.template.as_deref(), Some("/usr/share/OVMF/OVMF_VARS.fd"));
    }
}

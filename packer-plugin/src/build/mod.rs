//! One build, step by step: source image, volumes, seed CD, domain, boot,
//! SSH or WinRM, provisioners (Packer's `packer_provision` hook), shutdown, output.
//! Whatever a step creates on the host is recorded at once, so success,
//! failure and cancellation all remove it.

pub mod drives;
pub mod host;
pub mod http;
pub mod keystrokes;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::{CommunicatorConfig, Config, WinRmConfig};
use crate::remote::Remote;
use crate::ssh::{self, Ssh};
use crate::ui::Ui;
use crate::winrm::{self, WinRm, WinRmError};
use host::{HostHandle, Leftover};
use kvmhost::libvirt::volume::VolumeInfo;

/// What a build talks to.
pub struct BuildEnv {
    /// Packer's Ui.
    pub ui: Ui,
    /// Runs the provisioners once the guest answers on SSH or WinRM.
    pub provisioners: Box<dyn Provisioners>,
    /// Fires on `Builder.Cancel`.
    pub cancel: CancellationToken,
}

/// The provisioners of the template, run by whoever started the build
/// (Packer's `packer_provision` hook), so the build does not need to know
/// how they are reached.
pub trait Provisioners: Send + Sync {
    /// Runs them against the guest over `remote`, offering `data` as the
    /// build's variables; the error is the provisioner's own text.
    fn run<'a>(
        &'a self,
        remote: Arc<Remote>,
        data: &'a HookData,
    ) -> BoxFuture<'a, Result<(), ProvisionError>>;
}

/// Why the provisioners failed, in whatever terms reached them (Packer's
/// hook reports a provisioner's failure as text).
pub type ProvisionError = Box<dyn std::error::Error + Send + Sync>;

/// The image a successful build leaves in its output folder.
#[derive(Debug, Clone)]
pub struct Image {
    /// The output folder.
    pub dir: PathBuf,
    /// The files in it (disk, SHA256SUMS).
    pub files: Vec<PathBuf>,
    /// The image's id: the disk file name.
    pub id: String,
    /// Values for `State(name)` lookups (e.g. `diskName`, `diskType`).
    pub state: std::collections::BTreeMap<String, String>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Packer cancelled the build (Ctrl-C).
    #[error("build was cancelled")]
    Cancelled,
    /// The source image could not be had.
    #[error("{0}")]
    Source(#[from] source::SourceError),
    /// The HTTP server for the guest could not start.
    #[error("{0}")]
    Http(#[from] http::HttpError),
    /// The seed CD could not be made.
    #[error("cd_content: {0}")]
    Seed(#[from] kvmhost::nocloud::SeedError),
    /// A `boot_command` or `qemuargs` entry is not a valid template.
    #[error("{what}[{index}]: template: {message}")]
    Template {
        /// The setting.
        what: &'static str,
        /// The entry's index.
        index: usize,
        /// What is wrong with it.
        message: crate::template::TemplateError,
    },
    /// No throwaway SSH key could be made.
    #[error("making an SSH key: {0}")]
    SshKey(std::io::Error),
    /// SSH did not answer in time.
    #[error("ssh_timeout: SSH did not come up within {timeout:?}: {message}")]
    SshTimeout {
        /// `ssh_timeout`.
        timeout: Duration,
        /// The last attempt's error.
        message: String,
    },
    /// The output folder is there already and `-force` was not given.
    #[error("output_directory: {} already exists: remove it or run packer build -force", .0.display())]
    OutputExists(PathBuf),
    /// The output folder could not be made, removed or written.
    #[error("output_directory: {}: {source}", path.display())]
    Output {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The guest did not power off in time.
    #[error("shutdown_timeout: the guest did not power off within {0:?}")]
    ShutdownTimeout(Duration),
    /// The shutdown command failed before the guest was off.
    #[error("shutdown_command `{command}` failed with exit status {code}: {stderr}")]
    ShutdownCommand {
        /// The command.
        command: String,
        /// Its exit status.
        code: u32,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// The HTTP server's bridge has no address this machine can serve on.
    #[error("http_directory: this machine has no IPv4 address on bridge `{0}`, so the guest cannot reach the HTTP server; serve from the libvirt host itself, or use cd_content")]
    NoBridgeAddress(String),
    /// A step on the libvirt host failed.
    #[error("{0}")]
    Host(#[from] host::HostError),
    /// A bug: a step panicked.
    #[error("internal error: {0}; please report this bug")]
    Internal(String),
    /// The SSH credentials cannot be loaded, or the guest refused them
    /// `ssh_handshake_attempts` times.
    #[error("{0}")]
    SshAuth(ssh::SshError),
    /// A `cd_files` entry names no file.
    #[error("cd_files: {} has no file name", .0.display())]
    CdFileName(PathBuf),
    /// A `cd_files` entry cannot be read.
    #[error("cd_files: {}: {source}", path.display())]
    CdFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An output file cannot be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A provisioner failed.
    #[error("{0}")]
    Provision(ProvisionError),
    /// WinRM cannot be set up, or the guest refused the credentials.
    #[error("{0}")]
    WinRm(WinRmError),
    /// WinRM did not answer in time.
    #[error("winrm_timeout: WinRM did not come up within {timeout:?}: {message}")]
    WinRmTimeout {
        /// `winrm_timeout`.
        timeout: Duration,
        /// The last attempt's error.
        message: String,
    },
}

/// Things made during the build that must go when it ends.
#[derive(Default)]
struct Cleanup {
    host: Option<HostHandle>,
    leftovers: Vec<Leftover>,
    files: Vec<PathBuf>,
}

type Shared = Arc<Mutex<Cleanup>>;

/// Runs the whole build. The result is the artifact, or why not.
pub async fn run(cfg: Config, env: BuildEnv) -> Result<Option<Image>, BuildError> {
    let shared: Shared = Arc::default();
    let started = Instant::now();
    let result = tokio::select! {
        // A panic in a step still ends in the cleanup below.
        r = crate::protocol::rpc::catch_panic(steps(&cfg, &env, shared.clone())) => r.unwrap_or_else(|p| {
            Err(BuildError::Internal(p.0))
        }),
        _ = env.cancel.cancelled() => Err(BuildError::Cancelled),
    };
    let failed = result.is_err() && !matches!(result, Err(BuildError::Cancelled));
    let keep = failed
        && match cfg.packer.on_error.as_str() {
            "abort" => true,
            "ask" => {
                if let Err(e) = &result {
                    env.ui.error(e.to_string()).await;
                }
                let answer = env
                    .ui
                    .ask("[c] Clean up and exit, [a] abort without cleanup:")
                    .await;
                answer.trim().eq_ignore_ascii_case("a")
            }
            _ => false,
        };
    if keep {
        env.ui
            .error(format!(
                "Build failed; -on-error={} keeps domain `{}` and its volumes for inspection.",
                cfg.packer.on_error, cfg.vm_name
            ))
            .await;
    } else {
        cleanup(&env.ui, shared).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&cfg.output_directory);
        }
    }
    if result.is_ok() {
        env.ui
            .say(format!(
                "Build finished in {:.1}s",
                started.elapsed().as_secs_f64()
            ))
            .await;
    }
    result
}

async fn cleanup(ui: &Ui, shared: Shared) {
    let (host, leftovers, files) = {
        let mut c = shared.lock().expect("cleanup lock");
        (
            c.host.clone(),
            std::mem::take(&mut c.leftovers),
            std::mem::take(&mut c.files),
        )
    };
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    let Some(host) = host else { return };
    if leftovers.is_empty() {
        return;
    }
    ui.say("Removing the build domain and volumes...").await;
    for item in leftovers.into_iter().rev() {
        if let Err(e) = host.remove(item).await {
            ui.error(format!("cleanup: {e}")).await;
        }
    }
}

async fn steps(cfg: &Config, env: &BuildEnv, shared: Shared) -> Result<Option<Image>, BuildError> {
    let ui = &env.ui;
    prepare_output(cfg, ui).await?;

    let source = retrieve_source(cfg, ui).await?;

    ui.say(format!("Connecting to libvirt at {}", cfg.libvirt_uri))
        .await;
    let host = HostHandle::open(&cfg.libvirt_uri).await?;
    shared.lock().expect("cleanup lock").host = Some(host.clone());
    host.check_free_name(&cfg.vm_name).await?;

    let record = |l: Leftover| shared.lock().expect("cleanup lock").leftovers.push(l);

    ui.say("Creating the build disk...").await;
    let disk = host
        .create_disk(cfg, source.as_deref().filter(|_| cfg.disk_image), &record)
        .await?;
    ui.message(format!("Disk {} ({} bytes)", disk.path, disk.capacity))
        .await;
    let extra_disks = host.create_additional_disks(cfg, &record).await?;

    let install_iso = match (&source, cfg.disk_image) {
        (Some(p), false) => {
            ui.say("Uploading the install ISO...").await;
            Some(
                host.upload_iso(cfg, &format!("{}-install.iso", cfg.vm_name), p, &record)
                    .await?,
            )
        }
        _ => None,
    };

    let throwaway = match cfg.ssh() {
        Some(s) if s.password.is_none() && s.private_key_file.is_none() => {
            let (k, public) = ssh::throwaway_key().map_err(BuildError::SshKey)?;
            Some((Arc::new(k), public))
        }
        _ => None,
    };

    let seed = if cfg.cd_content.is_empty() && cfg.cd_files.is_empty() {
        None
    } else {
        ui.say(format!("Creating the CD `{}`...", cfg.cd_label))
            .await;
        let iso = seed(cfg, throwaway.as_ref().map(|t| t.1.as_str()))?.to_iso()?;
        Some(host.upload_seed(cfg, &iso, &record).await?)
    };

    let Rendered {
        qemuargs,
        boot_command,
        http_server,
    } = render(cfg, ui, &host).await?;
    let mac = cfg.mac_address.clone().unwrap_or_else(random_mac);
    ui.say(format!("Defining domain {}...", cfg.vm_name)).await;
    let mut hard_disks = vec![disk.path.as_str()];
    hard_disks.extend(extra_disks.iter().map(|d| d.path.as_str()));
    host.define(
        cfg,
        &hard_disks,
        install_iso.as_deref(),
        seed.as_deref(),
        &mac,
        &qemuargs,
        &record,
    )
    .await?;
    ui.say("Starting the domain...").await;
    host.start(&cfg.vm_name).await?;

    if !boot_command.is_empty() {
        ui.say(format!("Waiting {:?} for boot...", cfg.boot_wait))
            .await;
        tokio::time::sleep(cfg.boot_wait).await;
        ui.say("Typing the boot command...").await;
        host.type_boot_command(&cfg.vm_name, &boot_command, cfg.boot_key_interval)
            .await?;
    }

    if !cfg.pause_before_connecting.is_zero() {
        ui.say(format!(
            "Pausing {:?} before connecting...",
            cfg.pause_before_connecting
        ))
        .await;
        tokio::time::sleep(cfg.pause_before_connecting).await;
    }
    let http = http_server.as_ref().map(|(ip, s)| (ip.to_string(), s.port));
    let connected = connect(cfg, ui, &host, &mac, throwaway.as_ref(), http).await?;
    if let Some((remote, data)) = connected {
        let remote = Arc::new(remote);
        env.provisioners
            .run(remote.clone(), &data)
            .await
            .map_err(BuildError::Provision)?;

        ui.say("Shutting down the guest...").await;
        match &cfg.shutdown_command {
            Some(cmd) => {
                // The command may hold a password: never shown.
                ui.message("Running the shutdown_command").await;
                shutdown_by_command(&host, cfg, remote.clone(), cmd, &disk.path).await?;
            }
            None => {
                host.acpi_shutdown(&cfg.vm_name, cfg.shutdown_timeout)
                    .await?
            }
        }
        remote.close().await;
    } else {
        ui.say("No communicator: waiting for the guest to power off by itself...")
            .await;
        wait_powered_off(&host, cfg, &disk.path).await?;
    }

    drop(http_server);
    write_image(
        cfg,
        ui,
        &host,
        &shared,
        &disk,
        &extra_disks,
        source.as_deref(),
    )
    .await
    .map(Some)
}

/// The source image (`iso_url(s)`), fetched or from the cache and
/// unpacked, if the template has one.
async fn retrieve_source(cfg: &Config, ui: &Ui) -> Result<Option<PathBuf>, BuildError> {
    if cfg.iso_urls.is_empty() {
        return Ok(None);
    }
    ui.say(format!("Retrieving source image {}", cfg.iso_urls[0]))
        .await;
    let (path, cached) = source::fetch(&cfg.iso_urls, &cfg.iso_checksum).await?;
    if cached {
        ui.message(format!("Using cached copy {}", path.display()))
            .await;
    }
    Ok(Some(match source::unpack(&path).await? {
        Some(unpacked) => {
            ui.message(format!("Decompressed to {}", unpacked.display()))
                .await;
            unpacked
        }
        None => path,
    }))
}

/// `qemuargs` and `boot_command` with their fields filled in, and the
/// build's HTTP server (`http_directory`/`http_content`) they may name.
struct Rendered {
    qemuargs: Vec<Vec<String>>,
    boot_command: Vec<String>,
    http_server: Option<(std::net::Ipv4Addr, http::HttpServer)>,
}

/// Starts the HTTP server, if any, and fills in what `boot_command` and
/// `qemuargs` may refer to (`{{ .Name }}`, `{{ .HTTPIP }}`, ...).
async fn render(cfg: &Config, ui: &Ui, host: &HostHandle) -> Result<Rendered, BuildError> {
    // What `boot_command` and `qemuargs` may refer to.
    let mut fields = cfg.template.clone();
    fields
        .fields
        .insert("Name".to_string(), cfg.vm_name.clone());
    fields.fields.insert(
        "OutputDir".to_string(),
        cfg.output_directory.display().to_string(),
    );
    let http_server = match &cfg.http {
        Some(h) => {
            let ip = host_ip_for_guest(host, cfg).await?;
            let server = http::start(h).await?;
            ui.say(format!(
                "Serving HTTP for the guest at http://{ip}:{}/",
                server.port
            ))
            .await;
            fields.fields.insert("HTTPIP".into(), ip.to_string());
            fields
                .fields
                .insert("HTTPPort".into(), server.port.to_string());
            Some((ip, server))
        }
        None => None,
    };
    let render = |what: &'static str, index: usize, t: &str| {
        crate::template::render(t, &fields).map_err(|message| BuildError::Template {
            what,
            index,
            message,
        })
    };
    let mut qemuargs = cfg
        .qemuargs
        .iter()
        .enumerate()
        .map(|(i, a)| a.iter().map(|t| render("qemuargs", i, t)).collect())
        .collect::<Result<Vec<Vec<String>>, _>>()?;
    // QEMU on this machine opens a relative drive file where Packer runs,
    // as the QEMU builder's QEMU does.
    if host.is_local() {
        if let Ok(cwd) = std::env::current_dir() {
            drives::absolute_drive_files(&mut qemuargs, &cwd);
        }
    }
    let boot_command = cfg
        .boot_command
        .iter()
        .enumerate()
        .map(|(i, t)| render("boot_command", i, t))
        .collect::<Result<Vec<String>, _>>()?;

    Ok(Rendered {
        qemuargs,
        boot_command,
        http_server,
    })
}

/// Waits for the guest's communicator and connects, with what Packer's
/// provisioners are given about the connection; none without one.
async fn connect(
    cfg: &Config,
    ui: &Ui,
    host: &HostHandle,
    mac: &str,
    throwaway: Option<&(Arc<russh::keys::PrivateKey>, String)>,
    http: Option<(String, u16)>,
) -> Result<Option<(Remote, HookData)>, BuildError> {
    Ok(match &cfg.communicator {
        CommunicatorConfig::None => None,
        CommunicatorConfig::Ssh(ssh_cfg) => {
            let deadline = kvmhost::deadline::after(ssh_cfg.timeout);
            let addr = guest_address(ui, host, cfg, mac, ssh_cfg.host.as_ref(), deadline).await?;
            ui.say("Waiting for SSH to become available...").await;
            let auths =
                ssh::auth_for(ssh_cfg, throwaway.map(|t| &t.0)).map_err(BuildError::SshAuth)?;
            let ssh = connect_ssh(&addr, ssh_cfg, &auths, deadline).await?;
            ui.say("Connected to SSH!").await;
            let data = HookData {
                id: cfg.vm_name.clone(),
                host: addr.clone(),
                port: ssh_cfg.port,
                user: ssh_cfg.username.clone(),
                password: ssh_cfg.password.clone().unwrap_or_default(),
                public_key: throwaway.map(|t| t.1.clone()).unwrap_or_default(),
                http,
                conn_type: "ssh",
            };
            Some((Remote::Ssh(ssh), data))
        }
        CommunicatorConfig::WinRm(w) => {
            let deadline = kvmhost::deadline::after(w.timeout);
            let addr = guest_address(ui, host, cfg, mac, w.host.as_ref(), deadline).await?;
            ui.say("Waiting for WinRM to become available...").await;
            let winrm = connect_winrm(&addr, w, deadline).await?;
            ui.say("Connected to WinRM!").await;
            let data = HookData {
                id: cfg.vm_name.clone(),
                host: addr.clone(),
                port: w.port,
                user: w.username.clone(),
                password: w.password.clone(),
                public_key: String::new(),
                http,
                conn_type: "winrm",
            };
            Some((Remote::WinRm(winrm), data))
        }
    })
}

/// Writes the powered-off guest's disks to the output folder, with
/// `SHA256SUMS`; removes the build domain meanwhile when the host is this
/// machine.
async fn write_image(
    cfg: &Config,
    ui: &Ui,
    host: &HostHandle,
    shared: &Shared,
    disk: &VolumeInfo,
    extra_disks: &[VolumeInfo],
    source: Option<&Path>,
) -> Result<Image, BuildError> {
    ui.say(format!(
        "Writing the image to {}...",
        cfg.output_directory.display()
    ))
    .await;
    std::fs::create_dir_all(&cfg.output_directory).map_err(|source| BuildError::Output {
        path: cfg.output_directory.clone(),
        source,
    })?;
    let file_name = cfg.output_file_name();
    let out = cfg.output_directory.join(&file_name);
    let backing = source.filter(|_| cfg.use_backing_file);
    // The guest is off: on this machine, libvirt's teardown of the build
    // domain (about a second) runs while the disk is written. A remote
    // host's disk comes over the same connection, so there it waits.
    let domain_removal = host.is_local().then(|| {
        let (host, name) = (host.clone(), cfg.vm_name.clone());
        tokio::spawn(async move { host.remove(Leftover::Domain(name)).await })
    });
    host.export_disk(disk, &out, cfg.format, backing).await?;
    if let Some(removal) = domain_removal {
        if let Ok(Ok(())) = removal.await {
            let gone = Leftover::Domain(cfg.vm_name.clone());
            shared
                .lock()
                .expect("cleanup lock")
                .leftovers
                .retain(|l| *l != gone);
        }
    }
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    ui.message(format!("{} ({size} bytes)", out.display()))
        .await;
    // Extra disks are named as the QEMU builder names them.
    let mut names = vec![file_name.clone()];
    let mut files = vec![out.clone()];
    for (i, d) in extra_disks.iter().enumerate() {
        let name = format!("{}-{}", cfg.vm_name, i + 1);
        let path = cfg.output_directory.join(&name);
        host.export_disk(d, &path, cfg.format, None).await?;
        ui.message(format!("{}", path.display())).await;
        names.push(name);
        files.push(path);
    }
    let sums = write_sha256sums(
        &cfg.output_directory,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    files.push(sums);

    let mut state = std::collections::BTreeMap::new();
    state.insert("diskName".to_string(), file_name.clone());
    state.insert("diskType".to_string(), cfg.format.as_str().to_string());
    Ok(Image {
        dir: cfg.output_directory.clone(),
        files,
        id: file_name,
        state,
    })
}

/// This machine's address on the guest's network, for `{{ .HTTPIP }}`.
async fn host_ip_for_guest(
    host: &HostHandle,
    cfg: &Config,
) -> Result<std::net::Ipv4Addr, BuildError> {
    let bridge = match &cfg.net {
        crate::config::NetAttach::Bridge(b) => b.clone(),
        crate::config::NetAttach::Network(n) => host.network_bridge(n).await?,
    };
    http::address_of(&bridge).ok_or(BuildError::NoBridgeAddress(bridge))
}

async fn wait_powered_off(host: &HostHandle, cfg: &Config, disk: &str) -> Result<(), BuildError> {
    let deadline = kvmhost::deadline::after(cfg.shutdown_timeout);
    host.wait_shut_off(&cfg.vm_name, disk, deadline)
        .await
        .map_err(|_| BuildError::ShutdownTimeout(cfg.shutdown_timeout))
}

/// Runs the shutdown command and waits for the power-off. The command
/// often never returns (the guest goes down under it), so only a command
/// that ends with a failure before the guest is off counts as an error.
async fn shutdown_by_command(
    host: &HostHandle,
    cfg: &Config,
    remote: Arc<Remote>,
    cmd: &str,
    disk: &str,
) -> Result<(), BuildError> {
    let command = cmd.to_string();
    let mut run = tokio::spawn(async move { remote.run(&command).await });
    let off = wait_powered_off(host, cfg, disk);
    tokio::pin!(off);
    tokio::select! {
        r = &mut off => r,
        ran = &mut run => {
            if let Ok(Ok((Some(code), _, err))) = ran {
                if code != 0 {
                    return Err(BuildError::ShutdownCommand {
                        command: cmd.to_string(),
                        code,
                        stderr: String::from_utf8_lossy(&err).trim().to_string(),
                    });
                }
            }
            off.await
        }
    }
}

async fn prepare_output(cfg: &Config, ui: &Ui) -> Result<(), BuildError> {
    let dir = &cfg.output_directory;
    if dir.exists() {
        if !cfg.packer.force {
            return Err(BuildError::OutputExists(dir.clone()));
        }
        ui.say(format!(
            "Deleting the previous output {} (-force)",
            dir.display()
        ))
        .await;
        std::fs::remove_dir_all(dir).map_err(|source| BuildError::Output {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The extra CD's files: `cd_content`, `cd_files`, and the throwaway
/// key's public half in `meta-data`.
pub fn seed(cfg: &Config, public_key: Option<&str>) -> Result<kvmhost::nocloud::Seed, BuildError> {
    let mut seed = kvmhost::nocloud::Seed::new().label(&cfg.cd_label);
    // cloud-init adds `public-keys` from meta-data to the default user.
    if let (Some(k), false) = (public_key, cfg.cd_content.contains_key("meta-data")) {
        seed = seed.file(
            "meta-data",
            format!("instance-id: {}\npublic-keys:\n  - {k}\n", cfg.vm_name).into_bytes(),
        );
    }
    for (name, content) in &cfg.cd_content {
        let mut content = content.clone();
        if name == "meta-data" {
            if let Some(k) = public_key {
                content.push_str(&format!("\npublic-keys:\n  - {k}\n"));
            }
        }
        seed = seed.file(name, content.into_bytes());
    }
    for f in &cfg.cd_files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| BuildError::CdFileName(f.clone()))?;
        let data = std::fs::read(f).map_err(|source| BuildError::CdFile {
            path: f.clone(),
            source,
        })?;
        seed = seed.file(&name, data);
    }
    Ok(seed)
}

fn random_mac() -> String {
    let mut b = [0u8; 3];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// The guest's address: `fixed` (`ssh_host`, `winrm_host`) or the one
/// libvirt learns.
async fn guest_address(
    ui: &Ui,
    host: &HostHandle,
    cfg: &Config,
    mac: &str,
    fixed: Option<&String>,
    deadline: Instant,
) -> Result<String, BuildError> {
    let addr = match fixed {
        Some(h) => h.clone(),
        None => {
            ui.say("Waiting for the guest's IP address...").await;
            host.wait_address(cfg, mac, deadline).await?
        }
    };
    ui.message(format!("Guest address: {addr}")).await;
    Ok(addr)
}

/// How long to wait between WinRM attempts, as Packer waits.
const WINRM_RETRY: Duration = Duration::from_secs(5);

/// Waits until WinRM runs a PowerShell echo and prints it back, as
/// Packer's connect step does, until `deadline`. A refused password ends the wait at once: it
/// would be refused again.
pub async fn connect_winrm(
    addr: &str,
    cfg: &WinRmConfig,
    deadline: Instant,
) -> Result<WinRm, BuildError> {
    let winrm = WinRm::new(addr, cfg).map_err(BuildError::WinRm)?;
    let probe = winrm::powershell("echo \"WinRM connected.\"");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(left, winrm.run(&probe)).await {
            Ok(Ok((0, out, _))) if String::from_utf8_lossy(&out).contains("WinRM connected.") => {
                return Ok(winrm)
            }
            Ok(Ok((code, out, err))) => format!(
                "the test command exited with {code}, printing `{}`: {}",
                String::from_utf8_lossy(&out).trim(),
                String::from_utf8_lossy(&err).trim()
            ),
            Ok(Err(e @ WinRmError::Unauthorized { .. })) => return Err(BuildError::WinRm(e)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("{} did not answer", winrm.url()),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BuildError::WinRmTimeout {
                timeout: cfg.timeout,
                message: last,
            });
        }
        tokio::time::sleep(WINRM_RETRY.min(left)).await;
    }
}

async fn connect_ssh(
    addr: &str,
    cfg: &crate::config::SshConfig,
    auths: &[ssh::Auth],
    deadline: Instant,
) -> Result<Ssh, BuildError> {
    let mut auth_failures = 0;
    loop {
        match Ssh::connect(addr, cfg.port, &cfg.username, auths).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                // A refused key often means cloud-init has not written it
                // yet: give it a second per attempt, as Packer's spaced
                // attempts do, instead of spending them all at once.
                let mut pause = Duration::from_millis(100);
                if e.to_string().contains("authentication") {
                    pause = Duration::from_secs(1);
                    auth_failures += 1;
                    if auth_failures >= cfg.handshake_attempts {
                        return Err(BuildError::SshAuth(e));
                    }
                }
                if Instant::now() >= deadline {
                    return Err(BuildError::SshTimeout {
                        timeout: cfg.timeout,
                        message: e.to_string(),
                    });
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The build variables Packer offers provisioners (`build.Host`, ...).
pub const GENERATED_VARS: &[&str] = &[
    "ID",
    "PackerRunUUID",
    "PackerHTTPIP",
    "PackerHTTPPort",
    "PackerHTTPAddr",
    "Host",
    "Port",
    "User",
    "Password",
    "ConnType",
    "SSHPublicKey",
];

/// Values of [`GENERATED_VARS`] for one build.
pub struct HookData {
    /// The domain name.
    pub id: String,
    /// Guest address.
    pub host: String,
    /// The communicator's port.
    pub port: u16,
    /// The communicator's user.
    pub user: String,
    /// Its password, if any.
    pub password: String,
    /// The throwaway public key, if one was made.
    pub public_key: String,
    /// The HTTP server's address and port, if one runs.
    pub http: Option<(String, u16)>,
    /// `ssh` or `winrm`.
    pub conn_type: &'static str,
}

fn write_sha256sums(dir: &Path, names: &[&str]) -> Result<PathBuf, BuildError> {
    use sha2::{Digest, Sha256};
    let mut text = String::new();
    for n in names {
        let p = dir.join(n);
        let file_error = |source| BuildError::File {
            path: p.clone(),
            source,
        };
        let mut f = std::fs::File::open(&p).map_err(file_error)?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(file_error)?;
        text.push_str(&format!("{}  {n}\n", hex::encode(h.finalize())));
    }
    let out = dir.join("SHA256SUMS");
    std::fs::write(&out, text).map_err(|source| BuildError::File {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cd_file_that_cannot_be_read_is_named_with_its_setting() {
        let mut cfg = config(json!({}));
        cfg.cd_files = vec![PathBuf::from("/nonexistent/user-data")];
        let e = seed(&cfg, None).unwrap_err().to_string();
        assert!(
            e.starts_with("cd_files: /nonexistent/user-data: No such file"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = write_sha256sums(dir.path(), &["gone.qcow2"])
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("gone.qcow2: No such file or directory (os error 2)"),
            "{e}"
        );
    }

    fn config(extra: serde_json::Value) -> Config {
        let mut user = json!({"iso_url": "/x.qcow2", "iso_checksum": "none", "disk_image": true, "ssh_username": "u"});
        for (k, v) in extra.as_object().unwrap() {
            user[k] = v.clone();
        }
        Config::parse(user.as_object().unwrap(), &serde_json::Map::new()).unwrap()
    }

    fn file<'a>(s: &'a kvmhost::nocloud::Seed, name: &str) -> Option<&'a str> {
        s.files()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| std::str::from_utf8(b).unwrap())
    }

    #[test]
    fn the_throwaway_key_goes_into_meta_data_given_or_made() {
        let given = config(
            json!({"cd_content": {"meta-data": "instance-id: a\n", "user-data": "#cloud-config\n"}}),
        );
        let s = seed(&given, Some("ssh-ed25519 AAAA k")).unwrap();
        let md = file(&s, "meta-data").unwrap();
        assert!(
            md.starts_with("instance-id: a\n")
                && md.contains("public-keys:\n  - ssh-ed25519 AAAA k"),
            "{md}"
        );

        let made =
            config(json!({"cd_content": {"user-data": "#cloud-config\n"}, "vm_name": "img"}));
        let s = seed(&made, Some("ssh-ed25519 BBBB k")).unwrap();
        let md = file(&s, "meta-data").unwrap();
        assert!(
            md.contains("instance-id: img") && md.contains("ssh-ed25519 BBBB k"),
            "{md}"
        );

        let no_key = seed(&given, None).unwrap();
        assert_eq!(file(&no_key, "meta-data"), Some("instance-id: a\n"));
    }

    #[test]
    fn a_key_nobody_can_deliver_is_warned_about() {
        assert_eq!(config(json!({})).warnings().len(), 1);
        assert!(config(json!({"ssh_password": "p"})).warnings().is_empty());
        assert!(config(json!({"cd_content": {"user-data": ""}}))
            .warnings()
            .is_empty());
    }
}

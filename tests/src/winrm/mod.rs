//! A stand-in for a Windows guest's WinRM service, following Microsoft's
//! public WS-Management documentation (MS-WSMV) and its remote-shell
//! operations, for the tests of our WinRM communicator. It is proven
//! against pywinrm (`tests/tests/winrm_standin.rs`) before our code is
//! tested against it.
//!
//! What it speaks:
//! - HTTP, or HTTPS with a certificate made at start (rcgen, for
//!   `localhost` and 127.0.0.1), on `POST /wsman`.
//! - Basic authentication: a request without it, or with the wrong
//!   user or password, gets HTTP 401 with `WWW-Authenticate: Negotiate`
//!   and `WWW-Authenticate: Basic realm="WSMAN"`.
//! - Or, with [`Config::ntlm`], NTLMv2 instead (MS-NLMP, no sealing; see
//!   `ntlm.rs`): `Negotiate` or `NTLM` tokens, the handshake on one
//!   connection, which then stays authenticated; Basic is refused.
//! - The cmd shell: Create (answers the `ShellId` selector), Command
//!   (answers a `CommandId`), Receive (stdout and stderr in base64, then
//!   `CommandState` Done with `ExitCode`), Signal (terminate or ctrl_c
//!   ends the command), Delete. A Receive waits
//!   [`Config::receive_wait`] for output; a command still silent then
//!   gets the SOAP fault `w:TimedOut` (WSManFault code 2150858793), as a
//!   real server does when OperationTimeout passes, and clients poll
//!   again. Other actions get `a:ActionNotSupported`; unknown shells and
//!   commands get `w:InvalidSelectors`.
//!
//! What it runs, against a folder that stands for `C:\` (the user's
//! profile, `C:\Users\<user>`, is the base of relative paths; `%TEMP%`
//! and `$env:TEMP` are `C:\Windows\Temp`):
//! - cmd: `cmd /c` prefixes, `&&` chains, `echo TEXT`, output redirected
//!   with `> FILE` or `>> FILE` (and `2>&1` for stderr too; `%SYSTEMROOT%`
//!   and `%WINDIR%` are `C:\Windows`), `exit [/b] N`, `timeout /t N` (sleeps N seconds),
//!   `type FILE`, `set ...` (the environment is not modelled: no effect),
//!   `shutdown /r [/t N]` (a restart: see below), `shutdown /a` (aborts
//!   a scheduled one), other `shutdown ...` (exit 0; powering off is the
//!   test's hook's job), a
//!   `.bat`/`.cmd` file on the drive (its lines, skipping `@echo off`,
//!   `rem` and `::`, until one fails), and `powershell [flags]
//!   -EncodedCommand B64` (the script is UTF-16LE, as PowerShell reads
//!   it), `powershell [flags] -File PATH` or `powershell [flags]
//!   [-Command] SCRIPT`.
//! - PowerShell, statement by statement (newlines and `;` outside quotes
//!   and brackets): `Write-Output`/`Write-Host`/`echo X`, `Write-Error X`
//!   (stderr, exit status 1), `exit N` and `exit $LastExitCode`,
//!   `Start-Sleep [-Seconds] N` and `-Milliseconds N`, `Test-Path P`
//!   (prints True or False), `Remove-Item P`, the process's environment
//!   (`$env:NAME="value"` sets it, `$env:NAME` and `${env:NAME}` read it,
//!   bare or in double-quoted strings, with backtick escapes; `TEMP` and
//!   `TMP` are set; each `powershell` starts afresh, a script run with
//!   `&` shares it), other variable assignments (a
//!   quoted path, or one through `[System.IO.Path]::GetFullPath(...)`, is
//!   kept for `Test-Path $x` and `Remove-Item $x`; others are ignored),
//!   `cmd /c ...`, `& { ... }` (a block run in place),
//!   `&'C:/x.ps1'` (a script file on the drive; its exit code becomes
//!   `$LastExitCode`), `. C:/x.ps1` (dot-sourced), and `if (Test-Path P)
//!   { ... }` — the shapes Packer's `powershell` provisioner runs — and
//!   `echo ("{0} ..." -f [System.Net.Dns]::GetHostName())` (Packer's
//!   restart check; the name is [`Config::hostname`]).
//! - A restart, as Windows plays it: `shutdown /r /t N` schedules it N
//!   seconds ahead (another `shutdown /r` then exits 1190, `shutdown /a`
//!   aborts it); when it starts, the machine keeps answering for
//!   [`Reboot::grace`] (`shutdown /r` exits 1115 "in progress"), then
//!   drops every connection, new and open, for [`Reboot::down`], then
//!   answers again with every shell gone.
//! - Two whole-script forms, recognised by what they use: the second half
//!   of a chunked upload (a script that sets `$tmp_file_path` and
//!   `$dest_file_path` to literals and calls `FromBase64String`: the
//!   temporary file's base64 lines are decoded into the destination, as
//!   Packer's winrmcp does, and the temporary file is removed when the
//!   script says `Remove-Item`), and a read-back for downloads (a script that
//!   sets `$file_path` to a literal, or passes one to `ReadAllBytes`, and calls
//!   `ReadAllBytes` and `ToBase64String`: prints the file as one base64 line),
//!   and Packer's elevated wrapper (`elevated_user`: a script that
//!   registers a task through `New-Object -ComObject "Schedule.Service"`
//!   and `RegisterTaskDefinition` from an XML definition, `$log`,
//!   `$password` and `$script` set to literals): the task's `cmd /c
//!   COMMAND > LOG 2>&1` runs in `C:\Windows\system32` as the definition's
//!   `UserId`, which must be the account with its password (or a service
//!   account such as `SYSTEM` with none), the log's lines are printed as
//!   they come, the log and the wrapper are removed and its exit code is
//!   the command's. Credentials that do not match fail it at once with
//!   Windows' "The user name or password is incorrect" (Windows refuses
//!   the registration too, but its wrapper then waits forever).
//! - Anything else fails as Windows would: cmd answers "'X' is not
//!   recognized as an internal or external command" on stderr with exit
//!   code 9009, PowerShell names the unknown term on stderr and exits 1.
//!   So a command the stand-in does not know never passes for one that ran.
//!
//! Every command line is recorded, in order, with its decoded PowerShell
//! script and its exit code ([`StandIn::commands`]); [`Report`] writes
//! that record, the files on the drive and the addresses clients came in
//! on as a framed text block and reads it back (a stand-in inside a
//! guest, `bed-winrm-guest`, prints it on the serial console). A test
//! can hang a hook on each command ([`Config::on_command`]), e.g. to
//! power a guest off when the shutdown command arrives, which Windows
//! would do itself.

mod ntlm;
mod power;
mod report;
mod server;
mod shell;
mod soap;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use power::{Phase, Reboot};
pub use report::{DriveFile, Report, RECORD_BEGIN, RECORD_END};

/// Runs on each command line received, before it starts.
pub type CommandHook = Arc<dyn Fn(&str) + Send + Sync>;

/// How the stand-in is set up.
#[derive(Clone)]
pub struct Config {
    /// The one account.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Authenticate with NTLM instead of Basic.
    pub ntlm: bool,
    /// Serve HTTPS instead of HTTP.
    pub tls: bool,
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// How long a Receive waits for output before `w:TimedOut`.
    pub receive_wait: Duration,
    /// Called with each command line received.
    pub on_command: Option<CommandHook>,
    /// How a restart plays out.
    pub reboot: Reboot,
    /// The machine's name.
    pub hostname: String,
    /// The folder that stands for `C:\` (made if missing, kept when the
    /// stand-in stops); `None`: a fresh temporary one, removed then.
    pub drive: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            username: "vagrant".into(),
            password: "vagrant".into(),
            ntlm: false,
            tls: false,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            receive_wait: Duration::from_secs(2),
            on_command: None,
            reboot: Reboot::default(),
            hostname: "WIN-STANDIN".into(),
            drive: None,
        }
    }
}

/// One command line the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    /// The shell it ran in.
    pub shell_id: String,
    /// The command and its arguments.
    pub line: String,
    /// The PowerShell script, for a `powershell -EncodedCommand` line.
    pub script: Option<String>,
    /// The exit code, once a Receive reported it.
    pub exit_code: Option<i32>,
    /// Whether a Signal ended it.
    pub signalled: bool,
}

/// A running stand-in; it stops when dropped.
pub struct StandIn {
    state: Arc<server::State>,
    addr: SocketAddr,
    drive: PathBuf,
    /// The temporary `C:` folder, when the config named none.
    _temporary: Option<tempfile::TempDir>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl StandIn {
    /// Listens on `config.bind` and serves on its own runtime.
    pub fn start(config: Config) -> anyhow::Result<StandIn> {
        let (drive, temporary) = match &config.drive {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("winrm-standin-c-")
                    .tempdir()
                    .context("making the stand-in's C: folder")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let home = format!(r"C:\Users\{}", config.username);
        for dir in [
            "Windows/Temp".to_string(),
            format!("Users/{}", config.username),
        ] {
            std::fs::create_dir_all(drive.join(dir))?;
        }
        let listener = std::net::TcpListener::bind(config.bind)
            .with_context(|| format!("binding the WinRM stand-in on {}", config.bind))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let tls = if config.tls {
            Some(acceptor().context("making the stand-in's TLS certificate")?)
        } else {
            None
        };
        let (runtime, listener) = crate::util::server_runtime("winrm-standin", listener)?;
        let scheme = if config.tls { "https" } else { "http" };
        let url = format!("{scheme}://{addr}/wsman");
        let machine = shell::Machine {
            drive: drive.clone(),
            home,
            hostname: config.hostname.clone(),
            power: Arc::new(power::Power::new(config.reboot)),
            username: config.username.clone(),
            password: config.password.clone(),
        };
        let state = Arc::new(server::State::new(config, url, machine));
        runtime.spawn(server::serve(listener, tls, state.clone()));
        Ok(StandIn {
            state,
            addr,
            drive,
            _temporary: temporary,
            runtime: Some(runtime),
        })
    }

    /// `http(s)://ADDR:PORT/wsman`.
    pub fn url(&self) -> &str {
        &self.state.url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The folder that stands for `C:\`.
    pub fn drive(&self) -> &Path {
        &self.drive
    }

    /// The host path of a Windows path on the stand-in's `C:`.
    pub fn host_path(&self, windows: &str) -> Option<PathBuf> {
        self.state.machine.host_path(windows)
    }

    /// Every command line received so far, in order.
    pub fn commands(&self) -> Vec<Recorded> {
        self.state
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The addresses clients connected to (this end of each
    /// connection), each once, in the order first seen: with a bind to
    /// `0.0.0.0`, which of the machine's addresses they used.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.state
            .local_addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many Receives got `w:TimedOut`.
    pub fn timed_out_faults(&self) -> usize {
        self.state.timed_out.load(Ordering::SeqCst)
    }

    /// How many requests were refused with 401 for their credentials (an
    /// anonymous request starting an NTLM handshake is not counted).
    pub fn unauthorized(&self) -> usize {
        self.state.unauthorized.load(Ordering::SeqCst)
    }

    /// How many NTLM handshakes were started (CHALLENGEs sent).
    pub fn ntlm_challenges(&self) -> usize {
        self.state.challenges.load(Ordering::SeqCst)
    }

    /// Connections and requests dropped while the machine was down.
    pub fn dropped(&self) -> usize {
        self.state.dropped.load(Ordering::SeqCst)
    }

    /// Where the machine is in a restart, and how many restarts have
    /// gone down so far.
    pub fn phase(&self) -> (Phase, u64) {
        self.state.machine.power.phase()
    }

    /// The peer address of every connection accepted, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.state
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a stand-in whose socket lives in network namespace `ns`
    /// (with `config.bind` `0.0.0.0:PORT`, others reach it on the
    /// namespace's addresses).
    pub fn start_in(ns: &crate::netns::Netns, config: Config) -> anyhow::Result<StandIn> {
        ns.spawn_in(move || StandIn::start(config))?
            .join()
            .map_err(|_| anyhow::anyhow!("the WinRM stand-in's thread panicked"))?
    }

    /// Shells created and not yet deleted.
    pub fn open_shells(&self) -> usize {
        self.state.open_shells()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A TLS acceptor with a fresh self-signed certificate.
fn acceptor() -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let cert = params.self_signed(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

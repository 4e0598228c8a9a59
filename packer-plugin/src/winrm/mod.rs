//! The WinRM communicator: commands in a remote cmd shell over
//! WS-Management (HTTP or HTTPS, Basic or NTLMv2 authentication, no
//! message sealing), and file
//! transfers through cmd and PowerShell, as Packer's WinRM communicator
//! does them. Each command gets its own shell: Create, Command, Receive
//! until done (a `w:TimedOut` fault means "nothing yet, ask again"),
//! Signal terminate, Delete.

mod connection;
mod ntlm;
mod proxy;
mod soap;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::config::WinRmConfig;

pub use transfer::powershell;

/// How long one HTTP request may take: the server holds a Receive up to
/// the OperationTimeout (60 s), plus room for the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Where Go (and so Packer) looks for the system's trusted certificates
/// on Linux, in its order.
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// WinRM failures, each saying what was being done.
#[derive(Debug, thiserror::Error)]
pub enum WinRmError {
    /// The HTTP client could not be set up.
    #[error("winrm: setting up the HTTP client: {0}")]
    Client(String),
    /// The request did not reach the server or got no answer.
    #[error("winrm {url}: {operation}: {message}")]
    Http {
        /// The endpoint.
        url: String,
        /// The WS-Management operation.
        operation: &'static str,
        /// What failed.
        message: String,
    },
    /// The server refused the credentials.
    #[error("winrm {url}: the guest refused user `{user}` (HTTP 401): check winrm_username and winrm_password, and that the guest's WinRM service allows {hint}")]
    Unauthorized {
        /// The endpoint.
        url: String,
        /// `winrm_username`.
        user: String,
        /// What the guest must allow for the authentication in use.
        hint: &'static str,
    },
    /// The server answered with an HTTP error and no SOAP fault.
    #[error("winrm {url}: {operation}: HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The WS-Management operation.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// The server answered with a SOAP fault.
    #[error("winrm: {operation}: {subcode}{}: {reason}", code.map(|c| format!(" (WSManFault {c})")).unwrap_or_default())]
    Fault {
        /// The WS-Management operation.
        operation: &'static str,
        /// The fault's subcode.
        subcode: String,
        /// The WSManFault code.
        code: Option<u64>,
        /// The reason given.
        reason: String,
    },
    /// An answer we cannot read.
    #[error("winrm: {operation}: unexpected answer: {message}")]
    Protocol {
        /// The WS-Management operation.
        operation: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A command on the guest that moves files failed.
    #[error("{what} failed on the guest with exit code {code}: {stderr}")]
    Guest {
        /// What was being done.
        what: String,
        /// Its exit code.
        code: u32,
        /// Its stderr, trimmed.
        stderr: String,
    },
    /// A local file error.
    #[error("{path}: {source}")]
    Local {
        /// The local path.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Something WinRM cannot do here.
    #[error("winrm: {0}")]
    Unsupported(&'static str),
    /// Writing output or reading input failed.
    #[error("winrm stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a POST got no answer: what [`WinRmError::Http`] says.
#[derive(Debug, thiserror::Error)]
enum PostError {
    /// Basic authentication's client failed.
    #[error("{}", error_chain(.0))]
    Basic(reqwest::Error),
    /// An NTLM connection failed.
    #[error(transparent)]
    Ntlm(connection::NtlmHttpError),
    /// An NTLM request outlived [`REQUEST_TIMEOUT`].
    #[error("no answer in {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

/// How requests are authenticated.
#[derive(Clone)]
enum Transport {
    /// Basic, on every request, through reqwest's pool.
    Basic(reqwest::Client),
    /// NTLMv2 on connections of our own (`winrm_use_ntlm`).
    Ntlm(Arc<connection::NtlmHttp>),
}

const BASIC_HINT: &str =
    "Basic authentication (winrm set winrm/config/service/auth @{Basic=\"true\"})";
const NTLM_HINT: &str = "Negotiate authentication (winrm set winrm/config/service/auth @{Negotiate=\"true\"}) and, over HTTP, unencrypted messages (winrm set winrm/config/service @{AllowUnencrypted=\"true\"})";

/// A WinRM endpoint with credentials; each command opens its own shell.
pub struct WinRm {
    transport: Transport,
    url: String,
    user: String,
    password: String,
    /// HTTPS with the certificate checked: say how to skip the check.
    cert_hint: bool,
}

impl WinRm {
    /// The endpoint of `host` as `cfg` describes it (no request is made).
    pub fn new(host: &str, cfg: &WinRmConfig) -> Result<WinRm, WinRmError> {
        let scheme = if cfg.use_ssl { "https" } else { "http" };
        let host_part = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let url = format!("{scheme}://{host_part}:{}/wsman", cfg.port);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let proxy = Self::proxy(bare, cfg)?;
        let transport = if cfg.use_ntlm {
            Transport::Ntlm(Arc::new(connection::NtlmHttp::new(
                bare,
                format!("{host_part}:{}", cfg.port),
                cfg.port,
                cfg.use_ssl.then_some(cfg.insecure),
                ntlm::Credentials::new(&cfg.username, &cfg.password),
                proxy,
                cfg.insecure,
            )?))
        } else {
            Transport::Basic(Self::basic_client(cfg, proxy)?)
        };
        Ok(WinRm {
            transport,
            url,
            user: cfg.username.clone(),
            password: cfg.password.clone(),
            cert_hint: cfg.use_ssl && !cfg.insecure,
        })
    }

    /// The proxy for `host` (no brackets) as Packer's client picks it
    /// from the environment (see `proxy.rs`): none with `winrm_no_proxy`.
    fn proxy(host: &str, cfg: &WinRmConfig) -> Result<Option<proxy::Proxy>, WinRmError> {
        if cfg.no_proxy {
            return Ok(None);
        }
        let proxy = proxy::ProxyEnv::from_env()
            .proxy_for(cfg.use_ssl, host, cfg.port)
            .map_err(WinRmError::Client)?;
        if let Some(p) = &proxy {
            if p.scheme == "socks5" {
                return Err(WinRmError::Client(format!(
                    "proxy {p}: SOCKS5 proxies are not supported for WinRM; list the guest in NO_PROXY or set winrm_no_proxy = true"
                )));
            }
        }
        Ok(proxy)
    }

    /// reqwest as Basic authentication uses it, through `proxy` or
    /// directly (never by reqwest's own reading of the environment, whose
    /// rules differ from Go's: it proxies loopback addresses, and takes
    /// `ALL_PROXY`).
    fn basic_client(
        cfg: &WinRmConfig,
        proxy: Option<proxy::Proxy>,
    ) -> Result<reqwest::Client, WinRmError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(2)
            .no_proxy();
        if let Some(p) = proxy {
            let p = reqwest::Proxy::all(&p.url)
                .map_err(|e| WinRmError::Client(format!("proxy {p}: {e}")))?;
            b = b.proxy(p);
        }
        if cfg.use_ssl {
            if cfg.insecure {
                b = b.danger_accept_invalid_certs(true);
            } else {
                b = b.tls_built_in_root_certs(false);
                let (path, pem) = system_bundle()?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    WinRmError::Client(format!(
                        "reading trusted certificates {}: {e}",
                        path.display()
                    ))
                })? {
                    b = b.add_root_certificate(cert);
                }
            }
        }
        b.build().map_err(|e| WinRmError::Client(e.to_string()))
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one message and returns the answer's body. A SOAP fault is
    /// an error; `w:TimedOut` among them is [`WinRmError::Fault`] with
    /// [`soap::TIMED_OUT_CODE`].
    async fn send(&self, msg: soap::Message<'_>) -> Result<String, WinRmError> {
        let operation = msg.name();
        let http_err = |e: PostError| {
            let mut message = e.to_string();
            if self.cert_hint && message.contains("certificate") {
                message.push_str(
                    " (a guest with a self-signed certificate needs winrm_insecure = true)",
                );
            }
            WinRmError::Http {
                url: self.url.clone(),
                operation,
                message,
            }
        };
        let envelope = msg.envelope(&self.url);
        let (status, body) = match &self.transport {
            Transport::Basic(http) => self
                .post_basic(http, envelope)
                .await
                .map_err(PostError::Basic),
            Transport::Ntlm(ntlm) => {
                match tokio::time::timeout(REQUEST_TIMEOUT, ntlm.post(envelope)).await {
                    Ok(r) => r.map_err(PostError::Ntlm),
                    Err(_) => Err(PostError::Timeout),
                }
            }
        }
        .map_err(http_err)?;
        if status == 401 {
            return Err(WinRmError::Unauthorized {
                url: self.url.clone(),
                user: self.user.clone(),
                hint: match self.transport {
                    Transport::Basic(_) => BASIC_HINT,
                    Transport::Ntlm(_) => NTLM_HINT,
                },
            });
        }
        if (200..300).contains(&status) {
            return Ok(body);
        }
        match soap::fault(&body) {
            Some(f) => Err(WinRmError::Fault {
                operation,
                subcode: f.subcode,
                code: f.code,
                reason: f.reason,
            }),
            None => Err(WinRmError::Status {
                url: self.url.clone(),
                operation,
                status,
                body: body.chars().take(300).collect(),
            }),
        }
    }

    /// One POST with Basic credentials: the status and the body.
    async fn post_basic(
        &self,
        http: &reqwest::Client,
        envelope: String,
    ) -> Result<(u16, String), reqwest::Error> {
        let resp = http
            .post(&self.url)
            .basic_auth(&self.user, Some(&self.password))
            .header("Content-Type", "application/soap+xml;charset=UTF-8")
            .body(envelope)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        Ok((status, body))
    }

    fn protocol(operation: &'static str) -> impl FnOnce(soap::AnswerError) -> WinRmError {
        move |e| WinRmError::Protocol {
            operation,
            message: e.to_string(),
        }
    }

    /// Opens a cmd shell.
    pub async fn open_shell(&self) -> Result<Shell<'_>, WinRmError> {
        let body = self.send(soap::Message::Create).await?;
        let id = soap::shell_id(&body).map_err(Self::protocol("Create"))?;
        Ok(Shell {
            winrm: self,
            id,
            open: true,
        })
    }

    /// Runs `line` in a shell of its own, copying its output as it comes;
    /// returns the exit code.
    pub async fn exec<O, E>(&self, line: &str, stdout: O, stderr: E) -> Result<u32, WinRmError>
    where
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let mut shell = self.open_shell().await?;
        let r = shell.exec(line, stdout, stderr).await;
        shell.close().await;
        r
    }

    /// Runs `line` and collects its output: (exit code, stdout, stderr).
    pub async fn run(&self, line: &str) -> Result<(u32, Vec<u8>, Vec<u8>), WinRmError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = self.exec(line, &mut out, &mut err).await?;
        Ok((code, out, err))
    }
}

/// An open cmd shell. Closing it is async: call [`Shell::close`]; a shell
/// dropped open (its future cancelled) is deleted in the background.
pub struct Shell<'a> {
    winrm: &'a WinRm,
    id: String,
    open: bool,
}

impl Shell<'_> {
    /// Runs `line` in this shell, copying its output; returns the exit
    /// code. A command whose future is dropped is signalled to end.
    pub async fn exec<O, E>(
        &mut self,
        line: &str,
        mut stdout: O,
        mut stderr: E,
    ) -> Result<u32, WinRmError>
    where
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let body = self
            .winrm
            .send(soap::Message::Command {
                shell: &self.id,
                line,
            })
            .await?;
        let command = soap::command_id(&body).map_err(WinRm::protocol("Command"))?;
        // Until the command is done, a dropped future leaves the clean-up
        // (terminate, then delete the shell) to the guard, in that order.
        self.open = false;
        let mut guard = Running {
            winrm: self.winrm,
            shell: self.id.clone(),
            command: command.clone(),
            done: false,
        };
        let code = loop {
            let received = match self
                .winrm
                .send(soap::Message::Receive {
                    shell: &self.id,
                    command: &command,
                })
                .await
            {
                Ok(body) => soap::received(&body).map_err(WinRm::protocol("Receive"))?,
                Err(WinRmError::Fault { code, subcode, .. })
                    if soap::is_timed_out(code, &subcode) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            stdout.write_all(&received.stdout).await?;
            stderr.write_all(&received.stderr).await?;
            if let Some(code) = received.exit_code {
                break code;
            }
        };
        let _ = stdout.flush().await;
        let _ = stderr.flush().await;
        guard.done = true;
        self.open = true;
        // As Packer's client does: the command is signalled when done.
        let _ = self
            .winrm
            .send(soap::Message::Terminate {
                shell: &self.id,
                command: &command,
            })
            .await;
        Ok(code)
    }

    /// Deletes the shell.
    pub async fn close(&mut self) {
        if self.open {
            self.open = false;
            let _ = self
                .winrm
                .send(soap::Message::Delete { shell: &self.id })
                .await;
        }
    }
}

impl Drop for Shell<'_> {
    fn drop(&mut self) {
        if self.open {
            let (winrm, shell) = (self.winrm.detached(), self.id.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = winrm.send(soap::Message::Delete { shell: &shell }).await;
                });
            }
        }
    }
}

/// A started command; if its future is dropped before it is done, the
/// command is terminated and its shell deleted in the background.
struct Running<'a> {
    winrm: &'a WinRm,
    shell: String,
    command: String,
    done: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.done {
            let winrm = self.winrm.detached();
            let (shell, command) = (self.shell.clone(), self.command.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = winrm
                        .send(soap::Message::Terminate {
                            shell: &shell,
                            command: &command,
                        })
                        .await;
                    let _ = winrm.send(soap::Message::Delete { shell: &shell }).await;
                });
            }
        }
    }
}

impl WinRm {
    /// A copy that background clean-ups can own.
    fn detached(&self) -> WinRm {
        WinRm {
            transport: self.transport.clone(),
            url: self.url.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            cert_hint: self.cert_hint,
        }
    }
}

/// An error with its causes: the chain holds the useful part (refused,
/// certificate).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        message = format!("{message}: {s}");
        src = s.source();
    }
    message
}

/// The system's trusted certificates (PEM), from the first bundle found.
fn system_bundle() -> Result<(std::path::PathBuf, Vec<u8>), WinRmError> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let paths = from_env
        .into_iter()
        .chain(SYSTEM_ROOTS.iter().map(std::path::PathBuf::from));
    for p in paths {
        if let Ok(pem) = std::fs::read(&p) {
            return Ok((p, pem));
        }
    }
    Err(WinRmError::Client(
        "no system certificate bundle found (e.g. /etc/ssl/certs/ca-certificates.crt): install ca-certificates, or set winrm_insecure = true".into(),
    ))
}

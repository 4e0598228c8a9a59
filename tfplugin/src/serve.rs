//! Serving as a go-plugin plugin: check that Terraform started us, listen
//! on a Unix socket in a private directory, print the handshake line, and
//! serve gRPC over mutual TLS until Terraform asks us to shut down.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::proto::{self, plugin};
use crate::resource::Provider;
use crate::service::ProviderService;
use crate::tls::{self, Identity};

/// Terraform's go-plugin handshake: the variable and its value.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
/// See [`MAGIC_COOKIE_KEY`].
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// The plugin protocol we speak.
pub const PROTOCOL_VERSION: u32 = 6;

/// Why serving could not start.
#[derive(Debug)]
pub struct ServeError(String);

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServeError {}

fn err(msg: impl Into<String>) -> ServeError {
    ServeError(msg.into())
}

/// What the environment Terraform started us in says.
struct Launch {
    client_cert: Option<rustls::pki_types::CertificateDer<'static>>,
    socket_parent: PathBuf,
}

fn launch() -> Result<Launch, ServeError> {
    if std::env::var(MAGIC_COOKIE_KEY).as_deref() != Ok(MAGIC_COOKIE_VALUE) {
        return Err(err(
            "this binary is a Terraform plugin: it is not meant to be run directly. \
             Put it where Terraform finds providers and run terraform, which starts it",
        ));
    }
    if let Ok(list) = std::env::var("PLUGIN_PROTOCOL_VERSIONS") {
        let ours = PROTOCOL_VERSION.to_string();
        if !list.split(',').any(|v| v.trim() == ours) {
            return Err(err(format!(
                "Terraform offers plugin protocol versions {list}; this provider speaks only \
                 {ours} (Terraform 1.0 or later, OpenTofu)"
            )));
        }
    }
    let client_cert = match std::env::var("PLUGIN_CLIENT_CERT") {
        Ok(pem) if !pem.trim().is_empty() => {
            Some(tls::cert_from_pem(&pem).map_err(|e| err(format!("PLUGIN_CLIENT_CERT: {e}")))?)
        }
        _ => None,
    };
    let socket_parent = std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    Ok(Launch {
        client_cert,
        socket_parent,
    })
}

/// A directory only we can enter, removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create(parent: &Path) -> Result<Self, ServeError> {
        for attempt in 0..16u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let dir = parent.join(format!("plugin{}-{nanos:x}{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    // The mode above is filtered by the umask; set it exactly.
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                        .map_err(|e| err(format!("{}: {e}", dir.display())))?;
                    return Ok(Self(dir));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(err(format!(
                        "cannot make the plugin socket directory in {} ({e}); set \
                         PLUGIN_UNIX_SOCKET_DIR or TMPDIR to a writable directory",
                        parent.display()
                    )))
                }
            }
        }
        Err(err(format!(
            "cannot make a fresh directory in {}",
            parent.display()
        )))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves `provider` to Terraform, which calls its types `<name>_<type>`,
/// until Terraform shuts it down.
pub async fn serve<P: Provider>(name: &str, provider: P) -> Result<(), ServeError> {
    let launch = launch()?;
    let service = ProviderService::new(name, provider);
    let dir = PrivateDir::create(&launch.socket_parent)?;
    let socket = dir.0.join("plugin.sock");
    let listener = UnixListener::bind(&socket)
        .map_err(|e| err(format!("cannot listen on {}: {e}", socket.display())))?;

    let (tls, cert_field) = match launch.client_cert {
        Some(client) => {
            let me = Identity::generate()
                .map_err(|e| err(format!("making the TLS certificate: {e}")))?;
            let config =
                tls::server_config(&me, client).map_err(|e| err(format!("TLS set-up: {e}")))?;
            use base64::Engine;
            let field = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&me.cert);
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                field,
            )
        }
        // Without AutoMTLS (a client that does not offer it), the private
        // directory alone keeps other users out, as in go-plugin.
        None => (None, String::new()),
    };

    let stdio = Stdio::capture();
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "1|{PROTOCOL_VERSION}|unix|{}|grpc|{cert_field}",
            socket.display()
        )
        .and_then(|()| out.flush())
        .map_err(|e| err(format!("writing the handshake: {e}")))?;
    }
    let stdio = stdio.redirect();

    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let controller = Controller(Mutex::new(Some(shutdown_tx)));
    let (conn_tx, conn_rx) = mpsc::channel::<std::io::Result<Conn>>(16);
    let accept = tokio::spawn(accept_loop(listener, tls, conn_tx));

    let result = tonic::transport::Server::builder()
        .add_service(
            proto::tfplugin6::provider_server::ProviderServer::new(service)
                .max_decoding_message_size(256 << 20),
        )
        .add_service(plugin::g_r_p_c_stdio_server::GRPCStdioServer::new(stdio))
        .add_service(plugin::g_r_p_c_controller_server::GRPCControllerServer::new(controller))
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async {
            let _ = shutdown_rx.await;
        })
        .await;
    accept.abort();
    drop(dir);
    result.map_err(|e| err(format!("gRPC server: {e}")))
}

async fn accept_loop(
    listener: UnixListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    out: mpsc::Sender<std::io::Result<Conn>>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("plugin: accepting a connection failed: {e}");
                continue;
            }
        };
        let Some(acceptor) = tls.clone() else {
            if out.send(Ok(Conn::Plain(stream))).await.is_err() {
                return;
            }
            continue;
        };
        let out = out.clone();
        tokio::spawn(async move {
            match acceptor.accept(stream).await {
                Ok(s) => {
                    let _ = out.send(Ok(Conn::Tls(Box::new(s)))).await;
                }
                // Only the client that started us holds the certificate.
                Err(e) => eprintln!("plugin: refused a connection in the TLS handshake: {e}"),
            }
        });
    }
}

/// An accepted connection.
enum Conn {
    Plain(UnixStream),
    Tls(Box<tokio_rustls::server::TlsStream<UnixStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `plugin.GRPCController`: Shutdown ends the server, then the process.
struct Controller(Mutex<Option<oneshot::Sender<()>>>);

#[tonic::async_trait]
impl plugin::g_r_p_c_controller_server::GRPCController for Controller {
    async fn shutdown(&self, _: Request<proto::Empty>) -> Result<Response<proto::Empty>, Status> {
        if let Some(tx) = self.0.lock().await.take() {
            let _ = tx.send(());
        }
        Ok(Response::new(proto::Empty {}))
    }
}

/// `plugin.GRPCStdio`: what the provider writes to stdout after the
/// handshake goes to Terraform over this stream (stdout itself is
/// Terraform's handshake channel). stderr stays a pipe Terraform logs.
struct Stdio {
    rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<u8>>>>,
}

/// Before the handshake: a pipe to put under fd 1 once the line is out.
struct StdioCapture {
    pipe: Option<(libc::c_int, libc::c_int)>,
}

impl Stdio {
    fn capture() -> StdioCapture {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe() writes two descriptors into the array on success.
        let ok = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0;
        StdioCapture {
            pipe: ok.then_some((fds[0], fds[1])),
        }
    }
}

impl StdioCapture {
    fn redirect(self) -> Stdio {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some((r, w)) = self.pipe {
            // SAFETY: both descriptors are ours; dup2 replaces fd 1 with the
            // pipe's write end, then our copy of that end is closed.
            unsafe {
                libc::dup2(w, 1);
                libc::close(w);
            }
            std::thread::spawn(move || {
                use std::io::Read;
                use std::os::fd::FromRawFd;
                // SAFETY: `r` is the pipe's read end, owned by this thread now.
                let mut f = unsafe { std::fs::File::from_raw_fd(r) };
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
        }
        Stdio {
            rx: Mutex::new(Some(rx)),
        }
    }
}

#[tonic::async_trait]
impl plugin::g_r_p_c_stdio_server::GRPCStdio for Stdio {
    type StreamStdioStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::StdioData, Status>> + Send>>;

    async fn stream_stdio(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        let Some(mut rx) = self.rx.lock().await.take() else {
            return Err(Status::failed_precondition(
                "stdio is already being streamed",
            ));
        };
        let s = async_stream(
            move |tx: mpsc::Sender<Result<proto::StdioData, Status>>| async move {
                while let Some(data) = rx.recv().await {
                    let msg = proto::StdioData { channel: 1, data };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                }
            },
        );
        Ok(Response::new(s))
    }
}

/// A stream fed by a task.
fn async_stream<T, F, Fut>(f: F) -> Pin<Box<dyn tokio_stream::Stream<Item = T> + Send>>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(ReceiverStream::new(rx))
}

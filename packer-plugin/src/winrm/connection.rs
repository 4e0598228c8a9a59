//! HTTP(S) for NTLM. The handshake authenticates one connection, so its
//! legs must travel on the same one: requests go over connections held
//! here, not through a pool that may hand out another between legs. As
//! Packer's client (go-ntlmssp) does, a request on a connection that was
//! authenticated before goes as it is first, and only a 401 starts the
//! handshake again: NEGOTIATE, the server's CHALLENGE in a 401, then
//! AUTHENTICATE, each leg with the request's body.
//!
//! Through a proxy (see `proxy.rs`), as Go's transport goes: to an HTTPS
//! endpoint in a tunnel the proxy opens on CONNECT, one tunnel per held
//! connection, TLS to the endpoint inside; to an HTTP endpoint by
//! requests in absolute form on connections held to the proxy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::{CertificateDer, ServerName};

use super::ntlm::{self, Challenge, ChallengeError, Credentials};
use super::proxy::Proxy;
use super::WinRmError;

/// A byte stream: TCP, TLS, a tunnel, TLS in a tunnel.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Stream for T {}
type BoxStream = Box<dyn Stream>;

/// The longest CONNECT answer head we read.
const CONNECT_HEAD_LIMIT: usize = 64 * 1024;

/// How long opening a connection (TCP, then TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Where and how to reach the endpoint, with the account to prove.
pub(super) struct NtlmHttp {
    host: String,
    port: u16,
    /// `host:port` for the Host header.
    authority: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    creds: Credentials,
    /// The proxy to go through, with TLS to it for an `https` one.
    via: Option<Via>,
    /// Authenticated connections not in use.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// A proxy on the way.
struct Via {
    proxy: Proxy,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

/// Why a request got no answer, or no connection was there to send it on.
#[derive(Debug, thiserror::Error)]
pub(super) enum NtlmHttpError {
    /// The TCP connection was not made within [`CONNECT_TIMEOUT`].
    #[error("connecting: no answer in {}s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    /// The TCP connection failed.
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake did not end within [`CONNECT_TIMEOUT`].
    #[error("TLS handshake: no answer")]
    TlsTimeout,
    /// The TLS handshake failed.
    #[error("TLS handshake: {}", super::error_chain(.0))]
    Tls(std::io::Error),
    /// HTTP on the connection failed.
    #[error("{}", super::error_chain(.0))]
    Http(hyper::Error),
    /// The request could not be made.
    #[error("{0}")]
    Request(hyper::http::Error),
    /// The server's challenge cannot be answered.
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    /// The proxy could not be reached, or its TLS handshake failed.
    #[error("connecting to proxy {proxy}: {message}")]
    ProxyConnect {
        /// The proxy, without credentials.
        proxy: String,
        /// What failed.
        message: String,
    },
    /// The proxy answered CONNECT with other than 200.
    #[error("proxy {proxy} refused CONNECT to {target}: HTTP {status}")]
    ProxyRefused {
        /// The proxy, without credentials.
        proxy: String,
        /// `host:port` asked for.
        target: String,
        /// Its status line's code and reason.
        status: String,
    },
    /// An HTTP proxy closed the connection between the NTLM challenge and
    /// its answer: it does not keep a client's connection to the guest.
    #[error("proxy {proxy} closed the connection in the NTLM handshake ({message}): NTLM over HTTP needs a proxy that keeps each connection to the guest; use HTTPS (a CONNECT tunnel), or NO_PROXY / winrm_no_proxy = true")]
    ProxyClosed {
        /// The proxy, without credentials.
        proxy: String,
        /// What failed.
        message: String,
    },
    /// The CONNECT exchange failed.
    #[error("proxy {proxy}: CONNECT to {target}: {message}")]
    ProxyTunnel {
        /// The proxy, without credentials.
        proxy: String,
        /// `host:port` asked for.
        target: String,
        /// What failed.
        message: String,
    },
}

/// Why a request got no answer.
enum Failure {
    /// It was never sent: the connection was closed before.
    Unsent(hyper::Error),
    /// It was sent, or may have been.
    Failed(NtlmHttpError),
}

impl From<Failure> for NtlmHttpError {
    fn from(f: Failure) -> NtlmHttpError {
        match f {
            Failure::Unsent(e) => NtlmHttpError::Http(e),
            Failure::Failed(e) => e,
        }
    }
}

/// A response: its status, `WWW-Authenticate` values and body.
struct Response {
    status: u16,
    offers: Vec<String>,
    body: String,
}

impl NtlmHttp {
    /// The endpoint at `host:port`; `tls` is `Some(insecure)` for HTTPS;
    /// through `proxy` if any (TLS to an `https` proxy is checked unless
    /// `insecure`, as Go's transport does with `winrm_insecure`).
    pub fn new(
        host: &str,
        authority: String,
        port: u16,
        tls: Option<bool>,
        creds: Credentials,
        proxy: Option<Proxy>,
        insecure: bool,
    ) -> Result<NtlmHttp, WinRmError> {
        let tls = match tls {
            None => None,
            Some(insecure) => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| WinRmError::Client(format!("{host}: {e}")))?;
                let config = tls_config(insecure)?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
        };
        let via = match proxy {
            None => None,
            Some(proxy) => {
                let tls = if proxy.scheme == "https" {
                    let name = ServerName::try_from(proxy.host.clone())
                        .map_err(|e| WinRmError::Client(format!("proxy {proxy}: {e}")))?;
                    let config = tls_config(insecure)?;
                    Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
                } else {
                    None
                };
                Some(Via { proxy, tls })
            }
        };
        Ok(NtlmHttp {
            host: host.to_string(),
            port,
            authority,
            tls,
            creds,
            via,
            idle: Mutex::default(),
        })
    }

    /// POSTs `body` to `/wsman` authenticated; the status and the answer,
    /// or what failed on the way.
    pub async fn post(&self, body: String) -> Result<(u16, String), NtlmHttpError> {
        let body = Bytes::from(body);
        if let Some(mut send) = self.take_idle() {
            match self.round_trip(&mut send, &body, None).await {
                Ok(r) if r.status != 401 => {
                    self.put_back(send);
                    return Ok((r.status, r.body));
                }
                Ok(_) => return self.handshake(send, &body).await,
                // The server closed it while idle: the request never left,
                // so it goes on a new connection.
                Err(Failure::Unsent(_)) => {}
                Err(Failure::Failed(e)) => return Err(e),
            }
        }
        let send = self.connect().await?;
        self.handshake(send, &body).await
    }

    /// The three legs on `send`'s connection.
    async fn handshake(
        &self,
        mut send: SendRequest<Full<Bytes>>,
        body: &Bytes,
    ) -> Result<(u16, String), NtlmHttpError> {
        let b64 = |m: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(m);
        let offer = format!("Negotiate {}", b64(ntlm::negotiate()));
        let r = self.round_trip(&mut send, body, Some(offer)).await?;
        if r.status != 401 {
            return Ok((r.status, r.body));
        }
        let Some((scheme, token)) = r.offers.iter().find_map(|o| {
            let (scheme, data) = o.trim().split_once(' ')?;
            let token = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .ok()?;
            Some((scheme.to_string(), token))
        }) else {
            // No challenge: the server does not take NTLM from us.
            return Ok((r.status, r.body));
        };
        let challenge = Challenge::parse(&token)?;
        let client_challenge: [u8; 8] = uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .expect("8 bytes");
        let answer = ntlm::authenticate(
            &self.creds,
            &challenge,
            client_challenge,
            ntlm::filetime_now(),
        );
        let r = match self
            .round_trip(&mut send, body, Some(format!("{scheme} {}", b64(answer))))
            .await
        {
            // A proxy forwarding HTTP closed the connection the challenge
            // came on (Go's client fails there too): seen before the
            // answer left, or while it was on its way.
            Err(Failure::Unsent(e) | Failure::Failed(NtlmHttpError::Http(e)))
                if self.tls.is_none() && self.via.is_some() =>
            {
                return Err(NtlmHttpError::ProxyClosed {
                    proxy: self
                        .via
                        .as_ref()
                        .map(|v| v.proxy.to_string())
                        .unwrap_or_default(),
                    message: super::error_chain(&e),
                })
            }
            r => r?,
        };
        if r.status != 401 {
            self.put_back(send);
        }
        Ok((r.status, r.body))
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(send) = idle.pop() {
            if !send.is_closed() {
                return Some(send);
            }
        }
        None
    }

    fn put_back(&self, send: SendRequest<Full<Bytes>>) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(send);
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, NtlmHttpError> {
        let io: BoxStream = match &self.via {
            None => Box::new(tcp(&self.host, self.port).await?),
            Some(via) => self.through(via).await?,
        };
        match &self.tls {
            None => open(io).await,
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), io))
                        .await
                        .map_err(|_| NtlmHttpError::TlsTimeout)?
                        .map_err(NtlmHttpError::Tls)?;
                open(tls).await
            }
        }
    }

    /// A connection to the proxy; for an HTTPS endpoint, a tunnel through
    /// it to the endpoint.
    async fn through(&self, via: &Via) -> Result<BoxStream, NtlmHttpError> {
        let proxy = via.proxy.to_string();
        let failed = |message: String| NtlmHttpError::ProxyConnect {
            proxy: proxy.clone(),
            message,
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((via.proxy.host.as_str(), via.proxy.port)),
        )
        .await
        .map_err(|_| failed(format!("no answer in {}s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut io: BoxStream = match &via.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| failed("TLS handshake: no answer".into()))?
                    .map_err(|e| failed(format!("TLS handshake: {}", super::error_chain(&e))))?,
            ),
        };
        if self.tls.is_some() {
            let target = self.authority.clone();
            let tunnel_failed = |message: String| NtlmHttpError::ProxyTunnel {
                proxy: proxy.clone(),
                target: target.clone(),
                message,
            };
            let status = tokio::time::timeout(
                CONNECT_TIMEOUT,
                connect_tunnel(&mut io, &target, via.proxy.authorization.as_deref()),
            )
            .await
            .map_err(|_| tunnel_failed(format!("no answer in {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| tunnel_failed(e.to_string()))?;
            if status.0 != 200 {
                return Err(NtlmHttpError::ProxyRefused {
                    proxy,
                    target,
                    status: status.1,
                });
            }
        }
        Ok(io)
    }

    async fn round_trip(
        &self,
        send: &mut SendRequest<Full<Bytes>>,
        body: &Bytes,
        authorization: Option<String>,
    ) -> Result<Response, Failure> {
        // To an HTTP endpoint through a proxy: the absolute form, and the
        // proxy's credentials on every request.
        let plain_proxy = self.via.as_ref().filter(|_| self.tls.is_none());
        let uri = match plain_proxy {
            Some(_) => format!("http://{}/wsman", self.authority),
            None => "/wsman".to_string(),
        };
        let mut req = hyper::Request::post(uri).header(hyper::header::HOST, &self.authority);
        if let Some(auth) = plain_proxy.and_then(|v| v.proxy.authorization.as_deref()) {
            req = req.header(hyper::header::PROXY_AUTHORIZATION, auth);
        }
        req = req.header(
            hyper::header::CONTENT_TYPE,
            "application/soap+xml;charset=UTF-8",
        );
        if let Some(a) = authorization {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(body.clone()))
            .map_err(|e| Failure::Failed(NtlmHttpError::Request(e)))?;
        send.ready().await.map_err(Failure::Unsent)?;
        let resp = send.send_request(req).await.map_err(|e| {
            if e.is_canceled() {
                Failure::Unsent(e)
            } else {
                Failure::Failed(NtlmHttpError::Http(e))
            }
        })?;
        let status = resp.status().as_u16();
        let offers = resp
            .headers()
            .get_all(hyper::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Failed(NtlmHttpError::Http(e)))?
            .to_bytes();
        Ok(Response {
            status,
            offers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A TCP connection to `host:port` within [`CONNECT_TIMEOUT`].
async fn tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, NtlmHttpError> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| NtlmHttpError::ConnectTimeout)?
    .map_err(NtlmHttpError::Connect)?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Asks the proxy on `io` for a tunnel to `target` (`host:port`) as Go's
/// transport does; the answer's status code and its `code reason`. Reads
/// the answer's head byte by byte, so nothing of the tunnel is taken.
async fn connect_tunnel<I>(
    io: &mut I,
    target: &str,
    authorization: Option<&str>,
) -> std::io::Result<(u16, String)>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(a) = authorization {
        req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await?;
    io.flush().await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= CONNECT_HEAD_LIMIT {
            return Err(std::io::Error::other("answer head too long"));
        }
        let mut b = [0u8; 1];
        if io.read(&mut b).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the proxy closed the connection",
            ));
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.splitn(2, ' ');
    let version = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default().trim();
    let code = rest
        .split(' ')
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/"))
        .ok_or_else(|| std::io::Error::other(format!("malformed answer {line:?}")))?;
    Ok((code, rest.to_string()))
}

/// HTTP/1.1 over `io`, its connection driven in the background.
async fn open<I>(io: I) -> Result<SendRequest<Full<Bytes>>, NtlmHttpError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(NtlmHttpError::Http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// TLS as the Basic path has it: the system's roots, or no check at all
/// with `winrm_insecure`.
fn tls_config(insecure: bool) -> Result<rustls::ClientConfig, WinRmError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| WinRmError::Client(e.to_string()))?;
    if insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth());
    }
    use rustls::pki_types::pem::PemObject;
    let (path, pem) = super::system_bundle()?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            WinRmError::Client(format!(
                "reading trusted certificates {}: {e}",
                path.display()
            ))
        })?;
        // A bundle may hold certificates rustls cannot use; the rest serve.
        let _ = roots.add(cert);
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `winrm_insecure`: any certificate and name are taken; the handshake's
/// signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-connection proxy stand-in on loopback: hands the head of the
    /// first request to `heads` and answers `answer`; then, if the answer
    /// opened a tunnel, echoes what comes.
    async fn fake_proxy(answer: &'static str) -> (u16, tokio::sync::oneshot::Receiver<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).await.unwrap() == 0 {
                    return;
                }
                head.push(b[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            s.write_all(answer.as_bytes()).await.unwrap();
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        (port, rx)
    }

    fn proxy(port: u16, authorization: Option<&str>) -> Proxy {
        Proxy {
            scheme: "http".into(),
            host: "127.0.0.1".into(),
            port,
            authorization: authorization.map(str::to_string),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    #[tokio::test]
    async fn a_tunnel_is_asked_for_as_go_asks_and_carries_bytes_after() {
        let (port, head) =
            fake_proxy("HTTP/1.1 200 Connection established\r\nProxy-agent: x\r\n\r\n").await;
        let mut io = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let status = connect_tunnel(&mut io, "10.77.0.2:5986", Some("Basic dTpw"))
            .await
            .unwrap();
        assert_eq!(status, (200, "200 Connection established".to_string()));
        assert_eq!(
            head.await.unwrap(),
            "CONNECT 10.77.0.2:5986 HTTP/1.1\r\nHost: 10.77.0.2:5986\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
        io.write_all(b"through").await.unwrap();
        let mut back = [0u8; 7];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"through");
    }

    #[tokio::test]
    async fn a_refused_connect_names_the_proxy_and_the_target() {
        let (port, _head) =
            fake_proxy("HTTP/1.0 403 Access violation\r\nContent-Length: 0\r\n\r\n").await;
        let c = NtlmHttp::new(
            "10.77.0.2",
            "10.77.0.2:5986".into(),
            5986,
            Some(true),
            Credentials::new("vagrant", "vagrant"),
            Some(proxy(port, None)),
            true,
        )
        .unwrap();
        let e = c.post("x".into()).await.unwrap_err().to_string();
        assert_eq!(
            e,
            format!("proxy http://127.0.0.1:{port} refused CONNECT to 10.77.0.2:5986: HTTP 403 Access violation")
        );
    }

    #[tokio::test]
    async fn an_unreachable_proxy_is_named() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = NtlmHttp::new(
            "10.77.0.2",
            "10.77.0.2:5986".into(),
            5986,
            Some(true),
            Credentials::new("vagrant", "vagrant"),
            Some(proxy(port, None)),
            true,
        )
        .unwrap();
        let e = c.post("x".into()).await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("connecting to proxy http://127.0.0.1:{port}: ")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_http_endpoint_gets_absolute_requests_with_the_proxys_credentials() {
        let (port, head) = fake_proxy(
            "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nContent-Length: 2\r\n\r\nok",
        )
        .await;
        let c = NtlmHttp::new(
            "10.77.0.2",
            "10.77.0.2:5985".into(),
            5985,
            None,
            Credentials::new("vagrant", "vagrant"),
            Some(proxy(port, Some("Basic dTpw"))),
            false,
        )
        .unwrap();
        assert_eq!(c.post("x".into()).await.unwrap(), (200, "ok".to_string()));
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("post http://10.77.0.2:5985/wsman http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nhost: 10.77.0.2:5985\r\n"), "{head}");
        assert!(
            head.contains("\r\nproxy-authorization: basic dtpw\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nauthorization: negotiate "), "{head}");
    }
}

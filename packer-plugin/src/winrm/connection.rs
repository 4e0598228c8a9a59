//! HTTP(S) for NTLM. The handshake authenticates one connection, so its
//! legs must travel on the same one: requests go over connections held
//! here, not through a pool that may hand out another between legs. As
//! Packer's client (go-ntlmssp) does, a request on a connection that was
//! authenticated before goes as it is first, and only a 401 starts the
//! handshake again: NEGOTIATE, the server's CHALLENGE in a 401, then
//! AUTHENTICATE, each leg with the request's body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::{CertificateDer, ServerName};

use super::ntlm::{self, Challenge, ChallengeError, Credentials};
use super::WinRmError;

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
    /// Authenticated connections not in use.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
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
    /// The endpoint at `host:port`; `tls` is `Some(insecure)` for HTTPS.
    pub fn new(
        host: &str,
        authority: String,
        port: u16,
        tls: Option<bool>,
        creds: Credentials,
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
        Ok(NtlmHttp {
            host: host.to_string(),
            port,
            authority,
            tls,
            creds,
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
        let r = self
            .round_trip(&mut send, body, Some(format!("{scheme} {}", b64(answer))))
            .await?;
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
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| NtlmHttpError::ConnectTimeout)?
        .map_err(NtlmHttpError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => open(tcp).await,
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| NtlmHttpError::TlsTimeout)?
                        .map_err(NtlmHttpError::Tls)?;
                open(tls).await
            }
        }
    }

    async fn round_trip(
        &self,
        send: &mut SendRequest<Full<Bytes>>,
        body: &Bytes,
        authorization: Option<String>,
    ) -> Result<Response, Failure> {
        let mut req = hyper::Request::post("/wsman")
            .header(hyper::header::HOST, &self.authority)
            .header(
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

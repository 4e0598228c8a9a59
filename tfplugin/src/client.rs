//! The client side of the handshake, for tests and benchmarks that talk
//! to a provider the way Terraform does.

use std::fmt;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tonic::transport::{Channel, Endpoint};

use crate::proto::tfplugin6::provider_client::ProviderClient;
use crate::tls::{self, Identity};

/// What a plugin's handshake line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Handshake {
    /// Plugin protocol version (6).
    pub protocol: u32,
    /// `unix` or `tcp`.
    pub network: String,
    /// Socket path or host:port.
    pub address: String,
    /// The server certificate, when it serves TLS.
    pub cert: Option<CertificateDer<'static>>,
}

/// Why a handshake line cannot be used or its plugin not reached.
#[derive(Debug)]
pub enum ClientError {
    /// The line is not a go-plugin gRPC handshake line (the line).
    NotHandshake(String),
    /// The certificate field is not base64.
    Certificate(base64::DecodeError),
    /// The protocol field is not a number.
    Protocol(std::num::ParseIntError),
    /// The network is neither `unix` nor `tcp` (the network).
    Network(String),
    /// The TLS client could not be set up.
    Tls(rustls::Error),
    /// The plugin could not be reached.
    Connect {
        /// The plugin's address.
        address: String,
        /// What the connection said.
        source: tonic::transport::Error,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotHandshake(line) => {
                write!(f, "not a go-plugin gRPC handshake line: {line:?}")
            }
            ClientError::Certificate(e) => write!(f, "certificate field: {e}"),
            ClientError::Protocol(e) => write!(f, "protocol field: {e}"),
            ClientError::Network(network) => write!(f, "network {network} is not supported"),
            ClientError::Tls(e) => write!(f, "{e}"),
            ClientError::Connect { address, source } => {
                write!(f, "connecting to {address}: {source}")
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::NotHandshake(_) | ClientError::Network(_) => None,
            ClientError::Certificate(e) => Some(e),
            ClientError::Protocol(e) => Some(e),
            ClientError::Tls(e) => Some(e),
            ClientError::Connect { source, .. } => Some(source),
        }
    }
}

impl Handshake {
    /// Parses `1|6|unix|/path|grpc|<base64 cert>`.
    pub fn parse(line: &str) -> Result<Self, ClientError> {
        use base64::Engine;
        let f: Vec<&str> = line.trim().split('|').collect();
        if f.len() < 5 || f[0] != "1" || f[4] != "grpc" {
            return Err(ClientError::NotHandshake(line.to_string()));
        }
        let cert = match f.get(5).copied().unwrap_or_default() {
            "" => None,
            b64 => Some(CertificateDer::from(
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(b64.trim_end_matches('='))
                    .map_err(ClientError::Certificate)?,
            )),
        };
        Ok(Self {
            protocol: f[1].parse().map_err(ClientError::Protocol)?,
            network: f[2].to_string(),
            address: f[3].to_string(),
            cert,
        })
    }

    /// A gRPC channel to the plugin, presenting `me` (if any) as client
    /// certificate. A refused TLS handshake shows as a failing call.
    pub async fn channel(&self, me: Option<&Identity>) -> Result<Channel, ClientError> {
        if self.network != "unix" && self.network != "tcp" {
            return Err(ClientError::Network(self.network.clone()));
        }
        let unix = self.network == "unix";
        let path = self.address.clone();
        let connector = match &self.cert {
            Some(c) => Some(tokio_rustls::TlsConnector::from(Arc::new(
                tls::client_config(me, c.clone()).map_err(ClientError::Tls)?,
            ))),
            None => None,
        };
        let svc = tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            let connector = connector.clone();
            async move {
                let s: Box<dyn Io> = if unix {
                    Box::new(tokio::net::UnixStream::connect(&path).await?)
                } else {
                    Box::new(tokio::net::TcpStream::connect(&path).await?)
                };
                let io: Box<dyn Io> = match connector {
                    Some(c) => {
                        let name = ServerName::try_from("localhost").expect("a valid name");
                        Box::new(c.connect(name, s).await?)
                    }
                    None => s,
                };
                Ok::<_, std::io::Error>(TokioIo::new(io))
            }
        });
        Endpoint::from_static("http://localhost")
            .connect_with_connector(svc)
            .await
            .map_err(|source| ClientError::Connect {
                address: self.address.clone(),
                source,
            })
    }

    /// A provider client over [`Handshake::channel`].
    pub async fn provider(
        &self,
        me: Option<&Identity>,
    ) -> Result<ProviderClient<Channel>, ClientError> {
        Ok(ProviderClient::new(self.channel(me).await?))
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

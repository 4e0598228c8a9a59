//! The webhook's TLS settings (`tls_cert_file`, `tls_key_file`): both PEM
//! files are read and the pair checked when the config is, so a wrong
//! file stops `check-config` instead of the first delivery. The key file
//! must be its owner's alone, like a token file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Which of the two settings a problem is with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `tls_cert_file`.
    Cert,
    /// `tls_key_file`.
    Key,
}

/// The webhook's TLS, ready to accept connections with.
#[derive(Clone)]
pub struct Tls(pub Arc<rustls::ServerConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// Reads the certificate chain at `cert` and its private key at `key`.
pub fn load(cert: &Path, key: &Path) -> Result<Tls, (Setting, String)> {
    let read = |p: &Path, s: Setting, what: &str| {
        std::fs::read(p).map_err(|e| (s, format!("cannot read {}: {e}; give {what}", p.display())))
    };
    const CHAIN: &str = "a PEM file with the server's certificate first, then the \
                         certificates that lead to the one clients trust";
    const KEY: &str = "a PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1)";
    let pem = read(cert, Setting::Cert, CHAIN)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            (
                Setting::Cert,
                format!("{} is not PEM: {e}; give {CHAIN}", cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err((
            Setting::Cert,
            format!(
                "{} holds no certificate (-----BEGIN CERTIFICATE-----); give {CHAIN}",
                cert.display()
            ),
        ));
    }
    let pem = super::read_private(key, "a private key file", &format!("give {KEY}"))
        .map_err(|e| (Setting::Key, e.to_string()))?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "holds no private key".to_string(),
            e => format!("is not PEM: {e}"),
        };
        (Setting::Key, format!("{} {why}; give {KEY}", key.display()))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| {
            (
                Setting::Key,
                format!(
                    "{} does not go with the certificate in {}: {e}; give the private key \
                     the certificate was made for",
                    key.display(),
                    cert.display()
                ),
            )
        })?;
    Ok(Tls(Arc::new(config)))
}

//! Mutual TLS as go-plugin's AutoMTLS sets it up: each side makes a
//! throwaway self-signed certificate, the client passes its own in
//! `PLUGIN_CLIENT_CERT`, the server prints its own in the handshake line.
//! Each side then accepts exactly the other's certificate: the server
//! refuses, during the TLS handshake, a client without a certificate or
//! with any other one.
//!
//! go-plugin's keys are ECDSA P-521, which the ring provider cannot
//! verify; P-521 signatures are checked here with the RustCrypto `p521`
//! crate, everything else with ring.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    alg_id, AlgorithmIdentifier, CertificateDer, InvalidSignature, PrivateKeyDer,
    PrivatePkcs8KeyDer, ServerName, SignatureVerificationAlgorithm, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// A certificate and its key.
pub struct Identity {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    /// PKCS#8 private key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// A fresh self-signed certificate for `localhost`, usable as TLS
    /// server and client, as go-plugin makes them.
    pub fn generate() -> Result<Self, rcgen::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// The certificate as PEM (what `PLUGIN_CLIENT_CERT` holds).
    pub fn cert_pem(&self) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.cert);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Why a PEM text gives no certificate.
#[derive(Debug)]
pub enum PemError {
    /// Its first PEM section could not be read.
    NotPem(std::io::Error),
    /// It holds no certificate.
    NoCertificate,
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::NotPem(e) => write!(f, "not a PEM certificate: {e}"),
            PemError::NoCertificate => f.write_str("no certificate in it"),
        }
    }
}

impl std::error::Error for PemError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PemError::NotPem(e) => Some(e),
            PemError::NoCertificate => None,
        }
    }
}

/// The first certificate in a PEM text.
pub fn cert_from_pem(pem: &str) -> Result<CertificateDer<'static>, PemError> {
    let mut r = std::io::BufReader::new(pem.as_bytes());
    let first = rustls_pemfile::certs(&mut r).next();
    match first {
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => Err(PemError::NotPem(e)),
        None => Err(PemError::NoCertificate),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ECDSA P-521 with SHA-512, for go-plugin's keys.
#[derive(Debug)]
struct EcdsaP521Sha512;

impl SignatureVerificationAlgorithm for EcdsaP521Sha512 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        use p521::ecdsa::signature::Verifier;
        let key =
            p521::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|_| InvalidSignature)?;
        let sig = p521::ecdsa::Signature::from_der(signature).map_err(|_| InvalidSignature)?;
        key.verify(message, &sig).map_err(|_| InvalidSignature)
    }
    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P521
    }
    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_SHA512
    }
}

static P521: EcdsaP521Sha512 = EcdsaP521Sha512;
static P521_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&P521],
    mapping: &[(SignatureScheme::ECDSA_NISTP521_SHA512, &[&P521])],
};

/// Accepts exactly one certificate, whose key must sign the handshake.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    ring: WebPkiSupportedAlgorithms,
}

impl Pinned {
    fn new(cert: CertificateDer<'static>) -> Self {
        Self {
            cert,
            ring: provider().signature_verification_algorithms,
        }
    }
    fn check(&self, presented: &CertificateDer<'_>) -> Result<(), Error> {
        if presented.as_ref() == self.cert.as_ref() {
            Ok(())
        } else {
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
    fn algorithms(&self, scheme: SignatureScheme) -> &WebPkiSupportedAlgorithms {
        if scheme == SignatureScheme::ECDSA_NISTP521_SHA512 {
            &P521_ALGORITHMS
        } else {
            &self.ring
        }
    }
    fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.check(c)?;
        rustls::crypto::verify_tls12_signature(m, c, d, self.algorithms(d.scheme))
    }
    fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.check(c)?;
        rustls::crypto::verify_tls13_signature(m, c, d, self.algorithms(d.scheme))
    }
    fn schemes(&self) -> Vec<SignatureScheme> {
        let mut s = self.ring.supported_schemes();
        s.push(SignatureScheme::ECDSA_NISTP521_SHA512);
        s
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls12(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls12(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// gRPC over TLS needs HTTP/2 named in ALPN (grpc-go refuses otherwise).
const ALPN_H2: &[u8] = b"h2";

/// The server side: our identity, and only `client` may connect.
pub fn server_config(
    me: &Identity,
    client: CertificateDer<'static>,
) -> Result<rustls::ServerConfig, Error> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(Pinned::new(client)))
        .with_single_cert(vec![me.cert.clone()], me.key_der())?;
    c.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(c)
}

/// The client side: trusts exactly `server`, presents `me` if given.
pub fn client_config(
    me: Option<&Identity>,
    server: CertificateDer<'static>,
) -> Result<rustls::ClientConfig, Error> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned::new(server)));
    let mut c = match me {
        Some(id) => b.with_client_auth_cert(vec![id.cert.clone()], id.key_der())?,
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_certificate_reads_back_as_the_same_der() {
        let id = Identity::generate().unwrap();
        assert_eq!(cert_from_pem(&id.cert_pem()).unwrap(), id.cert);
    }

    #[test]
    fn p521_signatures_from_go_plugin_keys_verify() {
        use p521::ecdsa::signature::Signer;
        let sk = p521::ecdsa::SigningKey::from_slice(&[1u8; 66]).unwrap();
        let sig: p521::ecdsa::Signature = sk.sign(b"handshake");
        let pk = p521::ecdsa::VerifyingKey::from(&sk).to_sec1_point(false);
        let der = sig.to_der();
        assert!(P521
            .verify_signature(pk.as_bytes(), b"handshake", der.as_bytes())
            .is_ok());
        assert!(P521
            .verify_signature(pk.as_bytes(), b"other", der.as_bytes())
            .is_err());
    }
}

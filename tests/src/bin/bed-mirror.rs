//! The test bed's stand-in for download sites: serves a folder over HTTPS
//! on port 443 under any number of host names, with a fresh self-signed
//! certificate for them. Run inside a network namespace whose `/etc/hosts`
//! (`/etc/netns/<name>/hosts`) points those names at 127.0.0.1, it answers
//! for them there, so a template's `iso_checksum = "file:https://..."`
//! (which Packer's QEMU plugin fetches when it validates) reads a file of
//! the bed's instead of the network.
//!
//! Usage: bed-mirror ROOT CERT_PEM HOST...
//!
//! Writes the certificate (to trust: `SSL_CERT_FILE=CERT_PEM` for Go
//! programs) and prints `ready` once it listens. `GET /a/b` answers
//! `ROOT/a/b`, or 404.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::exit;
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, cert_pem, hosts @ ..] = args.as_slice() else {
        eprintln!("bed-mirror: expected ROOT CERT_PEM HOST..., got {args:?}");
        exit(2)
    };
    if hosts.is_empty() {
        eprintln!("bed-mirror: expected ROOT CERT_PEM HOST..., got {args:?}");
        exit(2)
    }
    let config = match tls_config(hosts, Path::new(cert_pem)) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("bed-mirror: certificate: {e:#}");
            exit(1)
        }
    };
    let listener = TcpListener::bind("0.0.0.0:443").unwrap_or_else(|e| {
        eprintln!("bed-mirror: listen on port 443: {e}");
        exit(1)
    });
    println!("ready");
    let root = PathBuf::from(root);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (config, root) = (config.clone(), root.clone());
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, config, &root) {
                eprintln!("bed-mirror: {e:#}");
            }
        });
    }
}

fn tls_config(hosts: &[String], cert_pem: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let params = rcgen::CertificateParams::new(hosts.to_vec())?;
    let cert = params.self_signed(&key)?;
    std::fs::write(cert_pem, cert.pem())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?)
}

/// Answers one request and closes the connection.
fn serve(conn: TcpStream, config: Arc<rustls::ServerConfig>, root: &Path) -> anyhow::Result<()> {
    let tls = rustls::ServerConnection::new(config)?;
    let mut stream = rustls::StreamOwned::new(tls, conn);
    let mut request = String::new();
    {
        let mut reader = BufReader::new(&mut stream);
        reader.read_line(&mut request)?;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split(['?', '#']).next().unwrap_or("");
    let file = file_for(root, path);
    let body = match (method, file) {
        ("GET" | "HEAD", Some(f)) => std::fs::read(f).ok(),
        _ => None,
    };
    eprintln!(
        "bed-mirror: {method} {target} -> {}",
        if body.is_some() { 200 } else { 404 }
    );
    let (status, body) = match body {
        Some(b) => ("200 OK", b),
        None => ("404 Not Found", b"not found\n".to_vec()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()?;
    stream.conn.send_close_notify();
    let _ = stream.flush();
    Ok(())
}

/// `root` joined with the request path, when the path stays inside it.
fn file_for(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let f = root.join(rel);
    f.is_file().then_some(f)
}

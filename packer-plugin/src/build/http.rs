//! The build's HTTP server (`http_directory`, `http_content`): files a
//! guest fetches during an unattended install, at `{{ .HTTPIP }}` and
//! `{{ .HTTPPort }}`. GET and HEAD only, one request per connection.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::HttpConfig;

/// A running server; it stops when dropped.
pub struct HttpServer {
    /// The port it listens on.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Files {
    directory: Option<PathBuf>,
    content: BTreeMap<String, String>,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// `http_bind_address` is not an address.
    #[error("http_bind_address: `{0}` is not an IP address")]
    BadAddress(String),
    /// Every port of the range is taken.
    #[error("http_port_min: no free port between {min} and {max} on {bind}")]
    NoFreePort {
        /// `http_port_min`.
        min: u16,
        /// `http_port_max`.
        max: u16,
        /// The address bound.
        bind: std::net::IpAddr,
    },
}

/// Starts the server on the first free port of the configured range.
pub async fn start(cfg: &HttpConfig) -> Result<HttpServer, HttpError> {
    let bind: std::net::IpAddr = match &cfg.bind {
        Some(a) => a.parse().map_err(|_| HttpError::BadAddress(a.clone()))?,
        None => Ipv4Addr::UNSPECIFIED.into(),
    };
    let mut listener = None;
    for port in cfg.ports.0..=cfg.ports.1 {
        if let Ok(l) = TcpListener::bind(SocketAddr::new(bind, port)).await {
            listener = Some((l, port));
            break;
        }
    }
    let (listener, port) = listener.ok_or(HttpError::NoFreePort {
        min: cfg.ports.0,
        max: cfg.ports.1,
        bind,
    })?;
    let files = Arc::new(Files {
        directory: cfg.directory.clone(),
        content: cfg
            .content
            .iter()
            .map(|(k, v)| (format!("/{}", k.trim_start_matches('/')), v.clone()))
            .collect(),
    });
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let _ = serve(conn, &files).await;
            });
        }
    });
    Ok(HttpServer { port, task })
}

async fn serve(mut conn: TcpStream, files: &Files) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let (status, body) = match method {
        "GET" | "HEAD" => match lookup(files, path).await {
            Some(b) => ("200 OK", b),
            None => ("404 Not Found", b"not found\n".to_vec()),
        },
        _ => ("405 Method Not Allowed", Vec::new()),
    };
    let header = format!(
        "HTTP/1.0 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(header.as_bytes()).await?;
    if method != "HEAD" {
        conn.write_all(&body).await?;
    }
    conn.shutdown().await
}

async fn lookup(files: &Files, path: &str) -> Option<Vec<u8>> {
    let path = percent_decode(path);
    if let Some(c) = files.content.get(&path) {
        return Some(c.clone().into_bytes());
    }
    let dir = files.directory.as_ref()?;
    let rel = Path::new(path.trim_start_matches('/'));
    // Nothing outside the folder: no `..`, no absolute parts.
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = dir.join(rel);
    let full = if full.is_dir() {
        full.join("index.html")
    } else {
        full
    };
    tokio::fs::read(full).await.ok()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This machine's IPv4 address on the interface `dev`, the address a
/// guest on that bridge reaches the server at.
pub fn address_of(dev: &str) -> Option<Ipv4Addr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we walk and free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_name.is_null() {
            // SAFETY: ifa_name is a NUL-terminated string from the kernel.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            // SAFETY: ifa_addr is non-null and its family says its type.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET && name.to_bytes() == dev.as_bytes() {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: addrs came from getifaddrs.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16, path: &str) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).await.unwrap();
        s
    }

    #[tokio::test]
    async fn serves_content_then_the_folder_and_nothing_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("preseed.cfg"), "from the folder").unwrap();
        std::fs::write(dir.path().join("both.cfg"), "folder copy").unwrap();
        let mut content = BTreeMap::new();
        content.insert("both.cfg".to_string(), "inline copy".to_string());
        let cfg = HttpConfig {
            directory: Some(dir.path().to_path_buf()),
            content,
            ports: (18000, 18100),
            bind: Some("127.0.0.1".into()),
        };
        let server = start(&cfg).await.unwrap();
        let p = server.port;
        assert!((18000..=18100).contains(&p));
        let r = get(p, "/preseed.cfg").await;
        assert!(
            r.starts_with("HTTP/1.0 200") && r.ends_with("from the folder"),
            "{r}"
        );
        assert!(get(p, "/both.cfg").await.ends_with("inline copy"));
        assert!(get(p, "/../etc/passwd").await.starts_with("HTTP/1.0 404"));
        assert!(get(p, "/nothing").await.starts_with("HTTP/1.0 404"));
        assert!(get(p, "/pre%73eed.cfg").await.ends_with("from the folder"));
    }

    #[tokio::test]
    async fn a_bad_address_or_a_full_port_range_names_the_setting() {
        let cfg = |bind: &str, ports| HttpConfig {
            directory: None,
            content: BTreeMap::new(),
            ports,
            bind: Some(bind.into()),
        };
        let e = start(&cfg("not-an-ip", (8000, 8000))).await.err().unwrap();
        assert_eq!(
            e.to_string(),
            "http_bind_address: `not-an-ip` is not an IP address"
        );
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = start(&cfg("127.0.0.1", (port, port))).await.err().unwrap();
        assert_eq!(
            e.to_string(),
            format!("http_port_min: no free port between {port} and {port} on 127.0.0.1")
        );
    }

    #[test]
    fn the_loopback_interface_has_its_address() {
        assert_eq!(address_of("lo"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(address_of("no-such-dev0"), None);
    }
}

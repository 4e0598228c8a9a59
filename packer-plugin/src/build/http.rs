//! The build's HTTP server (`http_directory`, `http_content`): files a
//! guest fetches during an unattended install, at `{{ .HTTPIP }}` and
//! `{{ .HTTPPort }}`. GET and HEAD only, one request per connection.
//!
//! The server may be reachable by more than the guest, so it holds little
//! for anyone: files are sent a piece at a time (a disk image costs a
//! buffer, not its size), a connection that sends no request or takes no
//! answer for [`IDLE_TIMEOUT`] is closed, and at most
//! [`MAX_CONNECTIONS`] are served at once (more are closed at once).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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

/// How long a client may send nothing of its request, or take nothing of
/// the answer, before its connection is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; an installer fetches a few files at a time.
pub const MAX_CONNECTIONS: usize = 64;

/// The piece of a file read and sent at a time.
const CHUNK: usize = 64 * 1024;

/// The longest request head read.
const MAX_HEAD: usize = 16384;

#[derive(Debug, Clone, Copy)]
struct Limits {
    idle: Duration,
    connections: usize,
}

/// Starts the server on the first free port of the configured range.
pub async fn start(cfg: &HttpConfig) -> Result<HttpServer, HttpError> {
    start_with(
        cfg,
        Limits {
            idle: IDLE_TIMEOUT,
            connections: MAX_CONNECTIONS,
        },
    )
    .await
}

async fn start_with(cfg: &HttpConfig, limits: Limits) -> Result<HttpServer, HttpError> {
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
    let slots = Arc::new(Semaphore::new(limits.connections));
    let task = tokio::spawn(async move {
        loop {
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                // Out of file descriptors and the like: wait, do not spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Over the cap the connection is closed at once: it holds
            // nothing while the others are served.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let files = files.clone();
            tokio::spawn(async move {
                let _ = serve(conn, &files, limits.idle).await;
                drop(slot);
            });
        }
    });
    Ok(HttpServer { port, task })
}

/// What a request is answered with.
enum Body {
    /// An `http_content` entry, or a short message.
    Text(Vec<u8>),
    /// A file of the folder, opened, and its length.
    File(tokio::fs::File, u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Text(b) => b.len() as u64,
            Body::File(_, len) => *len,
        }
    }
}

/// `what` unless it has made no progress for `idle`.
async fn within<T>(
    idle: Duration,
    what: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(idle, what)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Writes all of `bytes`, giving up when the client takes none of them
/// for `idle` (a slow reader that keeps reading is served).
async fn send(conn: &mut TcpStream, mut bytes: &[u8], idle: Duration) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = within(idle, conn.write(bytes)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

async fn serve(mut conn: TcpStream, files: &Files, idle: Duration) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    // The whole head within one idle timeout: trickling a byte at a time
    // does not keep a connection.
    within(idle, async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_HEAD {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    })
    .await?;
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let (status, body) = match method {
        "GET" | "HEAD" => match lookup(files, path).await {
            Some(b) => ("200 OK", b),
            None => ("404 Not Found", Body::Text(b"not found\n".to_vec())),
        },
        _ => ("405 Method Not Allowed", Body::Text(Vec::new())),
    };
    let header = format!(
        "HTTP/1.0 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    send(&mut conn, header.as_bytes(), idle).await?;
    if method != "HEAD" {
        match body {
            Body::Text(b) => send(&mut conn, &b, idle).await?,
            Body::File(f, len) => {
                // No more than the length announced, should the file grow.
                let mut f = f.take(len);
                let mut piece = vec![0u8; CHUNK];
                loop {
                    let n = f.read(&mut piece).await?;
                    if n == 0 {
                        break;
                    }
                    send(&mut conn, &piece[..n], idle).await?;
                }
            }
        }
    }
    within(idle, conn.shutdown()).await
}

async fn lookup(files: &Files, path: &str) -> Option<Body> {
    let path = crate::percent_decode(path);
    if let Some(c) = files.content.get(&path) {
        return Some(Body::Text(c.clone().into_bytes()));
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
    let file = tokio::fs::File::open(full).await.ok()?;
    // The length and kind of what was opened: a FIFO or a device in the
    // folder would never end.
    let meta = file.metadata().await.ok()?;
    meta.is_file().then(|| Body::File(file, meta.len()))
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

    fn local(dir: Option<&Path>) -> HttpConfig {
        HttpConfig {
            directory: dir.map(Path::to_path_buf),
            content: BTreeMap::from([("a.cfg".to_string(), "inline".to_string())]),
            ports: (18100, 18300),
            bind: Some("127.0.0.1".into()),
        }
    }

    /// How long until the server closes `c`, reading what it sends.
    async fn closed_after(c: &mut TcpStream, limit: Duration) -> Option<Duration> {
        let t0 = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout_at((t0 + limit).into(), c.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_timeout() {
        let idle = Duration::from_secs(1);
        let server = start_with(
            &local(None),
            Limits {
                idle,
                connections: 8,
            },
        )
        .await
        .unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        c.write_all(b"GET /a.cfg HTTP/1.0\r\n").await.unwrap();

        let took = closed_after(&mut c, Duration::from_secs(5)).await;

        let took = took.expect("still open 5 s after its last byte");
        assert!(took >= Duration::from_millis(900), "{took:?}");
    }

    #[tokio::test]
    async fn a_client_that_takes_no_answer_is_dropped_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::File::create(dir.path().join("disk.img"))
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let idle = Duration::from_secs(1);
        let server = start_with(
            &local(Some(dir.path())),
            Limits {
                idle,
                connections: 8,
            },
        )
        .await
        .unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        c.write_all(b"GET /disk.img HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        // Take nothing until the socket buffers have filled and the
        // server has waited its timeout, then read what is left.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        assert!(got < 64 << 20, "the whole file came: {got} bytes");
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once_and_the_rest_are_served() {
        let idle = Duration::from_secs(5);
        let server = start_with(
            &local(None),
            Limits {
                idle,
                connections: 3,
            },
        )
        .await
        .unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(
                TcpStream::connect(("127.0.0.1", server.port))
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        for _ in 0..10 {
            let mut extra = TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap();
            let closed = closed_after(&mut extra, Duration::from_secs(1)).await;
            assert!(closed.is_some(), "a fourth connection was kept");
        }

        drop(held);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = get(server.port, "/a.cfg").await;
        assert!(
            r.starts_with("HTTP/1.0 200") && r.ends_with("inline"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn a_file_is_sent_whole_with_its_length_and_head_sends_only_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("blob"), &data).unwrap();
        let server = start(&local(Some(dir.path()))).await.unwrap();
        let fetch = |req: &'static str| async move {
            let mut c = TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap();
            c.write_all(req.as_bytes()).await.unwrap();
            let mut all = Vec::new();
            c.read_to_end(&mut all).await.unwrap();
            all
        };

        let got = fetch("GET /blob HTTP/1.0\r\n\r\n").await;
        let head = fetch("HEAD /blob HTTP/1.0\r\n\r\n").await;

        let expected_head = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            data.len()
        );
        assert_eq!(&got[..expected_head.len()], expected_head.as_bytes());
        assert!(got[expected_head.len()..] == data[..], "the body differs");
        assert_eq!(head, expected_head.as_bytes());
    }

    #[tokio::test]
    async fn a_fifo_in_the_folder_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = std::ffi::CString::new(
            dir.path()
                .join("pipe")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let server = start(&local(Some(dir.path()))).await.unwrap();
        // Opening a FIFO for reading waits for a writer: give one, so the
        // open returns and the kind of file is what refuses it.
        let path = dir.path().join("pipe");
        let writer = std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(path));
        let r = get(server.port, "/pipe").await;
        assert!(r.starts_with("HTTP/1.0 404"), "{r}");
        drop(writer.join());
    }

    #[test]
    fn the_loopback_interface_has_its_address() {
        assert_eq!(address_of("lo"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(address_of("no-such-dev0"), None);
    }
}

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

const TOKEN: &str = "hook-token";

/// A webhook receiver on a free loopback port whose refusals go to the
/// returned lines.
struct Receiver {
    addr: SocketAddr,
    kick: Arc<Notify>,
    lines: Arc<Mutex<Vec<String>>>,
}

async fn receiver(
    read_timeout: Duration,
    max_connections: usize,
    log_every: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Receiver {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let guard = Guard {
        name: "webhook",
        read_timeout,
        max_connections,
        tls,
        log: Arc::new(ThrottledLog::to(log_every, move |s| {
            l.lock().unwrap().push(s.to_string())
        })),
    };
    let kick = Arc::new(Notify::new());
    let router = webhook_router(
        Secret::new(TOKEN),
        Duration::from_secs(300),
        kick.clone(),
        Arc::new(Metrics::default()),
        &guard,
    );
    let addr = serve("127.0.0.1:0".parse().unwrap(), router, guard)
        .await
        .unwrap();
    Receiver { addr, kick, lines }
}

fn delivery(token: &str) -> String {
    let body = r#"{"event":"job.scheduled"}"#;
    format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Buildkite-Token: {token}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `request` and reads the answer until the server closes.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    answer
}

/// How long until the server closes `c` (reads nothing more or fails).
async fn closed_after(c: &mut TcpStream, limit: Duration) -> Option<(Duration, String)> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at((t0 + limit).into(), c.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((t0.elapsed(), String::from_utf8_lossy(&got).into_owned()))
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_its_head_slowly_is_dropped_after_the_read_timeout() {
    let r = receiver(Duration::from_secs(1), 8, Duration::from_secs(60), None).await;
    let mut c = TcpStream::connect(r.addr).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One byte of a header every 100 ms: the connection never idles, but
    // the head never ends.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if c.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), trickle).await;

    let closed = closed_after(&mut c, Duration::from_secs(3)).await;

    assert!(closed.is_some(), "still open 4.5 s after connecting");
    let lines = r.lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no complete request head within 1 s")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_within_the_read_timeout_is_refused() {
    let r = receiver(Duration::from_secs(1), 8, Duration::from_secs(60), None).await;
    let mut c = TcpStream::connect(r.addr).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"ev")
        .await
        .unwrap();

    let (took, answer) = closed_after(&mut c, Duration::from_secs(4))
        .await
        .expect("closed");

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused() {
    let r = receiver(Duration::from_secs(5), 8, Duration::from_secs(60), None).await;
    let answer = exchange(
        r.addr,
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nX-Buildkite-Token: {TOKEN}\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_the_rest_are_served() {
    let r = receiver(Duration::from_secs(5), 4, Duration::from_secs(60), None).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(r.addr).await.unwrap());
    }
    // Give the listener time to take all four.
    tokio::time::sleep(Duration::from_millis(200)).await;

    for _ in 0..20 {
        let mut extra = TcpStream::connect(r.addr).await.unwrap();
        let closed = closed_after(&mut extra, Duration::from_secs(1)).await;
        assert!(
            matches!(&closed, Some((_, said)) if said.is_empty()),
            "a fifth connection was kept: {closed:?}"
        );
    }
    let lines = r.lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "webhook listener on {}: refused a connection from 127.0.0.1:",
            r.addr
        )) && lines[0].ends_with(": 4 already open"),
        "{lines:?}"
    );

    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = exchange(r.addr, &delivery(TOKEN)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn refused_deliveries_are_logged_once_per_interval_with_a_count() {
    let r = receiver(Duration::from_secs(5), 8, Duration::from_millis(500), None).await;
    for _ in 0..30 {
        let answer = exchange(r.addr, &delivery("wrong")).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    assert_eq!(
        *r.lines.lock().unwrap(),
        ["webhook refused: the X-Buildkite-Token does not match"]
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    exchange(r.addr, &delivery("wrong")).await;

    assert_eq!(
        r.lines.lock().unwrap()[1],
        "webhook refused: the X-Buildkite-Token does not match \
         (and 29 more like it since the last line, not logged)"
    );
}

#[tokio::test]
async fn a_delivery_over_tls_with_a_generated_certificate_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(
        &key_pem,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let tls = crate::config::tls::load(&cert_pem, &key_pem).unwrap();
    let r = receiver(
        Duration::from_secs(5),
        8,
        Duration::from_secs(60),
        Some(tls.0),
    )
    .await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", r.addr)
        .build()
        .unwrap();
    let kicked = r.kick.notified();

    let answer = client
        .post(format!("https://localhost:{}/", r.addr.port()))
        .header("X-Buildkite-Token", TOKEN)
        .body(r#"{"event":"job.scheduled"}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "looking now\n");
    tokio::time::timeout(Duration::from_secs(1), kicked)
        .await
        .expect("the delivery starts a pass");
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/", r.addr.port())).await;
    assert!(plain.is_err(), "{plain:?}");
}

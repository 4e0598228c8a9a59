//! UDP port monitors: `powerwake` (answers requests for our MACs), `wol`
//! (magic packets for our MACs) and `udp` (any datagram).

use super::{Monitor, MonitorError};
use crate::log;
use kvmhost::wake::{contains_magic_packet, Mac, PowerwakeRequest, RequestTarget};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a port listener does with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortListener {
    /// Answer powerwake requests for our MACs; they are activity.
    Powerwake,
    /// Magic packets for our MACs are activity.
    Wol,
    /// Every datagram is activity.
    Udp,
}

impl PortListener {
    fn name(self) -> &'static str {
        match self {
            PortListener::Powerwake => "powerwake",
            PortListener::Wol => "wol",
            PortListener::Udp => "udp",
        }
    }
}

/// A UDP port listened on by a thread of its own, so powerwake requests
/// are answered at once rather than at the next check.
pub struct PortMonitor {
    kind: PortListener,
    port: u16,
    seen: Arc<AtomicBool>,
}

impl PortMonitor {
    /// Binds `0.0.0.0:port` and starts listening.
    pub fn start(kind: PortListener, port: u16) -> Result<Self, MonitorError> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|source| {
            MonitorError::Bind {
                kind: kind.name(),
                port,
                source,
            }
        })?;
        let seen = Arc::new(AtomicBool::new(false));
        let flag = seen.clone();
        std::thread::Builder::new()
            .name(format!("{}-{port}", kind.name()))
            .spawn(move || listen(kind, sock, &flag))
            .map_err(|source| MonitorError::Thread {
                kind: kind.name(),
                port,
                source,
            })?;
        Ok(Self { kind, port, seen })
    }
}

impl Monitor for PortMonitor {
    fn describe(&self) -> String {
        format!("{} port {}", self.kind.name(), self.port)
    }

    fn check(&mut self) -> Result<bool, MonitorError> {
        Ok(self.seen.swap(false, Ordering::SeqCst))
    }
}

/// Log lines about packets a listener may write per minute: anyone can
/// send packets, and a flood must not fill the disk.
const PACKET_LOG_LINES_PER_MINUTE: u32 = 10;

/// Logs `msg` with `f` unless `limit` says too many went out already.
fn limited(limit: &mut log::Limiter, f: fn(&str), msg: &str) {
    if let Some(m) = limit.admit(msg, std::time::Instant::now()) {
        f(&m);
    }
}

fn listen(kind: PortListener, sock: UdpSocket, seen: &AtomicBool) {
    let mut buf = [0u8; 2048];
    let mut limit = log::Limiter::new(
        PACKET_LOG_LINES_PER_MINUTE,
        std::time::Duration::from_secs(60),
    );
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                log::error(&format!("{} listener: receive failed: {e}", kind.name()));
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        };
        let packet = &buf[..n];
        let active = match kind {
            PortListener::Udp => true,
            PortListener::Wol => {
                let macs = local_macs();
                macs.iter().any(|m| contains_magic_packet(packet, *m))
            }
            PortListener::Powerwake => answer(&sock, packet, from, &mut limit),
        };
        if active {
            limited(
                &mut limit,
                log::debug,
                &format!("{} packet from {from}", kind.name()),
            );
            seen.store(true, Ordering::SeqCst);
        }
    }
}

/// Replies to a powerwake request that is for us; true if it was.
fn answer(sock: &UdpSocket, packet: &[u8], from: SocketAddr, limit: &mut log::Limiter) -> bool {
    let req = match PowerwakeRequest::parse(packet) {
        Ok(r) => r,
        Err(e) => {
            limited(
                limit,
                log::debug,
                &format!("ignoring packet from {from}: {e}"),
            );
            return false;
        }
    };
    let for_us = match req.target {
        RequestTarget::Anyone => true,
        // Read per packet: interfaces (bridges, VM taps) come and go.
        RequestTarget::Mac(mac) => local_macs().contains(&mac),
    };
    if !for_us {
        limited(
            limit,
            log::debug,
            &format!("ignoring powerwake request from {from}: not one of our MACs"),
        );
        return false;
    }
    match sock.send_to(&req.reply(), from) {
        Ok(_) => limited(
            limit,
            log::info,
            &format!("answered powerwake request from {from}"),
        ),
        Err(e) => limited(
            limit,
            log::error,
            &format!("cannot answer powerwake request from {from}: {e}"),
        ),
    }
    true
}

/// The MACs of this host's network interfaces (from `/sys/class/net`,
/// which shows the interfaces of our network namespace).
pub fn local_macs() -> Vec<Mac> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
        .filter_map(|s| s.trim().parse::<Mac>().ok())
        .filter(|m| !m.is_zero())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmhost::wake::parse_reply;
    use std::time::{Duration, Instant};

    /// A UDP port that was free a moment ago.
    fn free_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn client() -> UdpSocket {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c
    }

    /// Polls `m` until it reports activity or 2 s pass.
    fn saw_activity(m: &mut PortMonitor) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if m.check().unwrap() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn any_datagram_is_udp_activity_once() {
        let port = free_port();
        let mut m = PortMonitor::start(PortListener::Udp, port).unwrap();
        assert!(!m.check().unwrap());
        client().send_to(b"x", ("127.0.0.1", port)).unwrap();
        assert!(saw_activity(&mut m));
        assert!(!m.check().unwrap(), "activity is reported once");
    }

    #[test]
    fn powerwake_requests_for_us_are_answered_and_others_ignored() {
        let port = free_port();
        let mut m = PortMonitor::start(PortListener::Powerwake, port).unwrap();
        let c = client();
        let anyone = PowerwakeRequest {
            nonce: 42,
            target: RequestTarget::Anyone,
        };
        c.send_to(&anyone.to_bytes(), ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(parse_reply(&buf[..n]), Some(42));
        assert!(saw_activity(&mut m));

        let foreign: Mac = "02:00:5e:ff:ff:01".parse().unwrap();
        assert!(!local_macs().contains(&foreign));
        c.send_to(
            &PowerwakeRequest::new(foreign).to_bytes(),
            ("127.0.0.1", port),
        )
        .unwrap();
        c.send_to(b"PWERWAKE but short", ("127.0.0.1", port))
            .unwrap();
        assert!(c.recv_from(&mut buf).is_err(), "answered a foreign MAC");
        assert!(!m.check().unwrap());
    }

    #[test]
    fn a_flood_of_packets_writes_a_bounded_number_of_log_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log_file = dir.path().join("powernapd.log");
        log::init(
            true,
            Some(&crate::config::LogTarget::File(log_file.clone())),
        )
        .unwrap();
        let port = free_port();
        let _m = PortMonitor::start(PortListener::Powerwake, port).unwrap();
        let c = client();
        let me = c.local_addr().unwrap().to_string();
        let anyone = PowerwakeRequest {
            nonce: 1,
            target: RequestTarget::Anyone,
        };
        let mut buf = [0u8; 64];
        for i in 0..300 {
            let packet = if i % 2 == 0 {
                anyone.to_bytes().to_vec()
            } else {
                b"not a powerwake packet".to_vec()
            };
            c.send_to(&packet, ("127.0.0.1", port)).unwrap();
            if i % 2 == 0 {
                c.recv_from(&mut buf).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(&log_file).unwrap();
        let lines = text.lines().filter(|l| l.contains(&me)).count();
        assert!(lines <= 25, "{lines} lines for 300 packets:\n{text}");
        assert!(lines >= 1, "nothing logged at all");
    }

    #[test]
    fn a_port_in_use_is_reported_with_the_monitor() {
        let taken = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = PortMonitor::start(PortListener::Powerwake, port)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with(&format!("monitor powerwake port {port}: ")),
            "{e}"
        );
    }
}

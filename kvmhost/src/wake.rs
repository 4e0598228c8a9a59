//! Waking hosts: Wake-on-LAN magic packets and the powerwake protocol.
//!
//! A powerwake request is a magic packet with a header (`"PWERWAKE"` and a
//! random 4-byte nonce), so a sleeping NIC wakes on it as on any magic
//! packet, and once the host is up its `powernapd` answers `"PWERWAKF"` and
//! the same nonce. That answer is how a client knows the host has booted.
//! The format is the one the seed's `powerwake`/`powernapd` speak, so either
//! side's client wakes either side's hosts.
//!
//! ```no_run
//! use kvmhost::wake::{wake_and_wait, Mac, WakeTarget, WAIT_PORT};
//! use std::time::Duration;
//!
//! let mac: Mac = "52:54:00:12:34:56".parse()?;
//! let target = WakeTarget::new(mac, ([10, 0, 0, 255], WAIT_PORT).into());
//! let reply = wake_and_wait(&target, Duration::from_secs(60))?;
//! println!("{} is up after {:?}", reply.from, reply.elapsed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod mac;
#[cfg(feature = "async")]
mod open;
mod packet;

pub use mac::{Mac, MacParseError};
#[cfg(feature = "async")]
pub(crate) use open::open_waking;
#[cfg(feature = "async")]
pub use open::WakeOpenError;
pub use packet::{
    contains_magic_packet, magic_packet, parse_reply, reply_packet, PacketError, PowerwakeRequest,
    RequestTarget, MAGIC_LEN, REPLY_LEN, REQUEST_LEN,
};

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The port a plain wake goes to (the echo port, as the seed sends it).
pub const DEFAULT_PORT: u16 = 7;

/// The port powernapd listens on for powerwake requests, and where a wake
/// that waits for the answer goes.
pub const WAIT_PORT: u16 = 57748;

/// How often an unanswered request is sent again while waiting.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(1);

/// A host to wake: its MAC and where the packet goes (usually the
/// broadcast address of the host's subnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeTarget {
    /// The MAC of the NIC to wake.
    pub mac: Mac,
    /// Where the packet is sent.
    pub to: SocketAddr,
}

/// The answer of the woken host's powernapd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeReply {
    /// Who answered.
    pub from: SocketAddr,
    /// From the first packet sent until the answer arrived.
    pub elapsed: Duration,
    /// How many requests were sent.
    pub sent: u32,
}

/// Why a wake failed.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// The local UDP socket could not be set up.
    #[error("cannot open a UDP socket to send wake packets: {0}")]
    Socket(#[source] io::Error),
    /// Sending failed (e.g. no route to the address).
    #[error("cannot send the wake packet for {mac} to {to}: {source} (check the broadcast address and port)")]
    Send {
        /// The MAC being woken.
        mac: Mac,
        /// Where the packet was going.
        to: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// Receiving the answer failed for a reason other than a timeout.
    #[error("waiting for the answer to the wake packet for {mac}: {source}")]
    Receive {
        /// The MAC being woken.
        mac: Mac,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// No powernapd answered before the deadline.
    #[error("no answer from {mac} via {to} after {:.1} s ({sent} requests sent); is powernapd running there with `monitor powerwake`?", waited.as_secs_f64())]
    Timeout {
        /// The MAC being woken.
        mac: Mac,
        /// Where the packets went.
        to: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// How many requests were sent.
        sent: u32,
    },
}

impl WakeTarget {
    /// A target reached at `to`.
    pub fn new(mac: Mac, to: SocketAddr) -> Self {
        Self { mac, to }
    }

    /// A target reached through the limited broadcast `255.255.255.255` on
    /// `port` (works only where a default route exists).
    pub fn broadcast(mac: Mac, port: u16) -> Self {
        Self::new(mac, (Ipv4Addr::BROADCAST, port).into())
    }
}

/// Sends one powerwake request (which is also a magic packet) to `target`
/// and returns it, without waiting for an answer.
pub fn send_wake(target: &WakeTarget) -> Result<PowerwakeRequest, WakeError> {
    let sock = open_socket(target.to)?;
    let req = PowerwakeRequest::new(target.mac);
    send(&sock, target, &req)?;
    Ok(req)
}

/// Sends a powerwake request to `target` about every
/// [`RESEND_INTERVAL`] until the host's powernapd answers or `timeout`
/// has passed. At least one request is always sent.
pub fn wake_and_wait(target: &WakeTarget, timeout: Duration) -> Result<WakeReply, WakeError> {
    let sock = open_socket(target.to)?;
    let req = PowerwakeRequest::new(target.mac);
    let start = Instant::now();
    let deadline = start + timeout;
    let mut sent = 0u32;
    let mut next_send = start;
    let mut buf = [0u8; 512];
    loop {
        let now = Instant::now();
        if now >= next_send {
            send(&sock, target, &req)?;
            sent += 1;
            next_send = now + RESEND_INTERVAL;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WakeError::Timeout {
                mac: target.mac,
                to: target.to,
                waited: now - start,
                sent,
            });
        }
        let wait = next_send.min(deadline).saturating_duration_since(now);
        // A zero timeout means "block forever" to the socket.
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(WakeError::Socket)?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if req.is_reply(&buf[..n]) => {
                return Ok(WakeReply {
                    from,
                    elapsed: start.elapsed(),
                    sent,
                })
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        // An ICMP port-unreachable from a host that is up
                        // but not yet listening: keep trying.
                        | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(source) => {
                return Err(WakeError::Receive {
                    mac: target.mac,
                    source,
                })
            }
        }
    }
}

/// The broadcast address of a local IPv4 network that contains `ip`, if
/// this host has an address on such a network (the most specific one wins).
pub fn local_broadcast_for(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    let mut best: Option<(u32, Ipv4Addr)> = None;
    for (addr, mask) in local_ipv4_networks() {
        let m = u32::from(mask);
        if u32::from(addr) & m == u32::from(ip) & m && best.is_none_or(|(bm, _)| m > bm) {
            best = Some((m, Ipv4Addr::from(u32::from(addr) | !m)));
        }
    }
    best.map(|(_, b)| b)
}

/// Every IPv4 address of a broadcast-capable local interface, with its
/// netmask.
fn local_ipv4_networks() -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null()
            || ifa.ifa_netmask.is_null()
            || ifa.ifa_flags & libc::IFF_BROADCAST as u32 == 0
        {
            continue;
        }
        // SAFETY: non-null sockaddrs from getifaddrs; the family says
        // which struct they are.
        unsafe {
            if i32::from((*ifa.ifa_addr).sa_family) != libc::AF_INET {
                continue;
            }
            let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
            out.push((
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                Ipv4Addr::from(u32::from_be(m.sin_addr.s_addr)),
            ));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

fn open_socket(to: SocketAddr) -> Result<UdpSocket, WakeError> {
    let bind: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(WakeError::Socket)?;
    sock.set_broadcast(true).map_err(WakeError::Socket)?;
    Ok(sock)
}

fn send(sock: &UdpSocket, target: &WakeTarget, req: &PowerwakeRequest) -> Result<(), WakeError> {
    sock.send_to(&req.to_bytes(), target.to)
        .map(|_| ())
        .map_err(|source| WakeError::Send {
            mac: target.mac,
            to: target.to,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0x77, 0x00, 0x09]);

    /// A stand-in powernapd on loopback that ignores the first `skip`
    /// requests, sends a wrong-nonce reply, then answers properly.
    fn responder(skip: usize) -> (SocketAddr, thread::JoinHandle<usize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let h = thread::spawn(move || {
            let mut buf = [0u8; 512];
            let mut seen = 0;
            loop {
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                let req = PowerwakeRequest::parse(&buf[..n]).unwrap();
                assert_eq!(req.target, RequestTarget::Mac(MAC));
                seen += 1;
                if seen > skip {
                    sock.send_to(&reply_packet(req.nonce.wrapping_add(1)), from)
                        .unwrap();
                    sock.send_to(&req.reply(), from).unwrap();
                    return seen;
                }
            }
        });
        (addr, h)
    }

    #[test]
    fn wake_and_wait_resends_until_the_right_nonce_comes_back() {
        let (addr, h) = responder(2);
        let t = Instant::now();
        let reply = wake_and_wait(&WakeTarget::new(MAC, addr), Duration::from_secs(10)).unwrap();
        assert_eq!(reply.from, addr);
        assert_eq!(reply.sent, 3);
        assert_eq!(h.join().unwrap(), 3);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1900), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    }

    #[test]
    fn wake_and_wait_times_out_when_nobody_answers() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let t = Instant::now();
        let err =
            wake_and_wait(&WakeTarget::new(MAC, addr), Duration::from_millis(1500)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3));
        match err {
            WakeError::Timeout { sent, .. } => assert_eq!(sent, 2),
            e => panic!("{e}"),
        }
        let mut buf = [0u8; 512];
        let (n, _) = silent.recv_from(&mut buf).unwrap();
        assert_eq!(n, REQUEST_LEN);
    }

    #[test]
    fn send_wake_sends_one_request() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let req = send_wake(&WakeTarget::new(MAC, rx.local_addr().unwrap())).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(PowerwakeRequest::parse(&buf[..n]), Ok(req));
    }

    #[test]
    fn loopback_is_not_a_broadcast_network() {
        assert_eq!(local_broadcast_for(Ipv4Addr::LOCALHOST), None);
    }
}

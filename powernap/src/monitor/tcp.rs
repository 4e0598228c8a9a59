//! `monitor tcp port N`: an established TCP connection on the port.

use super::{Monitor, MonitorError};

/// Active while a connection with local or remote port `port` is
/// established (as the seed's netstat match does), IPv4 or IPv6.
pub struct TcpMonitor {
    port: u16,
}

impl TcpMonitor {
    /// A monitor for `port`.
    pub fn new(port: u16) -> Self {
        Self { port }
    }
}

/// True when `/proc/net/tcp{,6}` text lists an established connection
/// with local or remote port `port`.
pub fn established_on(table: &str, port: u16) -> bool {
    const ESTABLISHED: &str = "01";
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != ESTABLISHED {
            return false;
        }
        let port_of = |addr: &str| {
            addr.rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        };
        port_of(f[1]) == Some(port) || port_of(f[2]) == Some(port)
    })
}

impl Monitor for TcpMonitor {
    fn describe(&self) -> String {
        format!("tcp port {}", self.port)
    }

    fn check(&mut self) -> Result<bool, MonitorError> {
        let mut any_read = false;
        for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
            // tcp6 is absent when IPv6 is disabled.
            if let Ok(table) = std::fs::read_to_string(path) {
                any_read = true;
                if established_on(&table, self.port) {
                    return Ok(true);
                }
            }
        }
        if any_read {
            Ok(false)
        } else {
            Err(MonitorError::NoTcpTable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:0016 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";

    #[test]
    fn only_established_connections_count() {
        assert!(established_on(TABLE, 22));
        assert!(established_on(TABLE, 0xd431));
        let listening_only = TABLE.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(!established_on(&listening_only, 22));
    }

    #[test]
    fn sees_a_live_loopback_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut m = TcpMonitor::new(port);
        assert!(!m.check().unwrap());
        let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _s = l.accept().unwrap();
        assert!(m.check().unwrap());
    }
}

//! The provider's `wake {}` block: how to wake a sleeping host.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use kvmhost::libvirt::handle::WakeSpec;
use kvmhost::wake::{Mac, WakeTarget};
use tfplugin::{AttributePath, Diagnostic};

/// Parses the `wake {}` block; `uri_host` is the host part of the URI,
/// used to find the broadcast address when none is given. The host is
/// sent a magic packet (for its NIC) and a powerwake request (for a
/// powernapd keeping it awake) about once a second until libvirt answers.
pub fn parse_wake(
    mac: &str,
    broadcast: Option<&str>,
    port: Option<i64>,
    powerwake_port: Option<i64>,
    timeout: Option<i64>,
    uri_host: Option<&str>,
) -> Result<WakeSpec, Diagnostic> {
    let at = |a: &'static str| AttributePath::new("wake").attribute(a);
    let mac: Mac = mac.parse().map_err(|e| {
        Diagnostic::new(
            "Invalid MAC address",
            format!("'{mac}': {e}; write it like 52:54:00:12:34:56"),
            at("mac"),
        )
    })?;
    let port_of = |v: Option<i64>, def: u16, name: &'static str| -> Result<u16, Diagnostic> {
        match v {
            None => Ok(def),
            Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
            Some(p) => Err(Diagnostic::new(
                "Invalid port",
                format!("{p} is not a UDP port (1-65535)"),
                at(name),
            )),
        }
    };
    let port = port_of(port, kvmhost::wake::DEFAULT_PORT, "port")?;
    let powerwake_port = port_of(powerwake_port, kvmhost::wake::WAIT_PORT, "powerwake_port")?;
    let ip: IpAddr = match broadcast {
        Some(b) => b.parse().map_err(|_| {
            Diagnostic::new(
                "Invalid broadcast address",
                format!("'{b}' is not an IP address; give the broadcast address of the host's subnet, e.g. 10.0.0.255"),
                at("broadcast"),
            )
        })?,
        None => {
            let guessed = uri_host
                .and_then(|h| (h, 0).to_socket_addrs().ok())
                .and_then(|mut it| it.find(|a| a.is_ipv4()))
                .and_then(|a| match a.ip() {
                    IpAddr::V4(v4) => kvmhost::wake::local_broadcast_for(v4),
                    IpAddr::V6(_) => None,
                });
            IpAddr::V4(guessed.ok_or_else(|| {
                Diagnostic::new(
                    "Missing broadcast address",
                    "the host is not on a local subnet this machine knows; set wake.broadcast",
                    at("broadcast"),
                )
            })?)
        }
    };
    let timeout = match timeout {
        None => Duration::from_secs(300),
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        Some(t) => {
            return Err(Diagnostic::new(
                "Invalid timeout",
                format!("{t} is not a positive number of seconds"),
                at("timeout"),
            ))
        }
    };
    Ok(WakeSpec {
        targets: vec![
            WakeTarget::new(mac, SocketAddr::new(ip, port)),
            WakeTarget::new(mac, SocketAddr::new(ip, powerwake_port)),
        ],
        timeout,
        interval: Duration::from_secs(1),
    })
}

//! Opening the host connection, waking the host first when it sleeps.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use kvmhost::libvirt::Host;
use kvmhost::wake::{open_waking, Mac, WakeOpenError, WakeTarget};
use tfplugin::{AttributePath, Diagnostic};

use crate::common::HostConfig;

/// The provider's `wake {}` block, parsed.
#[derive(Debug, Clone)]
pub struct WakeConfig {
    /// NIC to wake.
    pub mac: Mac,
    /// Where magic packets go (broadcast address and port).
    pub to: SocketAddr,
    /// Where powerwake requests go, for hosts running powernapd.
    pub powerwake_to: SocketAddr,
    /// How long to wait for libvirt to answer.
    pub timeout: Duration,
}

/// Parses the `wake {}` block; `uri_host` is the host part of the URI,
/// used to find the broadcast address when none is given.
pub fn parse_wake(
    mac: &str,
    broadcast: Option<&str>,
    port: Option<i64>,
    powerwake_port: Option<i64>,
    timeout: Option<i64>,
    uri_host: Option<&str>,
) -> Result<WakeConfig, Diagnostic> {
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
    Ok(WakeConfig {
        mac,
        to: SocketAddr::new(ip, port),
        powerwake_to: SocketAddr::new(ip, powerwake_port),
        timeout,
    })
}

/// Opens the connection; when it fails and `wake` is configured, sends
/// wake packets about once a second and retries until the host answers
/// or the timeout passes.
/// Errors here surface inside resource operations, where the provider's
/// attributes have no path: they are reported without one.
pub fn open_host(config: &HostConfig) -> Result<Host, Diagnostic> {
    let Some(wake) = &config.wake else {
        return Host::open(&config.uri)
            .map_err(|e| Diagnostic::root("Cannot connect to the libvirt host", e.to_string()));
    };
    let targets = [
        WakeTarget::new(wake.mac, wake.to),
        WakeTarget::new(wake.mac, wake.powerwake_to),
    ];
    match open_waking(&config.uri, &targets, wake.timeout, Duration::from_secs(1)) {
        Ok((host, _took)) => Ok(host),
        Err(WakeOpenError::Send(e)) => Err(Diagnostic::root(
            "Cannot send the wake packet",
            e.to_string(),
        )),
        Err(e) => Err(Diagnostic::root(
            "The libvirt host did not wake up",
            format!("{e} (wake packets to {} for {})", wake.to, wake.mac),
        )),
    }
}

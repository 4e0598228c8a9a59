//! powerwake's target lookup: how a name on the command line becomes a MAC
//! and an address to send to.
//!
//! The order is the seed's: `~/.config/powerwake.hosts` (or
//! `$XDG_CONFIG_HOME/powerwake.hosts`), `/etc/powernap/powerwake.hosts`,
//! `/etc/ethers`, then the target itself as a MAC. The seed also asks DNS
//! for `powerwake.wol.mac=` TXT records between the hosts files and
//! `/etc/ethers`; that step is not done here.

use kvmhost::wake::Mac;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// What is known about how to wake a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name as given.
    pub name: String,
    /// The MAC to wake.
    pub mac: Mac,
    /// The target's own address, when the name resolves.
    pub ip: Option<Ipv4Addr>,
    /// Where to send the packet (`wol.host`), if configured.
    pub send_to: Option<IpAddr>,
    /// Which port to send to (`wol.port`), if configured.
    pub port: Option<u16>,
    /// Where the answer came from, for messages.
    pub source: String,
}

impl Target {
    /// Where the packet goes, in the seed's order of preference: `-b`, the
    /// `wol.host` option, the broadcast address of a local network holding
    /// the target's address (or that address itself when none does), and
    /// last the limited broadcast. The port: `-p`, `wol.port`, then 7, or
    /// 57748 when waiting for powernapd's answer.
    pub fn destination(
        &self,
        cli_addr: Option<IpAddr>,
        cli_port: Option<u16>,
        wait: bool,
        local_broadcast: impl Fn(Ipv4Addr) -> Option<Ipv4Addr>,
    ) -> SocketAddr {
        let addr = cli_addr.or(self.send_to).unwrap_or_else(|| match self.ip {
            Some(ip) => IpAddr::V4(local_broadcast(ip).unwrap_or(ip)),
            None => IpAddr::V4(Ipv4Addr::BROADCAST),
        });
        let default_port = if wait {
            kvmhost::wake::WAIT_PORT
        } else {
            kvmhost::wake::DEFAULT_PORT
        };
        let port = cli_port.or(self.port).unwrap_or(default_port);
        SocketAddr::new(addr, port)
    }
}

/// A hosts file that names the target but is wrong about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: [{section}]: {message}", path.display())]
pub struct LookupError {
    /// The file.
    pub path: PathBuf,
    /// The section naming the target.
    pub section: String,
    /// What is wrong.
    pub message: String,
}

/// Turns a host name into an IPv4 address; injectable for tests.
pub type Resolver<'a> = &'a dyn Fn(&str) -> Option<Ipv4Addr>;

/// The system resolver (`/etc/hosts`, DNS), IPv4 only as the seed.
pub fn system_resolve(name: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Some(ip);
    }
    (name, 0)
        .to_socket_addrs()
        .ok()?
        .find_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
}

/// Where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The user's hosts file.
    pub user_hosts: Option<PathBuf>,
    /// The system hosts file.
    pub system_hosts: PathBuf,
    /// The ethers file.
    pub ethers: PathBuf,
}

impl Lookup {
    /// The standard places, with the user's file from `XDG_CONFIG_HOME` or
    /// `HOME`.
    pub fn from_env() -> Self {
        let user_hosts = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("powerwake.hosts"));
        Self {
            user_hosts,
            system_hosts: "/etc/powernap/powerwake.hosts".into(),
            ethers: "/etc/ethers".into(),
        }
    }

    /// Finds `target`; `Ok(None)` when nothing knows it. Problems in other
    /// hosts-file sections are returned as warnings, not errors.
    pub fn find(
        &self,
        target: &str,
        resolve: Resolver<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Target>, LookupError> {
        for path in self.user_hosts.iter().chain([&self.system_hosts]) {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Some(t) = from_hosts_file(&text, path, target, resolve, warnings)? {
                    return Ok(Some(t));
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string(&self.ethers) {
            if let Some(t) = from_ethers(&text, &self.ethers, target, resolve, warnings) {
                return Ok(Some(t));
            }
        }
        Ok(target.parse::<Mac>().ok().map(|mac| Target {
            name: target.into(),
            mac,
            ip: None,
            send_to: None,
            port: None,
            source: "the command line".into(),
        }))
    }
}

/// One `[section]` of an INI file with its `key = value` lines.
struct Section<'a> {
    name: &'a str,
    entries: Vec<(&'a str, &'a str)>,
}

/// Splits INI text into sections (`;` and `#` comments, `=` or `:`).
fn ini_sections(text: &str) -> Vec<Section<'_>> {
    let mut out: Vec<Section<'_>> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with(';') || l.starts_with('#') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            out.push(Section {
                name: name.trim(),
                entries: Vec::new(),
            });
        } else if let Some(sec) = out.last_mut() {
            let split = l
                .find(['=', ':'])
                .map(|i| (l[..i].trim(), l[i + 1..].trim()));
            if let Some(kv) = split {
                sec.entries.push(kv);
            }
        }
    }
    out
}

fn from_hosts_file(
    text: &str,
    path: &Path,
    target: &str,
    resolve: Resolver<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<Target>, LookupError> {
    let mut found = None;
    for sec in ini_sections(text) {
        let result = section_target(&sec, path, resolve);
        if sec.name == target {
            found = result?;
        } else if let Err(e) = result {
            // The seed checks every section so mistakes show early.
            warnings.push(e.to_string());
        }
    }
    Ok(found)
}

fn section_target(
    sec: &Section<'_>,
    path: &Path,
    resolve: Resolver<'_>,
) -> Result<Option<Target>, LookupError> {
    let err = |message: String| LookupError {
        path: path.to_path_buf(),
        section: sec.name.to_string(),
        message,
    };
    let (mut mac, mut send_to, mut port) = (None, None, None);
    let mut ipmi = false;
    for &(key, value) in &sec.entries {
        match key.to_ascii_lowercase().as_str() {
            "wol.mac" => {
                mac = Some(
                    value
                        .parse::<Mac>()
                        .map_err(|e| err(format!("wol.mac: {e}")))?,
                )
            }
            "wol.host" => {
                let ip = resolve(value).ok_or_else(|| {
                    err(format!(
                        "wol.host: cannot resolve '{value}' to an IPv4 address"
                    ))
                })?;
                send_to = Some(IpAddr::V4(ip));
            }
            "wol.port" => {
                port = Some(value.parse::<u16>().map_err(|_| {
                    err(format!(
                        "wol.port: '{value}' is not a port number (0 to 65535)"
                    ))
                })?)
            }
            k if k.starts_with("ipmi.") => ipmi = true,
            _ => {}
        }
    }
    if ipmi && (mac.is_some() || send_to.is_some() || port.is_some()) {
        return Err(err("has options for multiple methods (wol, ipmi)".into()));
    }
    if ipmi {
        return Err(err(
            "wakes by IPMI, which this powerwake does not do; give it a wol.mac".into(),
        ));
    }
    if send_to.is_none() && port.is_none() && mac.is_none() {
        return Ok(None);
    }
    let mac = mac.ok_or_else(|| err("wol.mac option is not set".into()))?;
    Ok(Some(Target {
        name: sec.name.to_string(),
        mac,
        ip: resolve(sec.name),
        send_to,
        port,
        source: path.display().to_string(),
    }))
}

/// `/etc/ethers`: `MAC host-or-ip` lines; a target matches by MAC, by name,
/// or by resolving to the same address.
fn from_ethers(
    text: &str,
    path: &Path,
    target: &str,
    resolve: Resolver<'_>,
    warnings: &mut Vec<String>,
) -> Option<Target> {
    let target_ip = resolve(target);
    let target_mac = target.parse::<Mac>().ok();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut words = l.split_whitespace();
        let (Some(m), Some(host), None) = (words.next(), words.next(), words.next()) else {
            warnings.push(format!(
                "{}: line {}: expected 'MAC host'",
                path.display(),
                i + 1
            ));
            continue;
        };
        let Ok(mac) = m.parse::<Mac>() else {
            warnings.push(format!(
                "{}: line {}: '{m}' is not a MAC",
                path.display(),
                i + 1
            ));
            continue;
        };
        let host_ip = resolve(host);
        let by_mac = target_mac == Some(mac);
        if by_mac || host == target || (host_ip.is_some() && host_ip == target_ip) {
            return Some(Target {
                name: target.into(),
                mac,
                ip: if by_mac {
                    host_ip
                } else {
                    target_ip.or(host_ip)
                },
                send_to: None,
                port: None,
                source: path.display().to_string(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(name: &str) -> Option<Ipv4Addr> {
        match name {
            "host1" | "10.0.0.1" => Some(Ipv4Addr::new(10, 0, 0, 1)),
            "alias1" => Some(Ipv4Addr::new(10, 0, 0, 1)),
            "host2" => Some(Ipv4Addr::new(10, 0, 0, 2)),
            "proxy" => Some(Ipv4Addr::new(10, 0, 9, 9)),
            _ => None,
        }
    }

    struct Files {
        dir: tempfile::TempDir,
        lookup: Lookup,
    }

    fn files(user: Option<&str>, system: Option<&str>, ethers: Option<&str>) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        for (name, text) in [("user", user), ("system", system), ("ethers", ethers)] {
            if let Some(t) = text {
                std::fs::write(p(name), t).unwrap();
            }
        }
        let lookup = Lookup {
            user_hosts: Some(p("user")),
            system_hosts: p("system"),
            ethers: p("ethers"),
        };
        Files { dir, lookup }
    }

    fn find(f: &Files, target: &str) -> Result<Option<Target>, LookupError> {
        f.lookup.find(target, &resolver, &mut Vec::new())
    }

    const M1: &str = "52:54:00:00:00:01";
    const M2: &str = "52:54:00:00:00:02";
    const M3: &str = "52:54:00:00:00:03";

    #[test]
    fn user_file_wins_over_system_file_over_ethers() {
        let user = format!("[host1]\nwol.mac = {M1}\n");
        let system = format!(
            "[host1]\nwol.mac = {M2}\n[host2]\nwol.mac={M2}\nwol.host = proxy\nwol.port: 9\n"
        );
        let ethers = format!("{M3} host1\n{M3} host2\n{M3} host3\n");
        let f = files(Some(&user), Some(&system), Some(&ethers));
        let t = find(&f, "host1").unwrap().unwrap();
        assert_eq!(t.mac.to_string(), M1);
        assert_eq!(t.ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(t.source.ends_with("user"));
        let t = find(&f, "host2").unwrap().unwrap();
        assert_eq!(t.mac.to_string(), M2);
        assert_eq!(t.send_to, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 9))));
        assert_eq!(t.port, Some(9));
        let t = find(&f, "host3").unwrap().unwrap();
        assert_eq!(t.mac.to_string(), M3);
        assert!(t.source.ends_with("ethers"));
        assert!(f.dir.path().exists());
    }

    #[test]
    fn ethers_matches_by_name_address_or_mac() {
        let f = files(
            None,
            None,
            Some(&format!("# comment\n{M1} 10.0.0.1\n{M2} host2\n")),
        );
        assert_eq!(find(&f, "alias1").unwrap().unwrap().mac.to_string(), M1);
        assert_eq!(find(&f, "host2").unwrap().unwrap().mac.to_string(), M2);
        let t = find(&f, M1).unwrap().unwrap();
        assert_eq!(t.ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn a_bare_mac_is_the_last_resort_and_unknown_names_are_none() {
        let f = files(None, None, None);
        let t = find(&f, "52-54-00-00-00-09").unwrap().unwrap();
        assert_eq!(t.mac.to_string(), "52:54:00:00:00:09");
        assert_eq!(t.ip, None);
        assert_eq!(find(&f, "nowhere").unwrap(), None);
    }

    #[test]
    fn a_broken_section_for_the_target_is_an_error_and_others_only_warn() {
        let system = format!("[host1]\nwol.mac = nonsense\n[host2]\nwol.mac = {M2}\n[host3]\nwol.port = 9\n[bmc]\nipmi.host = x\n");
        let f = files(None, Some(&system), None);
        let e = find(&f, "host1").unwrap_err().to_string();
        assert!(
            e.contains("[host1]: wol.mac: 'nonsense' is not a MAC"),
            "{e}"
        );
        let e = find(&f, "host3").unwrap_err().to_string();
        assert!(e.contains("[host3]: wol.mac option is not set"), "{e}");
        let e = find(&f, "bmc").unwrap_err().to_string();
        assert!(e.contains("IPMI"), "{e}");
        let mut warnings = Vec::new();
        let t = f
            .lookup
            .find("host2", &resolver, &mut warnings)
            .unwrap()
            .unwrap();
        assert_eq!(t.mac.to_string(), M2);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
    }

    #[test]
    fn destination_prefers_command_line_then_config_then_local_broadcast() {
        let mut t = Target {
            name: "host1".into(),
            mac: M1.parse().unwrap(),
            ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            send_to: None,
            port: None,
            source: "test".into(),
        };
        let lan =
            |ip: Ipv4Addr| (ip.octets()[..3] == [10, 0, 0]).then_some(Ipv4Addr::new(10, 0, 0, 255));
        let none = |_| None;
        let d = |t: &Target, a: Option<&str>, p, w, lb: &dyn Fn(Ipv4Addr) -> Option<Ipv4Addr>| {
            t.destination(a.map(|a| a.parse().unwrap()), p, w, lb)
                .to_string()
        };
        assert_eq!(d(&t, None, None, false, &lan), "10.0.0.255:7");
        assert_eq!(d(&t, None, None, true, &lan), "10.0.0.255:57748");
        assert_eq!(d(&t, None, None, false, &none), "10.0.0.1:7");
        t.send_to = Some("10.0.9.9".parse().unwrap());
        t.port = Some(9);
        assert_eq!(d(&t, None, None, true, &lan), "10.0.9.9:9");
        assert_eq!(
            d(&t, Some("192.168.1.255"), Some(40000), true, &lan),
            "192.168.1.255:40000"
        );
        t.ip = None;
        t.send_to = None;
        t.port = None;
        assert_eq!(d(&t, None, None, false, &lan), "255.255.255.255:7");
    }

    #[test]
    fn user_file_comes_from_xdg_config_home_or_home() {
        let l = Lookup::from_env();
        assert_eq!(
            l.system_hosts,
            PathBuf::from("/etc/powernap/powerwake.hosts")
        );
        assert_eq!(l.ethers, PathBuf::from("/etc/ethers"));
        if let Some(u) = l.user_hosts {
            assert!(u.ends_with("powerwake.hosts"));
        }
    }
}

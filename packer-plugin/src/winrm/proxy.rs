//! HTTP proxies as Packer's WinRM client picks them. Its transports (Basic
//! and NTLM alike) are Go `http.Transport`s with `Proxy:
//! http.ProxyFromEnvironment`, so the rules are Go's (`httpproxy`):
//!
//! - `HTTPS_PROXY` (else `https_proxy`) for an HTTPS endpoint,
//!   `HTTP_PROXY` (else `http_proxy`) for an HTTP one; an empty value is
//!   no value, there is no fall-back from one to the other and no
//!   `ALL_PROXY`. Under CGI (`REQUEST_METHOD` set) `HTTP_PROXY` is refused.
//! - A value without a scheme, or with one other than `http`, `https` or
//!   `socks5`, is read as `http://VALUE`; one that does not parse is
//!   ignored. The proxy's port defaults by its scheme (80, 443, 1080).
//! - `localhost` and loopback addresses are never proxied.
//! - `NO_PROXY` (else `no_proxy`): comma-separated, case-insensitive; `*`
//!   for all; CIDR blocks (`10.0.0.0/8`); IP addresses; host names, which
//!   match the name and its subdomains (`.example.com` and `*.example.com`
//!   only the subdomains); each optionally with `:PORT`, matching that
//!   port only.
//! - The proxy URL's user and password (percent-decoded) go as
//!   `Proxy-Authorization: Basic`: on the CONNECT that opens a tunnel to an
//!   HTTPS endpoint, and on each request sent through the proxy, in
//!   absolute form, to an HTTP endpoint.
//!
//! `winrm_no_proxy` adds `HOST:PORT` of the endpoint to `NO_PROXY` in the
//! SDK: that endpoint is reached directly whatever the rest says.

use std::net::IpAddr;

use base64::Engine;

/// The environment variables Go reads, as read.
#[derive(Debug, Default, Clone)]
pub(super) struct ProxyEnv {
    http: Option<Proxy>,
    https: Option<Proxy>,
    no_proxy: NoProxy,
    cgi: bool,
}

/// One proxy to go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Proxy {
    /// `http`, `https` or `socks5`.
    pub scheme: String,
    /// Its host, without brackets for IPv6.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// `Basic ...` for `Proxy-Authorization`, from the URL's user info.
    pub authorization: Option<String>,
    /// The URL as read, credentials included, for reqwest.
    pub url: String,
}

impl std::fmt::Display for Proxy {
    /// `scheme://host:port`, never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// `NO_PROXY` parsed.
#[derive(Debug, Default, Clone)]
struct NoProxy {
    all: bool,
    ips: Vec<IpRule>,
    domains: Vec<DomainRule>,
}

#[derive(Debug, Clone)]
enum IpRule {
    Cidr(IpAddr, u8),
    Ip(IpAddr, Option<String>),
}

#[derive(Debug, Clone)]
struct DomainRule {
    /// Starts with `.`.
    suffix: String,
    port: Option<String>,
    /// The name itself matches too (the entry had no leading `.`).
    exact_too: bool,
}

impl ProxyEnv {
    /// From this process's environment.
    pub fn from_env() -> ProxyEnv {
        ProxyEnv::from_vars(|name| std::env::var(name).ok())
    }

    /// From variables `get` looks up.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let any = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.is_empty()))
                .unwrap_or_default()
        };
        ProxyEnv {
            http: parse_proxy(&any(&["HTTP_PROXY", "http_proxy"])),
            https: parse_proxy(&any(&["HTTPS_PROXY", "https_proxy"])),
            no_proxy: NoProxy::parse(&any(&["NO_PROXY", "no_proxy"])),
            cgi: get("REQUEST_METHOD").is_some_and(|v| !v.is_empty()),
        }
    }

    /// The proxy for the endpoint `host:port` (`host` without brackets)
    /// over HTTPS or HTTP, or `None` to connect directly.
    pub fn proxy_for(&self, https: bool, host: &str, port: u16) -> Result<Option<Proxy>, String> {
        let proxy = if https {
            self.https.as_ref()
        } else {
            let p = self.http.as_ref();
            if p.is_some() && self.cgi {
                return Err("refusing to use HTTP_PROXY value in CGI environment; see golang.org/s/cgihttpproxy".into());
            }
            p
        };
        let Some(proxy) = proxy else { return Ok(None) };
        if !self.no_proxy.use_proxy(host, &port.to_string()) {
            return Ok(None);
        }
        Ok(Some(proxy.clone()))
    }
}

/// The raw URL of a proxy value as Go reads it, or `None` when it does
/// not parse.
pub(super) fn proxy_url(value: &str) -> Option<reqwest::Url> {
    if value.is_empty() {
        return None;
    }
    match reqwest::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https" | "socks5") && u.has_host() => Some(u),
        _ => reqwest::Url::parse(&format!("http://{value}"))
            .ok()
            .filter(|u| u.has_host()),
    }
}

fn parse_proxy(value: &str) -> Option<Proxy> {
    let u = proxy_url(value)?;
    let host = u.host_str()?.trim_start_matches('[').trim_end_matches(']');
    let port = u.port().unwrap_or(match u.scheme() {
        "https" => 443,
        "socks5" => 1080,
        _ => 80,
    });
    let authorization = (!u.username().is_empty() || u.password().is_some()).then(|| {
        let user = crate::percent_decode(u.username());
        let password = crate::percent_decode(u.password().unwrap_or(""));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    });
    Some(Proxy {
        scheme: u.scheme().to_string(),
        host: host.to_string(),
        port,
        authorization,
        url: u.to_string(),
    })
}

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        if port.contains(':') || port.contains('[') || port.contains(']') {
            return None;
        }
        return Some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.contains(':') || host.contains('[') || host.contains(']') {
        return None;
    }
    Some((host, port))
}

/// IPv4-mapped IPv6 addresses compare as IPv4, as Go's `IP.Equal` has it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net) = (canonical(ip), canonical(net));
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl NoProxy {
    fn parse(value: &str) -> NoProxy {
        let mut np = NoProxy::default();
        for p in value.split(',') {
            let p = p.trim().to_ascii_lowercase();
            if p.is_empty() {
                continue;
            }
            if p == "*" {
                return NoProxy {
                    all: true,
                    ..NoProxy::default()
                };
            }
            if let Some((addr, bits)) = p.split_once('/') {
                let digits = !bits.is_empty() && bits.bytes().all(|c| c.is_ascii_digit());
                if let (Ok(ip), Ok(bits), true) =
                    (addr.parse::<IpAddr>(), bits.parse::<u8>(), digits)
                {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    if bits <= max {
                        np.ips.push(IpRule::Cidr(ip, bits));
                        continue;
                    }
                }
            }
            let (host, port) = match split_host_port(&p) {
                Some((h, port)) => {
                    if h.is_empty() {
                        continue;
                    }
                    (
                        h.to_string(),
                        Some(port.to_string()).filter(|p| !p.is_empty()),
                    )
                }
                None => (p.clone(), None),
            };
            if let Ok(ip) = host.parse::<IpAddr>() {
                np.ips.push(IpRule::Ip(ip, port));
                continue;
            }
            if host.is_empty() {
                continue;
            }
            let mut host = host;
            if host.starts_with("*.") {
                host.remove(0);
            }
            let exact_too = !host.starts_with('.');
            if exact_too {
                host.insert(0, '.');
            }
            np.domains.push(DomainRule {
                suffix: host,
                port,
                exact_too,
            });
        }
        np
    }

    /// Whether `host:port` goes through the proxy.
    fn use_proxy(&self, host: &str, port: &str) -> bool {
        if host == "localhost" {
            return false;
        }
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_some_and(|ip| canonical(ip).is_loopback()) {
            return false;
        }
        if self.all {
            return false;
        }
        let host = host.trim().to_ascii_lowercase();
        let port_ok = |want: &Option<String>| want.as_deref().is_none_or(|w| w == port);
        if let Some(ip) = ip {
            for rule in &self.ips {
                let hit = match rule {
                    IpRule::Cidr(net, bits) => in_cidr(ip, *net, *bits),
                    IpRule::Ip(want, p) => canonical(*want) == canonical(ip) && port_ok(p),
                };
                if hit {
                    return false;
                }
            }
        }
        for d in &self.domains {
            if (host.ends_with(&d.suffix) || (d.exact_too && host == d.suffix[1..]))
                && port_ok(&d.port)
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_vars(|n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
    }

    fn shown(e: &ProxyEnv, https: bool, host: &str, port: u16) -> Option<String> {
        e.proxy_for(https, host, port)
            .unwrap()
            .map(|p| p.to_string())
    }

    #[test]
    fn each_scheme_takes_its_own_variable_upper_case_first() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("http_proxy", "http://plain:8080"),
        ]);
        assert_eq!(
            shown(&e, true, "10.0.0.5", 5986).as_deref(),
            Some("http://upper:3128")
        );
        assert_eq!(
            shown(&e, false, "10.0.0.5", 5985).as_deref(),
            Some("http://plain:8080")
        );
        // No fall-back from one to the other, and no ALL_PROXY.
        let e = env(&[("HTTP_PROXY", "http://p:1"), ("ALL_PROXY", "http://all:2")]);
        assert_eq!(shown(&e, true, "10.0.0.5", 5986), None);
        // An empty upper-case value gives way to the lower-case one.
        let e = env(&[("HTTPS_PROXY", ""), ("https_proxy", "http://lower:3128")]);
        assert_eq!(
            shown(&e, true, "10.0.0.5", 5986).as_deref(),
            Some("http://lower:3128")
        );
    }

    #[test]
    fn values_are_read_as_go_reads_them() {
        let p = |v: &str| parse_proxy(v).map(|p| (p.to_string(), p.authorization));
        assert_eq!(
            p("proxy.lan:3128"),
            Some(("http://proxy.lan:3128".into(), None))
        );
        assert_eq!(
            p("10.1.2.3:3128"),
            Some(("http://10.1.2.3:3128".into(), None))
        );
        assert_eq!(
            p("http://proxy.lan"),
            Some(("http://proxy.lan:80".into(), None))
        );
        assert_eq!(
            p("https://proxy.lan"),
            Some(("https://proxy.lan:443".into(), None))
        );
        assert_eq!(p("socks5://s"), Some(("socks5://s:1080".into(), None)));
        assert_eq!(
            p("http://[fd00::1]:3128").unwrap().0,
            "http://[fd00::1]:3128"
        );
        assert_eq!(p(""), None);
        let (_, auth) = p("http://us%40er:p%3Ass@proxy:3128").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.unwrap().strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"us@er:p:ss");
        let (_, auth) = p("http://only@proxy:3128").unwrap();
        assert_eq!(auth.as_deref(), Some("Basic b25seTo="));
    }

    #[test]
    fn localhost_and_loopback_are_never_proxied() {
        let e = env(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("HTTP_PROXY", "http://p:3128"),
        ]);
        for host in [
            "localhost",
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(shown(&e, true, host, 5986), None, "{host}");
            assert_eq!(shown(&e, false, host, 5985), None, "{host}");
        }
        assert!(shown(&e, true, "10.77.0.2", 5986).is_some());
        assert!(shown(&e, true, "winhost", 5986).is_some());
    }

    #[test]
    fn no_proxy_matches_as_go_matches() {
        let np = NoProxy::parse(
            " Example.COM, .sub.test ,*.star.test,10.0.0.0/8,192.168.1.5,192.168.1.6:5986,[fd00::7]:5985,fd00::8,host.lan:5986,:80,",
        );
        let direct = |h: &str, port: u16| !np.use_proxy(h, &port.to_string());
        assert!(direct("example.com", 1));
        assert!(direct("www.example.com", 1));
        assert!(!direct("notexample.com", 1));
        assert!(direct("a.sub.test", 1));
        assert!(!direct("sub.test", 1), "a leading dot: subdomains only");
        assert!(direct("a.star.test", 1));
        assert!(!direct("star.test", 1));
        assert!(direct("10.77.0.2", 5986));
        assert!(direct("192.168.1.5", 1));
        assert!(direct("192.168.1.6", 5986));
        assert!(!direct("192.168.1.6", 5985));
        assert!(direct("fd00::7", 5985));
        assert!(!direct("fd00::7", 5986));
        assert!(direct("fd00::8", 1));
        assert!(direct("HOST.lan", 5986));
        assert!(!direct("host.lan", 5985));
        assert!(!direct("172.16.0.1", 1));
        assert!(NoProxy::parse("*").all);
        assert!(!NoProxy::parse("a,*").use_proxy("anything", "1"));
        // A bad CIDR is no CIDR.
        assert!(NoProxy::parse("10.0.0.0/33").ips.is_empty());
    }

    #[test]
    fn winrm_no_proxy_as_the_sdk_adds_it_covers_the_endpoint() {
        let e = env(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("NO_PROXY", "10.77.0.2:5986"),
        ]);
        assert_eq!(shown(&e, true, "10.77.0.2", 5986), None);
        assert!(shown(&e, true, "10.77.0.2", 443).is_some());
    }

    #[test]
    fn cgi_refuses_http_proxy_only() {
        let e = env(&[
            ("HTTP_PROXY", "http://p:3128"),
            ("HTTPS_PROXY", "http://p:3128"),
            ("REQUEST_METHOD", "GET"),
        ]);
        assert!(e
            .proxy_for(false, "10.0.0.1", 5985)
            .unwrap_err()
            .contains("CGI"));
        assert!(e.proxy_for(true, "10.0.0.1", 5986).unwrap().is_some());
    }
}

//! WinRM through a real HTTP proxy (Debian's tinyproxy), as Packer's
//! client goes through one: Go's `http.ProxyFromEnvironment` picks
//! `HTTPS_PROXY` for an HTTPS endpoint and never proxies loopback
//! addresses, so the bed is a LAN of three namespaces: the client, the
//! proxy and the guest (the WinRM stand-in on `0.0.0.0`), each with its
//! own address. The set-up is first proven with Packer's own client
//! (`winrm-client`, NTLM over HTTPS: the proxy logs its CONNECT), then
//! our communicator goes the same way: NTLM and Basic over HTTPS in a
//! CONNECT tunnel, Basic over HTTP in absolute-form requests; `NO_PROXY`
//! covering the guest, or `winrm_no_proxy`, goes direct; a proxy that
//! refuses the tunnel is named in the error; NTLM over HTTP through a
//! proxy that closes each connection fails for both clients.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use packer_plugin_libvirt::config::WinRmConfig;
use packer_plugin_libvirt::winrm::WinRm;
use testbed::netns::{Lan, LanPort, Netns};
use testbed::tinyproxy::{Tinyproxy, PORT};
use testbed::winrm::{Config, StandIn};

const HTTPS_PORT: u16 = 5986;
const HTTP_PORT: u16 = 5985;

/// The proxy variables Go reads (and reqwest would).
const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "REQUEST_METHOD",
];

/// The environment is the process's: one test at a time sets it.
static ENV: Mutex<()> = Mutex::new(());

/// The three namespaces on their LAN. Fields drop in order: the
/// namespaces before the LAN.
struct Net {
    client: LanPort,
    proxy: LanPort,
    guest: LanPort,
    _lan: Lan,
}

impl Net {
    fn new() -> Net {
        let mut lan = Lan::new().unwrap();
        let client = lan.attach("wclient", true).unwrap();
        let proxy = lan.attach("wproxy", true).unwrap();
        let guest = lan.attach("wguest", true).unwrap();
        Net {
            client,
            proxy,
            guest,
            _lan: lan,
        }
    }

    /// tinyproxy in the proxy's namespace, taking the client, tunnelling
    /// to `connect_ports`.
    fn tinyproxy(&self, connect_ports: &[u16]) -> Tinyproxy {
        Tinyproxy::start_in(
            &self.proxy.ns,
            &[&self.client.ip.to_string()],
            connect_ports,
        )
        .unwrap()
    }

    /// `http://PROXY:8888`.
    fn proxy_url(&self) -> String {
        format!("http://{}:{PORT}", self.proxy.ip)
    }

    /// A stand-in in the guest's namespace on `port`.
    fn standin(&self, port: u16, tls: bool, ntlm: bool) -> StandIn {
        StandIn::start_in(
            &self.guest.ns,
            Config {
                tls,
                ntlm,
                bind: (Ipv4Addr::UNSPECIFIED, port).into(),
                receive_wait: Duration::from_millis(300),
                ..Config::default()
            },
        )
        .unwrap()
    }
}

fn config(port: u16, tls: bool, ntlm: bool, no_proxy: bool) -> WinRmConfig {
    WinRmConfig {
        host: None,
        port,
        username: "vagrant".into(),
        password: "vagrant".into(),
        timeout: Duration::from_secs(30),
        use_ssl: tls,
        insecure: tls,
        no_proxy,
        use_ntlm: ntlm,
    }
}

/// Our client for `host` made with the proxy variables `vars` (the others
/// unset), as the plugin's process would have them.
fn client_with_env(host: &str, cfg: &WinRmConfig, vars: &[(&str, &str)]) -> WinRm {
    let _one = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let saved: Vec<(&str, Option<String>)> = PROXY_VARS
        .iter()
        .map(|v| (*v, std::env::var(v).ok()))
        .collect();
    for v in PROXY_VARS {
        std::env::remove_var(v);
    }
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let w = WinRm::new(host, cfg);
    for (k, v) in saved {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    w.unwrap()
}

/// Runs `f` on a runtime of its own on a thread in `ns`, so its
/// connections start from there.
fn in_ns<T, F, Fut>(ns: &Netns, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    ns.spawn_in(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .unwrap()
    .join()
    .unwrap()
}

/// The IPs the stand-in's connections came from.
fn peer_ips(s: &StandIn) -> std::collections::BTreeSet<IpAddr> {
    s.peers().iter().map(|p| p.ip()).collect()
}

/// Runs Packer's client in the client's namespace with `env`; its
/// result lines.
fn packers_client(net: &Net, env: &[(&str, &str)], steps: &[&str]) -> Vec<serde_json::Value> {
    let program = testbed::peers::winrm_client().unwrap();
    let mut c: Command = net.client.ns.cmd(&program.display().to_string());
    c.args([
        "-host",
        &net.guest.ip.to_string(),
        "-port",
        &HTTPS_PORT.to_string(),
        "-user",
        "vagrant",
        "-password",
        "vagrant",
        "-ntlm",
        "-https",
        "-insecure",
    ])
    .args(steps);
    for v in PROXY_VARS {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "winrm-client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn packers_client_tunnels_ntlm_over_https_through_the_proxy_unless_no_proxy_names_the_guest() {
    let net = Net::new();
    let proxy = net.tinyproxy(&[HTTPS_PORT]);
    let s = net.standin(HTTPS_PORT, true, true);
    let target = format!("{}:{HTTPS_PORT}", net.guest.ip);
    let proxy_url = net.proxy_url();

    let started = Instant::now();
    let steps = packers_client(
        &net,
        &[("HTTPS_PROXY", &proxy_url)],
        &["start", "echo through the proxy"],
    );
    eprintln!(
        "Packer's client through tinyproxy: {:.2}s",
        started.elapsed().as_secs_f64()
    );
    assert!(steps[0].get("error").is_none(), "{steps:?}");
    assert_eq!(steps[0]["stdout"], "through the proxy\r\n");
    let connects = proxy.connects();
    eprintln!("tinyproxy: {connects:?}");
    assert!(!connects.is_empty(), "{}", proxy.log());
    assert!(
        connects.iter().all(|c| *c == format!("CONNECT {target}")),
        "{connects:?}"
    );
    assert_eq!(peer_ips(&s), [IpAddr::V4(net.proxy.ip)].into());
    assert!(s.ntlm_challenges() >= 1);

    // NO_PROXY naming the guest: straight there, the proxy sees nothing.
    let before = proxy.requests().len();
    let seen = s.peers().len();
    let steps = packers_client(
        &net,
        &[
            ("HTTPS_PROXY", &proxy_url),
            ("NO_PROXY", &net.guest.ip.to_string()),
        ],
        &["start", "echo direct"],
    );
    assert_eq!(steps[0]["stdout"], "direct\r\n");
    assert_eq!(proxy.requests().len(), before, "{}", proxy.log());
    let later: std::collections::BTreeSet<IpAddr> =
        s.peers()[seen..].iter().map(|p| p.ip()).collect();
    assert_eq!(later, [IpAddr::V4(net.client.ip)].into());
}

#[test]
fn ntlm_over_https_runs_commands_and_uploads_through_the_proxy() {
    let net = Net::new();
    let proxy = net.tinyproxy(&[HTTPS_PORT]);
    let s = net.standin(HTTPS_PORT, true, true);
    let host = net.guest.ip.to_string();
    let w = client_with_env(
        &host,
        &config(HTTPS_PORT, true, true, false),
        &[("HTTPS_PROXY", &net.proxy_url())],
    );
    let data = testbed::util::noise(0x5eed_1234, 200_000);
    let upload = data.clone();
    let started = Instant::now();
    let (out, ps) = in_ns(&net.client.ns, move || async move {
        let out = w.run("echo through the tunnel").await.unwrap();
        w.upload(r"C:\Windows\Temp\proxied.bin", upload.as_slice())
            .await
            .unwrap();
        let ps = w
            .run(&packer_plugin_libvirt::winrm::powershell(
                "Write-Output 'ps too'",
            ))
            .await
            .unwrap();
        (out, ps)
    });
    eprintln!(
        "NTLM through tinyproxy: 2 commands and a 200 kB upload in {:.2}s, {} connections, {} handshakes",
        started.elapsed().as_secs_f64(),
        s.peers().len(),
        s.ntlm_challenges()
    );
    assert_eq!(out, (0, b"through the tunnel\r\n".to_vec(), Vec::new()));
    assert_eq!(ps.1, b"ps too\r\n");
    let got = std::fs::read(s.host_path(r"C:\Windows\Temp\proxied.bin").unwrap()).unwrap();
    assert!(got == data, "the upload differs");
    let connects = proxy.connects();
    eprintln!("tinyproxy: {connects:?}");
    assert!(!connects.is_empty(), "{}", proxy.log());
    let target = format!("CONNECT {host}:{HTTPS_PORT}");
    assert!(connects.iter().all(|c| *c == target), "{connects:?}");
    assert_eq!(connects.len(), s.peers().len(), "one tunnel per connection");
    assert_eq!(peer_ips(&s), [IpAddr::V4(net.proxy.ip)].into());
    assert!(s.ntlm_challenges() >= 1);
    assert_eq!(s.unauthorized(), 0);
}

#[test]
fn no_proxy_naming_the_guest_or_winrm_no_proxy_goes_direct() {
    let net = Net::new();
    let proxy = net.tinyproxy(&[HTTPS_PORT]);
    let s = net.standin(HTTPS_PORT, true, true);
    let host = net.guest.ip.to_string();
    let proxy_url = net.proxy_url();
    let by_no_proxy = client_with_env(
        &host,
        &config(HTTPS_PORT, true, true, false),
        &[("HTTPS_PROXY", &proxy_url), ("no_proxy", "10.77.0.0/24")],
    );
    let by_setting = client_with_env(
        &host,
        &config(HTTPS_PORT, true, true, true),
        &[("HTTPS_PROXY", &proxy_url)],
    );
    let outs = in_ns(&net.client.ns, move || async move {
        (
            by_no_proxy.run("echo one").await.unwrap(),
            by_setting.run("echo two").await.unwrap(),
        )
    });
    assert_eq!(outs.0 .1, b"one\r\n");
    assert_eq!(outs.1 .1, b"two\r\n");
    assert!(proxy.requests().is_empty(), "{}", proxy.log());
    assert_eq!(peer_ips(&s), [IpAddr::V4(net.client.ip)].into());
}

#[test]
fn a_proxy_refusing_the_tunnel_is_named_in_the_error() {
    let net = Net::new();
    // Tunnels to 443 only.
    let proxy = net.tinyproxy(&[443]);
    let s = net.standin(HTTPS_PORT, true, true);
    let host = net.guest.ip.to_string();
    let w = client_with_env(
        &host,
        &config(HTTPS_PORT, true, true, false),
        &[("HTTPS_PROXY", &net.proxy_url())],
    );
    let e = in_ns(&net.client.ns, move || async move {
        w.run("echo never").await.unwrap_err().to_string()
    });
    eprintln!("{e}");
    assert!(
        e.contains(&format!(
            "proxy {} refused CONNECT to {host}:{HTTPS_PORT}: HTTP 403",
            net.proxy_url()
        )),
        "{e}"
    );
    assert_eq!(proxy.connects(), [format!("CONNECT {host}:{HTTPS_PORT}")]);
    assert!(s.peers().is_empty());
}

#[test]
fn basic_goes_through_the_proxy_by_the_same_rules() {
    let net = Net::new();
    let proxy = net.tinyproxy(&[HTTPS_PORT]);
    let https = net.standin(HTTPS_PORT, true, false);
    let http = net.standin(HTTP_PORT, false, false);
    let host = net.guest.ip.to_string();
    let proxy_url = net.proxy_url();
    let env = [
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("HTTP_PROXY", proxy_url.as_str()),
    ];
    let over_https = client_with_env(&host, &config(HTTPS_PORT, true, false, false), &env);
    let over_http = client_with_env(&host, &config(HTTP_PORT, false, false, false), &env);
    let outs = in_ns(&net.client.ns, move || async move {
        (
            over_https.run("echo tunnelled").await.unwrap(),
            over_http.run("echo forwarded").await.unwrap(),
        )
    });
    assert_eq!(outs.0 .1, b"tunnelled\r\n");
    assert_eq!(outs.1 .1, b"forwarded\r\n");
    let requests = proxy.requests();
    eprintln!("tinyproxy: {requests:?}");
    assert!(
        requests.contains(&format!("CONNECT {host}:{HTTPS_PORT}")),
        "{requests:?}"
    );
    assert!(
        requests.contains(&format!("POST http://{host}:{HTTP_PORT}/wsman")),
        "{requests:?}"
    );
    assert_eq!(peer_ips(&https), [IpAddr::V4(net.proxy.ip)].into());
    assert_eq!(peer_ips(&http), [IpAddr::V4(net.proxy.ip)].into());
}

#[test]
fn ntlm_over_http_through_a_proxy_that_closes_each_connection_fails_as_packers_does() {
    // tinyproxy forwards one request per client connection and closes it,
    // so the NTLM handshake, bound to one connection to the guest, cannot
    // finish through it: Packer's client fails, and ours says why.
    let net = Net::new();
    let proxy = net.tinyproxy(&[HTTPS_PORT]);
    let s = net.standin(HTTP_PORT, false, true);
    let host = net.guest.ip.to_string();
    let proxy_url = net.proxy_url();
    let program = testbed::peers::winrm_client().unwrap();
    let mut c: Command = net.client.ns.cmd(&program.display().to_string());
    c.args([
        "-host",
        &host,
        "-port",
        &HTTP_PORT.to_string(),
        "-user",
        "vagrant",
        "-password",
        "vagrant",
        "-ntlm",
        "start",
        "echo never",
    ]);
    for v in PROXY_VARS {
        c.env_remove(v);
    }
    c.env("HTTP_PROXY", &proxy_url);
    let out = c.output().unwrap();
    eprintln!(
        "Packer's client: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(!out.status.success());
    let by_go = proxy.requests();
    assert!(!by_go.is_empty(), "{}", proxy.log());

    let w = client_with_env(
        &host,
        &config(HTTP_PORT, false, true, false),
        &[("HTTP_PROXY", &proxy_url)],
    );
    let e = in_ns(&net.client.ns, move || async move {
        w.run("echo never").await.unwrap_err().to_string()
    });
    eprintln!("ours: {e}");
    assert!(
        e.contains(&format!(
            "proxy {proxy_url} closed the connection in the NTLM handshake"
        )),
        "{e}"
    );
    let requests = proxy.requests();
    assert!(requests.len() > by_go.len());
    let absolute = format!("POST http://{host}:{HTTP_PORT}/wsman");
    assert!(requests.iter().all(|r| *r == absolute), "{requests:?}");
    assert!(s.commands().is_empty());
    assert_eq!(peer_ips(&s), [IpAddr::V4(net.proxy.ip)].into());
}

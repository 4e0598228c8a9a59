//! A real HTTP proxy for the tests: Debian's tinyproxy, which
//! `scripts/setup.sh --test` unpacks into the cache (its package is never
//! installed, so no system daemon runs). Each [`Tinyproxy`] runs in a
//! network namespace of the test's with a config of its own, in the
//! foreground as a child of the test, and is killed by its PID when
//! dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::util;

/// The port every proxy listens on (each has a namespace of its own).
pub const PORT: u16 = 8888;

/// The tinyproxy binary `scripts/setup.sh --test` put in the cache.
pub fn binary() -> Result<PathBuf> {
    let p = util::cache_dir().join("bin/tinyproxy");
    if !p.exists() {
        bail!(
            "{} is missing: run scripts/setup.sh --test (it unpacks Debian's tinyproxy-bin there)",
            p.display()
        );
    }
    Ok(p)
}

/// A running tinyproxy.
pub struct Tinyproxy {
    child: Child,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy in `ns` on [`PORT`], taking clients from `allow`
    /// (addresses or CIDR blocks) and opening CONNECT tunnels to
    /// `connect_ports` only; returns once it listens.
    pub fn start_in(ns: &Netns, allow: &[&str], connect_ports: &[u16]) -> Result<Tinyproxy> {
        let program = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("tinyproxy-")
            .tempdir()
            .context("making tinyproxy's folder")?;
        let mut conf = format!(
            "Port {PORT}\nTimeout 600\nMaxClients 100\nLogLevel Info\nLogFile \"{}\"\n",
            dir.path().join("tinyproxy.log").display()
        );
        for a in allow {
            conf.push_str(&format!("Allow {a}\n"));
        }
        for p in connect_ports {
            conf.push_str(&format!("ConnectPort {p}\n"));
        }
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf)?;
        let child = ns
            .cmd(&program.display().to_string())
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr"))?)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut proxy = Tinyproxy { child, dir };
        let listening = ns
            .spawn_in(|| {
                util::poll_until(Duration::from_secs(10), || {
                    std::net::TcpStream::connect(("127.0.0.1", PORT)).ok()
                })
                .is_some()
            })?
            .join()
            .unwrap_or(false);
        if !listening {
            let _ = proxy.child.try_wait();
            bail!(
                "tinyproxy did not listen on port {PORT} within 10s: {}{}",
                std::fs::read_to_string(proxy.dir.path().join("stderr")).unwrap_or_default(),
                proxy.log()
            );
        }
        Ok(proxy)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where it logs.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.log")
    }

    /// The targets of the CONNECT requests it received, in order.
    pub fn connects(&self) -> Vec<String> {
        requests(&self.log(), "CONNECT")
    }

    /// The request lines (method, target) it received, in order.
    pub fn requests(&self) -> Vec<String> {
        requests(&self.log(), "")
    }

    /// Its folder (config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `METHOD TARGET` of each `Request (file descriptor N): METHOD TARGET
/// HTTP/1.x` line of a tinyproxy log whose method starts with `method`.
fn requests(log: &str, method: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("): ").map(|(_, r)| r))
        .filter_map(|r| {
            let mut w = r.split_whitespace();
            let (m, target, version) = (w.next()?, w.next()?, w.next()?);
            (version.starts_with("HTTP/") && m.starts_with(method)).then(|| format!("{m} {target}"))
        })
        .collect()
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A real libvirtd (with virtlogd) in a network namespace of its own.
//!
//! Each daemon has private `/run/libvirt`, `/var/lib/libvirt`,
//! `/etc/libvirt` and `/var/log/libvirt` (a private mount namespace), so it
//! never meets the machine's own libvirt or another test's. Its NAT
//! network's bridge, dnsmasq, firewall rules and `ip_forward` stay inside
//! its namespace. The socket is reachable from the root namespace at
//! [`Libvirtd::uri`]; guests are reachable only from inside
//! [`Libvirtd::netns`].

use crate::netns::{run, Netns};
use crate::util;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The NAT network every bed daemon has, `10.78.0.0/24` inside its namespace.
pub const NETWORK: &str = "bed";
/// The `dir` storage pool every bed daemon has.
pub const POOL: &str = "bed";
/// The NAT network's gateway (the daemon's side of the bridge).
pub const GATEWAY: &str = "10.78.0.1";

/// A running libvirtd; dropping it destroys its domains, networks and
/// pools, stops the daemons and deletes the namespace and files.
#[derive(Debug)]
pub struct Libvirtd {
    dir: PathBuf,
    child: Option<Child>,
    ns: Option<Netns>,
}

/// What else runs beside libvirtd in its namespaces (a VM host's sshd).
#[derive(Debug, Default)]
pub(crate) struct Extra {
    /// Shell commands run before libvirtd starts, in its mount namespace.
    pub before: Vec<String>,
}

impl Libvirtd {
    /// Starts a daemon in a new namespace, with the [`POOL`] pool and the
    /// [`NETWORK`] NAT network. About 0.5 s once libvirt's capability cache
    /// is warm; the first start of a machine probes QEMU for about 10 s.
    pub fn start() -> Result<Self> {
        Self::start_in(Netns::new("virt")?, Extra::default())
    }

    pub(crate) fn start_in(ns: Netns, extra: Extra) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/kvmbe-bed-{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(dir.join("pool"))?;
        // QEMU runs as libvirt-qemu and must reach disks and kernels here.
        for d in [&dir, &dir.join("pool")] {
            set_mode(d, 0o755)?;
        }
        let cache = util::cache_dir().join("libvirt-cache");
        std::fs::create_dir_all(&cache)?;
        let script = util::workspace_root().join("tests/bed/libvirtd-ns.sh");
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let mut c = ns.cmd("unshare");
        c.args(["-m", "--propagation", "private", "bash"])
            .arg(&script)
            .arg(&dir)
            .arg(&cache)
            .args(&extra.before)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = c.spawn().context("starting libvirtd")?;
        let mut d = Self {
            dir,
            child: Some(child),
            ns: Some(ns),
        };
        d.wait_ready(Duration::from_secs(120))?;
        let pool = d.pool_dir();
        d.virsh(&[
            "pool-create-as",
            POOL,
            "dir",
            "--target",
            &pool.to_string_lossy(),
        ])?;
        let net = d.dir.join("network.xml");
        std::fs::write(&net, network_xml())?;
        d.virsh(&["net-create", &net.to_string_lossy()])?;
        Ok(d)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        // Some(Err): the daemon exited, waiting longer will not help.
        let ready = util::poll_until(limit, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Some(Err(status));
            }
            (self.socket().exists() && self.virsh(&["version"]).is_ok()).then_some(Ok(()))
        });
        match ready {
            Some(Ok(())) => Ok(()),
            Some(Err(status)) => bail!(
                "libvirtd exited ({status}) before answering:\n{}",
                self.logs()
            ),
            None => bail!("libvirtd did not answer within {limit:?}:\n{}", self.logs()),
        }
    }

    /// The daemon's and virtlogd's output, for error messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["daemon.log", "log/libvirtd.log"] {
            if let Ok(t) = std::fs::read_to_string(self.dir.join(f)) {
                let tail: Vec<&str> = t.lines().rev().take(30).collect();
                s += &format!("--- {f}\n");
                for l in tail.into_iter().rev() {
                    s += l;
                    s.push('\n');
                }
            }
        }
        s
    }

    /// The PID of the libvirtd now running (from its pid file).
    pub fn pid(&self) -> Result<i32> {
        let path = self.dir.join("libvirtd.pid");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{}: {text:?} is not a PID", path.display()))
    }

    /// Stops libvirtd (SIGTERM: its guests keep running, as with
    /// `systemctl restart libvirtd`) and starts it again in the same
    /// namespaces; returns once the new daemon answers.
    pub fn restart(&self) -> Result<()> {
        let old = self.pid()?;
        util::signal(old, libc::SIGTERM);
        let gone =
            |p: i32| !std::path::Path::new(&format!("/proc/{p}")).exists() || util::is_zombie(p);
        util::poll_until(Duration::from_secs(30), || gone(old).then_some(()))
            .with_context(|| format!("libvirtd {old} did not stop within 30 s"))?;
        // virtlogd and the guests hold the mount namespace the old daemon
        // made; the new one joins it there.
        let logd = std::fs::read_to_string(self.dir.join("virtlogd.pid"))?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("daemon.log"))?;
        let status = Command::new("nsenter")
            .args(["-t", logd.trim(), "-m", "-n", "--"])
            .arg("libvirtd")
            .arg("-d")
            .arg("-p")
            .arg(self.dir.join("libvirtd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("starting libvirtd again")?;
        anyhow::ensure!(
            status.success(),
            "libvirtd did not start again: {status}\n{}",
            self.logs()
        );
        util::poll_until(Duration::from_secs(60), || {
            (self.pid().is_ok_and(|p| p != old) && self.virsh(&["version"]).is_ok()).then_some(())
        })
        .with_context(|| {
            format!(
                "libvirtd did not answer after its restart:\n{}",
                self.logs()
            )
        })
    }

    /// The daemon's unix socket, as seen from the root namespace.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/libvirt-sock")
    }

    /// A URI that reaches this daemon from the root namespace.
    pub fn uri(&self) -> String {
        format!("qemu:///system?socket={}", self.socket().display())
    }

    /// The namespace the daemon (and its guests' network) lives in.
    pub fn netns(&self) -> &Netns {
        self.ns
            .as_ref()
            .expect("namespace lives as long as the daemon")
    }

    /// A folder (0755) for files QEMU must read: kernels, disks, seeds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder behind the [`POOL`] pool.
    pub fn pool_dir(&self) -> PathBuf {
        self.dir.join("pool")
    }

    /// The console log of a domain whose serial port the test bed's
    /// [`crate::libvirtd::Libvirtd::serial_xml`] pointed at a file.
    pub fn serial_log(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.serial.log"))
    }

    /// A `<serial>` + `<console>` pair writing the guest's ttyS0 to
    /// [`Self::serial_log`].
    pub fn serial_xml(&self, domain: &str) -> String {
        let p = self.serial_log(domain);
        let p = p.display();
        format!(
            "<serial type='file'><source path='{p}'/><target port='0'/></serial>\
             <console type='file'><source path='{p}'/><target type='serial' port='0'/></console>"
        )
    }

    /// Runs `virsh -c URI ARGS...` and returns its stdout.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        run(Command::new("virsh")
            .arg("-q")
            .arg("-c")
            .arg(self.uri())
            .args(args))
    }

    /// Names of every domain, running or not.
    pub fn domains(&self) -> Result<Vec<String>> {
        Ok(self
            .virsh(&["list", "--all", "--name"])?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// Names of the volumes in `pool`.
    pub fn volumes(&self, pool: &str) -> Result<Vec<String>> {
        let _ = self.virsh(&["pool-refresh", pool]);
        Ok(self
            .virsh(&["vol-list", pool])?
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect())
    }

    /// Waits until `path` (a console log) contains `needle`; returns the
    /// whole text and how long it took.
    pub fn wait_for_text(path: &Path, needle: &str, limit: Duration) -> Result<(String, Duration)> {
        let t0 = Instant::now();
        let read = || std::fs::read_to_string(path).unwrap_or_default();
        match util::poll_until(limit, || Some(read()).filter(|t| t.contains(needle))) {
            Some(text) => Ok((text, t0.elapsed())),
            None => bail!(
                "{needle:?} did not appear in {} within {limit:?}; it holds:\n{}",
                path.display(),
                read()
            ),
        }
    }

    fn teardown(&mut self) {
        if self.child.is_none() {
            return;
        }
        for d in self.domains().unwrap_or_default() {
            let _ = self.virsh(&["destroy", &d]);
            let _ = self.virsh(&["undefine", &d, "--nvram"]);
            let _ = self.virsh(&["undefine", &d]);
        }
        if let Ok(nets) = self.virsh(&["net-list", "--all", "--name"]) {
            for n in nets.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.virsh(&["net-destroy", n]);
                let _ = self.virsh(&["net-undefine", n]);
            }
        }
        if let Some(mut child) = self.child.take() {
            util::signal(child.id() as i32, libc::SIGTERM);
            // Still running after the grace (or not askable): killed.
            util::poll_until(Duration::from_secs(5), || {
                (!matches!(child.try_wait(), Ok(None))).then_some(())
            });
            let _ = child.kill();
            let _ = child.wait();
        }
        // virtlogd, dnsmasq, QEMU and sshd all live in the namespace.
        drop(self.ns.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn network_xml() -> String {
    format!(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
           <name>{NETWORK}</name><forward mode='nat'/>\
           <bridge name='virbr-bed' stp='off' delay='0'/>\
           <ip address='{GATEWAY}' netmask='255.255.255.0'>\
             <dhcp><range start='10.78.0.10' end='10.78.0.250'/></dhcp>\
           </ip>\
           <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options>\
         </network>"
    )
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

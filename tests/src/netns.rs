//! Network namespaces: the test bed's hosts, a LAN between them, and a
//! client side, all isolated from the machine's own networking.

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace of our own; dropping it kills every process left in
/// it and deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `kvmbe-<prefix>-<pid>-<n>` with its loopback up.
    pub fn new(prefix: &str) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("kvmbe-{prefix}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread whose network namespace is this one (a
    /// namespace is per thread for `setns`), so in-process clients such as
    /// a libvirt connection reach the namespace's network.
    pub fn spawn_in<T, F>(&self, f: F) -> Result<std::thread::JoinHandle<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("open namespace {}", self.name))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; CLONE_NEWNET changes only
            // this thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let entered = rc == 0;
            let _ = tx.send(
                entered
                    .then_some(())
                    .ok_or_else(std::io::Error::last_os_error),
            );
            drop(file);
            if !entered {
                panic!("setns failed");
            }
            f()
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => bail!("cannot enter namespace {}: {e}", self.name),
            Err(_) => bail!("the thread for namespace {} died", self.name),
        }
    }

    /// A command that runs `program` inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `argv` inside the namespace and returns its stdout; fails with
    /// its stderr when it exits non-zero.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let mut c = self.cmd(argv[0]);
        c.args(&argv[1..]);
        run(&mut c)
    }

    /// The PIDs of every process in the namespace.
    pub fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills every process in the namespace: TERM, then KILL after `grace`.
    pub fn kill_all(&self, grace: Duration) {
        for pid in self.pids() {
            crate::util::signal(pid, libc::SIGTERM);
        }
        crate::util::poll_until(grace, || self.live_pids().next().is_none().then_some(()));
        for pid in self.live_pids().collect::<Vec<_>>() {
            crate::util::signal(pid, libc::SIGKILL);
        }
    }

    /// PIDs in the namespace that are not zombies (this machine's PID 1 does
    /// not reap orphans, so zombies may linger harmlessly).
    fn live_pids(&self) -> impl Iterator<Item = i32> {
        self.pids()
            .into_iter()
            .filter(|p| !crate::util::is_zombie(*p))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all(Duration::from_secs(3));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// The LAN's subnet; every LAN lives in namespaces of its own, so LANs of
/// tests running side by side never see each other.
pub const LAN_PREFIX: [u8; 3] = [10, 77, 0];

/// An Ethernet segment: a bridge in a namespace of its own, with hosts
/// attached by veth pairs.
#[derive(Debug)]
pub struct Lan {
    bridge: Netns,
    hosts: u8,
}

/// One namespace attached to a [`Lan`].
#[derive(Debug)]
pub struct LanPort {
    /// The namespace; its interface on the LAN is `eth0`.
    pub ns: Netns,
    /// The address it has (or gets when it wakes), in `10.77.0.0/24`.
    pub ip: Ipv4Addr,
    /// Its MAC address, `52:54:00:77:00:NN`.
    pub mac: String,
}

impl Lan {
    /// Creates the bridge namespace with `br0` up.
    pub fn new() -> Result<Self> {
        let bridge = Netns::new("lan")?;
        bridge.run(&["ip", "link", "add", "br0", "type", "bridge"])?;
        bridge.run(&["ip", "link", "set", "br0", "up"])?;
        Ok(Self { bridge, hosts: 0 })
    }

    /// The subnet's broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::new(LAN_PREFIX[0], LAN_PREFIX[1], LAN_PREFIX[2], 255)
    }

    /// Attaches a new namespace. With `addressed`, `eth0` gets its IP now;
    /// otherwise the link is up with no address (a sleeping host).
    pub fn attach(&mut self, prefix: &str, addressed: bool) -> Result<LanPort> {
        self.hosts += 1;
        let n = self.hosts;
        if n > 250 {
            bail!("a test LAN holds at most 250 hosts");
        }
        let ns = Netns::new(prefix)?;
        let mac = format!("52:54:00:77:00:{n:02x}");
        let peer = format!("p{n}");
        run(Command::new("ip").args([
            "-n",
            ns.name(),
            "link",
            "add",
            "eth0",
            "address",
            &mac,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            self.bridge.name(),
        ]))?;
        self.bridge
            .run(&["ip", "link", "set", &peer, "master", "br0", "up"])?;
        ns.run(&["ip", "link", "set", "eth0", "up"])?;
        let port = LanPort {
            ns,
            ip: Ipv4Addr::new(LAN_PREFIX[0], LAN_PREFIX[1], LAN_PREFIX[2], n),
            mac,
        };
        if addressed {
            port.set_addressed(true)?;
        }
        Ok(port)
    }
}

impl LanPort {
    /// Gives `eth0` its address (awake) or takes it away (asleep).
    pub fn set_addressed(&self, on: bool) -> Result<()> {
        let cidr = format!("{}/24", self.ip);
        let verb = if on { "add" } else { "del" };
        self.ns
            .run(&["ip", "addr", verb, &cidr, "brd", "+", "dev", "eth0"])?;
        Ok(())
    }
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub fn run(c: &mut Command) -> Result<String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

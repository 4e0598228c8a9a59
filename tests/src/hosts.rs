//! VM hosts on a LAN: each a network namespace with its own libvirtd,
//! reachable as `qemu+ssh://` through its own sshd (key-only, host key
//! pinned in a known_hosts file), and able to sleep: no address and no
//! sshd until a Wake-on-LAN magic packet for its MAC arrives. A napping
//! host ([`Lab::add_napping_host`]) also goes back to sleep: its own
//! powernapd sends it there once no domain has run for a while.
//!
//! Clients (Terraform, the launcher, `powerwake`) run in the lab's client
//! namespace, [`Lab::client`], which sits on the same LAN.

use crate::libvirtd::{Extra, Libvirtd};
use crate::netns::{run, Lan, LanPort, Netns};
use crate::util;
use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A LAN with a client namespace and any number of VM hosts.
#[derive(Debug)]
pub struct Lab {
    // Hosts go first: their daemons must stop before the LAN goes away.
    hosts: Vec<VmHost>,
    client: LanPort,
    lan: Lan,
    dir: PathBuf,
}

/// One VM host of a [`Lab`].
#[derive(Debug)]
pub struct VmHost {
    /// A short name, also the folder of its keys.
    pub name: String,
    /// The address it has when awake.
    pub ip: Ipv4Addr,
    /// The MAC address its Wake-on-LAN listens for.
    pub mac: String,
    daemon: Libvirtd,
    dir: PathBuf,
    /// A napping host's hold: while its process runs, the host's powernapd
    /// sees activity and the host does not nap.
    hold: Option<Hold>,
}

/// A process whose command line a napping host's powernapd watches for
/// (`monitor process`): the bed runs it to keep the host awake while it
/// looks at it, and ends it to let the host nap.
#[derive(Debug)]
struct Hold {
    tag: String,
    child: Mutex<Option<Child>>,
}

impl Hold {
    fn new(tag: String) -> Self {
        Self {
            tag,
            child: Mutex::new(None),
        }
    }

    /// The powernapd `monitor process` pattern that sees this hold.
    fn pattern(&self) -> String {
        format!("^{}( |$)", self.tag)
    }

    fn take(&self) -> Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if child.is_none() {
            *child = Some(
                Command::new("bash")
                    .args(["-c", &format!("exec -a {} sleep infinity", self.tag)])
                    .spawn()
                    .context("starting the bed's nap hold")?,
            );
        }
        Ok(())
    }

    fn release(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

impl Lab {
    /// A LAN with an addressed client namespace and a client key pair.
    pub fn new() -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/kvmbe-lab-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        keygen(&dir.join("id_ed25519"))?;
        std::fs::write(dir.join("known_hosts"), "")?;
        let mut lan = Lan::new()?;
        let client = lan.attach("client", true)?;
        let lab = Self {
            hosts: Vec::new(),
            client,
            lan,
            dir,
        };
        std::fs::write(
            lab.dir.join("ssh_config"),
            format!(
                "Host *\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n",
                lab.keyfile().display(),
                lab.known_hosts().display()
            ),
        )?;
        // libvirt's `ssh` transport runs `ssh` from PATH with no `-F`: this
        // wrapper pins it to the lab's key and known_hosts.
        let wrapper = lab.dir.join("ssh");
        crate::util::write_executable(
            &wrapper,
            &format!(
                "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
                lab.dir.join("ssh_config").display()
            ),
        )?;
        Ok(lab)
    }

    /// The client side's namespace: run Terraform, `virsh`, `powerwake` here.
    pub fn client(&self) -> &Netns {
        &self.client.ns
    }

    /// The client's address on the LAN.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.client.ip
    }

    /// The LAN's broadcast address (for Wake-on-LAN).
    pub fn broadcast(&self) -> Ipv4Addr {
        self.lan.broadcast()
    }

    /// The client's private key, authorized on every host.
    pub fn keyfile(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// A known_hosts file pinning every host's key by its address.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// An `ssh -F` config using the lab's key and known_hosts, strictly.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// A folder holding an `ssh` that uses [`Self::ssh_config`]; put it
    /// first on PATH for programs that run `ssh` themselves.
    pub fn ssh_path_dir(&self) -> &Path {
        &self.dir
    }

    /// A `qemu+ssh://` URI for `host` that verifies its key against the
    /// lab's known_hosts (libvirt's libssh transport does the checking).
    pub fn ssh_uri(&self, host: &VmHost) -> String {
        format!(
            "qemu+libssh://root@{}/system?keyfile={}&known_hosts={}&sshauth=privkey",
            host.ip,
            self.keyfile().display(),
            self.known_hosts().display()
        )
    }

    /// Adds a VM host. An `awake` host has its address and sshd now; a
    /// sleeping one gets them within a second of a magic packet.
    pub fn add_host(&mut self, name: &str, awake: bool) -> Result<&VmHost> {
        self.add_host_with(name, awake, None)
    }

    /// Adds a VM host that goes back to sleep: its powernapd (`monitor
    /// libvirt`, `monitor powerwake`) puts it to sleep once no domain has
    /// run for `idle`, and a magic packet wakes it again, as often as
    /// needed. Asleep, it has no address, no sshd and no powernapd; its
    /// libvirtd keeps its domains, as a suspended machine would.
    ///
    /// One started `awake` is held awake (see [`VmHost::hold_awake`]) until
    /// the caller lets it nap with [`VmHost::let_nap`], so a short `idle`
    /// cannot put it to sleep before the caller has seen it up.
    pub fn add_napping_host(&mut self, name: &str, awake: bool, idle: Duration) -> Result<&VmHost> {
        self.add_host_with(name, awake, Some(idle))
    }

    fn add_host_with(&mut self, name: &str, awake: bool, nap: Option<Duration>) -> Result<&VmHost> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let hostkey = dir.join("ssh_host_ed25519_key");
        keygen(&hostkey)?;
        std::fs::copy(self.dir.join("id_ed25519.pub"), dir.join("authorized_keys"))?;
        // A napping host's sleeper gives it its address, even at the start.
        let port = self.lan.attach("host", awake && nap.is_none())?;
        let pubkey = std::fs::read_to_string(hostkey.with_extension("pub"))?;
        let mut kh = std::fs::read_to_string(self.known_hosts())?;
        let mut fields = pubkey.split_whitespace();
        kh += &format!(
            "{} {} {}\n",
            port.ip,
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default()
        );
        std::fs::write(self.known_hosts(), kh)?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port 22\nListenAddress 0.0.0.0\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\n",
                hostkey.display(),
                dir.join("sshd.pid").display(),
                dir.join("authorized_keys").display()
            ),
        )?;
        let sshd = format!(
            "/usr/sbin/sshd -f {} -E {}",
            config.display(),
            dir.join("sshd.log").display()
        );
        let sleeper = util::bin_dir().join("bed-sleeper");
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let hold = nap.map(|_| Hold::new(format!("kvmbe-nap-hold-{}-{n}", std::process::id())));
        if let Some(hold) = hold.as_ref().filter(|_| awake) {
            hold.take()?;
        }
        let mut extra = Extra::default();
        extra.before.push("mkdir -p /run/sshd".into());
        match nap {
            None if awake => extra.before.push(sshd),
            None => extra.before.push(format!(
                "{} --dev eth0 --mac {} --ip {}/24 -- {} 2>{} &",
                sleeper.display(),
                port.mac,
                port.ip,
                sshd,
                dir.join("wake.log").display()
            )),
            Some(idle) => {
                let d = dir.display();
                // The idle action asks the sleeper to put the host to sleep.
                std::fs::write(
                    dir.join("powernapd.conf"),
                    format!(
                        "interval 1\nmonitor libvirt\nmonitor powerwake\nmonitor process {}\n\
                         action \"kill -USR1 $(cat {d}/sleeper.pid)\" after {}ms\n",
                        hold.as_ref().map(Hold::pattern).unwrap_or_default(),
                        idle.as_millis()
                    ),
                )?;
                std::fs::write(
                    dir.join("wake.sh"),
                    format!(
                        "#!/bin/sh\nset -e\n{sshd}\n{} -c {d}/powernapd.conf >>{d}/powernapd.log 2>&1 &\n\
                         echo $! >{d}/powernapd.pid\n",
                        util::bin_dir().join("powernapd").display()
                    ),
                )?;
                extra.before.push(format!(
                    "{} --dev eth0 --mac {} --ip {}/24{} --pidfile {d}/sleeper.pid \
                     --stop {d}/sshd.pid --stop {d}/powernapd.pid -- sh {d}/wake.sh 2>>{d}/wake.log &",
                    sleeper.display(),
                    port.mac,
                    port.ip,
                    if awake { " --awake" } else { "" },
                ));
            }
        }
        let LanPort { ns, ip, mac } = port;
        let daemon = Libvirtd::start_in(ns, extra)?;
        self.hosts.push(VmHost {
            name: name.to_string(),
            ip,
            mac,
            daemon,
            dir,
            hold,
        });
        let host = self.hosts.last().expect("just pushed");
        if awake {
            host.wait_awake(Duration::from_secs(10))?;
        }
        Ok(host)
    }

    /// The hosts added so far.
    pub fn hosts(&self) -> &[VmHost] {
        &self.hosts
    }
}

impl VmHost {
    /// Keeps a napping host awake from now on, as activity its powernapd
    /// sees would: take it before waking the host to look at it.
    pub fn hold_awake(&self) -> Result<()> {
        match &self.hold {
            Some(hold) => hold.take(),
            None => anyhow::bail!("host {} does not nap", self.name),
        }
    }

    /// Lets a napping host nap again: its powernapd's idle time starts
    /// counting from the next check.
    pub fn let_nap(&self) {
        if let Some(hold) = &self.hold {
            hold.release();
        }
    }

    /// The host's libvirtd, reachable directly from the root namespace
    /// (for checks that must not wake it).
    pub fn daemon(&self) -> &Libvirtd {
        &self.daemon
    }

    /// True once the host has its address (it is awake).
    pub fn is_awake(&self) -> bool {
        self.daemon
            .netns()
            .run(&["ip", "-4", "-br", "addr", "show", "eth0"])
            .map(|s| s.contains(&self.ip.to_string()))
            .unwrap_or(false)
    }

    /// Waits until the host has gone to sleep (no address); returns how
    /// long that took.
    pub fn wait_asleep(&self, limit: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        util::poll_until(limit, || (!self.is_awake()).then(|| t0.elapsed())).with_context(|| {
            format!(
                "host {} did not go to sleep within {limit:?}; its powernapd said:\n{}",
                self.name,
                std::fs::read_to_string(self.dir.join("powernapd.log")).unwrap_or_default()
            )
        })
    }

    /// Waits until the host is awake and its sshd answers.
    pub fn wait_awake(&self, limit: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        util::poll_until(limit, || {
            (self.is_awake() && self.dir.join("sshd.pid").exists()).then(|| t0.elapsed())
        })
        .with_context(|| {
            format!(
                "host {} did not wake within {limit:?}: {}",
                self.name,
                std::fs::read_to_string(self.dir.join("wake.log")).unwrap_or_default()
            )
        })
    }
}

fn keygen(path: &Path) -> Result<()> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kvmbe-test", "-f"])
        .arg(path))
    .with_context(|| format!("making an SSH key at {}", path.display()))?;
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.hosts.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

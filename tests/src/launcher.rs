//! Running `buildkite-agent-launcher` on the test bed: an agent template
//! made of the tiny guest, a config file pointing at the stand-in and
//! the bed's hosts, the built binary started and stopped by the test.

use crate::util::{OutputWithin, COMMAND_LIMIT};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kvmhost::libvirt::domain_xml::{
    ConsoleDef, DomainDef, DomainKind, InterfaceDef, InterfaceSource, OsDef,
};
use kvmhost::libvirt::template::TemplateSpec;
use kvmhost::libvirt::volume::{VolumeFormat, VolumeSpec};
use kvmhost::libvirt::Host;

use crate::buildkite::{Config, StandIn};
use crate::guest::TinyGuest;
use crate::libvirtd::{Libvirtd, NETWORK, POOL};
use crate::netns::Netns;
use crate::util;

/// Defines template `name` on `host` from the tiny guest (seed variant,
/// 256 MiB, TCG), its serial console written to `<log_dir>/<vm>.serial.log`.
/// An empty `user_data` leaves the launcher's own script in charge.
pub fn define_agent_template(
    host: &Host,
    guest: &TinyGuest,
    name: &str,
    log_dir: &Path,
    user_data: &str,
) -> Result<()> {
    define_agent_template_sized(host, guest, name, log_dir, user_data, 256)
}

/// What most launcher tests start from: a namespaced libvirtd holding
/// the agent template `agent-template` (the tiny guest running
/// `user_data`), a connection to it, and a Buildkite stand-in with the
/// pipeline `app`. Fields drop in declaration order: the stand-in, the
/// connection, then the daemon.
pub struct Bed {
    /// The Buildkite stand-in.
    pub bk: StandIn,
    /// A connection to the daemon.
    pub host: Host,
    /// The daemon.
    pub d: Libvirtd,
    /// The guest the template boots.
    pub g: TinyGuest,
}

impl Bed {
    /// Starts the bed; `config` sets up the stand-in.
    pub fn start(config: Config, user_data: &str) -> Result<Bed> {
        let g = TinyGuest::ensure()?;
        let d = Libvirtd::start()?;
        let host = Host::open(&d.uri())?;
        define_agent_template(&host, &g, "agent-template", d.dir(), user_data)?;
        let bk = StandIn::start(config)?;
        bk.add_pipeline("app")?;
        Ok(Bed { bk, host, d, g })
    }
}

/// As [`define_agent_template`], with `memory_mib` of memory (a guest
/// carrying the real agent in its initramfs needs about 512).
pub fn define_agent_template_sized(
    host: &Host,
    guest: &TinyGuest,
    name: &str,
    log_dir: &Path,
    user_data: &str,
    memory_mib: u64,
) -> Result<()> {
    let base = match host.volume(POOL, "agent-base.raw") {
        Ok(v) => v,
        Err(_) => host.create_volume(
            POOL,
            &VolumeSpec::new("agent-base.raw", 1 << 20, VolumeFormat::Raw),
        )?,
    };
    host.define_template(&TemplateSpec {
        domain: DomainDef {
            name: name.into(),
            kind: DomainKind::Qemu,
            memory_mib,
            vcpu: 1,
            os: OsDef {
                kernel: Some(guest.kernel.display().to_string()),
                initrd: Some(guest.initrd.display().to_string()),
                cmdline: Some(guest.cmdline.clone()),
                ..Default::default()
            },
            interfaces: vec![InterfaceDef {
                source: InterfaceSource::Network(NETWORK.into()),
                mac: None,
                model: Some("virtio".into()),
            }],
            consoles: vec![ConsoleDef {
                kind: "file".into(),
                target_type: "serial".into(),
                target_port: 0,
                source_path: Some(log_dir.join("{{name}}.serial.log").display().to_string()),
                source_host: None,
                source_service: None,
                log_file: None,
            }],
            ..Default::default()
        },
        base_volume_key: base.key,
        pool: POOL.into(),
        user_data: user_data.into(),
        meta_data: None,
        network_config: None,
        ..Default::default()
    })?;
    Ok(())
}

/// Starts a stand-in whose socket lives in `ns`, so a launcher running
/// there reaches it as `http://127.0.0.1:PORT` (and, with `config.bind`
/// `0.0.0.0`, others reach it on the namespace's addresses).
pub fn standin_in(ns: &Netns, config: Config) -> Result<StandIn> {
    let path = format!("/var/run/netns/{}", ns.name());
    std::thread::scope(|s| {
        s.spawn(|| -> Result<StandIn> {
            let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only; the fd is open for the call.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            anyhow::ensure!(
                rc == 0,
                "setns into {path}: {}",
                std::io::Error::last_os_error()
            );
            StandIn::start(config)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the stand-in's thread panicked"))?
    })
}

/// The launcher binary as built.
pub fn binary() -> PathBuf {
    util::bin_dir().join("buildkite-agent-launcher")
}

/// A folder with a config file and token file for one launcher.
#[derive(Debug)]
pub struct LauncherDir {
    /// The folder (removed on drop).
    pub dir: tempfile::TempDir,
    /// Put first on PATH (e.g. [`crate::hosts::Lab::ssh_path_dir`], whose
    /// `ssh` pins the lab's keys for `qemu+ssh://`).
    pub path_first: Option<PathBuf>,
}

impl LauncherDir {
    /// Writes `token` to `token` (0600) and `config` to `launcher.toml`.
    pub fn new(config: &str, token: &str) -> Result<Self> {
        let dir = Self {
            dir: tempfile::tempdir()?,
            path_first: None,
        };
        dir.write_token("token", token)?;
        std::fs::write(dir.dir.path().join("launcher.toml"), config)?;
        Ok(dir)
    }

    /// Writes `token` on the first line of `name` in the folder, mode
    /// 0600: the launcher refuses token files others can read.
    pub fn write_token(&self, name: &str, token: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(f, "{token}")?;
        Ok(())
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("launcher.toml")
    }

    /// A command running the launcher with `args` then `--config FILE`,
    /// inside `ns` when given, with no BUILDKITE_* from the test's environment.
    pub fn command(&self, ns: Option<&Netns>, args: &[&str]) -> Command {
        let mut c = match ns {
            Some(ns) => ns.cmd(binary().to_str().expect("utf-8 path")),
            None => Command::new(binary()),
        };
        c.args(args).arg("--config").arg(self.config());
        if let Some(p) = &self.path_first {
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", p.display()));
        }
        for v in [
            "BUILDKITE_AGENT_ENDPOINT",
            "BUILDKITE_AGENT_TOKEN",
            "BUILDKITE_API_ENDPOINT",
            "BUILDKITE_API_TOKEN",
            "BUILDKITE_ORGANIZATION",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// Runs the launcher to completion.
    pub fn output(&self, ns: Option<&Netns>, args: &[&str]) -> Result<Output> {
        self.command(ns, args).output_within(COMMAND_LIMIT).context(
            "running buildkite-agent-launcher (build it first: cargo build --workspace --bins)",
        )
    }

    /// Starts the launcher in the background, its log in `launcher.log`.
    pub fn spawn(&self, ns: Option<&Netns>, args: &[&str]) -> Result<Running> {
        let log = self.dir.path().join("launcher.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = self
            .command(ns, args)
            .stdout(f.try_clone()?)
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .context("starting buildkite-agent-launcher")?;
        Ok(Running { child, log })
    }
}

/// A launcher running in the background; killed on drop.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Running {
    /// Its PID (the `ip netns exec` wrapper execs into it).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Asks `f` until it gives a value; fails the test with the launcher's
    /// log when `what` has not happened within `limit`.
    pub fn wait_for<T>(&self, limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
        util::wait_until(
            limit,
            what,
            || format!("the launcher said:\n{}", self.log_text()),
            f,
        )
    }

    /// Sends SIGTERM and waits up to `limit` for it to exit; returns its status.
    pub fn stop(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        util::signal(self.pid(), libc::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The stages of a job's start, in the order the launcher names them in
/// its last note on the job and in its log.
pub const STAGES: [&str; 5] = ["reserve", "wake", "token", "start", "agent"];

/// A job's start as the launcher's breakdown gives it: `VM on vmhost02
/// in 7.4 s: reserve 0.0 s, wake 5.1 s, token 0.0 s, start 0.4 s, agent 1.9 s`
/// (`warm VM on …` when a warm VM was handed the job, `saved slot VM on …`
/// when a saved slot's clone was).
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    /// How the VM started: `cold`, `warm` (its `start` is the hand-off)
    /// or `saved` (its `start` is the restore and the hand-off).
    pub kind: &'static str,
    /// The host the VM ran on.
    pub host: String,
    /// Seconds from the job seen to its agent taking it.
    pub total: f64,
    /// Seconds per stage, in order (a stage the start skipped is absent).
    pub stages: Vec<(String, f64)>,
}

impl Breakdown {
    /// Reads one breakdown; `None` for any other text.
    pub fn parse(line: &str) -> Option<Self> {
        let (kind, rest) = if let Some(rest) = line.strip_prefix("warm ") {
            ("warm", rest)
        } else if let Some(rest) = line.strip_prefix("saved slot ") {
            ("saved", rest)
        } else {
            ("cold", line)
        };
        let (head, spans) = rest.strip_prefix("VM on ")?.split_once(": ")?;
        let (host, total) = head.rsplit_once(" in ")?;
        let secs = |t: &str| t.strip_suffix(" s")?.parse::<f64>().ok();
        let stages = spans
            .split(", ")
            .map(|s| {
                let (name, t) = s.split_once(' ')?;
                Some((name.to_string(), secs(t)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Breakdown {
            kind,
            host: host.to_string(),
            total: secs(total)?,
            stages,
        })
    }

    /// The breakdown among a job's notes: the last note, when it is one.
    pub fn of_notes(notes: &[String]) -> Option<Self> {
        Self::parse(notes.last()?)
    }

    /// Seconds of stage `name`, if the start went through it.
    pub fn stage(&self, name: &str) -> Option<f64> {
        self.stages.iter().find(|(n, _)| n == name).map(|s| s.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breakdown_reads_back_and_other_notes_are_none() {
        let b = Breakdown::parse(
            "VM on vmhost02 in 7.4 s: reserve 0.0 s, wake 5.1 s, token 0.0 s, start 0.4 s, agent 1.9 s",
        )
        .unwrap();
        assert_eq!(b.host, "vmhost02");
        assert_eq!(b.kind, "cold");
        assert_eq!(b.total, 7.4);
        let w = Breakdown::parse("warm VM on h1 in 1.2 s: reserve 0.0 s, start 0.1 s").unwrap();
        assert_eq!(w.kind, "warm");
        let s =
            Breakdown::parse("saved slot VM on h1 in 1.9 s: reserve 0.0 s, start 0.8 s").unwrap();
        assert_eq!((s.kind, s.host.as_str()), ("saved", "h1"));
        assert_eq!((w.host.as_str(), w.stage("start")), ("h1", Some(0.1)));
        assert_eq!(b.stage("wake"), Some(5.1));
        assert_eq!(
            b.stages.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            STAGES
        );
        assert_eq!(Breakdown::parse("booting linux-1 on vmhost02"), None);
        assert_eq!(
            Breakdown::of_notes(&["VM on h in 1.0 s: wake x s".to_string()]),
            None
        );
    }
}

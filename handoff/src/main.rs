//! `kvmbe-handoff`: runs in a warm agent VM, waits on the hand-off
//! channel for a job, makes the VM the job's and becomes its agent.

/// Writes a line to stderr. In a VM without a serial port the console
/// cannot be written; the line is lost instead of stopping the program
/// (`eprintln!` panics when the write fails).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod guest;

use std::ffi::OsString;
use std::fmt;
use std::io::BufReader;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use handoff::{receive, reply_error, reply_started, ReceiveError};

const USAGE: &str =
    "usage: kvmbe-handoff [--port DEVICE] [--agent PATH] [--renew-dhcp COMMAND] [--no-warm-up] [-- AGENT-ARGS...]

Runs AGENT --version once (unless --no-warm-up), so the agent's program is
in memory when a job comes, then waits on the virtio-serial port
org.kvmbe.handoff for a job, then sets the
clock and host name, writes a fresh /etc/machine-id, runs COMMAND (with /bin/sh -c) when the launcher asks
for a DHCP renewal, and execs
  AGENT start --acquire-job JOB AGENT-ARGS...
with the job's token in BUILDKITE_AGENT_TOKEN (AGENT: buildkite-agent).";

struct Args {
    port: Option<PathBuf>,
    agent: OsString,
    renew_dhcp: Option<String>,
    warm_up: bool,
    agent_args: Vec<OsString>,
}

/// Why the command line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ArgsError {
    /// An option came last, without its value.
    MissingValue(&'static str),
    /// The `--renew-dhcp` command is not UTF-8.
    RenewDhcpNotUtf8,
    /// An argument that is no option.
    Unknown(OsString),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::MissingValue(name) => write!(f, "{name} needs a value"),
            ArgsError::RenewDhcpNotUtf8 => f.write_str("--renew-dhcp: not UTF-8"),
            ArgsError::Unknown(arg) => write!(f, "unknown argument {arg:?}"),
        }
    }
}

impl std::error::Error for ArgsError {}

fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Args, ArgsError> {
    let mut out = Args {
        port: None,
        agent: "buildkite-agent".into(),
        renew_dhcp: None,
        warm_up: true,
        agent_args: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &'static str| args.next().ok_or(ArgsError::MissingValue(name));
        match arg.to_str() {
            Some("--port") => out.port = Some(value("--port")?.into()),
            Some("--agent") => out.agent = value("--agent")?,
            Some("--renew-dhcp") => {
                out.renew_dhcp = Some(
                    value("--renew-dhcp")?
                        .into_string()
                        .map_err(|_| ArgsError::RenewDhcpNotUtf8)?,
                )
            }
            Some("--no-warm-up") => out.warm_up = false,
            Some("--") => {
                out.agent_args.extend(args);
                break;
            }
            _ => return Err(ArgsError::Unknown(arg)),
        }
    }
    Ok(out)
}

/// Whether `agent` names an executable file, directly or through PATH,
/// so a missing agent is found before the VM waits for a job, not after
/// it took one.
fn find_agent(agent: &OsString) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    let path = Path::new(agent);
    if path.components().count() > 1 {
        return runnable(path).then(|| path.to_owned());
    }
    let dirs = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&dirs)
        .map(|d| d.join(path))
        .find(|p| runnable(p))
}

/// The longest a warm-up may take before it is stopped.
const WARM_UP_LIMIT: Duration = Duration::from_secs(60);

/// Runs `agent --version` once, its output dropped, and says how long it
/// took. The first run of a program reads it in (from disk on a real
/// image; under emulation it is also translated), which a job would
/// otherwise wait for: here about 1 s of the agent's start, against
/// 0.15 s for the runs after it. A saved slot keeps what was read in its
/// memory. A failed or stuck warm-up is said and the wait goes on.
fn warm_up(agent: &Path) {
    let t0 = Instant::now();
    let mut child = match Command::new(agent)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            say!("kvmbe-handoff: warming up {}: {e}", agent.display());
            return;
        }
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                say!(
                    "kvmbe-handoff: warmed up {} in {:.2} s",
                    agent.display(),
                    t0.elapsed().as_secs_f64()
                );
                return;
            }
            Ok(Some(status)) => {
                say!(
                    "kvmbe-handoff: warming up {}: `--version` failed ({status})",
                    agent.display()
                );
                return;
            }
            Ok(None) if t0.elapsed() < WARM_UP_LIMIT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                say!(
                    "kvmbe-handoff: warming up {}: `--version` still ran after {} s; stopped it",
                    agent.display(),
                    WARM_UP_LIMIT.as_secs()
                );
                return;
            }
            Err(e) => {
                say!("kvmbe-handoff: warming up {}: {e}", agent.display());
                return;
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            say!("kvmbe-handoff: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(agent) = find_agent(&args.agent) else {
        say!(
            "kvmbe-handoff: the agent {:?} is not an executable file (nor found in PATH): give its path with --agent",
            args.agent
        );
        return ExitCode::from(2);
    };
    if args.warm_up {
        warm_up(&agent);
    }
    let port = match args.port.clone().map(Ok).unwrap_or_else(guest::port::find) {
        Ok(p) => p,
        Err(e) => {
            say!("kvmbe-handoff: {e}");
            return ExitCode::from(2);
        }
    };
    let file = match guest::port::open(&port) {
        Ok(f) => f,
        Err(e) => {
            say!("kvmbe-handoff: opening {}: {e}", port.display());
            return ExitCode::from(2);
        }
    };
    say!("kvmbe-handoff: waiting on {}", port.display());
    loop {
        if let Err(e) = guest::port::wait_for_host(&file) {
            say!("kvmbe-handoff: waiting on {}: {e}", port.display());
            return ExitCode::from(1);
        }
        let mut conn = BufReader::new(&file);
        let msg = match receive(&mut conn, guest::apply::sync) {
            Ok(msg) => msg,
            Err(ReceiveError::Closed) => continue,
            Err(e) => {
                say!("kvmbe-handoff: {e}");
                return ExitCode::from(1);
            }
        };
        if let Err(why) = guest::apply::apply(&msg, args.renew_dhcp.as_deref()) {
            say!("kvmbe-handoff: job {}: {why}", msg.job);
            let _ = reply_error(conn.get_mut(), &why.to_string());
            return ExitCode::from(1);
        }
        say!(
            "kvmbe-handoff: job {} as {}: starting {}",
            msg.job,
            msg.hostname,
            agent.display()
        );
        if let Err(e) = reply_started(conn.get_mut()) {
            // The launcher will not count on this VM: no agent either.
            say!("kvmbe-handoff: job {}: answering started: {e}", msg.job);
            return ExitCode::from(1);
        }
        let err = Command::new(&agent)
            .arg("start")
            .arg("--acquire-job")
            .arg(&msg.job)
            .args(&args.agent_args)
            .env("BUILDKITE_AGENT_TOKEN", &msg.token)
            .exec();
        say!(
            "kvmbe-handoff: job {}: starting {}: {err}",
            msg.job,
            agent.display()
        );
        return ExitCode::from(1);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(OsString::from)).map_err(|e| e.to_string())
    }

    #[test]
    fn arguments_after_the_double_dash_go_to_the_agent() {
        let a = args(&[
            "--port",
            "/dev/vport1p2",
            "--agent",
            "/usr/bin/buildkite-agent",
            "--renew-dhcp",
            "kill -USR1 1",
            "--",
            "--tags",
            "queue=linux",
            "--port",
        ])
        .unwrap();
        assert_eq!(a.port.as_deref(), Some(Path::new("/dev/vport1p2")));
        assert_eq!(a.agent, "/usr/bin/buildkite-agent");
        assert_eq!(a.renew_dhcp.as_deref(), Some("kill -USR1 1"));
        assert_eq!(a.agent_args, ["--tags", "queue=linux", "--port"]);
        assert!(a.warm_up);
        let d = args(&[]).unwrap();
        assert_eq!(d.agent, "buildkite-agent");
        assert!(d.port.is_none() && d.renew_dhcp.is_none() && d.agent_args.is_empty());
        assert!(!args(&["--no-warm-up"]).unwrap().warm_up);
    }

    #[test]
    fn bad_arguments_are_named() {
        assert_eq!(args(&["--port"]).err().unwrap(), "--port needs a value");
        assert_eq!(
            args(&["--tags", "x"]).err().unwrap(),
            "unknown argument \"--tags\""
        );
    }

    #[test]
    fn an_agent_is_found_by_path_or_in_path() {
        assert_eq!(find_agent(&"/bin/sh".into()), Some("/bin/sh".into()));
        assert!(find_agent(&"sh".into()).is_some());
        assert!(find_agent(&"/nonexistent/buildkite-agent".into()).is_none());
        assert!(find_agent(&"/etc/passwd".into()).is_none());
    }
}

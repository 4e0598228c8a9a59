//! The FreeBSD agent image's rc script (`packer/build-agents/
//! freebsd-agent-image/files/buildkite_agent`) is valid `sh`, follows the
//! rc.subr conventions (`load_rc_config`, `run_rc_command`, `: ${x:=...}`
//! defaults a user overrides in rc.conf), and starts the agent with its
//! token from a root-only env file, never on the command line.
//!
//! FreeBSD's `/etc/rc.subr` is not on this machine: a stand-in with the
//! same functions runs the script and prints what rc.subr would act on.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testbed::util::workspace_root;

fn script() -> PathBuf {
    workspace_root().join("packer/build-agents/freebsd-agent-image/files/buildkite_agent")
}

/// What rc.subr does with the script's variables, as far as a test can
/// see it: `load_rc_config` reads `$RC_CONF`; `run_rc_command start` runs
/// `$start_precmd` and prints the command it would start.
const RC_SUBR: &str = r#"
err() { echo "err: $2" >&2; exit "$1"; }
load_rc_config() { [ -f "$RC_CONF" ] && . "$RC_CONF"; return 0; }
pw() { echo "$2:*:1001:1001::0:0:Buildkite:/home/$2:/bin/sh"; }
run_rc_command() {
	echo "name=$name"
	echo "rcvar=$rcvar"
	eval "echo enable=\$$rcvar"
	echo "pidfile=$pidfile"
	echo "command=$command"
	echo "command_args=$command_args"
	[ "$1" = start ] || return 0
	eval "$start_precmd" || exit 1
	echo "HOME=$HOME"
	env | grep '^BUILDKITE_' | sort
}
"#;

struct Rc {
    dir: tempfile::TempDir,
}

impl Rc {
    fn new() -> Rc {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(script()).unwrap();
        assert_eq!(
            text.matches(". /etc/rc.subr").count(),
            1,
            "the script sources /etc/rc.subr once"
        );
        let subr = dir.path().join("rc.subr");
        std::fs::write(&subr, RC_SUBR).unwrap();
        let text = text.replace(". /etc/rc.subr", &format!(". {}", subr.display()));
        std::fs::write(dir.path().join("buildkite_agent"), text).unwrap();
        Rc { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn env_file(&self, text: &str, mode: u32) -> PathBuf {
        let p = self.path("env");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn run(&self, rc_conf: &str, arg: &str) -> Output {
        std::fs::write(self.path("rc.conf"), rc_conf).unwrap();
        Command::new("sh")
            .arg(self.path("buildkite_agent"))
            .arg(arg)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("RC_CONF", self.path("rc.conf"))
            .output()
            .unwrap()
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn conf(env: &Path, more: &str) -> String {
    format!(
        "buildkite_agent_enable=\"YES\"\nbuildkite_agent_env_file=\"{}\"\n{more}",
        env.display()
    )
}

#[test]
fn the_rc_script_is_valid_sh() {
    for shell in ["sh", "bash"] {
        let out = Command::new(shell)
            .arg("-n")
            .arg(script())
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell} -n: {:?}", text(&out));
    }
    let mode = std::fs::metadata(script()).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "rc scripts are executable");
}

#[test]
fn defaults_follow_rc_subr_conventions_and_rc_conf_overrides_them() {
    let rc = Rc::new();
    let (out, err) = text(&rc.run("", "status"));
    assert!(out.contains("name=buildkite_agent\n"), "{out}{err}");
    assert!(out.contains("rcvar=buildkite_agent_enable\n"), "{out}");
    assert!(
        out.contains("enable=NO\n"),
        "off unless rc.conf says YES: {out}"
    );
    assert!(
        out.contains("pidfile=/var/run/buildkite_agent.pid\n"),
        "{out}"
    );
    assert!(out.contains("command=/usr/sbin/daemon\n"), "{out}");
    assert!(
        out.contains(" -u buildkite /usr/local/bin/buildkite-agent start --config /usr/local/etc/buildkite-agent/buildkite-agent.cfg"),
        "{out}"
    );

    let (out, _) = text(&rc.run(
        "buildkite_agent_enable=\"YES\"\nbuildkite_agent_user=\"ci\"\nbuildkite_agent_flags=\"--disconnect-after-job\"\n",
        "status",
    ));
    assert!(out.contains("enable=YES\n"), "{out}");
    assert!(
        out.contains(" -u ci /usr/local/bin/buildkite-agent start"),
        "{out}"
    );
    assert!(out.contains("--disconnect-after-job"), "{out}");
}

#[test]
fn start_takes_the_token_and_job_from_the_seeds_env_file_not_the_command_line() {
    let rc = Rc::new();
    let env = rc.env_file(
        "BUILDKITE_AGENT_TOKEN=secret-token-123\nBUILDKITE_AGENT_ACQUIRE_JOB=0190-job\nBUILDKITE_AGENT_TAGS=queue=freebsd\n",
        0o600,
    );
    let o = rc.run(&conf(&env, ""), "start");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("BUILDKITE_AGENT_TOKEN=secret-token-123\n"),
        "{out}"
    );
    assert!(
        out.contains("BUILDKITE_AGENT_ACQUIRE_JOB=0190-job\n"),
        "{out}"
    );
    assert!(
        out.contains("BUILDKITE_AGENT_TAGS=queue=freebsd\n"),
        "{out}"
    );
    assert!(out.contains("HOME=/home/buildkite\n"), "{out}");
    let args = out
        .lines()
        .find(|l| l.starts_with("command_args="))
        .unwrap();
    assert!(
        !args.contains("secret-token-123"),
        "token on the command line: {args}"
    );
}

#[test]
fn start_refuses_a_missing_readable_or_tokenless_env_file_saying_why() {
    let rc = Rc::new();
    let missing = rc.path("absent");
    let o = rc.run(&conf(&missing, ""), "start");
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("is missing: the VM's seed writes it"),
        "{:?}",
        text(&o)
    );

    let env = rc.env_file("BUILDKITE_AGENT_TOKEN=t\n", 0o644);
    let o = rc.run(&conf(&env, ""), "start");
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("must be owned by root with mode 0600"),
        "{:?}",
        text(&o)
    );

    let env = rc.env_file("BUILDKITE_AGENT_ACQUIRE_JOB=x\n", 0o600);
    let o = rc.run(&conf(&env, ""), "start");
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("sets no BUILDKITE_AGENT_TOKEN"),
        "{:?}",
        text(&o)
    );
}

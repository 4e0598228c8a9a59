//! Running actions, their recovery, and the warnings to logged-in users.

use crate::config::ActionSpec;
use crate::log;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where the seed keeps its action scripts.
pub const DEFAULT_ACTIONS_DIR: &str = "/etc/powernap/actions";

/// How an action runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// A seed-style script: run with `true`, and with `false` on recovery.
    Script(PathBuf),
    /// A shell command line, with an optional recovery command line.
    Shell {
        /// Run when idle long enough.
        command: String,
        /// Run when activity returns afterwards.
        recover: Option<String>,
    },
}

/// A configured action, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// As the config wrote it, for logs and warnings.
    pub name: String,
    /// How it runs.
    pub runner: Runner,
}

/// Why an action cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Its script in the actions folder may be changed by someone other
    /// than root.
    #[error("action {action}: {source}")]
    Untrusted {
        /// The action's command.
        action: String,
        /// Why the script is not trusted.
        source: crate::trust::TrustError,
    },
}

impl Action {
    /// A single word naming a script in `actions_dir` runs that script the
    /// seed's way; anything else is a shell command line. A script that
    /// someone other than root may change is refused.
    pub fn resolve(spec: &ActionSpec, actions_dir: &Path) -> Result<Self, ActionError> {
        let is_name = !spec.command.is_empty()
            && !spec
                .command
                .contains(|c: char| c.is_whitespace() || c == '/');
        let script = actions_dir.join(&spec.command);
        let runner = if is_name && spec.recover.is_none() && script.is_file() {
            // Checked here and run later by name: safe because the
            // folders up to `/` are checked too, so no one else can
            // put another file under that name in between.
            crate::trust::open_trusted(&script).map_err(|source| ActionError::Untrusted {
                action: spec.command.clone(),
                source,
            })?;
            Runner::Script(script)
        } else {
            Runner::Shell {
                command: spec.command.clone(),
                recover: spec.recover.clone(),
            }
        };
        Ok(Self {
            name: spec.command.clone(),
            runner,
        })
    }

    /// The command for the action itself (`None` never happens) or its
    /// recovery (`None` when there is nothing to run).
    pub fn command(&self, recovering: bool) -> Option<Command> {
        match (&self.runner, recovering) {
            (Runner::Script(p), _) => {
                let mut c = Command::new(p);
                c.arg(if recovering { "false" } else { "true" });
                Some(c)
            }
            (Runner::Shell { command, .. }, false) => Some(shell(command)),
            (Runner::Shell { recover, .. }, true) => recover.as_deref().map(shell),
        }
    }
}

fn shell(line: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.args(["-c", line]);
    c
}

/// Carries out actions, or only logs them with `dry_run`.
pub trait Executor {
    /// Runs action `a` (or its recovery).
    fn run(&mut self, a: &Action, recovering: bool);
    /// Warns users that `a` runs in `remaining`.
    fn warn(&mut self, a: &Action, remaining: Duration);
    /// Tells users `a` will not run after all.
    fn rescind(&mut self, a: &Action);
}

/// The real executor: runs commands and `wall`.
pub struct SystemExecutor {
    /// Only log what would be done.
    pub dry_run: bool,
}

impl Executor for SystemExecutor {
    fn run(&mut self, a: &Action, recovering: bool) {
        let what = if recovering { "recovery for" } else { "action" };
        let Some(mut cmd) = a.command(recovering) else {
            log::info(&format!(
                "activity is back; action {} has no recovery",
                a.name
            ));
            return;
        };
        if self.dry_run {
            log::info(&format!("dry run: would run {what} {}: {cmd:?}", a.name));
            return;
        }
        log::info(&format!("running {what} {}: {cmd:?}", a.name));
        cmd.stdin(Stdio::null())
            .env("POWERNAPD_PID", std::process::id().to_string());
        match cmd.status() {
            Ok(s) if s.success() => {}
            Ok(s) => log::error(&format!("{what} {} failed: {s}", a.name)),
            Err(e) => log::error(&format!("cannot run {what} {}: {e}", a.name)),
        }
    }

    fn warn(&mut self, a: &Action, remaining: Duration) {
        let msg = format!(
            "powernapd will perform the {} action in {} seconds due to system inactivity",
            a.name,
            remaining.as_secs()
        );
        log::warn(&msg);
        if !self.dry_run {
            wall(&msg);
        }
    }

    fn rescind(&mut self, a: &Action) {
        let msg = format!(
            "powernapd will no longer perform the {} action due to system activity",
            a.name
        );
        log::info(&msg);
        if !self.dry_run {
            wall(&msg);
        }
    }
}

/// Broadcasts `msg` to terminals with `wall`, when it is installed.
fn wall(msg: &str) {
    use std::io::Write;
    let child = Command::new("wall")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(mut c) => {
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(msg.as_bytes());
            }
            let _ = c.wait();
        }
        Err(e) => log::debug(&format!("no wall to warn users: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str, recover: Option<&str>) -> ActionSpec {
        ActionSpec {
            command: command.into(),
            after: Duration::from_secs(1),
            warn: None,
            recover: recover.map(String::from),
        }
    }

    #[test]
    fn a_script_in_the_actions_dir_runs_the_seed_way() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("poweroff"), "#!/bin/sh\n").unwrap();
        let a = Action::resolve(&spec("poweroff", None), dir.path()).unwrap();
        assert_eq!(a.runner, Runner::Script(dir.path().join("poweroff")));
        let args = |c: Command| {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(args(a.command(false).unwrap()), ["true"]);
        assert_eq!(args(a.command(true).unwrap()), ["false"]);
    }

    #[test]
    fn a_script_others_may_write_is_refused_not_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("poweroff");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o757)).unwrap();
        let e = Action::resolve(&spec("poweroff", None), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&script.display().to_string()), "{e}");
        assert!(e.contains("writable by others"), "{e}");
    }

    #[test]
    fn anything_else_is_a_shell_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = Action::resolve(&spec("poweroff", None), dir.path()).unwrap();
        assert!(a.command(true).is_none());
        let a = Action::resolve(&spec("touch /tmp/x", Some("rm /tmp/x")), dir.path()).unwrap();
        let c = a.command(true).unwrap();
        assert_eq!(c.get_program(), "/bin/sh");
        assert_eq!(c.get_args().nth(1).unwrap(), "rm /tmp/x");
    }

    #[test]
    fn running_a_shell_action_and_its_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("slept");
        let a = Action::resolve(
            &spec(
                &format!("touch {}", f.display()),
                Some(&format!("rm {}", f.display())),
            ),
            dir.path(),
        )
        .unwrap();
        let mut dry = SystemExecutor { dry_run: true };
        dry.run(&a, false);
        assert!(!f.exists());
        let mut ex = SystemExecutor { dry_run: false };
        ex.run(&a, false);
        assert!(f.exists());
        ex.run(&a, true);
        assert!(!f.exists());
    }
}

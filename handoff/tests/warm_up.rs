//! The warm-up: before it waits, `kvmbe-handoff` runs the agent once
//! with `--version`, unless told not to; a failing agent does not stop it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Writes an agent script into `dir` that appends its arguments to
/// `dir/calls` and exits with `status`.
fn fake_agent(dir: &Path, status: u8) -> std::path::PathBuf {
    let agent = dir.join("agent");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nexit {status}\n",
        dir.join("calls").display()
    );
    // Written by a child, so no thread of this process holds it open for
    // writing while another spawns it.
    let done = Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(&agent)
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait()
        })
        .expect("writing the fake agent");
    assert!(done.success());
    agent
}

/// Runs the program with a port that does not exist: it warms up (or
/// not), then ends with status 2 for the missing port.
fn run(agent: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmbe-handoff"))
        .arg("--agent")
        .arg(agent)
        .args(["--port", "/nonexistent/org.kvmbe.handoff"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("running kvmbe-handoff")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmbe-handoff-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_agent_runs_once_with_version_before_the_wait_unless_told_not_to() {
    let dir = temp_dir("warm");
    let agent = fake_agent(&dir, 0);
    let out = run(&agent, &["--", "--tags", "queue=x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
    assert_eq!(calls, "--version\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("kvmbe-handoff: warmed up {} in ", agent.display())),
        "{err}"
    );

    std::fs::remove_file(dir.join("calls")).unwrap();
    let out = run(&agent, &["--no-warm-up"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!dir.join("calls").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_warm_up_is_said_and_the_program_goes_on() {
    let dir = temp_dir("fail");
    let agent = fake_agent(&dir, 3);
    let out = run(&agent, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`--version` failed (exit status: 3)"), "{err}");
    // It went on to the port, which is missing here.
    assert!(err.contains("/nonexistent/org.kvmbe.handoff"), "{err}");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

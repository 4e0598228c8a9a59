//! The WinRM stand-in, proven against a real third-party client (pywinrm
//! from the test venv) over HTTP and HTTPS, before our communicator is
//! tested against it.

use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::winrm::{Config, Phase, Reboot, StandIn};

/// The pywinrm side: runs what the test names and prints the results as JSON.
const CLIENT: &str = r#"
import json, sys, time
import winrm
from winrm.exceptions import InvalidCredentialsError

url, user, password, transport = sys.argv[1:5]
def session(pw):
    # No message encryption: the stand-in, like Packer, does not seal.
    return winrm.Session(url, auth=(user, pw), transport=transport,
                         server_cert_validation="ignore",
                         message_encryption="never")
def res(r, started):
    return {"out": r.std_out.decode(), "err": r.std_err.decode(),
            "code": r.status_code, "secs": time.monotonic() - started}
s = session(password)
out = {}
t = time.monotonic(); out["echo"] = res(s.run_cmd("echo", ["hello world"]), t)
t = time.monotonic(); out["exit"] = res(s.run_cmd("exit /b 3"), t)
t = time.monotonic(); out["ps"] = res(s.run_ps('Write-Output "from powershell"\nexit 4'), t)
t = time.monotonic(); out["long"] = res(s.run_cmd("timeout /t 3 /nobreak && echo done"), t)
try:
    session(password + "-wrong").run_cmd("echo", ["never"])
    out["wrong_password"] = "accepted"
except InvalidCredentialsError as e:
    out["wrong_password"] = "refused: " + str(e)
print(json.dumps(out))
"#;

fn pywinrm(standin: &StandIn, password: &str, transport: &str) -> Value {
    python(CLIENT, standin, password, transport)
}

/// Runs `client` with the venv's Python against `standin`; its JSON.
fn python(client: &str, standin: &StandIn, password: &str, transport: &str) -> Value {
    let python = testbed::util::cache_dir().join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh --test",
        python.display()
    );
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(client)
        .arg(standin.url())
        .arg("vagrant")
        .arg(password)
        .arg(transport)
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pywinrm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pywinrm_runs_commands_through_the_standin(tls: bool, ntlm: bool) {
    let standin = StandIn::start(Config {
        tls,
        ntlm,
        receive_wait: Duration::from_millis(500),
        ..Config::default()
    })
    .unwrap();
    let started = Instant::now();
    let r = pywinrm(&standin, "vagrant", if ntlm { "ntlm" } else { "basic" });
    eprintln!(
        "pywinrm over {} with {}: {:.1}s, {} TimedOut faults",
        if tls { "HTTPS" } else { "HTTP" },
        if ntlm { "NTLM" } else { "Basic" },
        started.elapsed().as_secs_f64(),
        standin.timed_out_faults()
    );

    assert_eq!(r["echo"]["out"], "hello world\r\n");
    assert_eq!(r["echo"]["code"], 0);
    assert_eq!(r["exit"]["code"], 3);
    assert_eq!(r["ps"]["out"], "from powershell\r\n");
    assert_eq!(r["ps"]["code"], 4);
    assert_eq!(r["long"]["out"], "done\r\n");
    assert_eq!(r["long"]["code"], 0);
    assert!(r["long"]["secs"].as_f64().unwrap() >= 3.0, "{r}");
    // 3 s of silence against a 0.5 s wait: the client polled through faults.
    assert!(
        standin.timed_out_faults() >= 4,
        "{}",
        standin.timed_out_faults()
    );
    let wrong = r["wrong_password"].as_str().unwrap();
    assert!(wrong.starts_with("refused"), "{wrong}");
    assert!(standin.unauthorized() >= 1);

    let record = standin.commands();
    let lines: Vec<&str> = record.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], "echo hello world");
    assert_eq!(lines[1], "exit /b 3");
    assert!(
        lines[2].starts_with("powershell -encodedcommand "),
        "{}",
        lines[2]
    );
    assert_eq!(
        record[2].script.as_deref(),
        Some("Write-Output \"from powershell\"\nexit 4")
    );
    assert_eq!(lines[3], "timeout /t 3 /nobreak && echo done");
    let codes: Vec<Option<i32>> = record.iter().map(|c| c.exit_code).collect();
    assert_eq!(codes, [Some(0), Some(3), Some(4), Some(0)]);
    // pywinrm signals each command and deletes each shell when done.
    assert!(record.iter().all(|c| c.signalled), "{record:?}");
    assert_eq!(standin.open_shells(), 0);
}

#[test]
fn pywinrm_runs_cmd_and_powershell_over_http() {
    pywinrm_runs_commands_through_the_standin(false, false);
}

#[test]
fn pywinrm_runs_cmd_and_powershell_over_https() {
    pywinrm_runs_commands_through_the_standin(true, false);
}

#[test]
fn pywinrm_authenticates_with_ntlm_over_http() {
    pywinrm_runs_commands_through_the_standin(false, true);
}

#[test]
fn pywinrm_authenticates_with_ntlm_over_https() {
    pywinrm_runs_commands_through_the_standin(true, true);
}

/// A restart through pywinrm: Packer's restart command, a request while
/// the machine is down, the wait until it answers again, then Packer's
/// restart test, its abort and its check.
const RESTART: &str = r#"
import json, sys, time
import winrm

url, user, password = sys.argv[1:4]
s = winrm.Session(url, auth=(user, password), transport="basic",
                  server_cert_validation="ignore")
out = {}
r = s.run_cmd('shutdown /r /f /t 0 /c "packer restart"')
out["restart"] = r.status_code
r = s.run_cmd('shutdown /r /f /t 60 /c "packer restart test"')
out["while_stopping"] = [r.status_code, r.std_err.decode()]
time.sleep(1.5)
try:
    s.run_cmd("echo", ["up?"])
    out["while_down"] = "answered"
except Exception as e:
    out["while_down"] = type(e).__name__
started = time.monotonic()
while True:
    try:
        r = s.run_cmd("echo", ["back"])
        break
    except Exception:
        time.sleep(0.2)
out["back_after"] = time.monotonic() - started
out["back"] = r.std_out.decode()
out["test"] = s.run_cmd('shutdown /r /f /t 60 /c "packer restart test"').status_code
out["abort"] = s.run_cmd("shutdown /a").status_code
r = s.run_ps('echo ("{0} restarted." -f [System.Net.Dns]::GetHostName())')
out["check"] = [r.status_code, r.std_out.decode()]
print(json.dumps(out))
"#;

#[test]
fn pywinrm_sees_a_restart_drop_connections_and_come_back_over_https() {
    let standin = StandIn::start(Config {
        tls: true,
        receive_wait: Duration::from_millis(500),
        reboot: Reboot {
            grace: Duration::from_secs(1),
            down: Duration::from_secs(3),
        },
        hostname: "WIN-PEER".into(),
        ..Config::default()
    })
    .unwrap();
    let r = python(RESTART, &standin, "vagrant", "basic");
    eprintln!("pywinrm through a restart: {r}");
    assert_eq!(r["restart"], 0);
    assert_eq!(r["while_stopping"][0], 1115, "{r}");
    assert!(
        r["while_stopping"][1]
            .as_str()
            .unwrap()
            .contains("shutdown is in progress"),
        "{r}"
    );
    assert!(
        r["while_down"].as_str().unwrap() != "answered",
        "a request was answered while the machine was down: {r}"
    );
    assert!(r["back_after"].as_f64().unwrap() > 0.5, "{r}");
    assert_eq!(r["back"], "back\r\n");
    assert_eq!(r["test"], 0);
    assert_eq!(r["abort"], 0);
    assert_eq!(r["check"][0], 0);
    assert_eq!(r["check"][1], "WIN-PEER restarted.\r\n");
    assert!(standin.dropped() >= 2, "{}", standin.dropped());
    assert_eq!(standin.phase(), (Phase::Up, 1));
    let lines: Vec<String> = standin.commands().iter().map(|c| c.line.clone()).collect();
    assert_eq!(
        lines.iter().filter(|l| l.as_str() == "echo up?").count(),
        0,
        "{lines:?}"
    );
}

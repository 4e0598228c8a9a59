//! The WinRM stand-in, proven against a real third-party client (pywinrm
//! from the test venv) over HTTP and HTTPS, before our communicator is
//! tested against it.

use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::winrm::{Config, StandIn};

/// The pywinrm side: runs what the test names and prints the results as JSON.
const CLIENT: &str = r#"
import json, sys, time
import winrm
from winrm.exceptions import InvalidCredentialsError

url, user, password = sys.argv[1:4]
def session(pw):
    return winrm.Session(url, auth=(user, pw), transport="basic",
                         server_cert_validation="ignore")
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

fn pywinrm(standin: &StandIn, password: &str) -> Value {
    let python = testbed::util::cache_dir().join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh --test",
        python.display()
    );
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(CLIENT)
        .arg(standin.url())
        .arg("vagrant")
        .arg(password)
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

fn pywinrm_runs_commands_through_the_standin(tls: bool) {
    let standin = StandIn::start(Config {
        tls,
        receive_wait: Duration::from_millis(500),
        ..Config::default()
    })
    .unwrap();
    let started = Instant::now();
    let r = pywinrm(&standin, "vagrant");
    eprintln!(
        "pywinrm over {}: {:.1}s, {} TimedOut faults",
        if tls { "HTTPS" } else { "HTTP" },
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
    pywinrm_runs_commands_through_the_standin(false);
}

#[test]
fn pywinrm_runs_cmd_and_powershell_over_https() {
    pywinrm_runs_commands_through_the_standin(true);
}

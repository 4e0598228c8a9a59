//! The WinRM stand-in, proven against Packer's own WinRM client code:
//! `winrm-client` (tests/peers/winrm-client, built by `scripts/setup.sh
//! --test`) drives packer-plugin-sdk's communicator/winrm (masterzen/winrm
//! and winrmcp underneath, as Packer 1.9.4 has them) over HTTPS: a command
//! with output and an exit code, a file upload, a folder upload, a
//! download, and a long command terminated while it runs.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use testbed::winrm::{Config, StandIn};

const PASSWORD: &str = "Go-cl1ent";

/// A payload that is not text: every byte value, in no simple order.
fn payload(len: u32, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Runs `winrm-client` against `standin` with `steps`; one JSON value a step.
fn winrm_client(standin: &StandIn, steps: &[&str]) -> Vec<Value> {
    winrm_client_with(
        standin,
        &["-password", PASSWORD, "-https", "-insecure"],
        steps,
    )
}

/// Runs `winrm-client` with `flags` (the password among them) and `steps`.
fn winrm_client_with(standin: &StandIn, flags: &[&str], steps: &[&str]) -> Vec<Value> {
    let program = testbed::peers::winrm_client().unwrap();
    let port = standin.addr().port().to_string();
    let out = Command::new(program)
        .args(["-host", "127.0.0.1", "-port", &port, "-user", "vagrant"])
        .args(flags)
        .args(steps)
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "winrm-client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn packers_winrm_client_runs_uploads_downloads_and_cancels_through_the_standin() {
    let standin = StandIn::start(Config {
        tls: true,
        password: PASSWORD.into(),
        ..Config::default()
    })
    .unwrap();
    let local = tempfile::tempdir().unwrap();
    let big = payload(400_000, 7);
    write(&local.path().join("payload.bin"), &big);
    let a = payload(3_000, 8);
    write(&local.path().join("tree/a.bin"), &a);
    write(&local.path().join("tree/sub/b.txt"), b"one\r\ntwo\r\n");
    let report = payload(120_000, 9);
    write(&standin.host_path(r"C:\data\report.bin").unwrap(), &report);
    let fetched = local.path().join("report.bin");
    let l = |p: &str| local.path().join(p).display().to_string();

    let steps = winrm_client(
        &standin,
        &[
            "start",
            "echo from packer's client && exit /b 7",
            "upload",
            &l("payload.bin"),
            r"C:\Windows\Temp\payload.bin",
            "uploaddir",
            &l("tree"),
            r"C:\dest",
            "download",
            r"C:\data\report.bin",
            &fetched.display().to_string(),
            "cancel",
            "timeout /t 60 /nobreak",
            "2",
        ],
    );
    eprintln!("{steps:#?}");
    let record = standin.commands();
    for c in &record {
        let s = c.script.as_deref().unwrap_or(&c.line);
        eprintln!("{:?} {}", c.exit_code, &s[..s.len().min(160)]);
    }
    assert_eq!(steps.len(), 5, "{steps:#?}");
    for s in &steps {
        assert!(s.get("error").is_none(), "{s}");
    }
    assert_eq!(steps[0]["stdout"], "from packer's client\r\n");
    assert_eq!(steps[0]["exit"], 7);

    // The files, byte for byte (a folder without a trailing slash goes
    // into the destination under its own name, as Packer's UploadDir does).
    let read = |p: &str| std::fs::read(standin.host_path(p).unwrap()).unwrap();
    assert!(
        read(r"C:\Windows\Temp\payload.bin") == big,
        "payload.bin differs"
    );
    assert!(read(r"C:\dest\tree\a.bin") == a, "tree/a.bin differs");
    assert_eq!(read(r"C:\dest\tree\sub\b.txt"), b"one\r\ntwo\r\n");
    assert!(
        std::fs::read(&fetched).unwrap() == report,
        "the download differs"
    );
    let secs = steps[4]["secs"].as_f64().unwrap();
    assert!((2.0..30.0).contains(&secs), "{secs}");

    // The record, in order: the command, the uploads (chunks appended to
    // a temporary file, then the restore script), the read-back, and the
    // long command, terminated without an exit code.
    assert_eq!(record[0].line, "echo from packer's client && exit /b 7");
    assert_eq!(record[0].exit_code, Some(7));
    let restores: Vec<usize> = record
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.script
                .as_deref()
                .is_some_and(|s| s.contains("FromBase64String"))
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(restores.len(), 3, "one restore a file");
    let read_back = record
        .iter()
        .position(|c| {
            c.script
                .as_deref()
                .is_some_and(|s| s.contains("ReadAllBytes") && s.contains("report.bin"))
        })
        .expect("the download's read-back");
    assert!(restores.iter().all(|&r| r < read_back));
    let last = record.last().unwrap();
    assert_eq!(last.line, "timeout /t 60 /nobreak");
    assert!(last.signalled && last.exit_code.is_none(), "{last:?}");
    assert!(
        record[..record.len() - 1]
            .iter()
            .all(|c| c.exit_code.is_some()),
        "{record:#?}"
    );
    assert_eq!(standin.open_shells(), 0);
    // Nothing left in %TEMP% but what was uploaded there.
    let temp: Vec<_> = std::fs::read_dir(standin.host_path(r"C:\Windows\Temp").unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(temp, ["payload.bin"], "{temp:?}");
}

#[test]
fn packers_winrm_client_authenticates_with_ntlm_and_a_wrong_password_is_refused() {
    let standin = StandIn::start(Config {
        ntlm: true,
        password: PASSWORD.into(),
        ..Config::default()
    })
    .unwrap();
    let local = tempfile::tempdir().unwrap();
    let big = payload(200_000, 3);
    write(&local.path().join("payload.bin"), &big);
    let upload_from = local.path().join("payload.bin").display().to_string();
    let steps = winrm_client_with(
        &standin,
        &["-password", PASSWORD, "-ntlm"],
        &[
            "start",
            "echo through ntlm && exit /b 5",
            "upload",
            &upload_from,
            r"C:\Windows\Temp\payload.bin",
            "cancel",
            "timeout /t 60 /nobreak",
            "1",
        ],
    );
    eprintln!("{steps:#?}");
    assert_eq!(steps.len(), 3, "{steps:#?}");
    for s in &steps {
        assert!(s.get("error").is_none(), "{s}");
    }
    assert_eq!(steps[0]["stdout"], "through ntlm\r\n");
    assert_eq!(steps[0]["exit"], 5);
    let read = std::fs::read(standin.host_path(r"C:\Windows\Temp\payload.bin").unwrap()).unwrap();
    assert!(read == big, "payload.bin differs");
    assert!(standin.commands().last().unwrap().signalled);
    assert_eq!(standin.unauthorized(), 0);

    // Packer's client checks the connection first: a refused handshake
    // fails it.
    let port = standin.addr().port().to_string();
    let wrong = Command::new(testbed::peers::winrm_client().unwrap())
        .args(["-host", "127.0.0.1", "-port", &port, "-user", "vagrant"])
        .args([
            "-password",
            "not-the-password",
            "-ntlm",
            "start",
            "echo never",
        ])
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{stderr}");
    assert!(stderr.contains("connecting"), "{stderr}");
    assert_eq!(standin.unauthorized(), 1);
    assert!(standin.commands().iter().all(|c| c.line != "echo never"));
}

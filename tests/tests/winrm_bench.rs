//! Our WinRM communicator beside Packer's own WinRM client code
//! (`winrm-client`, packer-plugin-sdk's communicator/winrm) on the same
//! work against the same WinRM stand-in (HTTPS, loopback) in one run: a
//! 50 MiB upload and 100 short commands (a shell each, as Packer runs
//! them). Both uploads are checked byte for byte. Run it optimised (Packer's
//! client is; an unoptimised stand-in and communicator are several times
//! slower):
//!
//! `cargo test --release -p kvmbe-tests --test winrm_bench -- --ignored --nocapture`

use std::time::{Duration, Instant};

use packer_plugin_libvirt::config::WinRmConfig;
use packer_plugin_libvirt::winrm::WinRm;
use testbed::winrm::{Config, StandIn};

const PASSWORD: &str = "B3nch-pass";
const UPLOAD_MIB: usize = 50;
const COMMANDS: usize = 100;

/// Bytes that are not text and repeat nowhere short.
fn binary(len: usize) -> Vec<u8> {
    testbed::util::noise(0x2545_f491_4f6c_dd1d, len)
}

/// Our communicator: (upload seconds, seconds for the commands).
async fn ours(standin: &StandIn, local: &std::path::Path, remote: &str) -> (f64, f64) {
    let config = WinRmConfig {
        host: None,
        port: standin.addr().port(),
        username: "vagrant".into(),
        password: PASSWORD.into(),
        timeout: Duration::from_secs(600),
        use_ssl: true,
        insecure: true,
        no_proxy: true,
        use_ntlm: false,
    };
    let w = WinRm::new("127.0.0.1", &config).unwrap();
    let file = tokio::fs::File::open(local).await.unwrap();
    let started = Instant::now();
    w.upload(remote, file).await.unwrap();
    let upload = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..COMMANDS {
        let (code, out, _) = w.run("echo bench").await.unwrap();
        assert_eq!((code, out.as_slice()), (0, &b"bench\r\n"[..]));
    }
    (upload, started.elapsed().as_secs_f64())
}

/// Packer's client: (upload seconds, seconds for the commands), as the
/// program times its own steps (after it has connected).
fn packers(standin: &StandIn, local: &std::path::Path, remote: &str) -> (f64, f64) {
    let program = testbed::peers::winrm_client().unwrap();
    let port = standin.addr().port().to_string();
    let commands = COMMANDS.to_string();
    let out = std::process::Command::new(program)
        .args(["-host", "127.0.0.1", "-port", &port, "-password", PASSWORD])
        .args(["-https", "-insecure", "-timeout", "10m"])
        .args(["upload", &local.display().to_string(), remote])
        .args(["starts", &commands, "echo bench"])
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "winrm-client failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for s in &steps {
        assert!(s.get("error").is_none(), "{s}");
    }
    let secs = |i: usize| steps[i]["secs"].as_f64().unwrap();
    (secs(0), secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn our_winrm_communicator_beside_packers_upload_and_commands() {
    let standin = StandIn::start(Config {
        tls: true,
        password: PASSWORD.into(),
        ..Config::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let payload = binary(UPLOAD_MIB << 20);
    let local = dir.path().join("payload.bin");
    std::fs::write(&local, &payload).unwrap();

    let (our_upload, our_commands) = ours(&standin, &local, r"C:\Windows\Temp\ours.bin").await;
    let ours_sent = standin.commands().len();
    let (go_upload, go_commands) =
        tokio::task::block_in_place(|| packers(&standin, &local, r"C:\Windows\Temp\packers.bin"));
    let go_sent = standin.commands().len() - ours_sent;
    for name in ["ours", "packers"] {
        let p = standin
            .host_path(&format!(r"C:\Windows\Temp\{name}.bin"))
            .unwrap();
        assert!(
            std::fs::read(p).unwrap() == payload,
            "{name}: the upload differs"
        );
    }
    let row = |what: &str, ours: f64, go: f64| {
        eprintln!("{what:<34} {ours:>9.2} s {go:>9.2} s {:>8.2}", ours / go);
    };
    eprintln!(
        "{:<34} {:>11} {:>11} {:>8}",
        "WinRM, HTTPS, loopback stand-in", "ours", "Packer's", "ours/Packer's"
    );
    row(&format!("upload {UPLOAD_MIB} MiB"), our_upload, go_upload);
    row(&format!("{COMMANDS} commands"), our_commands, go_commands);
    eprintln!(
        "{:<34} {:>11.1} {:>11.1}",
        "upload MiB/s",
        UPLOAD_MIB as f64 / our_upload,
        UPLOAD_MIB as f64 / go_upload
    );
    eprintln!(
        "{:<34} {:>11.1} {:>11.1}",
        "ms a command",
        our_commands * 1000.0 / COMMANDS as f64,
        go_commands * 1000.0 / COMMANDS as f64
    );
    eprintln!(
        "{:<34} {:>11} {:>11}",
        "commands the stand-in ran", ours_sent, go_sent
    );
}

//! The packer plugin's WinRM communicator against the WinRM stand-in
//! (proven against pywinrm in winrm_standin.rs): commands, long commands
//! across `w:TimedOut`, uploads, downloads, refused passwords, servers
//! that never answer, cancelled commands; with Basic and with NTLM
//! authentication (the stand-in's NTLM acceptor is proven against pywinrm
//! and Packer's client too).

use std::time::{Duration, Instant};

use packer_plugin_libvirt::build::{connect_winrm, BuildError};
use packer_plugin_libvirt::config::WinRmConfig;
use packer_plugin_libvirt::winrm::{powershell, WinRm};
use testbed::winrm::{Config, StandIn};

fn standin(tls: bool, receive_wait: Duration) -> StandIn {
    StandIn::start(Config {
        tls,
        receive_wait,
        ..Config::default()
    })
    .unwrap()
}

fn config(s: &StandIn) -> WinRmConfig {
    let tls = s.url().starts_with("https");
    WinRmConfig {
        host: None,
        port: s.addr().port(),
        username: "vagrant".into(),
        password: "vagrant".into(),
        timeout: Duration::from_secs(30),
        use_ssl: tls,
        insecure: tls,
        no_proxy: true,
        use_ntlm: false,
    }
}

/// A stand-in that takes NTLM only, and a config that uses it.
fn ntlm_standin(tls: bool) -> (StandIn, WinRmConfig) {
    let s = StandIn::start(Config {
        tls,
        ntlm: true,
        receive_wait: Duration::from_millis(300),
        ..Config::default()
    })
    .unwrap();
    let cfg = WinRmConfig {
        use_ntlm: true,
        ..config(&s)
    };
    (s, cfg)
}

fn client(s: &StandIn) -> WinRm {
    WinRm::new("127.0.0.1", &config(s)).unwrap()
}

/// Bytes that are not text and repeat nowhere short.
fn binary(len: usize) -> Vec<u8> {
    testbed::util::noise(0x9e37_79b9_7f4a_7c15, len)
}

#[tokio::test]
async fn commands_report_their_output_and_exit_codes_one_shell_each() {
    let s = standin(false, Duration::from_secs(2));
    let w = client(&s);
    assert_eq!(
        w.run("echo hello").await.unwrap(),
        (0, b"hello\r\n".to_vec(), Vec::new())
    );
    assert_eq!(w.run("exit /b 7").await.unwrap().0, 7);
    let (code, out, err) = w
        .run(&powershell(
            "Write-Output 'from ps'\nWrite-Error 'bad thing'",
        ))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert_eq!(out, b"from ps\r\n");
    assert!(String::from_utf8_lossy(&err).contains("bad thing"));

    let record = s.commands();
    let lines: Vec<&str> = record.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(lines[..2], ["echo hello", "exit /b 7"]);
    assert_eq!(
        record[2].script.as_deref(),
        Some("Write-Output 'from ps'\nWrite-Error 'bad thing'")
    );
    let shells: std::collections::BTreeSet<&str> =
        record.iter().map(|c| c.shell_id.as_str()).collect();
    assert_eq!(shells.len(), 3, "one shell per command, as Packer");
    assert!(record.iter().all(|c| c.signalled), "{record:?}");
    assert_eq!(s.open_shells(), 0);
}

#[tokio::test]
async fn a_long_command_is_polled_through_timed_out_faults() {
    let s = standin(true, Duration::from_millis(300));
    let w = client(&s);
    let started = Instant::now();
    let (code, out, _) = w.run("timeout /t 2 /nobreak && echo late").await.unwrap();
    let took = started.elapsed();
    eprintln!(
        "2 s command: {:.2}s, {} TimedOut faults",
        took.as_secs_f64(),
        s.timed_out_faults()
    );
    assert_eq!((code, out.as_slice()), (0, &b"late\r\n"[..]));
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(s.timed_out_faults() >= 4, "{}", s.timed_out_faults());
}

#[tokio::test]
async fn uploads_arrive_byte_for_byte_and_leave_no_temporary_files() {
    let s = standin(true, Duration::from_secs(2));
    let w = client(&s);
    let big = binary(1 << 20);
    let started = Instant::now();
    w.upload(r"C:\Windows\Temp\big.bin", big.as_slice())
        .await
        .unwrap();
    eprintln!(
        "1 MiB upload over HTTPS: {:.2}s, {} commands",
        started.elapsed().as_secs_f64(),
        s.commands().len()
    );
    w.upload("c:/Users/vagrant/dir/new/hello.txt", &b"hi\r\nthere"[..])
        .await
        .unwrap();
    w.upload(r"C:\empty.txt", &b""[..]).await.unwrap();

    let read = |p: &str| std::fs::read(s.host_path(p).unwrap()).unwrap();
    assert!(
        read(r"C:\Windows\Temp\big.bin") == big,
        "1 MiB file differs"
    );
    assert_eq!(read(r"C:\Users\vagrant\dir\new\hello.txt"), b"hi\r\nthere");
    assert_eq!(read(r"C:\empty.txt"), b"");
    let temp: Vec<_> = std::fs::read_dir(s.host_path(r"C:\Windows\Temp").unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(temp, ["big.bin"]);
    // At most 15 commands a shell, as Packer's file copier.
    let mut per_shell = std::collections::BTreeMap::new();
    for c in s.commands() {
        *per_shell.entry(c.shell_id).or_insert(0) += 1;
    }
    assert!(per_shell.values().all(|n| *n <= 15), "{per_shell:?}");
    assert!(per_shell.len() >= 12, "{} shells", per_shell.len());
    // cmd's line limit holds for every chunk.
    assert!(s.commands().iter().all(|c| c.line.len() <= 8191));
    assert!(s.commands().iter().all(|c| c.exit_code == Some(0)));
    assert_eq!(s.open_shells(), 0);
}

#[tokio::test]
async fn folders_upload_with_their_layout_minus_excludes() {
    let s = standin(false, Duration::from_secs(2));
    let w = client(&s);
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("site");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("top.txt"), "top").unwrap();
    std::fs::write(root.join("a/b/deep.bin"), binary(5000)).unwrap();
    std::fs::write(root.join("a/skip.log"), "no").unwrap();

    w.upload_dir(r"C:\dest", &root, &["skip.log".to_string()])
        .await
        .unwrap();
    let contents = format!("{}/", root.display());
    w.upload_dir(r"C:\flat", std::path::Path::new(&contents), &[])
        .await
        .unwrap();

    let read = |p: &str| std::fs::read(s.host_path(p).unwrap()).ok();
    assert_eq!(read(r"C:\dest\site\top.txt").unwrap(), b"top");
    assert_eq!(read(r"C:\dest\site\a\b\deep.bin").unwrap(), binary(5000));
    assert_eq!(read(r"C:\dest\site\a\skip.log"), None);
    assert_eq!(read(r"C:\flat\top.txt").unwrap(), b"top");
    assert_eq!(read(r"C:\flat\a\skip.log").unwrap(), b"no");
}

#[tokio::test]
async fn downloads_copy_guest_files_and_name_missing_ones() {
    let s = standin(false, Duration::from_secs(2));
    let w = client(&s);
    let data = binary(300_000);
    let p = s.host_path(r"C:\logs\setup.log").unwrap();
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, &data).unwrap();

    let mut got = Vec::new();
    w.download(r"C:\logs\setup.log", &mut got).await.unwrap();
    assert!(got == data, "downloaded bytes differ");

    let e = w
        .download(r"C:\logs\gone.log", &mut Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r"reading C:\logs\gone.log") && e.contains("exit code 1"),
        "{e}"
    );
}

#[tokio::test]
async fn the_connect_wait_runs_a_powershell_echo() {
    let s = standin(true, Duration::from_secs(2));
    connect_winrm(
        "127.0.0.1",
        &config(&s),
        Instant::now() + Duration::from_secs(10),
    )
    .await
    .unwrap();
    let record = s.commands();
    assert_eq!(record.len(), 1);
    assert_eq!(
        record[0].script.as_deref(),
        Some("echo \"WinRM connected.\"")
    );
    assert_eq!(record[0].exit_code, Some(0));
}

/// Connects with a wrong password: it must fail at once, after one
/// refused attempt, with an error naming winrm_password; that error.
async fn wrong_password_error(s: &StandIn, mut cfg: WinRmConfig) -> String {
    cfg.password = "not-it".into();
    let started = Instant::now();
    let e = connect_winrm("127.0.0.1", &cfg, Instant::now() + cfg.timeout)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, BuildError::WinRm(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("winrm_password") && e.contains("`vagrant`") && e.contains("401"),
        "{e}"
    );
    assert!(!e.contains("not-it"), "the password shows: {e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(s.unauthorized(), 1, "no retries with a refused password");
    assert!(s.commands().is_empty());
    e
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_naming_winrm_password() {
    let s = standin(false, Duration::from_secs(2));
    let e = wrong_password_error(&s, config(&s)).await;
    assert!(e.contains("Basic"), "{e}");
}

#[tokio::test]
async fn a_server_that_never_answers_ends_the_wait_at_winrm_timeout() {
    // Accepts connections and never answers, like a guest whose WinRM
    // listener hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            held.push(c);
        }
    });
    let cfg = WinRmConfig {
        host: None,
        port,
        username: "vagrant".into(),
        password: "vagrant".into(),
        timeout: Duration::from_secs(3),
        use_ssl: false,
        insecure: false,
        no_proxy: true,
        use_ntlm: false,
    };
    let started = Instant::now();
    let e = connect_winrm("127.0.0.1", &cfg, Instant::now() + cfg.timeout)
        .await
        .err()
        .unwrap()
        .to_string();
    let took = started.elapsed();
    holder.abort();
    assert!(
        e.starts_with("winrm_timeout: WinRM did not come up within 3s")
            && e.contains("did not answer"),
        "{e}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_self_signed_certificate_is_refused_without_winrm_insecure() {
    let s = standin(true, Duration::from_secs(2));
    let mut cfg = config(&s);
    cfg.insecure = false;
    let e = WinRm::new("127.0.0.1", &cfg)
        .unwrap()
        .run("echo x")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("certificate") && e.contains("winrm_insecure"),
        "{e}"
    );
    assert!(s.commands().is_empty());
}

#[tokio::test]
async fn a_cancelled_command_is_signalled_and_its_shell_deleted() {
    let s = standin(false, Duration::from_millis(300));
    let w = client(&s);
    let cut = tokio::time::timeout(Duration::from_secs(1), w.run("timeout /t 30 /nobreak")).await;
    assert!(cut.is_err(), "the command ended early");
    let signalled = testbed::util::poll_until_async(Duration::from_secs(5), || async {
        (s.open_shells() == 0 && s.commands().first().is_some_and(|c| c.signalled)).then_some(())
    })
    .await;
    assert!(
        signalled.is_some(),
        "not signalled: {:?}, {} shells open",
        s.commands(),
        s.open_shells()
    );
    assert_eq!(s.commands()[0].exit_code, None);
}

/// A command during which the guest restarts: the Receive that finds the
/// machine gone fails at once with the endpoint and the operation named,
/// and the communicator works again once the guest is back (with NTLM:
/// on a new connection, after a new handshake).
async fn a_restart_during_a_command(ntlm: bool) {
    let s = StandIn::start(Config {
        tls: true,
        ntlm,
        receive_wait: Duration::from_millis(500),
        reboot: testbed::winrm::Reboot {
            grace: Duration::from_secs(1),
            down: Duration::from_secs(3),
        },
        ..Config::default()
    })
    .unwrap();
    let cfg = WinRmConfig {
        use_ntlm: ntlm,
        ..config(&s)
    };
    let w = WinRm::new("127.0.0.1", &cfg).unwrap();
    let started = Instant::now();
    let e = w
        .run("powershell -Command \"cmd /c shutdown /r /t 0; Start-Sleep 30\"")
        .await
        .unwrap_err()
        .to_string();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(e.starts_with(&format!("winrm {}: ", s.url())), "{e}");
    assert!(s.dropped() >= 1, "{}", s.dropped());
    let record = s.commands();
    assert_eq!(record.len(), 1);
    assert_eq!(record[0].exit_code, None);
    // Back after the restart: a new shell, and nothing of the old one.
    let back = testbed::util::poll_until_async(Duration::from_secs(10), || async {
        (s.phase() == (testbed::winrm::Phase::Up, 1)).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "not back after the restart: {:?}",
        s.phase()
    );
    assert_eq!(
        w.run("echo back").await.unwrap(),
        (0, b"back\r\n".to_vec(), Vec::new())
    );
    assert_eq!(s.phase(), (testbed::winrm::Phase::Up, 1));
    assert_eq!(s.ntlm_challenges(), if ntlm { 2 } else { 0 });
    eprintln!("failed after {took:?}: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_a_command_fails_it_clearly_and_the_next_works() {
    a_restart_during_a_command(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_reconnects_and_authenticates_again_after_a_restart() {
    a_restart_during_a_command(true).await;
}

#[tokio::test]
async fn ntlm_runs_commands_over_http_handshaking_once_per_connection() {
    let (s, cfg) = ntlm_standin(false);
    let w = WinRm::new("127.0.0.1", &cfg).unwrap();
    assert_eq!(
        w.run("echo over ntlm").await.unwrap(),
        (0, b"over ntlm\r\n".to_vec(), Vec::new())
    );
    assert_eq!(w.run("exit /b 7").await.unwrap().0, 7);
    let (code, out, _) = w
        .run(&powershell("Write-Output 'ps over ntlm'\nexit 3"))
        .await
        .unwrap();
    assert_eq!((code, out.as_slice()), (3, &b"ps over ntlm\r\n"[..]));
    let (code, out, _) = w.run("timeout /t 1 /nobreak && echo late").await.unwrap();
    assert_eq!((code, out.as_slice()), (0, &b"late\r\n"[..]));
    eprintln!(
        "{} commands, {} TimedOut faults, {} NTLM handshakes",
        s.commands().len(),
        s.timed_out_faults(),
        s.ntlm_challenges()
    );
    assert!(s.timed_out_faults() >= 2, "{}", s.timed_out_faults());
    // Some twenty requests, one connection: one handshake.
    assert_eq!(s.ntlm_challenges(), 1);
    assert_eq!(s.unauthorized(), 0);
    assert!(s.commands().iter().all(|c| c.signalled));
    assert_eq!(s.open_shells(), 0);
}

#[tokio::test]
async fn ntlm_uploads_and_connects_over_https() {
    let (s, mut cfg) = ntlm_standin(true);
    // A domain account's name: the handshake names the domain.
    cfg.username = r"WIN-STANDIN\vagrant".into();
    let checked = WinRmConfig {
        insecure: false,
        ..cfg.clone()
    };
    let e = WinRm::new("127.0.0.1", &checked)
        .unwrap()
        .run("echo never")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("certificate") && e.contains("winrm_insecure = true"),
        "{e}"
    );
    connect_winrm("127.0.0.1", &cfg, Instant::now() + cfg.timeout)
        .await
        .unwrap();
    let w = WinRm::new("127.0.0.1", &cfg).unwrap();
    let data = binary(300_000);
    let started = Instant::now();
    w.upload(r"C:\Windows\Temp\ntlm.bin", data.as_slice())
        .await
        .unwrap();
    eprintln!(
        "300 kB upload over HTTPS with NTLM: {:.2}s, {} commands, {} NTLM handshakes",
        started.elapsed().as_secs_f64(),
        s.commands().len(),
        s.ntlm_challenges()
    );
    let got = std::fs::read(s.host_path(r"C:\Windows\Temp\ntlm.bin").unwrap()).unwrap();
    assert!(got == data, "the upload differs");
    assert!(s.commands().iter().all(|c| c.exit_code == Some(0)));
    assert_eq!(s.unauthorized(), 0);
}

#[tokio::test]
async fn ntlm_with_a_wrong_password_fails_at_once_naming_winrm_password() {
    let (s, cfg) = ntlm_standin(false);
    let e = wrong_password_error(&s, cfg).await;
    assert!(
        e.contains("Negotiate") && e.contains("AllowUnencrypted"),
        "{e}"
    );
}

#[tokio::test]
async fn basic_credentials_are_refused_by_an_ntlm_only_guest() {
    let (s, mut cfg) = ntlm_standin(false);
    cfg.use_ntlm = false;
    let e = WinRm::new("127.0.0.1", &cfg)
        .unwrap()
        .run("echo never")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("Basic"), "{e}");
    assert!(s.commands().is_empty());
}

//! The real Packer 1.6.6 builds with our `libvirt` builder and
//! `communicator = "winrm"`: the tiny guest boots on the namespaced
//! libvirtd while the WinRM stand-in answers for Windows at `winrm_host`
//! (HTTPS with a self-signed certificate, `winrm_insecure`). A
//! `powershell` and a `windows-shell` provisioner run, a `file`
//! provisioner uploads a binary file into a folder (a destination ending
//! in `\`), and the `shutdown_command` arrives;
//! the stand-in then has libvirt shut the domain down, which Windows
//! would do itself. The build writes its image.

use std::path::Path;
use std::sync::Arc;

use std::time::Duration;
use testbed::guest::TinyGuest;

use testbed::libvirtd::{Libvirtd, POOL};
use testbed::packer::{
    hcl_attributes, packer_in, show, spawn_interruptible, tiny_guest_source, ScratchDir,
};
use testbed::peers::{packer_1_9_in, required_plugins};
use testbed::util::{wait_until, OutputWithin, COMMAND_LIMIT};
use testbed::winrm::{CommandHook, Config, Phase, Reboot, Recorded, StandIn};

const PASSWORD: &str = "W1nRM-pass";

const SHUTDOWN: &str = "shutdown /s /t 5 /f /d p:4:1 /c \"Packer Shutdown\"";

/// A stand-in for the Windows machine, listening in `bed`'s namespace
/// (where Packer runs), and a template building `vm_name` over WinRM to
/// it with `provisioners`.
struct WindowsBuild {
    standin: StandIn,
    vm_name: String,
    output: std::path::PathBuf,
    template: std::path::PathBuf,
}

fn windows_build(
    bed: &Libvirtd,
    guest: &TinyGuest,
    dir: &std::path::Path,
    name: &str,
    provisioners: serde_json::Value,
    ntlm: bool,
) -> WindowsBuild {
    let vm_name = format!("pk-{name}-{}", std::process::id());
    let standin = windows_standin(bed, &vm_name, Reboot::default(), ntlm);
    let output = dir.join("output");
    let mut source = winrm_source(bed, guest, &vm_name, &output, &standin, "2m");
    source.insert("type".into(), "libvirt".into());
    source.insert("winrm_use_ntlm".into(), ntlm.into());
    let template = serde_json::json!({"builders": [source], "provisioners": provisioners});
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&template).unwrap()).unwrap();
    WindowsBuild {
        standin,
        vm_name,
        output,
        template: path,
    }
}

/// Our builder's settings for the tiny guest with the WinRM communicator
/// going to `standin` (HTTPS, self-signed) and the seed's shutdown command.
fn winrm_source(
    bed: &Libvirtd,
    guest: &TinyGuest,
    vm_name: &str,
    output: &Path,
    standin: &StandIn,
    winrm_timeout: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut source = tiny_guest_source(bed, guest, vm_name, output);
    for k in ["ssh_username", "ssh_private_key_file", "ssh_timeout"] {
        source.remove(k);
    }
    let winrm = serde_json::json!({
        "communicator": "winrm",
        "winrm_username": "vagrant",
        "winrm_password": PASSWORD,
        "winrm_host": "127.0.0.1",
        "winrm_port": standin.addr().port(),
        "winrm_use_ssl": true,
        "winrm_insecure": true,
        "winrm_timeout": winrm_timeout,
        "shutdown_command": SHUTDOWN,
    });
    for (k, v) in winrm.as_object().unwrap() {
        source.insert(k.clone(), v.clone());
    }
    source
}

/// The build wrote its image and left no domain or volume behind.
fn assert_built_and_cleaned(bed: &Libvirtd, output: &Path, vm_name: &str) {
    let image = output.join(format!("{vm_name}.qcow2"));
    assert!(image.is_file(), "no image at {}", image.display());
    let sums = std::fs::read_to_string(output.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("{vm_name}.qcow2")), "{sums}");
    assert!(!bed
        .domains()
        .unwrap()
        .iter()
        .any(|d| d.starts_with(vm_name)));
    assert!(!bed
        .volumes(POOL)
        .unwrap()
        .iter()
        .any(|v| v.starts_with(vm_name)));
}

/// The record, one line a command (its script for PowerShell), for
/// failure messages.
fn shown(record: &[Recorded]) -> String {
    record
        .iter()
        .map(|c| {
            let s = c.script.as_deref().unwrap_or(&c.line);
            format!("{:?} {}\n", c.exit_code, &s[..s.len().min(200)])
        })
        .collect()
}

/// A stand-in for the Windows machine that becomes `vm_name`, listening
/// in `bed`'s namespace (where Packer runs) and restarting as `reboot`
/// says.
fn windows_standin(bed: &Libvirtd, vm_name: &str, reboot: Reboot, ntlm: bool) -> StandIn {
    // What Windows does on `shutdown /s`: power the machine off. The
    // power button is pressed until the domain is off, since the tiny
    // guest may still be booting (and deaf to ACPI) when the command comes.
    let (uri, domain) = (bed.uri(), vm_name.to_string());
    let hook: CommandHook = Arc::new(move |line: &str| {
        let words: Vec<String> = line
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        if words.first().is_some_and(|w| w == "shutdown") && words.iter().any(|w| w == "/s") {
            let (uri, domain) = (uri.clone(), domain.clone());
            std::thread::spawn(move || press_power_until_off(&uri, &domain));
        }
    });
    bed.netns()
        .spawn_in(move || {
            StandIn::start(Config {
                tls: true,
                ntlm,
                password: PASSWORD.into(),
                on_command: Some(hook),
                reboot,
                ..Config::default()
            })
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap()
}

/// With NTLM (`winrm_use_ntlm`, the guest refusing Basic); the restart
/// tests below use Basic.
#[test]
fn a_windows_template_builds_over_winrm_with_powershell_windows_shell_and_file() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = ScratchDir::new("winrm").unwrap();
    let payload: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("payload.bin"), &payload).unwrap();
    let provisioners = serde_json::json!([
        {"type": "powershell", "inline": ["Write-Output \"powershell provisioner ran\""]},
        {"type": "windows-shell", "inline": ["echo windows-shell provisioner ran"]},
        {"type": "file", "source": dir.join("payload.bin").display().to_string(),
         "destination": "C:\\Users\\vagrant\\"}
    ]);
    let WindowsBuild {
        standin,
        vm_name,
        output,
        template: path,
    } = windows_build(&bed, &guest, &dir, "winrm", provisioners, true);

    let started = std::time::Instant::now();
    let out = packer_in(bed.netns(), &dir, &["build", &path.to_string_lossy()])
        .unwrap()
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build (winrm)", &out);
    eprintln!(
        "packer build over WinRM with NTLM: {:.1}s, {} commands, {} NTLM handshakes",
        started.elapsed().as_secs_f64(),
        standin.commands().len(),
        standin.ntlm_challenges()
    );
    let record = standin.commands();
    for c in &record {
        let shown = c.script.as_deref().unwrap_or(&c.line);
        eprintln!("{:?} {}", c.exit_code, &shown[..shown.len().min(300)]);
    }
    assert!(out.status.success(), "packer build failed");
    assert!(text.contains("Connected to WinRM!"), "{text}");
    assert!(text.contains("powershell provisioner ran"), "{text}");
    assert!(text.contains("windows-shell provisioner ran"), "{text}");
    assert!(!text.contains(PASSWORD), "the password shows: {text}");
    let position = |what: &dyn Fn(&testbed::winrm::Recorded) -> bool| {
        record
            .iter()
            .position(what)
            .unwrap_or_else(|| panic!("not in the record: {record:#?}"))
    };
    let probe = position(&|c| c.script.as_deref() == Some("echo \"WinRM connected.\""));
    let ps = position(&|c| c.line.contains("powershell -executionpolicy bypass"));
    let bat =
        position(&|c| c.line.to_ascii_lowercase().contains(".cmd\"") || c.line.contains(".bat\""));
    let upload = position(&|c| {
        c.script
            .as_deref()
            .is_some_and(|s| s.contains("payload.bin") && s.contains("FromBase64String"))
    });
    let shutdown = position(&|c| c.line == SHUTDOWN);
    assert!(
        probe < ps && ps < bat && bat < upload && upload < shutdown,
        "{record:#?}"
    );
    assert_eq!(
        shutdown,
        record.len() - 1,
        "the shutdown command comes last"
    );
    assert!(
        record[..shutdown].iter().all(|c| c.exit_code == Some(0)),
        "{record:#?}"
    );
    let uploaded =
        std::fs::read(standin.host_path(r"C:\Users\vagrant\payload.bin").unwrap()).unwrap();
    assert!(uploaded == payload, "the uploaded file differs");
    assert!(standin.ntlm_challenges() >= 1);
    assert_eq!(standin.unauthorized(), 0);

    assert_built_and_cleaned(&bed, &output, &vm_name);
}

/// With NTLM (`winrm_use_ntlm`): the background clean-up authenticates
/// too.
#[test]
fn cancelling_a_winrm_build_terminates_the_running_command_on_the_guest() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = ScratchDir::new("winrm-cancel").unwrap();
    // A provisioner that would keep the build going for minutes.
    let provisioners = serde_json::json!([
        {"type": "windows-shell", "inline": ["timeout /t 300 /nobreak"]}
    ]);
    let b = windows_build(&bed, &guest, &dir, "winrm-cancel", provisioners, true);
    let cmd = packer_in(bed.netns(), &dir, &["build", &b.template.to_string_lossy()]).unwrap();
    let child = spawn_interruptible(cmd).unwrap();
    let batch = |c: &testbed::winrm::Recorded| c.line.contains(".bat\"");
    wait_until(
        Duration::from_secs(120),
        "the long command running on the guest",
        || format!("never ran: {:#?}", b.standin.commands()),
        || b.standin.commands().iter().any(batch).then_some(()),
    );
    testbed::util::signal(-(child.id() as i32), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let text = show("packer build (winrm, cancelled)", &out);
    assert!(!out.status.success());
    assert!(text.to_lowercase().contains("cancel"), "{text}");
    wait_until(
        Duration::from_secs(10),
        "the command terminated and its shell deleted",
        || {
            format!(
                "{:#?}, {} shells open",
                b.standin.commands(),
                b.standin.open_shells()
            )
        },
        || {
            let record = b.standin.commands();
            let run = record.iter().find(|c| batch(c))?;
            (run.signalled && run.exit_code.is_none() && b.standin.open_shells() == 0).then_some(())
        },
    );
    assert!(!b.output.exists());
    assert!(b.standin.ntlm_challenges() >= 1);
    assert!(!bed
        .domains()
        .unwrap()
        .iter()
        .any(|d| d.starts_with(&b.vm_name)));
}

/// Presses the domain's power button every 2 s until it is off or gone
/// (90 s at most).
fn press_power_until_off(uri: &str, domain: &str) {
    let virsh = |args: &[&str]| {
        std::process::Command::new("virsh")
            .args(["-q", "-c", uri])
            .args(args)
            .output()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while std::time::Instant::now() < deadline {
        match virsh(&["domstate", domain]) {
            Ok(o)
                if o.status.success()
                    && !String::from_utf8_lossy(&o.stdout).contains("shut off") => {}
            _ => return,
        }
        let _ = virsh(&["shutdown", domain]);
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// A payload that is not text: every byte value, in no simple order.
fn payload(len: u32, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Packer 1.9 builds an HCL template shaped like the seed's Windows
/// agents through our builder: `winrm_use_ssl`, `winrm_insecure`,
/// `winrm_timeout = "4h"`, inline `powershell` with a `timeout`, a
/// `powershell` script file, `windows-restart` (the stand-in restarts:
/// still answering 4 s, so Packer's first restart test gets 1115 "in
/// progress", then down 3 s, so its next test, 10 s later, is answered
/// and aborted with `shutdown /a`, then the `restarted.` check), a `file`
/// upload of a file and of a folder, and the seed's shutdown command.
#[test]
fn packer_1_9_builds_a_seed_shaped_windows_template_through_a_restart() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = ScratchDir::new("winrm19").unwrap();
    let vm_name = format!("pk19w-{}", std::process::id());
    let standin = windows_standin(
        &bed,
        &vm_name,
        Reboot {
            grace: Duration::from_secs(4),
            down: Duration::from_secs(3),
        },
        false,
    );
    let output = dir.join("output");
    let source = winrm_source(&bed, &guest, &vm_name, &output, &standin, "4h");

    let ps1 = "Write-Output \"script file ran\"\r\n$marker = 1\r\nexit 0\r\n";
    std::fs::write(dir.join("setup.ps1"), ps1).unwrap();
    let big = payload(300_000, 1);
    std::fs::write(dir.join("payload.bin"), &big).unwrap();
    std::fs::create_dir_all(dir.join("tools/sub")).unwrap();
    let tool_a = payload(5_000, 2);
    std::fs::write(dir.join("tools/a.bin"), &tool_a).unwrap();
    std::fs::write(dir.join("tools/sub/b.txt"), "line one\r\nline two\r\n").unwrap();
    let template = format!(
        r#"{}
source "libvirt" "windows" {{
{}}}

build {{
  sources = ["source.libvirt.windows"]
  provisioner "powershell" {{
    inline  = ["Write-Output \"inline ran\""]
    timeout = "10m"
  }}
  provisioner "powershell" {{
    script = "${{path.root}}/setup.ps1"
  }}
  provisioner "windows-restart" {{}}
  provisioner "file" {{
    source      = "${{path.root}}/payload.bin"
    destination = "C:\\Windows\\Temp\\payload.bin"
  }}
  provisioner "file" {{
    source      = "${{path.root}}/tools"
    destination = "C:\\"
  }}
}}
"#,
        required_plugins(),
        hcl_attributes(&source)
    );
    std::fs::write(dir.join("windows.pkr.hcl"), template).unwrap();

    let started = std::time::Instant::now();
    let out = packer_1_9_in(bed.netns(), &dir, &["build", "windows.pkr.hcl"])
        .unwrap()
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer 1.9 build (winrm, restart)", &out);
    let record = standin.commands();
    eprintln!(
        "packer 1.9 build over WinRM with a restart: {:.1}s, {} commands, {} dropped\n{}",
        started.elapsed().as_secs_f64(),
        record.len(),
        standin.dropped(),
        shown(&record)
    );
    assert!(out.status.success(), "packer build failed");
    assert!(text.contains("inline ran"), "{text}");
    assert!(text.contains("script file ran"), "{text}");
    assert!(text.contains("WIN-STANDIN restarted."), "{text}");
    assert!(!text.contains(PASSWORD), "the password shows: {text}");

    // Every command, in order.
    let mut at = 0;
    let mut next =
        |what: &str, found: &dyn Fn(&Recorded) -> bool| match record[at..].iter().position(found) {
            Some(i) => {
                at += i + 1;
                at - 1
            }
            None => panic!("no {what} after command {at}:\n{}", shown(&record)),
        };
    let script = |c: &Recorded, s: &str| c.script.as_deref().is_some_and(|t| t.contains(s));
    // Each `powershell` provisioner runs its script, then its clean-up.
    let ps_run = |c: &Recorded, file: &str| {
        c.line.starts_with("powershell -executionpolicy bypass")
            && c.line.contains(&format!("c:/Windows/Temp/{file}"))
    };
    next("connection probe", &|c| script(c, "WinRM connected."));
    let inline = next("inline script", &|c| ps_run(c, "script-"));
    let inline_clean = next("its clean-up", &|c| ps_run(c, "packer-cleanup-"));
    let file_script = next("script file", &|c| ps_run(c, "script-"));
    let file_clean = next("its clean-up", &|c| ps_run(c, "packer-cleanup-"));
    let restart = next("restart", &|c| {
        c.line == r#"shutdown /r /f /t 0 /c "packer restart""#
    });
    let test = r#"shutdown /r /f /t 60 /c "packer restart test""#;
    let in_progress = next("restart test (in progress)", &|c| c.line == test);
    let answered = next("restart test (answered)", &|c| c.line == test);
    let abort = next("abort", &|c| c.line == "shutdown /a");
    let check = next("restart check", &|c| {
        script(c, "restarted.\" -f [System.Net.Dns]::GetHostName()")
    });
    let upload = next("file upload", &|c| {
        script(c, "payload.bin") && script(c, "FromBase64String")
    });
    let shutdown = next("shutdown", &|c| c.line == SHUTDOWN);
    assert_eq!(shutdown, record.len() - 1, "{}", shown(&record));
    for (i, code) in [
        (inline, 0),
        (inline_clean, 0),
        (file_script, 0),
        (file_clean, 0),
        (restart, 0),
        (in_progress, 1115),
        (answered, 0),
        (abort, 0),
        (check, 0),
        (upload, 0),
    ] {
        assert_eq!(
            record[i].exit_code,
            Some(code),
            "command {i}:\n{}",
            shown(&record)
        );
    }
    // The restart went down (and dropped nothing Packer needed) and the
    // test restart was aborted.
    assert_eq!(standin.phase(), (Phase::Up, 1));

    // The files, byte for byte.
    let read = |p: &str| std::fs::read(standin.host_path(p).unwrap()).unwrap();
    assert!(
        read(r"C:\Windows\Temp\payload.bin") == big,
        "payload.bin differs"
    );
    assert!(read(r"C:\tools\a.bin") == tool_a, "tools/a.bin differs");
    assert_eq!(read(r"C:\tools\sub\b.txt"), b"line one\r\nline two\r\n");
    assert_built_and_cleaned(&bed, &output, &vm_name);
}

/// A provisioner command during which the guest restarts (a script that
/// restarts it itself instead of leaving that to `windows-restart`): the
/// command is cut off, the WinRM error shows (endpoint and operation),
/// the provisioner sees exit status 255 (a command that ended without
/// one) and the build fails without retrying it, even with a
/// `start_retry_timeout` (which covers only starting it); the domain is
/// removed.
#[test]
fn a_restart_in_the_middle_of_a_provisioner_command_fails_the_build_clearly() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = ScratchDir::new("winrm-midreboot").unwrap();
    let provisioners = serde_json::json!([
        {"type": "windows-shell", "start_retry_timeout": "15s",
         "inline": ["shutdown /r /f /t 0 && timeout /t 30 /nobreak"]}
    ]);
    let b = windows_build(&bed, &guest, &dir, "winrm-midreboot", provisioners, false);
    let started = std::time::Instant::now();
    let out = packer_in(bed.netns(), &dir, &["build", &b.template.to_string_lossy()])
        .unwrap()
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build (winrm, restart mid-command)", &out);
    let record = b.standin.commands();
    eprintln!(
        "failed after {:.1}s, {} dropped\n{}",
        started.elapsed().as_secs_f64(),
        b.standin.dropped(),
        shown(&record)
    );
    assert!(!out.status.success());
    assert!(
        text.contains(&format!("winrm {}: ", b.standin.url())),
        "{text}"
    );
    assert!(b.standin.dropped() >= 1);
    assert!(
        text.contains("Script exited with non-zero exit status: 255"),
        "{text}"
    );
    let tries = record.iter().filter(|c| c.line.contains(".bat\"")).count();
    assert_eq!(tries, 1, "{}", shown(&record));
    assert!(!b.output.exists());
    assert!(!bed
        .domains()
        .unwrap()
        .iter()
        .any(|d| d.starts_with(&b.vm_name)));
}

/// What a Packer 1.9 build of an HCL template over WinRM left: the
/// stand-in, the domain's name, the output folder, whether Packer
/// succeeded and its output.
struct HclBuild {
    standin: StandIn,
    vm_name: String,
    output: std::path::PathBuf,
    success: bool,
    text: String,
}

/// Packer 1.9 builds an HCL template with `provisioners` (HCL blocks)
/// through our builder, the stand-in answering for Windows (Basic
/// authentication, HTTPS).
fn hcl_windows_build(
    bed: &Libvirtd,
    guest: &TinyGuest,
    dir: &Path,
    name: &str,
    provisioners: &str,
) -> HclBuild {
    let vm_name = format!("pk-{name}-{}", std::process::id());
    let standin = windows_standin(bed, &vm_name, Reboot::default(), false);
    let output = dir.join("output");
    let source = winrm_source(bed, guest, &vm_name, &output, &standin, "2m");
    let template = format!(
        "{}\nsource \"libvirt\" \"windows\" {{\n{}}}\n\nbuild {{\n  sources = [\"source.libvirt.windows\"]\n{provisioners}}}\n",
        required_plugins(),
        hcl_attributes(&source)
    );
    std::fs::write(dir.join("windows.pkr.hcl"), template).unwrap();
    let started = std::time::Instant::now();
    let out = packer_1_9_in(bed.netns(), dir, &["build", "windows.pkr.hcl"])
        .unwrap()
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show(&format!("packer 1.9 build ({name})"), &out);
    eprintln!(
        "packer 1.9 build {name}: {:.1}s\n{}",
        started.elapsed().as_secs_f64(),
        shown(&standin.commands())
    );
    HclBuild {
        standin,
        vm_name,
        output,
        success: out.status.success(),
        text,
    }
}

/// The `powershell` provisioner's `environment_vars` reach the script
/// (Packer uploads them as a `packer-ps-env-vars-*.ps1` file of
/// `$env:NAME="value"; ` assignments and dot-sources it before running
/// the script), with its own `PACKER_BUILDER_TYPE`; and a script ending
/// with `exit 3` passes where `valid_exit_codes = [0, 3]`.
#[test]
fn packer_1_9_powershell_environment_vars_and_valid_exit_codes_work_over_winrm() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = ScratchDir::new("winrm-psenv").unwrap();
    std::fs::write(
        dir.join("three.ps1"),
        "Write-Output \"three: FOO=$env:FOO\"\r\nexit 3\r\n",
    )
    .unwrap();
    let b = hcl_windows_build(
        &bed,
        &guest,
        &dir,
        "winrm-psenv",
        r#"  provisioner "powershell" {
    environment_vars = ["FOO=bar baz", "N=1"]
    inline = [
      "Write-Output \"FOO=$env:FOO\"",
      "Write-Output \"N=$env:N builder=$env:PACKER_BUILDER_TYPE\"",
    ]
  }
  provisioner "powershell" {
    environment_vars = ["FOO=again"]
    script           = "${path.root}/three.ps1"
    valid_exit_codes = [0, 3]
  }
"#,
    );
    let record = b.standin.commands();
    assert!(b.success, "packer build failed");
    assert!(b.text.contains("FOO=bar baz"), "{}", b.text);
    assert!(b.text.contains("N=1 builder=libvirt"), "{}", b.text);
    assert!(b.text.contains("three: FOO=again"), "{}", b.text);
    // Both scripts dot-sourced an env-vars file Packer uploaded; the
    // second ended with 3, and Packer went on to its clean-up.
    let env_file = |c: &Recorded| c.line.contains(". c:/Windows/Temp/packer-ps-env-vars-");
    let uploaded = record
        .iter()
        .filter(|c| {
            c.script.as_deref().is_some_and(|s| {
                s.contains("packer-ps-env-vars-") && s.contains("FromBase64String")
            })
        })
        .count();
    assert!(uploaded >= 2, "{}", shown(&record));
    let runs: Vec<&Recorded> = record
        .iter()
        .filter(|c| env_file(c) && c.line.contains("/script-"))
        .collect();
    let codes: Vec<Option<i32>> = runs.iter().map(|c| c.exit_code).collect();
    assert_eq!(codes, [Some(0), Some(3)], "{}", shown(&record));
    let last_run = record
        .iter()
        .rposition(|c| env_file(c) && c.line.contains("/script-"))
        .unwrap();
    assert!(
        record[last_run + 1..]
            .iter()
            .any(|c| c.line.contains("packer-cleanup-") && c.exit_code == Some(0)),
        "{}",
        shown(&record)
    );
    assert!(!b.text.contains(PASSWORD), "the password shows: {}", b.text);
    assert_built_and_cleaned(&bed, &b.output, &b.vm_name);
}

/// An inline `powershell` command that exits 1 (not a valid exit code)
/// fails the build: Packer names the exit status, runs nothing after it,
/// and the domain and its volumes are removed.
#[test]
fn packer_1_9_powershell_exit_status_1_fails_the_build_and_leaves_nothing() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = ScratchDir::new("winrm-psexit").unwrap();
    let b = hcl_windows_build(
        &bed,
        &guest,
        &dir,
        "winrm-psexit",
        r#"  provisioner "powershell" {
    inline = ["Write-Output \"about to fail\"", "exit 1", "Write-Output \"never printed\""]
  }
  provisioner "windows-shell" {
    inline = ["echo never run"]
  }
"#,
    );
    let record = b.standin.commands();
    assert!(!b.success, "packer build succeeded");
    assert!(b.text.contains("about to fail"), "{}", b.text);
    assert!(
        b.text
            .contains("Script exited with non-zero exit status: 1. Allowed exit codes are: [0]"),
        "{}",
        b.text
    );
    assert!(!b.text.contains("never printed"), "{}", b.text);
    assert!(!b.text.contains("never run"), "{}", b.text);
    let run = record
        .iter()
        .find(|c| c.line.contains("/script-"))
        .unwrap_or_else(|| panic!("no script ran:\n{}", shown(&record)));
    assert_eq!(run.exit_code, Some(1), "{}", shown(&record));
    assert!(
        !record.iter().any(|c| c.line.contains(".bat\"")),
        "{}",
        shown(&record)
    );
    assert!(!b.output.exists());
    assert!(!bed
        .domains()
        .unwrap()
        .iter()
        .any(|d| d.starts_with(&b.vm_name)));
    assert!(!bed
        .volumes(POOL)
        .unwrap()
        .iter()
        .any(|v| v.starts_with(&b.vm_name)));
}

/// `elevated_user`/`elevated_password`: Packer uploads a wrapper that
/// registers a scheduled task running the command as that user (output
/// to a log it prints) and runs it with `powershell -file`; the stand-in
/// runs the task, so the script's output, its environment variables and
/// its exit code (3, valid here) come back through the wrapper, and the
/// wrapper and its log are gone afterwards.
#[test]
fn packer_1_9_powershell_runs_elevated_through_a_scheduled_task_over_winrm() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = ScratchDir::new("winrm-pselev").unwrap();
    let b = hcl_windows_build(
        &bed,
        &guest,
        &dir,
        "winrm-pselev",
        &format!(
            r#"  provisioner "powershell" {{
    elevated_user     = "vagrant"
    elevated_password = "{PASSWORD}"
    environment_vars  = ["FOO=bar baz"]
    inline            = ["Write-Output \"elevated FOO=$env:FOO\"", "exit 3"]
    valid_exit_codes  = [0, 3]
  }}
"#
        ),
    );
    let record = b.standin.commands();
    assert!(b.success, "packer build failed");
    assert!(b.text.contains("elevated FOO=bar baz"), "{}", b.text);
    assert!(!b.text.contains(PASSWORD), "the password shows: {}", b.text);
    let wrapper = record
        .iter()
        .find(|c| {
            c.line.starts_with(
                "powershell -executionpolicy bypass -file \"C:/Windows/Temp/packer-elevated-shell-",
            )
        })
        .unwrap_or_else(|| panic!("no elevated run:\n{}", shown(&record)));
    assert_eq!(wrapper.exit_code, Some(3), "{}", shown(&record));
    let temp = b.standin.host_path(r"C:\Windows\Temp").unwrap();
    let left: Vec<String> = std::fs::read_dir(&temp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("packer-"))
        .collect();
    assert!(left.is_empty(), "left in C:\\Windows\\Temp: {left:?}");
    assert_built_and_cleaned(&bed, &b.output, &b.vm_name);
}

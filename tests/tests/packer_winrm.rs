//! The real Packer 1.6.6 builds with our `libvirt` builder and
//! `communicator = "winrm"`: the tiny guest boots on the namespaced
//! libvirtd while the WinRM stand-in answers for Windows at `winrm_host`
//! (HTTPS with a self-signed certificate, `winrm_insecure`). A
//! `powershell` and a `windows-shell` provisioner run, a `file`
//! provisioner uploads a binary file into a folder (a destination ending
//! in `\`), and the `shutdown_command` arrives;
//! the stand-in then has libvirt shut the domain down, which Windows
//! would do itself. The build writes its image.

use std::sync::Arc;

use std::time::Duration;
use testbed::guest::TinyGuest;

use testbed::libvirtd::{Libvirtd, POOL};
use testbed::packer::{packer_in, show, spawn_interruptible, tiny_guest_source, ScratchDir};
use testbed::util::{wait_until, OutputWithin, COMMAND_LIMIT};
use testbed::winrm::{CommandHook, Config, StandIn};

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
) -> WindowsBuild {
    let vm_name = format!("pk-{name}-{}", std::process::id());
    // What Windows does on `shutdown /s`: power the machine off. The
    // power button is pressed until the domain is off, since the tiny
    // guest may still be booting (and deaf to ACPI) when the command comes.
    let (uri, domain) = (bed.uri(), vm_name.clone());
    let hook: CommandHook = Arc::new(move |line: &str| {
        if line.to_ascii_lowercase().starts_with("shutdown ") {
            let (uri, domain) = (uri.clone(), domain.clone());
            std::thread::spawn(move || press_power_until_off(&uri, &domain));
        }
    });
    let standin = bed
        .netns()
        .spawn_in(move || {
            StandIn::start(Config {
                tls: true,
                password: PASSWORD.into(),
                on_command: Some(hook),
                ..Config::default()
            })
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();

    let output = dir.join("output");
    let mut source = tiny_guest_source(bed, guest, &vm_name, &output);
    for k in ["ssh_username", "ssh_private_key_file", "ssh_timeout"] {
        source.remove(k);
    }
    let winrm = serde_json::json!({
        "type": "libvirt",
        "communicator": "winrm",
        "winrm_username": "vagrant",
        "winrm_password": PASSWORD,
        "winrm_host": "127.0.0.1",
        "winrm_port": standin.addr().port(),
        "winrm_use_ssl": true,
        "winrm_insecure": true,
        "winrm_timeout": "2m",
        "shutdown_command": SHUTDOWN,
    });
    for (k, v) in winrm.as_object().unwrap() {
        source.insert(k.clone(), v.clone());
    }
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
    } = windows_build(&bed, &guest, &dir, "winrm", provisioners);

    let started = std::time::Instant::now();
    let out = packer_in(bed.netns(), &dir, &["build", &path.to_string_lossy()])
        .unwrap()
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build (winrm)", &out);
    eprintln!(
        "packer build over WinRM: {:.1}s, {} commands",
        started.elapsed().as_secs_f64(),
        standin.commands().len()
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

    let image = output.join(format!("{vm_name}.qcow2"));
    assert!(image.is_file(), "no image at {}", image.display());
    let sums = std::fs::read_to_string(output.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("{vm_name}.qcow2")), "{sums}");
    assert!(!bed
        .domains()
        .unwrap()
        .iter()
        .any(|d| d.starts_with(&vm_name)));
    assert!(!bed
        .volumes(POOL)
        .unwrap()
        .iter()
        .any(|v| v.starts_with(&vm_name)));
}

#[test]
fn cancelling_a_winrm_build_terminates_the_running_command_on_the_guest() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = ScratchDir::new("winrm-cancel").unwrap();
    // A provisioner that would keep the build going for minutes.
    let provisioners = serde_json::json!([
        {"type": "windows-shell", "inline": ["timeout /t 300 /nobreak"]}
    ]);
    let b = windows_build(&bed, &guest, &dir, "winrm-cancel", provisioners);
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

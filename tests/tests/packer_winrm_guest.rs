//! The real Packer 1.9 builds a template shaped like the seed's Windows
//! agents through our builder, with the WinRM stand-in running inside the
//! tiny guest (`bed-winrm-guest`, carried in its initramfs and started
//! by the seed's user-data), so the builder's whole path runs for real:
//! the guest boots, its address comes from libvirt's DHCP lease (no
//! `winrm_host`), WinRM goes over HTTPS to port 5986 with a certificate
//! the guest made, the provisioners run (a restart included), the
//! seed's `shutdown /s` powers the guest off and the image is written.
//!
//! The stand-in prints its record (every command, the files on its `C:`
//! drive, the addresses clients connected to) on the serial console
//! before it powers off; a `domain_xslt` sends the console to a file the
//! test reads (`testbed::winrm::Report`).

use std::path::Path;

use testbed::guest::{TinyGuest, POWEROFF};
use testbed::libvirtd::{Libvirtd, POOL};
use testbed::packer::{hcl_attributes, show, tiny_guest_source, ScratchDir};
use testbed::peers::{packer_1_9_in, required_plugins};
use testbed::util::{OutputWithin, COMMAND_LIMIT};
use testbed::winrm::{Recorded, Report, RECORD_END};

const PASSWORD: &str = "W1nRM-in-guest";

const SHUTDOWN: &str = "shutdown /s /t 5 /f /d p:4:1 /c \"Packer Shutdown\"";

/// Where the guest keeps the stand-in's `C:` drive.
const DRIVE: &str = "/winrm-c";

/// The seed's user-data: start the stand-in, with the password from the
/// seed's `winrm-password` file (the guest mounts its seed at
/// `/run/kvmbe/seed`). Packer's restart test needs the restart to keep
/// answering a while (1115 "in progress"), then go down.
fn user_data() -> String {
    format!(
        "#!/bin/sh\nmkdir -p {DRIVE}\nexec /usr/bin/bed-winrm-guest --user vagrant \
         --password-file /run/kvmbe/seed/winrm-password --drive {DRIVE} \
         --reboot-grace 4 --reboot-down 3\n"
    )
}

/// A stylesheet that sends the build domain's serial console to `log`
/// (the bed's file console) instead of a pty.
fn console_to_file(bed: &Libvirtd, domain: &str) -> String {
    format!(
        r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy></xsl:template>
  <xsl:template match="/domain/devices/console|/domain/devices/serial"/>
  <xsl:template match="/domain/devices"><xsl:copy><xsl:apply-templates select="@*|node()"/>{}</xsl:copy></xsl:template>
</xsl:stylesheet>
"#,
        bed.serial_xml(domain)
    )
}

/// A payload that is not text: every byte value, in no simple order.
fn payload(len: u32, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
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

/// The address the guest's DHCP lease gave it (`KVMBE-NET eth0 IP`).
fn leased_address(console: &str) -> Option<String> {
    console.lines().find_map(|l| {
        let mut w = l.trim_end_matches('\r').split_whitespace();
        (w.next() == Some("KVMBE-NET")).then(|| w.nth(1).map(str::to_string))?
    })
}

#[test]
fn packer_1_9_builds_a_seed_shaped_windows_template_against_winrm_inside_the_guest() {
    let bed = Libvirtd::start().unwrap();
    let dir = ScratchDir::new("winrm-guest").unwrap();
    let guest = TinyGuest::ensure()
        .unwrap()
        .carrying_host_program(
            Path::new(env!("CARGO_BIN_EXE_bed-winrm-guest")),
            "/usr/bin/bed-winrm-guest",
            &[],
            &dir,
        )
        .unwrap();
    let vm_name = format!("pkwg-{}", std::process::id());
    let output = dir.join("output");

    // The seed variant of the tiny guest (all in its initramfs, the
    // stand-in with it); the root disk is only the image to write.
    let mut source = tiny_guest_source(&bed, &guest, &vm_name, &output);
    for k in ["ssh_username", "ssh_private_key_file", "ssh_timeout"] {
        source.remove(k);
    }
    let settings = serde_json::json!({
        "initrd": guest.initrd.display().to_string(),
        "kernel_args": guest.cmdline,
        "cd_label": "cidata",
        "cd_content": {
            "meta-data": format!("instance-id: {vm_name}\n"),
            "user-data": user_data(),
            "winrm-password": PASSWORD,
        },
        "domain_xslt": console_to_file(&bed, &vm_name),
        "communicator": "winrm",
        "winrm_username": "vagrant",
        "winrm_password": PASSWORD,
        "winrm_use_ssl": true,
        "winrm_insecure": true,
        "winrm_timeout": "4h",
        "shutdown_command": SHUTDOWN,
    });
    for (k, v) in settings.as_object().unwrap() {
        source.insert(k.clone(), v.clone());
    }

    let ps1 = "Write-Output \"script file ran\"\r\n$marker = 1\r\nexit 0\r\n";
    std::fs::write(dir.join("setup.ps1"), ps1).unwrap();
    let big = payload(100_000, 3);
    std::fs::write(dir.join("payload.bin"), &big).unwrap();
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
    let took = started.elapsed();
    let text = show("packer 1.9 build (winrm in the guest)", &out);
    let console = std::fs::read_to_string(bed.serial_log(&vm_name)).unwrap_or_default();
    let report = Report::from_console(&console)
        .unwrap_or_else(|e| panic!("no record on the console ({e:#}):\n{console}"));
    let record = &report.commands;
    eprintln!(
        "packer 1.9 build over WinRM inside the guest: {:.1}s, {} commands, connections to {:?}, \
         {} restart(s), {} dropped\n{}",
        took.as_secs_f64(),
        record.len(),
        report.local_addrs,
        report.restarts,
        report.dropped,
        shown(record)
    );
    assert!(out.status.success(), "packer build failed");
    assert!(text.contains("inline ran"), "{text}");
    assert!(text.contains("script file ran"), "{text}");
    assert!(text.contains("WIN-STANDIN restarted."), "{text}");
    assert!(!text.contains(PASSWORD), "the password shows: {text}");

    // The builder found the guest by its lease and every connection went
    // to the guest's own address, on 5986: the stand-in ran inside it.
    let ip = leased_address(&console).unwrap_or_else(|| panic!("no lease:\n{console}"));
    assert!(text.contains(&format!("Guest address: {ip}")), "{text}");
    let in_guest: std::net::SocketAddr = format!("{ip}:5986").parse().unwrap();
    assert_eq!(report.local_addrs, vec![in_guest], "{console}");

    // Every command, in order.
    let mut at = 0;
    let mut next =
        |what: &str, found: &dyn Fn(&Recorded) -> bool| match record[at..].iter().position(found) {
            Some(i) => {
                at += i + 1;
                at - 1
            }
            None => panic!("no {what} after command {at}:\n{}", shown(record)),
        };
    let script = |c: &Recorded, s: &str| c.script.as_deref().is_some_and(|t| t.contains(s));
    // Each `powershell` provisioner runs its script, then its clean-up.
    let ps_run = |c: &Recorded, file: &str| {
        c.line.starts_with("powershell -executionpolicy bypass")
            && c.line.contains(&format!("c:/Windows/Temp/{file}"))
    };
    let probe = next("connection probe", &|c| script(c, "WinRM connected."));
    let inline = next("inline script", &|c| ps_run(c, "script-"));
    let inline_clean = next("its clean-up", &|c| ps_run(c, "packer-cleanup-"));
    let file_script = next("script file", &|c| ps_run(c, "script-"));
    let file_clean = next("its clean-up", &|c| ps_run(c, "packer-cleanup-"));
    let restart = next("restart", &|c| {
        c.line == r#"shutdown /r /f /t 0 /c "packer restart""#
    });
    let test = r#"shutdown /r /f /t 60 /c "packer restart test""#;
    // Tests that come while the machine is still stopping get 1115; one
    // after it came back is answered, then aborted.
    let answered = next("restart test (answered)", &|c| {
        c.line == test && c.exit_code == Some(0)
    });
    let abort = next("abort", &|c| c.line == "shutdown /a");
    let check = next("restart check", &|c| {
        script(c, "restarted.\" -f [System.Net.Dns]::GetHostName()")
    });
    let upload = next("file upload", &|c| {
        script(c, "payload.bin") && script(c, "FromBase64String")
    });
    let shutdown = next("shutdown", &|c| c.line == SHUTDOWN);
    assert_eq!(shutdown, record.len() - 1, "{}", shown(record));
    for (i, code) in [
        (probe, 0),
        (inline, 0),
        (inline_clean, 0),
        (file_script, 0),
        (file_clean, 0),
        (restart, 0),
        (abort, 0),
        (check, 0),
        (upload, 0),
        (shutdown, 0),
    ] {
        assert_eq!(
            record[i].exit_code,
            Some(code),
            "command {i}:\n{}",
            shown(record)
        );
    }
    assert!(
        record[restart + 1..answered]
            .iter()
            .filter(|c| c.line == test)
            .all(|c| c.exit_code == Some(1115)),
        "{}",
        shown(record)
    );
    // The restart went down once.
    assert_eq!(report.restarts, 1, "{}", shown(record));

    // The file, byte for byte, on the guest's drive.
    let uploaded = report
        .file(r"C:\Windows\Temp\payload.bin")
        .unwrap_or_else(|| panic!("no payload.bin on the drive: {:#?}", report.files));
    assert!(uploaded.holds(&big), "payload.bin differs: {uploaded:?}");

    // The guest powered off after printing the record.
    let end = console.rfind(RECORD_END).unwrap();
    assert!(console[end..].contains(POWEROFF), "{console}");

    // The image, and nothing left behind.
    let image = output.join(format!("{vm_name}.qcow2"));
    assert!(image.is_file(), "no image at {}", image.display());
    let sums = std::fs::read_to_string(output.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("{vm_name}.qcow2")), "{sums}");
    let domains = bed.domains().unwrap();
    assert!(
        !domains.iter().any(|d| d.starts_with(&vm_name)),
        "{domains:?}"
    );
    let volumes = bed.volumes(POOL).unwrap();
    assert!(
        !volumes.iter().any(|v| v.starts_with(&vm_name)),
        "{volumes:?}"
    );
}

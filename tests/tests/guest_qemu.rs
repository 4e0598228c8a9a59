//! The tiny guest under plain QEMU (TCG, no libvirt): the seed variant
//! prints its NoCloud seed, runs a user-data script, answers the guest
//! agent and powers off on the ACPI button; the root-disk variant accepts
//! SSH with the generated key. Boot times are printed (`--nocapture`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kvmhost::nocloud::Seed;
use testbed::guest::{self, TinyGuest};
use testbed::util::poll_until;

/// One boot at a time: two TCG guests on two cores make the measured
/// times meaningless.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// A QEMU process whose serial console (stdout) is read line by line; it
/// is killed by PID when dropped.
struct Qemu {
    child: Child,
    lines: Receiver<String>,
    started: Instant,
    serial: Vec<String>,
}

impl Qemu {
    fn start(args: &[&str]) -> Result<Qemu> {
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "q35,accel=tcg",
                "-m",
                "256",
                "-nographic",
                "-no-reboot",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting qemu-system-x86_64 (Debian package qemu-system-x86)")?;
        let started = Instant::now();
        let stdout = child.stdout.take().context("qemu stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                buf.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Qemu {
            child,
            lines,
            started,
            serial: Vec::new(),
        })
    }

    /// Waits for a serial line ending with `marker` (the terminal resets
    /// QEMU's firmware prints may precede it) and returns the time since
    /// QEMU started.
    fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.ends_with(marker);
                    self.serial.push(line);
                    if hit {
                        return Ok(self.started.elapsed());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "no {marker:?} on the serial console within {timeout:?}:\n{}",
                        self.log()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("QEMU closed its console before {marker:?}:\n{}", self.log())
                }
            }
        }
    }

    /// The serial lines between `SEED_BEGIN name` and `SEED_END name`.
    fn seed_file(&self, name: &str) -> Option<String> {
        let begin = format!("{} {name}", guest::SEED_BEGIN);
        let end = format!("{} {name}", guest::SEED_END);
        let start = self.serial.iter().position(|l| l.ends_with(&begin))? + 1;
        let len = self.serial[start..]
            .iter()
            .position(|l| l.ends_with(&end))?;
        Some(
            self.serial[start..start + len]
                .iter()
                .map(|l| format!("{l}\n"))
                .collect(),
        )
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        // An error asking is an answer too: it ends the wait.
        match poll_until(timeout, || self.child.try_wait().transpose()) {
            Some(status) => Ok(status?),
            None => bail!(
                "QEMU still runs {timeout:?} after power-off was asked:\n{}",
                self.log()
            ),
        }
    }

    fn log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.serial.push(line);
        }
        self.serial.join("\n")
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Sends one command to a QMP or guest-agent socket and returns the reply
/// line that holds `"return"`.
fn json_command(sock: &Path, greeting: bool, commands: &[&str]) -> Result<String> {
    let stream =
        UnixStream::connect(sock).with_context(|| format!("connecting {}", sock.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    if greeting {
        reader.read_line(&mut line)?;
    }
    let mut last = String::new();
    for command in commands {
        writer.write_all(command.as_bytes())?;
        writer.write_all(b"\n")?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("{} closed before answering {command}", sock.display());
            }
            // QMP interleaves events with replies.
            if line.contains("\"return\"") || line.contains("\"error\"") {
                break;
            }
        }
        if line.contains("\"error\"") {
            bail!("{command} failed: {line}");
        }
        last = line.trim().to_owned();
    }
    Ok(last)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ensure_guest() -> Result<TinyGuest> {
    let t = Instant::now();
    let guest = TinyGuest::ensure()?;
    println!("tiny guest ready in {:.2?} (build or cache)", t.elapsed());
    Ok(guest)
}

#[test]
fn seed_guest_prints_its_seed_runs_the_script_and_powers_off_on_the_acpi_button() -> Result<()> {
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let guest = ensure_guest()?;
    let dir = tempfile::tempdir()?;
    let user_data = "#!/bin/sh\necho \"script ran on $(hostname)\"\nexit 7\n";
    let meta_data = "instance-id: guest-qemu-1\nlocal-hostname: tiny-seed\n";
    let iso = dir.path().join("seed.iso");
    std::fs::write(&iso, Seed::nocloud(user_data, meta_data, None).to_iso()?)?;
    let qmp = dir.path().join("qmp.sock");
    let qga = dir.path().join("qga.sock");

    let mut vm = Qemu::start(&[
        "-kernel",
        guest.kernel.to_str().context("kernel path")?,
        "-initrd",
        guest.initrd.to_str().context("initrd path")?,
        "-append",
        &guest.cmdline,
        // A CD-ROM on q35's SATA (AHCI) bus, where libvirt puts seeds.
        "-drive",
        &format!(
            "if=none,id=seed,media=cdrom,readonly=on,format=raw,file={}",
            iso.display()
        ),
        "-device",
        "ide-cd,drive=seed,bus=ide.0",
        "-nic",
        "user,model=virtio-net-pci",
        "-device",
        "virtio-serial-pci",
        "-chardev",
        &format!("socket,id=qga,path={},server=on,wait=off", qga.display()),
        "-device",
        "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
        "-qmp",
        &format!("unix:{},server=on,wait=off", qmp.display()),
    ])?;

    let boot = vm.wait_for(guest::BOOT, Duration::from_secs(60))?;
    let ready = vm.wait_for(guest::READY, Duration::from_secs(60))?;
    let log = vm.log();
    assert_eq!(
        vm.seed_file("user-data").as_deref(),
        Some(user_data),
        "serial:\n{log}"
    );
    assert_eq!(
        vm.seed_file("meta-data").as_deref(),
        Some(meta_data),
        "serial:\n{log}"
    );
    assert!(
        vm.serial
            .iter()
            .any(|l| l.ends_with(&format!("{} tiny-seed", guest::HOSTNAME))),
        "hostname not applied:\n{}",
        vm.log()
    );
    vm.wait_for("script ran on tiny-seed", Duration::from_secs(30))?;
    vm.wait_for(&format!("{} 7", guest::SCRIPT_END), Duration::from_secs(30))?;

    let pong = json_command(&qga, false, &[r#"{"execute":"guest-ping"}"#])?;
    assert_eq!(pong, r#"{"return": {}}"#);

    let asked = Instant::now();
    json_command(
        &qmp,
        true,
        &[
            r#"{"execute":"qmp_capabilities"}"#,
            r#"{"execute":"system_powerdown"}"#,
        ],
    )?;
    vm.wait_for(guest::POWEROFF, Duration::from_secs(30))?;
    let status = vm.wait_exit(Duration::from_secs(30))?;
    let off = asked.elapsed();
    assert!(status.success(), "QEMU exited with {status}");

    println!(
        "seed guest (q35, TCG): {} after {boot:.2?}, {} after {ready:.2?}, \
         ACPI power button to QEMU exit {off:.2?}",
        guest::BOOT,
        guest::READY
    );
    Ok(())
}

#[test]
fn root_disk_guest_accepts_ssh_with_the_generated_key() -> Result<()> {
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let guest = ensure_guest()?;
    let dir = tempfile::tempdir()?;
    let disk = dir.path().join("root.qcow2");
    guest.copy_root_disk(&disk)?;
    let port = free_port()?;

    let mut vm = Qemu::start(&[
        "-kernel",
        guest.kernel.to_str().context("kernel path")?,
        "-initrd",
        guest.root_initrd.to_str().context("initrd path")?,
        "-append",
        &guest.root_cmdline,
        "-drive",
        &format!("file={},if=virtio,format=qcow2", disk.display()),
        "-netdev",
        &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22"),
        "-device",
        "virtio-net-pci,netdev=n0",
        // As libvirt adds by default; without it the guest's first SSH
        // session waits about a second for the kernel's entropy.
        "-device",
        "virtio-rng-pci",
    ])?;
    let ready = vm.wait_for(guest::READY, Duration::from_secs(60))?;
    assert!(
        vm.serial.iter().any(|l| l.ends_with(guest::SEED_NONE)),
        "a guest without a seed should say so:\n{}",
        vm.log()
    );

    let ssh = |command: &str| {
        Command::new("ssh")
            .args(["-i", guest.ssh_key.to_str().unwrap_or_default()])
            .args(["-p", &port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR"])
            .arg("root@127.0.0.1")
            .arg(command)
            .stdin(Stdio::null())
            .output()
    };
    // The last refusal, for the error if none succeeds.
    let mut refused = Vec::new();
    let hi = poll_until(Duration::from_secs(60), || match ssh("echo hi") {
        Ok(out) if !out.status.success() => {
            refused = out.stderr;
            None
        }
        answered => Some(answered),
    });
    let Some(hi) = hi else {
        bail!(
            "ssh never succeeded: {}\nserial:\n{}",
            String::from_utf8_lossy(&refused),
            vm.log()
        );
    };
    let hi = hi?;
    let ssh_at = vm.started.elapsed();
    assert_eq!(String::from_utf8_lossy(&hi.stdout), "hi\n");

    let asked = Instant::now();
    // The session dies with the guest: its status says nothing.
    let _ = ssh("poweroff");
    let status = vm.wait_exit(Duration::from_secs(30))?;
    let off = asked.elapsed();
    assert!(status.success(), "QEMU exited with {status}");

    println!(
        "root-disk guest (q35, TCG): {} after {ready:.2?}, ssh 'echo hi' answered after {ssh_at:.2?}, \
         poweroff over ssh to QEMU exit {off:.2?}",
        guest::READY
    );
    Ok(())
}

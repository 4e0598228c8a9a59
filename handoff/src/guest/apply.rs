//! Making the VM the job's: its clock, its name, its lease.

use std::io;
use std::process::Command;

use handoff::Message;

/// Sets the clock, then the host name, then renews the DHCP lease with
/// `renew_dhcp` (a shell command) when the message asks for it. The
/// first failure is returned, naming what failed.
pub fn apply(msg: &Message, renew_dhcp: Option<&str>) -> Result<(), String> {
    set_clock(msg.time).map_err(|e| format!("setting the clock: {e}"))?;
    set_hostname(&msg.hostname).map_err(|e| format!("setting the host name: {e}"))?;
    if msg.renew_dhcp {
        match renew_dhcp {
            Some(cmd) => {
                let status = Command::new("/bin/sh")
                    .arg("-c")
                    .arg(cmd)
                    .status()
                    .map_err(|e| format!("renewing the DHCP lease: running /bin/sh: {e}"))?;
                if !status.success() {
                    return Err(format!(
                        "renewing the DHCP lease: `{cmd}` failed ({status})"
                    ));
                }
            }
            None => say!(
                "kvmbe-handoff: the launcher asked for a DHCP renewal; no --renew-dhcp command given, skipped"
            ),
        }
    }
    Ok(())
}

fn set_clock(time: f64) -> io::Result<()> {
    let secs = time.trunc();
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: ((time - secs) * 1e9) as libc::c_long,
    };
    // SAFETY: a valid timespec, read during the call only.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length of a live byte string.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Programs that read the file (busybox hostname -F, DHCP scripts) agree.
    if let Err(e) = std::fs::write("/etc/hostname", format!("{name}\n")) {
        say!("kvmbe-handoff: writing /etc/hostname: {e} (the kernel has the new name)");
    }
    Ok(())
}

/// Writes the file systems' dirty data out (before the host saves the
/// VM's memory and freezes its disk).
pub fn sync() -> io::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

//! Making the VM the job's: its clock, its name, its lease.

use std::fmt;
use std::io;
use std::process::{Command, ExitStatus};

use handoff::Message;

/// What could not be made the job's. Its text is also the guest's
/// `error` line to the launcher.
#[derive(Debug)]
pub enum ApplyError {
    /// The clock could not be set.
    Clock(io::Error),
    /// The host name could not be set.
    Hostname(io::Error),
    /// The shell for the DHCP renewal could not be run.
    RenewDhcpShell(io::Error),
    /// The DHCP renewal command failed.
    RenewDhcpFailed {
        /// The command, as given with `--renew-dhcp`.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Clock(e) => write!(f, "setting the clock: {e}"),
            ApplyError::Hostname(e) => write!(f, "setting the host name: {e}"),
            ApplyError::RenewDhcpShell(e) => {
                write!(f, "renewing the DHCP lease: running /bin/sh: {e}")
            }
            ApplyError::RenewDhcpFailed { command, status } => {
                write!(f, "renewing the DHCP lease: `{command}` failed ({status})")
            }
        }
    }
}

impl std::error::Error for ApplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApplyError::Clock(e) | ApplyError::Hostname(e) | ApplyError::RenewDhcpShell(e) => {
                Some(e)
            }
            ApplyError::RenewDhcpFailed { .. } => None,
        }
    }
}

/// Sets the clock, then the host name, then renews the DHCP lease with
/// `renew_dhcp` (a shell command) when the message asks for it. The
/// first failure is returned, naming what failed.
pub fn apply(msg: &Message, renew_dhcp: Option<&str>) -> Result<(), ApplyError> {
    set_clock(msg.time).map_err(ApplyError::Clock)?;
    set_hostname(&msg.hostname).map_err(ApplyError::Hostname)?;
    if msg.renew_dhcp {
        match renew_dhcp {
            Some(cmd) => {
                let status = Command::new("/bin/sh")
                    .arg("-c")
                    .arg(cmd)
                    .status()
                    .map_err(ApplyError::RenewDhcpShell)?;
                if !status.success() {
                    return Err(ApplyError::RenewDhcpFailed {
                        command: cmd.to_string(),
                        status,
                    });
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

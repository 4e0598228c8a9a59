//! Making the VM the job's: its clock, its name, its machine id, its lease.

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
    /// No fresh machine id could be written.
    MachineId(io::Error),
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
            ApplyError::MachineId(e) => write!(f, "writing a fresh {MACHINE_ID}: {e}"),
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
            ApplyError::Clock(e)
            | ApplyError::Hostname(e)
            | ApplyError::MachineId(e)
            | ApplyError::RenewDhcpShell(e) => Some(e),
            ApplyError::RenewDhcpFailed { .. } => None,
        }
    }
}

/// Where systemd, D-Bus and the programs of a job read the machine's id.
const MACHINE_ID: &str = "/etc/machine-id";

/// Sets the clock, then the host name, gives the VM a fresh machine id
/// (every VM of a template, and every restore of a saved slot, would
/// otherwise share the one it booted with), then renews the DHCP lease
/// with `renew_dhcp` (a shell command) when the message asks for it. The
/// first failure is returned, naming what failed.
pub fn apply(msg: &Message, renew_dhcp: Option<&str>) -> Result<(), ApplyError> {
    set_clock(msg.time).map_err(ApplyError::Clock)?;
    set_hostname(&msg.hostname).map_err(ApplyError::Hostname)?;
    fresh_machine_id(MACHINE_ID).map_err(ApplyError::MachineId)?;
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

/// Writes a new random machine id to `path`: 32 lowercase hex digits
/// and a newline, a version 4 UUID as systemd makes them.
fn fresh_machine_id(path: &str) -> io::Result<()> {
    use std::io::Read as _;
    let mut id = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut id)?;
    std::fs::write(path, machine_id_text(id))
}

fn machine_id_text(mut id: [u8; 16]) -> String {
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let mut text: String = id.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    text
}

/// Writes the file systems' dirty data out (before the host saves the
/// VM's memory and freezes its disk).
pub fn sync() -> io::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_machine_id_is_32_hex_digits_of_a_version_4_uuid() {
        let text = machine_id_text([0xff; 16]);
        assert_eq!(text, "ffffffffffff4fffbfffffffffffffff\n");
        let text = machine_id_text([0; 16]);
        assert_eq!(text, "00000000000040008000000000000000\n");
    }

    #[test]
    fn a_fresh_machine_id_replaces_the_old_one() {
        let dir = std::env::temp_dir().join(format!("kvmbe-machine-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("machine-id");
        let old = "0123456789abcdef0123456789abcdef\n";
        std::fs::write(&path, old).unwrap();
        fresh_machine_id(path.to_str().unwrap()).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        fresh_machine_id(path.to_str().unwrap()).unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for id in [&first, &second] {
            assert_eq!(id.len(), 33, "{id:?}");
            assert!(id[..32]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(&id[12..13], "4", "{id:?}");
        }
        assert_ne!(first, old);
        assert_ne!(first, second);
    }
}

//! The virtio-serial port of the hand-off channel, as the guest sees it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use handoff::CHANNEL;

/// How often a port whose host side is away is looked at again: the
/// kernel reports such a port as hung up at once, so `poll` cannot wait
/// for the host to come.
const RECHECK: Duration = Duration::from_millis(50);

/// Finds the port: udev's `/dev/virtio-ports/<name>` link, else (no
/// udev, as in small guests) the `vportNpM` device whose sysfs `name` is
/// the channel's.
pub fn find() -> io::Result<PathBuf> {
    let link = Path::new("/dev/virtio-ports").join(CHANNEL);
    if link.exists() {
        return Ok(link);
    }
    let class = Path::new("/sys/class/virtio-ports");
    if let Ok(entries) = fs::read_dir(class) {
        for entry in entries.flatten() {
            let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
            if name.trim_end() == CHANNEL {
                return Ok(Path::new("/dev").join(entry.file_name()));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no virtio-serial port named {CHANNEL}: give the domain \
             <channel type='unix'><target type='virtio' name='{CHANNEL}'/></channel> \
             (and load virtio_console), or name the device with --port"
        ),
    ))
}

/// Opens the port for reading and writing.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Waits until the host side has the channel open. A port reports
/// `POLLHUP` while nobody is at the host's end; other files (a socket, a
/// pipe standing in for the port) are taken as connected.
pub fn wait_for_host(port: &File) -> io::Result<()> {
    loop {
        let mut fds = libc::pollfd {
            fd: port.as_raw_fd(),
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fds, 1, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds.revents & libc::POLLNVAL != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "poll: POLLNVAL",
            ));
        }
        if fds.revents & libc::POLLHUP == 0 {
            return Ok(());
        }
        std::thread::sleep(RECHECK);
    }
}

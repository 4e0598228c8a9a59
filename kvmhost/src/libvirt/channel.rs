//! A domain's virtio-serial channels, reached through libvirt
//! (`virDomainOpenChannel`), so they work over `qemu+ssh://` as locally;
//! and the hand-off of a job to a warm VM over its `org.kvmbe.handoff`
//! channel (see the `kvmbe-handoff` crate).
//!
//! The stream is non-blocking and every read and write has a deadline:
//! a guest that never answers costs the caller a bounded wait, and no
//! call holds the connection meanwhile (libvirt's event loop, which
//! [`Host`] runs, moves the bytes).

use std::io::{self, BufReader, Read, Write};
use std::time::{Duration, Instant};

pub use handoff::{Message, CHANNEL};
use virt::stream::Stream;

use super::error::{Error, Result};
use super::Host;

/// How long a read or write that would block sleeps before it tries again.
const POLL: Duration = Duration::from_millis(5);

/// An open channel: bytes to and from the guest's port, each call ending
/// with [`io::ErrorKind::TimedOut`] once the deadline has passed.
pub struct Channel {
    stream: Stream,
    deadline: Instant,
}

impl Host {
    /// Opens domain `id`'s (name or UUID) channel `name`; reads and
    /// writes fail once `timeout` from now has passed.
    pub fn open_channel(&self, id: &str, name: &str, timeout: Duration) -> Result<Channel> {
        let dom = self.lookup_domain(id)?;
        let fail = |what: &str, e: virt::error::Error| Error::Libvirt {
            context: format!("{what} channel '{name}' of domain '{id}'"),
            message: e.message().to_string(),
        };
        let stream = Stream::new(self.raw(), virt::sys::VIR_STREAM_NONBLOCK)
            .map_err(|e| fail("make a stream for", e))?;
        dom.open_channel(Some(name), &stream, 0)
            .map_err(|e| fail("open", e))?;
        Ok(Channel {
            stream,
            deadline: Instant::now() + timeout,
        })
    }

    /// Whether domain `id`'s guest waits for a job: its hand-off program
    /// answers `hello` with `ready` within `timeout` (a guest still
    /// reading on a connection closed before it ran answers too). The channel is closed again, which
    /// leaves the guest waiting.
    pub fn handoff_ready(&self, id: &str, timeout: Duration) -> Result<()> {
        let channel = self.open_channel(id, CHANNEL, timeout)?;
        handoff::wait_ready(&mut BufReader::new(channel)).map_err(|e| Error::Libvirt {
            context: format!("ask domain '{id}' whether it waits for a job"),
            message: e.to_string(),
        })
    }

    /// Has domain `id`'s waiting guest sync its file systems (before its
    /// memory is saved): waits for `ready`, asks `sync` and waits for
    /// `synced`, all within `timeout`. The guest waits for a job again.
    pub fn handoff_sync(&self, id: &str, timeout: Duration) -> Result<()> {
        let channel = self.open_channel(id, CHANNEL, timeout)?;
        handoff::request_sync(&mut BufReader::new(channel)).map_err(|e| Error::Libvirt {
            context: format!("have domain '{id}' sync its file systems"),
            message: e.to_string(),
        })
    }

    /// Hands `msg` (a job and its token) to domain `id`'s guest: waits
    /// for `ready`, sends it and waits for `started`, all within
    /// `timeout`. An error leaves the guest in an unknown state: remove
    /// the domain rather than try again.
    pub fn hand_off(&self, id: &str, msg: &Message, timeout: Duration) -> Result<()> {
        let channel = self.open_channel(id, CHANNEL, timeout)?;
        handoff::send(&mut BufReader::new(channel), msg).map_err(|e| Error::Libvirt {
            context: format!("hand job {} to domain '{id}'", msg.job),
            message: e.to_string(),
        })
    }
}

impl Channel {
    /// Runs a non-blocking stream call until it moves bytes, ends, fails
    /// or the deadline passes. libvirt returns -2 for "would block".
    fn until_done(&self, what: &str, mut call: impl FnMut() -> i32) -> io::Result<usize> {
        loop {
            let n = call();
            if n >= 0 {
                return Ok(n as usize);
            }
            if n != -2 {
                let message = virt::error::Error::last_error().message().to_string();
                return Err(io::Error::other(format!("{what} the channel: {message}")));
            }
            if Instant::now() >= self.deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} the channel: no answer in time"),
                ));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the stream lives as long as `self`.
        let ptr = unsafe { self.stream.as_ptr() };
        self.until_done("reading", || {
            // SAFETY: a live stream and a buffer of the length given.
            unsafe { virt::sys::virStreamRecv(ptr, buf.as_mut_ptr().cast(), buf.len()) }
        })
    }
}

impl Write for Channel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: the stream lives as long as `self`.
        let ptr = unsafe { self.stream.as_ptr() };
        self.until_done("writing", || {
            // SAFETY: a live stream; libvirt only reads the buffer.
            unsafe { virt::sys::virStreamSend(ptr, buf.as_ptr().cast_mut().cast(), buf.len()) }
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Closes the host's end; the guest sees it hang up. Freeing the
        // stream is `Stream`'s own drop.
        // SAFETY: a live stream, not used after this.
        unsafe { virt::sys::virStreamAbort(self.stream.as_ptr()) };
    }
}

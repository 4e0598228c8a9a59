//! Opening a libvirt connection to a host that may be asleep: wake
//! packets (magic packet and powerwake request) about once a second
//! until libvirt answers or the time is up.

use std::time::{Duration, Instant};

use super::{send_wake, WakeError, WakeTarget};
use crate::libvirt::Host;

/// Why a sleeping host could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum WakeOpenError {
    /// A wake packet could not be sent.
    #[error(transparent)]
    Send(#[from] WakeError),
    /// libvirt did not answer in time.
    #[error("{uri} did not answer within {} s after {sent} rounds of wake packets; last error: {last}", waited.as_secs())]
    Timeout {
        /// The URI tried.
        uri: String,
        /// How long we tried.
        waited: Duration,
        /// Rounds of packets sent.
        sent: u32,
        /// The last connection error.
        last: String,
    },
}

/// Opens a connection with `open` (`uri` names it in the error); when
/// that fails, sends a wake packet to each of `targets` and tries again,
/// about every `interval`, until `timeout`. Reached through
/// [`crate::libvirt::handle::HostHandle`].
/// Returns the connection and how long the wake took (zero when the
/// host was awake).
pub(crate) fn open_waking(
    uri: &str,
    open: impl Fn() -> crate::libvirt::Result<Host>,
    targets: &[WakeTarget],
    timeout: Duration,
    interval: Duration,
) -> Result<(Host, Duration), WakeOpenError> {
    let start = Instant::now();
    let mut last = match open() {
        Ok(h) => return Ok((h, Duration::ZERO)),
        Err(e) => e.to_string(),
    };
    let mut sent = 0;
    while start.elapsed() < timeout {
        for t in targets {
            send_wake(t)?;
        }
        sent += 1;
        let round = Instant::now();
        match open() {
            Ok(h) => return Ok((h, start.elapsed())),
            Err(e) => last = e.to_string(),
        }
        if let Some(rest) = interval.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Err(WakeOpenError::Timeout {
        uri: uri.to_string(),
        waited: start.elapsed(),
        sent,
        last,
    })
}

//! The hand-off of a reserved Buildkite job to a warm agent VM.
//!
//! A warm VM boots with nothing secret in it: no job, no token, not even
//! its final host name. Its `kvmbe-handoff` program waits on the
//! virtio-serial port [`CHANNEL`]; the launcher, once it has reserved a
//! job and got the job's acquisition token, opens the domain's channel
//! and the two speak one line at a time:
//!
//! ```text
//! host:  hello
//! guest: ready
//! host:  {"job":"0190…","token":"bkjat_…","hostname":"debian-0190-x7","time":1765110000,"renew_dhcp":true}
//! guest: started
//! ```
//!
//! The guest says `ready` each time the host side connects and answers
//! `ready` to every `hello`, and `error <why>` to a message it cannot
//! use. The host opens with `hello` because a guest cannot always tell
//! one connection from the next: a host that closes the channel and
//! opens it again before the guest ran (a busy host, or a slot whose
//! memory was saved right after the host closed) reaches a guest still
//! reading on the old connection, whose `ready` went nowhere. The
//! `hello` wakes that reader. So a host may hear `ready` twice; it skips
//! a `ready` wherever it waits for another line. On a good message it sets
//! the clock and host name, writes a fresh `/etc/machine-id` (and
//! renews its DHCP lease when asked),
//! answers `started` and execs `buildkite-agent start --acquire-job JOB`
//! with the token in `BUILDKITE_AGENT_TOKEN`.
//!
//! Before its memory is saved to a state file (a saved slot), the host
//! asks a waiting guest to write its file systems' dirty data out, so the
//! disk frozen with the state is what the guest believes it wrote:
//!
//! ```text
//! host:  hello
//! guest: ready
//! host:  sync
//! guest: synced
//! ```
//!
//! after which the guest waits for the next line (or connection) as before.
//!
//! ```
//! use std::io::BufReader;
//! use std::os::unix::net::UnixStream;
//!
//! let msg = handoff::Message {
//!     job: "01901234-5678-4abc-8def-0123456789ab".into(),
//!     token: "bkjat_secret".into(),
//!     hostname: "debian-0190-x7".into(),
//!     time: 1_765_110_000.0,
//!     renew_dhcp: false,
//! };
//! let (host, guest) = UnixStream::pair().unwrap();
//! let vm = std::thread::spawn(move || {
//!     let mut conn = BufReader::new(guest);
//!     let got = handoff::receive(&mut conn, || Ok(())).unwrap();
//!     handoff::reply_started(conn.get_mut()).unwrap();
//!     got
//! });
//! handoff::send(&mut BufReader::new(host), &msg).unwrap();
//! assert_eq!(vm.join().unwrap(), msg);
//! ```

#![deny(missing_docs)]

mod json;
mod message;
mod protocol;

pub use message::{Message, MessageError};
pub use protocol::{
    receive, reply_error, reply_started, request_sync, send, wait_ready, ReceiveError, SendError,
};

/// The name of the virtio-serial channel (the domain XML's
/// `<target type='virtio' name='…'/>` and the guest's port name).
pub const CHANNEL: &str = "org.kvmbe.handoff";

/// The guest's line when it waits for a message (on connecting, and as
/// the answer to [`HELLO`]).
pub const READY: &str = "ready";

/// The host's first line on each connection, which a waiting guest
/// answers with [`READY`].
pub const HELLO: &str = "hello";

/// The guest's line once it applied a message, right before it starts the agent.
pub const STARTED: &str = "started";

/// The host's line asking a waiting guest to sync its file systems.
pub const SYNC: &str = "sync";

/// The guest's line once its file systems are synced.
pub const SYNCED: &str = "synced";

/// The prefix of the guest's line about a message it could not use.
pub const ERROR: &str = "error";

/// The longest line either side reads; a longer one is refused, so a
/// confused peer cannot make the other hold unbounded memory.
pub const MAX_LINE: usize = 16 * 1024;

//! Both ends of the line protocol, over any byte stream: the VM's port
//! device in the guest, libvirt's channel stream on the launcher's side
//! (and a socket pair in tests). Time limits are the stream's business.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};

use crate::{Message, ERROR, HELLO, MAX_LINE, READY, STARTED, SYNC, SYNCED};

/// Why the guest got no message on this connection.
#[derive(Debug)]
pub enum ReceiveError {
    /// The host side went away (the guest waits for the next connection).
    Closed,
    /// The stream failed.
    Io(io::Error),
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::Closed => f.write_str("the host closed the channel"),
            ReceiveError::Io(e) => write!(f, "reading the channel: {e}"),
        }
    }
}

impl std::error::Error for ReceiveError {}

/// Why a hand-off failed on the launcher's side.
#[derive(Debug)]
pub enum SendError {
    /// The guest closed the channel (or never answered) before `want`.
    Closed {
        /// The line that was awaited.
        want: &'static str,
    },
    /// The guest said something else than `want`.
    Unexpected {
        /// The line that was awaited.
        want: &'static str,
        /// What came instead (cut to 200 characters).
        got: String,
    },
    /// The guest could not use the message: its `error` line.
    Refused(String),
    /// The stream failed (a time limit shows up here too).
    Io(io::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed { want } => {
                write!(f, "the guest closed the channel before saying {want:?}")
            }
            SendError::Unexpected { want, got } => {
                write!(f, "the guest said {got:?} instead of {want:?}")
            }
            SendError::Refused(why) => write!(f, "the guest refused the job: {why}"),
            SendError::Io(e) => write!(f, "talking to the guest: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Reads one line without its end; `None` when the stream ends first.
/// A line over [`MAX_LINE`] bytes is an error.
fn read_line(conn: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = conn.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if buf.last() != Some(&b'\n') {
        if n > MAX_LINE {
            skip_line(conn)?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE} bytes"),
            ));
        }
        // A line cut short by the end of the stream is no line.
        return Ok(None);
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a line that is not UTF-8"))
}

/// Drops the rest of an over-long line, a buffer at a time.
fn skip_line(conn: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = conn.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            conn.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        conn.consume(n);
    }
}

fn write_line(conn: &mut impl Write, line: &str) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    conn.write_all(&bytes)?;
    conn.flush()
}

/// Guest side: says `ready`, then reads lines until one is a good
/// message, answering `error <why>` to each that is not. A `hello` is
/// answered `ready`. A `sync` line runs `sync` and is answered `synced`
/// (or `error <why>` when it failed); the wait for a message goes on.
pub fn receive<S: Read + Write>(
    conn: &mut BufReader<S>,
    mut sync: impl FnMut() -> io::Result<()>,
) -> Result<Message, ReceiveError> {
    write_line(conn.get_mut(), READY).map_err(lost)?;
    loop {
        let why = match read_line(conn) {
            Ok(Some(line)) if line == HELLO => {
                write_line(conn.get_mut(), READY).map_err(lost)?;
                continue;
            }
            Ok(Some(line)) if line == SYNC => match sync() {
                Ok(()) => {
                    write_line(conn.get_mut(), SYNCED).map_err(lost)?;
                    continue;
                }
                Err(e) => format!("sync: {e}"),
            },
            Ok(Some(line)) => match Message::parse(&line) {
                Ok(msg) => return Ok(msg),
                Err(e) => e.to_string(),
            },
            Ok(None) => return Err(ReceiveError::Closed),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => e.to_string(),
            Err(e) => return Err(lost(e)),
        };
        reply_error(conn.get_mut(), &why).map_err(lost)?;
    }
}

/// A host that hung up mid-conversation is a closed channel, not a fault.
fn lost(e: io::Error) -> ReceiveError {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ReceiveError::Closed,
        _ => ReceiveError::Io(e),
    }
}

/// Guest side: the message was applied; the agent starts now.
pub fn reply_started(conn: &mut impl Write) -> io::Result<()> {
    write_line(conn, STARTED)
}

/// Guest side: `error <why>`, on one line whatever `why` holds.
pub fn reply_error(conn: &mut impl Write, why: &str) -> io::Result<()> {
    let flat: String = why
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    write_line(conn, &format!("{ERROR} {flat}"))
}

/// Launcher side: says `hello` and waits for the guest's `ready` (a warm
/// VM that says it waits for a job; closing the channel then leaves it
/// waiting).
pub fn wait_ready<S: Read + Write>(conn: &mut BufReader<S>) -> Result<(), SendError> {
    tell(conn, HELLO)?;
    expect(conn, READY)
}

/// Launcher side: writes `line`. A guest that hung up may still have
/// said why before it did: that is for the next read to find, so a
/// closed stream is no error here.
fn tell<S: Read + Write>(conn: &mut BufReader<S>, line: &str) -> Result<(), SendError> {
    match write_line(conn.get_mut(), line).map_err(lost) {
        Err(ReceiveError::Io(e)) => Err(SendError::Io(e)),
        _ => Ok(()),
    }
}

/// Launcher side: waits for `ready`, asks the guest to sync its file
/// systems and waits for `synced`; the guest then waits for a job again.
pub fn request_sync<S: Read + Write>(conn: &mut BufReader<S>) -> Result<(), SendError> {
    wait_ready(conn)?;
    tell(conn, SYNC)?;
    expect(conn, SYNCED)
}

/// Launcher side: waits for `ready`, sends `msg` and waits for `started`.
pub fn send<S: Read + Write>(conn: &mut BufReader<S>, msg: &Message) -> Result<(), SendError> {
    wait_ready(conn)?;
    tell(conn, &msg.to_line())?;
    expect(conn, STARTED)
}

/// Reads the next line, which must be `want`; a `ready` before it is
/// skipped (a guest says `ready` on connecting and again to `hello`).
fn expect(conn: &mut impl BufRead, want: &'static str) -> Result<(), SendError> {
    // A guest that hung up without reading what was sent resets the
    // stream: that is a close too.
    let mut next = || match read_line(conn) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(None),
        other => other.map_err(SendError::Io),
    };
    let mut line = next()?;
    while want != READY && line.as_deref() == Some(READY) {
        line = next()?;
    }
    match line {
        None => Err(SendError::Closed { want }),
        Some(line) if line == want => Ok(()),
        Some(line) => match line.strip_prefix(ERROR).and_then(|r| r.strip_prefix(' ')) {
            Some(why) => Err(SendError::Refused(why.to_owned())),
            None => Err(SendError::Unexpected {
                want,
                got: line.chars().take(200).collect(),
            }),
        },
    }
}

#[cfg(test)]
mod test {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::thread;

    use super::*;

    fn no_sync() -> io::Result<()> {
        panic!("no sync was asked for")
    }

    fn sample() -> Message {
        Message {
            job: "0190abcd-0000-4000-8000-000000000001".into(),
            token: "bkjat_token".into(),
            hostname: "warm-1".into(),
            time: 1_765_000_000.0,
            renew_dhcp: true,
        }
    }

    /// Runs `guest` on one end of a socket pair in a thread, `host` on the other.
    fn over_pair<G, H, T, U>(guest: G, host: H) -> (T, U)
    where
        G: FnOnce(BufReader<UnixStream>) -> T + Send + 'static,
        T: Send + 'static,
        H: FnOnce(BufReader<UnixStream>) -> U,
    {
        let (h, g) = UnixStream::pair().unwrap();
        let vm = thread::spawn(move || guest(BufReader::new(g)));
        let u = host(BufReader::new(h));
        (vm.join().unwrap(), u)
    }

    #[test]
    fn the_guest_gets_the_message_and_the_host_hears_started() {
        let (got, sent) = over_pair(
            |mut c| {
                let m = receive(&mut c, no_sync).unwrap();
                reply_started(c.get_mut()).unwrap();
                m
            },
            |mut c| send(&mut c, &sample()),
        );
        sent.unwrap();
        assert_eq!(got, sample());
    }

    #[test]
    fn the_guest_answers_error_to_a_bad_line_and_takes_the_next() {
        let (got, lines) = over_pair(
            |mut c| {
                let m = receive(&mut c, no_sync).unwrap();
                reply_started(c.get_mut()).unwrap();
                m
            },
            |mut c| {
                let mut lines = vec![read_line(&mut c).unwrap().unwrap()];
                write_line(
                    c.get_mut(),
                    r#"{"job":"x y","token":"t","hostname":"h","time":5}"#,
                )
                .unwrap();
                lines.push(read_line(&mut c).unwrap().unwrap());
                write_line(c.get_mut(), &"x".repeat(MAX_LINE + 10)).unwrap();
                lines.push(read_line(&mut c).unwrap().unwrap());
                write_line(c.get_mut(), &sample().to_line()).unwrap();
                lines.push(read_line(&mut c).unwrap().unwrap());
                lines
            },
        );
        assert_eq!(got, sample());
        assert_eq!(lines[0], "ready");
        assert!(lines[1].starts_with("error job: must be"), "{}", lines[1]);
        assert!(
            lines[2].starts_with("error a line longer than"),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], "started");
    }

    #[test]
    fn a_sync_request_is_answered_after_syncing_and_the_wait_goes_on() {
        let (got, ()) = over_pair(
            |mut c| {
                let mut synced = 0;
                let m = receive(&mut c, || {
                    synced += 1;
                    Ok(())
                })
                .unwrap();
                reply_started(c.get_mut()).unwrap();
                (m, synced)
            },
            |mut c| {
                request_sync(&mut c).unwrap();
                // The same connection then takes the job (no second `ready`).
                write_line(c.get_mut(), &sample().to_line()).unwrap();
                expect(&mut c, STARTED).unwrap();
            },
        );
        assert_eq!(got, (sample(), 1));

        // A failed sync is the guest's error; the guest still waits.
        let (got, sent) = over_pair(
            |mut c| receive(&mut c, || Err(io::Error::other("EIO"))),
            |mut c| request_sync(&mut c),
        );
        assert!(
            matches!(&sent, Err(SendError::Refused(why)) if why == "sync: EIO"),
            "{sent:?}"
        );
        assert!(matches!(got, Err(ReceiveError::Closed)), "{got:?}");

        // A guest that does not know `sync` says so in its error line.
        let (_, sent) = over_pair(
            |mut c| {
                write_line(c.get_mut(), READY).unwrap();
                let _ = read_line(&mut c);
                write_line(c.get_mut(), "error not a JSON object").unwrap();
            },
            |mut c| request_sync(&mut c),
        );
        assert!(matches!(sent, Err(SendError::Refused(_))), "{sent:?}");
    }

    #[test]
    fn a_host_that_goes_away_ends_the_wait_as_closed() {
        let (got, ()) = over_pair(|mut c| receive(&mut c, no_sync), drop);
        assert!(matches!(got, Err(ReceiveError::Closed)), "{got:?}");
        // Half a message, then gone: still no message.
        let (got, ()) = over_pair(
            |mut c| receive(&mut c, no_sync),
            |mut c| {
                let line = sample().to_line();
                c.get_mut().write_all(&line.as_bytes()[..20]).unwrap();
            },
        );
        assert!(matches!(got, Err(ReceiveError::Closed)), "{got:?}");
    }

    #[test]
    fn the_host_reports_a_refusal_a_silent_guest_and_a_stranger() {
        let (_, sent) = over_pair(
            |mut c| {
                receive(&mut c, no_sync).unwrap();
                reply_error(c.get_mut(), "sethostname: Operation not\npermitted").unwrap();
            },
            |mut c| send(&mut c, &sample()),
        );
        let e = sent.unwrap_err().to_string();
        assert_eq!(
            e,
            "the guest refused the job: sethostname: Operation not permitted"
        );

        let (_, sent) = over_pair(drop, |mut c| send(&mut c, &sample()));
        assert_eq!(
            sent.unwrap_err().to_string(),
            "the guest closed the channel before saying \"ready\""
        );

        let (_, sent) = over_pair(
            |mut c| write_line(c.get_mut(), "SSH-2.0-dropbear"),
            |mut c| send(&mut c, &sample()),
        );
        assert_eq!(
            sent.unwrap_err().to_string(),
            "the guest said \"SSH-2.0-dropbear\" instead of \"ready\""
        );

        // Ready, then gone before starting: the job must go elsewhere.
        let (_, sent) = over_pair(
            |mut c| {
                receive(&mut c, no_sync).unwrap();
            },
            |mut c| send(&mut c, &sample()),
        );
        assert!(
            matches!(sent, Err(SendError::Closed { want: "started" })),
            "{sent:?}"
        );
    }

    #[test]
    fn a_guest_whose_ready_went_nowhere_answers_the_hello() {
        // The guest said `ready` before this connection was the one it
        // was on (its line is lost here); it then reads on. Without the
        // host's `hello` both would wait for the other until the limit.
        let (got, sent) = over_pair(
            |mut c| {
                let m = receive(&mut c, no_sync).unwrap();
                reply_started(c.get_mut()).unwrap();
                m
            },
            |mut c| {
                assert_eq!(read_line(&mut c).unwrap().as_deref(), Some(READY));
                c.get_ref()
                    .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                send(&mut c, &sample())
            },
        );
        sent.unwrap();
        assert_eq!(got, sample());
    }

    #[test]
    fn a_second_ready_is_skipped_wherever_another_line_is_awaited() {
        let (got, lines) = over_pair(
            |mut c| {
                let mut synced = 0;
                let m = receive(&mut c, || {
                    synced += 1;
                    Ok(())
                });
                (m.unwrap(), synced)
            },
            |mut c| {
                // `ready` on connecting, `ready` to the hello, `synced`.
                request_sync(&mut c).unwrap();
                write_line(c.get_mut(), HELLO).unwrap();
                write_line(c.get_mut(), &sample().to_line()).unwrap();
                // The guest answered the second hello; nothing else is left.
                read_line(&mut c).unwrap()
            },
        );
        assert_eq!(got, (sample(), 1));
        assert_eq!(lines.as_deref(), Some(READY));

        // A guest that says `ready` three times and then `started`.
        let (_, sent) = over_pair(
            |mut c| {
                for _ in 0..3 {
                    write_line(c.get_mut(), READY).unwrap();
                }
                let _ = read_line(&mut c);
                let _ = read_line(&mut c);
                write_line(c.get_mut(), STARTED).unwrap();
            },
            |mut c| send(&mut c, &sample()),
        );
        sent.unwrap();
    }

    #[test]
    fn a_time_limit_on_the_stream_ends_the_hand_off() {
        let (h, g) = UnixStream::pair().unwrap();
        h.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let sent = send(&mut BufReader::new(h), &sample());
        assert!(matches!(sent, Err(SendError::Io(_))), "{sent:?}");
        // The guest saw the hello and nothing of the message.
        drop(sent);
        let mut rest = Vec::new();
        g.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let _ = (&g).read_to_end(&mut rest);
        assert_eq!(rest, b"hello\n");
    }
}

//! Plays the Buildkite agent for tiny guests that have none: a guest
//! whose script prints `agent-acquire <job> <token>` on its console has
//! its job taken through the stand-in's agent API as `buildkite-agent
//! start --acquire-job` would take it (register with the job acquisition
//! token, acquire, start, finish with exit status 0), so a job costs a
//! guest boot and no agent binary, and the stand-in records who took
//! what.
//!
//! The calls are made from a thread inside the namespace the stand-in
//! listens in (the lab's client namespace), as plain HTTP/1.1.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// The line a guest prints to have its job taken, then the job and token.
pub const ACQUIRE: &str = "agent-acquire";

/// The guest script for a short job: ask for the job, give the agent
/// time to take it (a VM gone before its job is taken is replaced, as it
/// should be), power off.
pub const SHORT_JOB: &str =
    "#!/bin/sh\necho agent-acquire {{buildkite_job_id}} {{buildkite_agent_token}}\nsleep 8\npoweroff\n";

/// What became of one guest's request to take its job.
#[derive(Clone, Debug)]
pub struct Taken {
    /// The console log it was read from (one per VM).
    pub console: PathBuf,
    /// The job the guest was given.
    pub job: String,
    /// When the line was seen.
    pub at: Instant,
    /// `Ok` when the job was acquired, started and finished; else what failed.
    pub outcome: std::result::Result<(), String>,
}

/// The agent-playing thread; stops when dropped.
pub struct GuestAgents {
    stop: Arc<AtomicBool>,
    taken: Arc<Mutex<Vec<Taken>>>,
    thread: Option<JoinHandle<()>>,
}

impl GuestAgents {
    /// Watches the `*.serial.log` files in `console_dirs` and takes the
    /// jobs they ask for from the stand-in on `127.0.0.1:port` inside `ns`.
    pub fn start(ns: &Netns, port: u16, console_dirs: Vec<PathBuf>) -> Result<Self> {
        let path = format!("/var/run/netns/{}", ns.name());
        let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let (s, t) = (stop.clone(), taken.clone());
        let thread = std::thread::Builder::new()
            .name("guest-agents".into())
            .spawn(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: setns on this thread only; the fd is open for the call.
                let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    eprintln!("guest agents: setns: {}", std::io::Error::last_os_error());
                    return;
                }
                watch(&s, &t, port, &console_dirs);
            })
            .context("starting the guest agents' thread")?;
        Ok(Self {
            stop,
            taken,
            thread: Some(thread),
        })
    }

    /// Every job taken (or tried) so far.
    pub fn taken(&self) -> Vec<Taken> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for GuestAgents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(stop: &AtomicBool, taken: &Mutex<Vec<Taken>>, port: u16, dirs: &[PathBuf]) {
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    while !stop.load(Ordering::SeqCst) {
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if done.contains(&path) || !path.to_string_lossy().ends_with(".serial.log") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Only whole lines: the console may be read mid-write, and
                // a cut token would fail to register.
                let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
                let Some((job, token)) = whole.lines().find_map(acquire_line) else {
                    continue;
                };
                done.insert(path.clone());
                let outcome = take_job(port, &path, &job, &token).map_err(|e| format!("{e:#}"));
                taken.lock().unwrap_or_else(|e| e.into_inner()).push(Taken {
                    console: path,
                    job,
                    at: Instant::now(),
                    outcome,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The job and token of an `agent-acquire` line, if `line` is one.
fn acquire_line(line: &str) -> Option<(String, String)> {
    let mut words = line.split_whitespace();
    (words.next()? == ACQUIRE).then_some(())?;
    let job = words.next()?.to_string();
    let token = words.next()?.to_string();
    // Placeholders the launcher did not fill are no job at all.
    (!job.contains("{{") && !token.contains("{{")).then_some((job, token))
}

fn take_job(port: u16, console: &std::path::Path, job: &str, token: &str) -> Result<()> {
    let name = console
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".serial.log"))
        .unwrap_or("guest")
        .to_string();
    let body = serde_json::json!({"name": name, "hostname": name, "version": "guest-agent",
        "meta_data": ["queue=linux"]});
    let reg = call(port, "POST", "/v3/register", token, &body.to_string())?;
    let access: serde_json::Value = serde_json::from_str(&reg).context("the register answer")?;
    let access = access["access_token"]
        .as_str()
        .context("the register answer has no access_token")?
        .to_string();
    call(
        port,
        "PUT",
        &format!("/v3/jobs/{job}/acquire"),
        &access,
        "{}",
    )?;
    call(port, "PUT", &format!("/v3/jobs/{job}/start"), &access, "{}")?;
    call(
        port,
        "PUT",
        &format!("/v3/jobs/{job}/finish"),
        &access,
        r#"{"exit_status":"0"}"#,
    )?;
    Ok(())
}

/// One request; the body of a 2xx answer, else an error with the answer.
fn call(port: u16, method: &str, path: &str, token: &str, body: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connecting to the stand-in")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Token {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .context("an answer with no headers")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("an answer with no status")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        unchunk(rest)
    } else {
        rest.to_string()
    };
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status} {body}");
    }
    Ok(body)
}

fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn an_acquire_line_gives_job_and_token_and_unfilled_placeholders_none() {
        assert_eq!(
            acquire_line("agent-acquire 0190-ab bkjat_x\r"),
            Some(("0190-ab".into(), "bkjat_x".into()))
        );
        assert_eq!(
            acquire_line("agent-acquire {{buildkite_job_id}} {{buildkite_agent_token}}"),
            None
        );
        assert_eq!(acquire_line("+ echo agent-acquire"), None);
    }

    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(unchunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}

//! Small helpers shared by the test bed.

use std::path::{Path, PathBuf};

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// True when `pid` has exited but was not reaped.
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(true)
}

/// The `tests/` folder of the checkout under test.
///
/// Not the folder the binary was compiled in: checkouts of the same
/// sources share one target folder, so cargo may run a test binary that
/// another checkout built, whose folder may differ or be gone. Cargo names
/// the running package's folder in `CARGO_MANIFEST_DIR` when it runs a
/// test; a program started by hand (the main job) looks up from its
/// working folder.
pub fn tests_dir() -> PathBuf {
    let is_tests = |d: &Path| d.join("bed/libvirtd-ns.sh").is_file();
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) {
        if is_tests(&dir) {
            return dir;
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            for candidate in [dir.to_path_buf(), dir.join("tests")] {
                if is_tests(&candidate) {
                    return candidate;
                }
            }
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root of the checkout under test (the folder holding the
/// top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    tests_dir()
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the workspace's binaries are built (`CARGO_TARGET_DIR` or
/// `target/`, debug profile).
pub fn bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

/// The cache shared by test runs (`KVMBE_CACHE`, default
/// `/var/cache/kvmbe` for root, else `~/.cache/kvmbe`): guest images,
/// libvirt's capability cache, venvs. QEMU runs as `libvirt-qemu` and reads
/// the guest's kernel from here, so root's default is outside `/root`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KVMBE_CACHE") {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/kvmbe");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/kvmbe")
}

/// How long one command of a test (a `packer build`, a `terraform apply`)
/// may run before it is called hung: far above any run seen, so only a
/// hang reaches it, and well inside CI's limit for the whole suite.
pub const COMMAND_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `Command::output` with a deadline: a command still running at `limit`
/// is killed with its whole process group (Packer's plugins, Terraform's
/// providers) and the call fails with what it printed so far, so a hang
/// is a failing test that says where it stopped, not a stuck suite.
pub trait OutputWithin {
    /// Runs the command to completion or until `limit`.
    fn output_within(
        &mut self,
        limit: std::time::Duration,
    ) -> std::io::Result<std::process::Output>;
}

impl OutputWithin for std::process::Command {
    fn output_within(
        &mut self,
        limit: std::time::Duration,
    ) -> std::io::Result<std::process::Output> {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;

        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        // An error asking is an answer too: it ends the wait.
        let status = match poll_until(limit, || child.try_wait().transpose()) {
            Some(status) => Some(status?),
            None => {
                // The group: the command and everything it started.
                signal(-(child.id() as i32), libc::SIGKILL);
                let _ = child.wait();
                None
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match status {
            Some(status) => Ok(std::process::Output {
                status,
                stdout,
                stderr,
            }),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "{:?} still ran after {} s and was killed; it printed:\n{}{}",
                    self.get_program(),
                    limit.as_secs(),
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                ),
            )),
        }
    }
}

/// How often [`poll_until`] asks: fast next to any wait a test makes,
/// slow enough not to load the 2 shared cores.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Asks `f` until it gives a value or `limit` has passed; `None` then.
/// For waits on a condition, instead of a fixed sleep that is too long on
/// a fast machine and too short on a loaded one.
pub fn poll_until<T>(limit: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// [`poll_until`] that fails the test when `limit` passes, saying `what`
/// did not happen and what `context` shows (a log, say).
pub fn wait_until<T>(
    limit: std::time::Duration,
    what: &str,
    context: impl FnOnce() -> String,
    f: impl FnMut() -> Option<T>,
) -> T {
    poll_until(limit, f)
        .unwrap_or_else(|| panic!("{what} did not happen within {limit:?}:\n{}", context()))
}

/// [`poll_until`] for async tests: asks `f` every 50 ms without blocking
/// the runtime.
pub async fn poll_until_async<T, F: std::future::Future<Output = Option<T>>>(
    limit: std::time::Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Writes an executable script at `path`. A child process writes it: a file
/// this process held open for writing could still be open in a child
/// another thread is forking at that moment, and running it would then fail
/// with "Text file busy" (ETXTBSY).
pub fn write_executable(path: &Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut child = std::process::Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 0755 \"$1\"", "sh"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("starting sh to write a script")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    let status = child.wait()?;
    anyhow::ensure!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
    Ok(())
}

/// A stand-in server's own runtime (two worker threads named `name`) and
/// `listener` (bound, not yet serving) moved onto it.
pub fn server_runtime(
    name: &str,
    listener: std::net::TcpListener,
) -> anyhow::Result<(tokio::runtime::Runtime, tokio::net::TcpListener)> {
    use anyhow::Context;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("building the {name} runtime"))?;
    let listener = {
        let _inside = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    Ok((runtime, listener))
}

/// `len` bytes that are not text and repeat nowhere short (xorshift from
/// `seed`), for files whose transfer must come out byte for byte.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn polling_returns_as_soon_as_the_condition_holds_and_gives_up_at_the_limit() {
        let t0 = Instant::now();
        let mut asked = 0;
        let got = poll_until(Duration::from_secs(10), || {
            asked += 1;
            (asked == 3).then_some(asked)
        });
        assert_eq!(got, Some(3));
        assert!(t0.elapsed() < Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(poll_until(Duration::from_millis(200), || None::<()>), None);
        assert!(t0.elapsed() >= Duration::from_millis(200));
    }
}

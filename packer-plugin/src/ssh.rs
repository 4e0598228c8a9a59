//! The SSH communicator: commands with their streams and exit status, and
//! file transfers with the scp protocol (`scp -t`/`scp -f` on the guest),
//! as Packer's own SSH communicator does them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::ChannelMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::SshConfig;

/// SSH failures, each saying what was being done.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Could not connect or authenticate.
    #[error("ssh {addr}: {message}")]
    Connect {
        /// host:port
        addr: String,
        /// What failed.
        message: String,
    },
    /// A protocol error on an open connection.
    #[error("ssh: {0}")]
    Protocol(#[from] russh::Error),
    /// The remote scp reported an error.
    #[error("scp on the guest: {0}")]
    Scp(String),
    /// A local file error.
    #[error("{path}: {source}")]
    Local {
        /// The local path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stream error.
    #[error("ssh stream: {0}")]
    Io(#[from] std::io::Error),
    /// `ssh_private_key_file` cannot be read as a private key.
    #[error("ssh_private_key_file: {}: {message}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// Why it cannot be used.
        message: String,
    },
}

struct AcceptHostKey;

impl client::Handler for AcceptHostKey {
    type Error = russh::Error;

    // The guest was made moments ago with keys nobody could have recorded;
    // Packer's builders accept them the same way.
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// How to log in.
#[derive(Clone)]
pub enum Auth {
    /// A private key.
    Key(Arc<PrivateKey>),
    /// A password.
    Password(String),
}

/// A connected, authenticated SSH session to the guest.
pub struct Ssh {
    handle: Handle<AcceptHostKey>,
}

/// A throwaway ed25519 key pair for one build: (private key, public key in
/// `authorized_keys` form).
pub fn throwaway_key() -> std::io::Result<(PrivateKey, String)> {
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)?;
    let kp = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::from(kp);
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((key, format!("{public} packer-build")))
}

/// Loads the configured credentials.
pub fn auth_for(
    cfg: &SshConfig,
    throwaway: Option<&Arc<PrivateKey>>,
) -> Result<Vec<Auth>, SshError> {
    let mut out = Vec::new();
    if let Some(path) = &cfg.private_key_file {
        let key = russh::keys::load_secret_key(path, None).map_err(|e| SshError::KeyFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        out.push(Auth::Key(Arc::new(key)));
    }
    if let Some(p) = &cfg.password {
        out.push(Auth::Password(p.clone()));
    }
    if out.is_empty() {
        if let Some(k) = throwaway {
            out.push(Auth::Key(k.clone()));
        }
    }
    Ok(out)
}

impl Ssh {
    /// Connects once and authenticates with the first method that works.
    pub async fn connect(
        host: &str,
        port: u16,
        user: &str,
        auths: &[Auth],
    ) -> Result<Ssh, SshError> {
        let addr = format!("{host}:{port}");
        let err = |message: String| SshError::Connect {
            addr: addr.clone(),
            message,
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            ..Default::default()
        });
        let mut handle = tokio::time::timeout(
            Duration::from_secs(20),
            client::connect(config, (host, port), AcceptHostKey),
        )
        .await
        .map_err(|_| err("timed out connecting".into()))?
        .map_err(|e| err(e.to_string()))?;
        for auth in auths {
            let ok = match auth {
                Auth::Key(k) => {
                    let hash = handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(|e| err(e.to_string()))?
                        .flatten();
                    handle
                        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(k.clone(), hash))
                        .await
                        .map_err(|e| err(e.to_string()))?
                        .success()
                }
                Auth::Password(p) => handle
                    .authenticate_password(user, p)
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .success(),
            };
            if ok {
                return Ok(Ssh { handle });
            }
        }
        Err(err(format!(
            "authentication as `{user}` failed (check ssh_username, ssh_password, ssh_private_key_file)"
        )))
    }

    /// Runs `cmd`, feeding stdin and copying its output; returns the exit
    /// status (`None` when the command died without one, e.g. by a signal).
    pub async fn exec<I, O, E>(
        &self,
        cmd: &str,
        stdin: Option<I>,
        mut stdout: O,
        mut stderr: E,
    ) -> Result<Option<u32>, SshError>
    where
        I: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let channel = self.handle.channel_open_session().await?;
        channel.exec(true, cmd).await?;
        let (mut rd, wr) = channel.split();
        let wr = Arc::new(wr);
        let feeder = {
            let wr = wr.clone();
            tokio::spawn(async move {
                if let Some(input) = stdin {
                    let _ = wr.data(input).await;
                }
                let _ = wr.eof().await;
            })
        };
        let mut code = None;
        while let Some(msg) = rd.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    let _ = stdout.write_all(&data).await;
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    let _ = stderr.write_all(&data).await;
                }
                ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                _ => {}
            }
        }
        feeder.abort();
        let _ = stdout.flush().await;
        let _ = stderr.flush().await;
        Ok(code)
    }

    /// Runs a command and collects its output: (status, stdout, stderr).
    pub async fn run(&self, cmd: &str) -> Result<(Option<u32>, Vec<u8>, Vec<u8>), SshError> {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = self
            .exec(cmd, None::<tokio::io::Empty>, &mut out, &mut err)
            .await?;
        Ok((code, out, err))
    }

    /// Writes `data` (exactly `size` bytes) to the guest file `path`.
    pub async fn upload<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        mut data: R,
        size: u64,
        mode: u32,
    ) -> Result<(), SshError> {
        let (dir, name) = split_remote(path);
        let mut scp = Scp::start(self, &format!("scp -vt {}", quote(dir))).await?;
        scp.ack().await?;
        scp.send(format!("C{:04o} {size} {name}\n", mode & 0o7777).as_bytes())
            .await?;
        scp.ack().await?;
        let mut left = size;
        let mut buf = vec![0u8; 32 * 1024];
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = data.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(SshError::Scp(format!(
                    "the upload of {path} ended {left} bytes early"
                )));
            }
            scp.send(&buf[..n]).await?;
            left -= n as u64;
        }
        scp.send(&[0]).await?;
        scp.ack().await?;
        scp.finish().await
    }

    /// Copies the local folder `src` to the guest folder `dst`. As with
    /// Packer, `src` ending in `/` copies its contents into `dst`;
    /// otherwise the folder itself lands inside `dst`.
    pub async fn upload_dir(
        &self,
        dst: &str,
        src: &Path,
        exclude: &[String],
    ) -> Result<(), SshError> {
        let contents_only = src.as_os_str().to_string_lossy().ends_with('/');
        let mkdir = format!("mkdir -p {}", quote(dst));
        self.run(&mkdir).await?;
        let mut scp = Scp::start(self, &format!("scp -rvt {}", quote(dst))).await?;
        scp.ack().await?;
        if contents_only {
            send_dir_entries(&mut scp, src, exclude, Path::new("")).await?;
        } else {
            send_dir(&mut scp, src, exclude, Path::new("")).await?;
        }
        scp.finish().await
    }

    /// Copies the guest file `path` into `w`.
    pub async fn download<W: AsyncWrite + Unpin>(
        &self,
        path: &str,
        mut w: W,
    ) -> Result<(), SshError> {
        let mut scp = Scp::start(self, &format!("scp -vf {}", quote(path))).await?;
        scp.send(&[0]).await?;
        match scp.record().await? {
            Record::File { size, .. } => {
                scp.send(&[0]).await?;
                scp.copy_to(size, &mut w).await?;
                scp.ack().await?;
                scp.send(&[0]).await?;
            }
            _ => return Err(SshError::Scp(format!("{path} is not a file"))),
        }
        w.flush().await?;
        scp.finish().await
    }

    /// Copies the guest folder `src` into the local folder `dst`.
    pub async fn download_dir(&self, src: &str, dst: &Path) -> Result<(), SshError> {
        let mut scp = Scp::start(self, &format!("scp -rvf {}", quote(src))).await?;
        let local = |path: &Path, source| SshError::Local {
            path: path.to_path_buf(),
            source,
        };
        tokio::fs::create_dir_all(dst)
            .await
            .map_err(|e| local(dst, e))?;
        let mut cwd = dst.to_path_buf();
        let mut depth = 0usize;
        scp.send(&[0]).await?;
        loop {
            match scp.record().await? {
                Record::File { size, name, mode } => {
                    scp.send(&[0]).await?;
                    let p = cwd.join(safe_name(&name)?);
                    let mut f = tokio::fs::File::create(&p)
                        .await
                        .map_err(|e| local(&p, e))?;
                    scp.copy_to(size, &mut f).await?;
                    f.flush().await?;
                    set_mode(&p, mode);
                    scp.ack().await?;
                    scp.send(&[0]).await?;
                }
                Record::Dir { name, .. } => {
                    // The first record is `src` itself; its contents go into `dst`.
                    if depth > 0 {
                        cwd = cwd.join(safe_name(&name)?);
                        tokio::fs::create_dir_all(&cwd)
                            .await
                            .map_err(|e| local(&cwd, e))?;
                    }
                    depth += 1;
                    scp.send(&[0]).await?;
                }
                Record::End => {
                    depth = depth.saturating_sub(1);
                    if depth > 0 {
                        cwd.pop();
                    }
                    scp.send(&[0]).await?;
                }
                Record::Time => scp.send(&[0]).await?,
                Record::Eof => break,
            }
        }
        scp.finish().await
    }

    /// Closes the session politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Gives a downloaded file the guest's permission bits, never setuid,
/// setgid or sticky: a guest must not plant privileged files on the host.
fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o777));
}

fn safe_name(name: &str) -> Result<&str, SshError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(SshError::Scp(format!("refusing the file name `{name}`")));
    }
    Ok(name)
}

/// Splits a guest path into folder and file name.
fn split_remote(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => (".", path),
    }
}

/// Quotes a word for the guest's POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

enum Record {
    File { mode: u32, size: u64, name: String },
    Dir { name: String },
    End,
    Time,
    Eof,
}

struct Scp {
    rd: russh::ChannelReadHalf,
    wr: russh::ChannelWriteHalf<client::Msg>,
    pending: Vec<u8>,
    eof: bool,
    stderr: Vec<u8>,
    status: Option<u32>,
}

impl Scp {
    async fn start(ssh: &Ssh, cmd: &str) -> Result<Scp, SshError> {
        let channel = ssh.handle.channel_open_session().await?;
        channel.exec(true, cmd).await?;
        let (rd, wr) = channel.split();
        Ok(Scp {
            rd,
            wr,
            pending: Vec::new(),
            eof: false,
            stderr: Vec::new(),
            status: None,
        })
    }

    async fn fill(&mut self) -> Result<bool, SshError> {
        while self.pending.is_empty() && !self.eof {
            match self.rd.wait().await {
                Some(ChannelMsg::Data { data }) => self.pending.extend_from_slice(&data),
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    self.stderr.extend_from_slice(&data);
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => self.status = Some(exit_status),
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => self.eof = true,
                Some(_) => {}
            }
        }
        Ok(!self.pending.is_empty())
    }

    async fn byte(&mut self) -> Result<Option<u8>, SshError> {
        if !self.fill().await? {
            return Ok(None);
        }
        Ok(Some(self.pending.remove(0)))
    }

    async fn line(&mut self) -> Result<String, SshError> {
        let mut out = Vec::new();
        while let Some(b) = self.byte().await? {
            if b == b'\n' {
                break;
            }
            out.push(b);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn last_stderr(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        text.lines()
            .rfind(|l| {
                !l.starts_with("debug") && !l.starts_with("Sink:") && !l.starts_with("Executing:")
            })
            .unwrap_or("")
            .to_string()
    }

    async fn ack(&mut self) -> Result<(), SshError> {
        match self.byte().await? {
            Some(0) => Ok(()),
            Some(1) | Some(2) => {
                let msg = self.line().await?;
                Err(SshError::Scp(msg))
            }
            Some(b) => Err(SshError::Scp(format!("unexpected reply byte {b}"))),
            None => Err(SshError::Scp(format!(
                "scp ended early{}",
                match self.last_stderr() {
                    s if s.is_empty() => String::new(),
                    s => format!(": {s}"),
                }
            ))),
        }
    }

    async fn send(&mut self, data: &[u8]) -> Result<(), SshError> {
        self.wr.data(data).await?;
        Ok(())
    }

    async fn record(&mut self) -> Result<Record, SshError> {
        let Some(kind) = self.byte().await? else {
            return Ok(Record::Eof);
        };
        let line = self.line().await?;
        match kind {
            b'C' | b'D' => {
                let mut it = line.splitn(3, ' ');
                let mode = u32::from_str_radix(it.next().unwrap_or(""), 8)
                    .map_err(|_| SshError::Scp(format!("bad record {line}")))?;
                let size: u64 = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| SshError::Scp(format!("bad record {line}")))?;
                let name = it.next().unwrap_or("").to_string();
                Ok(if kind == b'C' {
                    Record::File { mode, size, name }
                } else {
                    Record::Dir { name }
                })
            }
            b'E' => Ok(Record::End),
            b'T' => Ok(Record::Time),
            1 | 2 => Err(SshError::Scp(line)),
            other => Err(SshError::Scp(format!("unexpected record type {other}"))),
        }
    }

    async fn copy_to<W: AsyncWrite + Unpin>(
        &mut self,
        mut size: u64,
        w: &mut W,
    ) -> Result<(), SshError> {
        while size > 0 {
            if !self.fill().await? {
                return Err(SshError::Scp("the file ended early".into()));
            }
            let n = self.pending.len().min(size as usize);
            w.write_all(&self.pending[..n]).await?;
            self.pending.drain(..n);
            size -= n as u64;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), SshError> {
        let _ = self.wr.eof().await;
        while !self.eof {
            self.pending.clear();
            self.fill().await?;
        }
        // Drain until the channel closes so the exit status is seen.
        while let Some(msg) = self.rd.wait().await {
            if let ChannelMsg::ExitStatus { exit_status } = msg {
                self.status = Some(exit_status);
            }
        }
        match self.status {
            Some(0) | None => Ok(()),
            Some(n) => Err(SshError::Scp(format!(
                "scp exited with status {n}: {}",
                self.last_stderr()
            ))),
        }
    }
}

/// Whether `rel` (relative to an uploaded folder) matches an `exclude`
/// entry: by name, or as a path or a folder above it.
pub(crate) fn excluded(rel: &Path, exclude: &[String]) -> bool {
    let r = rel.to_string_lossy();
    exclude.iter().any(|e| {
        let e = e.trim_end_matches('/');
        r == e
            || r.starts_with(&format!("{e}/"))
            || rel.file_name().is_some_and(|n| n.to_string_lossy() == e)
    })
}

async fn send_dir(
    scp: &mut Scp,
    dir: &Path,
    exclude: &[String],
    rel: &Path,
) -> Result<(), SshError> {
    use std::os::unix::fs::PermissionsExt;
    let local = |source| SshError::Local {
        path: dir.to_path_buf(),
        source,
    };
    let meta = tokio::fs::metadata(dir).await.map_err(local)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    scp.send(format!("D{:04o} 0 {name}\n", meta.permissions().mode() & 0o7777).as_bytes())
        .await?;
    scp.ack().await?;
    send_dir_entries(scp, dir, exclude, &rel.join(&name)).await?;
    scp.send(b"E\n").await?;
    scp.ack().await
}

fn send_dir_entries<'a>(
    scp: &'a mut Scp,
    dir: &'a Path,
    exclude: &'a [String],
    rel: &'a Path,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SshError>> + Send + 'a>> {
    Box::pin(async move {
        use std::os::unix::fs::PermissionsExt;
        let local = |path: &Path, source| SshError::Local {
            path: path.to_path_buf(),
            source,
        };
        let mut entries = Vec::new();
        let mut rd = tokio::fs::read_dir(dir).await.map_err(|e| local(dir, e))?;
        while let Some(e) = rd.next_entry().await.map_err(|e| local(dir, e))? {
            entries.push(e.path());
        }
        entries.sort();
        for p in entries {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let r = rel.join(&name);
            if excluded(&r, exclude) {
                continue;
            }
            let meta = tokio::fs::metadata(&p).await.map_err(|e| local(&p, e))?;
            if meta.is_dir() {
                send_dir(scp, &p, exclude, rel).await?;
            } else {
                scp.send(
                    format!(
                        "C{:04o} {} {name}\n",
                        meta.permissions().mode() & 0o7777,
                        meta.len()
                    )
                    .as_bytes(),
                )
                .await?;
                scp.ack().await?;
                let mut f = tokio::fs::File::open(&p).await.map_err(|e| local(&p, e))?;
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    let n = f.read(&mut buf).await.map_err(|e| local(&p, e))?;
                    if n == 0 {
                        break;
                    }
                    scp.send(&buf[..n]).await?;
                }
                scp.send(&[0]).await?;
                scp.ack().await?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_split_and_quote_for_the_guest_shell() {
        assert_eq!(split_remote("/tmp/a.txt"), ("/tmp", "a.txt"));
        assert_eq!(split_remote("/a"), ("/", "a"));
        assert_eq!(split_remote("a"), (".", "a"));
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn throwaway_keys_are_ed25519_in_authorized_keys_form() {
        let (_, public) = throwaway_key().unwrap();
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
    }

    #[test]
    fn downloaded_files_never_get_setuid_setgid_or_sticky_bits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "x").unwrap();
        set_mode(&p, 0o6755);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        set_mode(&p, 0o1644);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o644);
    }

    #[test]
    fn excludes_match_names_and_relative_paths() {
        let ex = vec!["skip".to_string(), "d/x".to_string()];
        assert!(excluded(Path::new("skip"), &ex));
        assert!(excluded(Path::new("a/skip"), &ex));
        assert!(excluded(Path::new("d/x/y"), &ex));
        assert!(!excluded(Path::new("d/y"), &ex));
    }
}

//! The guest as the build and the provisioners reach it: over SSH or
//! WinRM, one set of operations either way.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::ssh::{Ssh, SshError};
use crate::winrm::{WinRm, WinRmError};

/// A connected communicator.
pub enum Remote {
    /// An SSH session.
    Ssh(Ssh),
    /// A WinRM endpoint.
    WinRm(WinRm),
}

/// A communicator's failure, in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Over SSH.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// Over WinRM.
    #[error(transparent)]
    WinRm(#[from] WinRmError),
}

impl Remote {
    /// Packer's name for the connection type (`build.ConnType`).
    pub fn conn_type(&self) -> &'static str {
        match self {
            Remote::Ssh(_) => "ssh",
            Remote::WinRm(_) => "winrm",
        }
    }

    /// Runs `cmd`, copying its output; returns its exit status (`None`
    /// when it died without one). WinRM has no stdin for a command, as
    /// with Packer's WinRM communicator: `stdin` is not read there.
    pub async fn exec<I, O, E>(
        &self,
        cmd: &str,
        stdin: Option<I>,
        stdout: O,
        stderr: E,
    ) -> Result<Option<u32>, RemoteError>
    where
        I: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        match self {
            Remote::Ssh(s) => Ok(s.exec(cmd, stdin, stdout, stderr).await?),
            Remote::WinRm(w) => Ok(Some(w.exec(cmd, stdout, stderr).await?)),
        }
    }

    /// Runs a command and collects its output: (status, stdout, stderr).
    pub async fn run(&self, cmd: &str) -> Result<(Option<u32>, Vec<u8>, Vec<u8>), RemoteError> {
        match self {
            Remote::Ssh(s) => Ok(s.run(cmd).await?),
            Remote::WinRm(w) => {
                let (code, out, err) = w.run(cmd).await?;
                Ok((Some(code), out, err))
            }
        }
    }

    /// Writes `data` (exactly `size` bytes) to the guest file `path`.
    pub async fn upload<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        data: R,
        size: u64,
        mode: u32,
    ) -> Result<(), RemoteError> {
        match self {
            Remote::Ssh(s) => Ok(s.upload(path, data, size, mode).await?),
            Remote::WinRm(w) => {
                use tokio::io::AsyncReadExt;
                Ok(w.upload(path, data.take(size)).await?)
            }
        }
    }

    /// Copies the local folder `src` to the guest folder `dst`.
    pub async fn upload_dir(
        &self,
        dst: &str,
        src: &Path,
        exclude: &[String],
    ) -> Result<(), RemoteError> {
        match self {
            Remote::Ssh(s) => Ok(s.upload_dir(dst, src, exclude).await?),
            Remote::WinRm(w) => Ok(w.upload_dir(dst, src, exclude).await?),
        }
    }

    /// Copies the guest file `path` into `w`.
    pub async fn download<W: AsyncWrite + Unpin>(
        &self,
        path: &str,
        w: W,
    ) -> Result<(), RemoteError> {
        match self {
            Remote::Ssh(s) => Ok(s.download(path, w).await?),
            Remote::WinRm(wr) => Ok(wr.download(path, w).await?),
        }
    }

    /// Copies the guest folder `src` into the local folder `dst`.
    pub async fn download_dir(&self, src: &str, dst: &Path) -> Result<(), RemoteError> {
        match self {
            Remote::Ssh(s) => Ok(s.download_dir(src, dst).await?),
            // Packer's WinRM communicator has no folder download either.
            Remote::WinRm(_) => Err(RemoteError::WinRm(WinRmError::Unsupported(
                "downloading a folder (direction = \"download\" of a folder) is not supported over WinRM, as in Packer's WinRM communicator: download its files one by one",
            ))),
        }
    }

    /// Ends the session politely.
    pub async fn close(&self) {
        if let Remote::Ssh(s) = self {
            s.close().await;
        }
    }
}

//! The `Communicator` service Packer's provisioners call during the
//! `packer_provision` hook, served over our SSH session or WinRM endpoint.

use std::path::PathBuf;
use std::sync::Arc;

use rmpv::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::protocol::gob;
use crate::protocol::mux::{Broker, Conn, MuxError};
use crate::protocol::rpc::value::{field, str_field, str_list, u32_field};
use crate::protocol::rpc::{ReplyFuture, Service};
use crate::remote::{Remote, RemoteError};

/// What Packer reports when a command ended without an exit status.
const NO_EXIT_STATUS: i64 = 255;

/// Why a `Communicator` call failed; Packer's provisioner shows the text.
#[derive(Debug, thiserror::Error)]
pub enum CommunicatorError {
    /// A stream Packer named could not be dialed.
    #[error("{0}")]
    Dial(#[from] MuxError),
    /// The call named no stream where it needs one.
    #[error("Communicator.{method}: no {stream} stream")]
    NoStream {
        /// The method called.
        method: &'static str,
        /// Which stream is missing.
        stream: &'static str,
    },
    /// An upload without a size could not be spooled to a local file.
    #[error("spooling upload for {path}: {source}")]
    Spool {
        /// The guest path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a file to the guest failed.
    #[error("upload to {path}: {source}")]
    Upload {
        /// The guest path.
        path: String,
        /// The cause.
        source: RemoteError,
    },
    /// Copying a folder to the guest failed.
    #[error("upload of {src} to {dst}: {source}")]
    UploadDir {
        /// The local folder.
        src: String,
        /// The guest folder.
        dst: String,
        /// The cause.
        source: RemoteError,
    },
    /// Reading a file from the guest failed.
    #[error("download of {path}: {source}")]
    Download {
        /// The guest path.
        path: String,
        /// The cause.
        source: RemoteError,
    },
    /// Copying a folder from the guest failed.
    #[error("download of {src} to {dst}: {source}")]
    DownloadDir {
        /// The guest folder.
        src: String,
        /// The local folder.
        dst: String,
        /// The cause.
        source: RemoteError,
    },
}

type CallResult = Result<Value, CommunicatorError>;

/// Serves `Communicator` calls on one broker.
pub struct CommunicatorService {
    /// The guest.
    pub remote: Arc<Remote>,
    /// The broker the data streams are dialed on.
    pub broker: Arc<Broker>,
    /// Fires when the provisioners' run ends or is cancelled: commands
    /// still running are stopped on the guest (over WinRM, signalled to
    /// terminate; over SSH, their channel closed).
    pub stop: CancellationToken,
}

impl CommunicatorService {
    async fn dial(&self, id: u32) -> Result<Option<Conn>, MuxError> {
        if id == 0 {
            return Ok(None);
        }
        self.broker.dial(id).await.map(Some)
    }

    async fn start(self: Arc<Self>, arg: Value) -> CallResult {
        let command = str_field(&arg, "Command");
        let stdin = self.dial(u32_field(&arg, "StdinStreamId")).await?;
        let stdout = self.dial(u32_field(&arg, "StdoutStreamId")).await?;
        let stderr = self.dial(u32_field(&arg, "StderrStreamId")).await?;
        let response = self
            .dial(u32_field(&arg, "ResponseStreamId"))
            .await?
            .ok_or(CommunicatorError::NoStream {
                method: "Start",
                stream: "response",
            })?;
        // Start returns at once; the exit status goes to the response stream.
        tokio::spawn(async move {
            let mut out = stdout.map(Sink::Conn).unwrap_or(Sink::Null);
            let mut err = stderr.map(Sink::Conn).unwrap_or(Sink::Null);
            let ran = tokio::select! {
                r = self.remote.exec(&command, stdin, &mut out, &mut err) => r,
                _ = self.stop.cancelled() => Ok(None),
            };
            let status = match ran {
                Ok(Some(code)) => i64::from(code),
                Ok(None) => NO_EXIT_STATUS,
                Err(e) => {
                    let _ = err.write_all(format!("{e}\n").as_bytes()).await;
                    NO_EXIT_STATUS
                }
            };
            out.close().await;
            err.close().await;
            let mut response = response;
            let _ = response.write_all(&gob::command_finished(status)).await;
            let _ = response.shutdown().await;
        });
        Ok(Value::Nil)
    }

    async fn upload(self: Arc<Self>, arg: Value) -> CallResult {
        let path = str_field(&arg, "Path");
        let mut reader = self.dial(u32_field(&arg, "ReaderStreamId")).await?.ok_or(
            CommunicatorError::NoStream {
                method: "Upload",
                stream: "data",
            },
        )?;
        let mode = field(&arg, "FileInfo")
            .and_then(|fi| field(fi, "M"))
            .and_then(Value::as_u64)
            .map(|m| (m & 0o777) as u32)
            .filter(|m| *m != 0)
            .unwrap_or(0o644);
        let size = field(&arg, "FileInfo")
            .and_then(|fi| field(fi, "S"))
            .and_then(Value::as_u64);
        // A Windows destination ending in `\` is a folder: the file keeps
        // its name there, as with Packer's WinRM communicator.
        let name = field(&arg, "FileInfo")
            .and_then(|fi| field(fi, "N"))
            .and_then(Value::as_str);
        let path = match name {
            Some(n) if path.ends_with('\\') && matches!(*self.remote, Remote::WinRm(_)) => {
                format!("{path}{}", n.rsplit(['/', '\\']).next().unwrap_or(n))
            }
            _ => path,
        };
        match size {
            // Packer stats the file it sends: stream it straight through.
            Some(size) => self.remote.upload(&path, reader, size, mode).await,
            // scp announces the size first: spool the stream, then send it.
            None => {
                let (f, size) =
                    spool(&mut reader)
                        .await
                        .map_err(|source| CommunicatorError::Spool {
                            path: path.clone(),
                            source,
                        })?;
                self.remote.upload(&path, f, size, mode).await
            }
        }
        .map_err(|source| CommunicatorError::Upload { path, source })?;
        Ok(Value::Nil)
    }

    async fn upload_dir(self: Arc<Self>, arg: Value) -> CallResult {
        let dst = str_field(&arg, "Dst");
        let src = str_field(&arg, "Src");
        let exclude = str_list(field(&arg, "Exclude"));
        self.remote
            .upload_dir(&dst, &PathBuf::from(&src), &exclude)
            .await
            .map_err(|source| CommunicatorError::UploadDir { src, dst, source })?;
        Ok(Value::Nil)
    }

    async fn download(self: Arc<Self>, arg: Value) -> CallResult {
        let path = str_field(&arg, "Path");
        let mut writer = self.dial(u32_field(&arg, "WriterStreamId")).await?.ok_or(
            CommunicatorError::NoStream {
                method: "Download",
                stream: "data",
            },
        )?;
        let r = self.remote.download(&path, &mut writer).await;
        let _ = writer.shutdown().await;
        r.map_err(|source| CommunicatorError::Download { path, source })?;
        Ok(Value::Nil)
    }

    async fn download_dir(self: Arc<Self>, arg: Value) -> CallResult {
        let dst = str_field(&arg, "Dst");
        let src = str_field(&arg, "Src");
        self.remote
            .download_dir(&src, &PathBuf::from(&dst))
            .await
            .map_err(|source| CommunicatorError::DownloadDir { src, dst, source })?;
        Ok(Value::Nil)
    }
}

impl Service for CommunicatorService {
    fn call(self: Arc<Self>, method: &str, arg: Value) -> ReplyFuture {
        // The wire carries the error as text (see `Reply`).
        fn wire(f: impl std::future::Future<Output = CallResult> + Send + 'static) -> ReplyFuture {
            Box::pin(async move { f.await.map_err(|e| e.to_string()) })
        }
        match method {
            "Start" => wire(self.start(arg)),
            "Upload" => wire(self.upload(arg)),
            "UploadDir" => wire(self.upload_dir(arg)),
            "Download" => wire(self.download(arg)),
            "DownloadDir" => wire(self.download_dir(arg)),
            m => {
                let m = format!("rpc: can't find method Communicator.{m}");
                Box::pin(async move { Err(m) })
            }
        }
    }
}

/// Copies `reader` into an anonymous temporary file (no name anyone could
/// open, mode 0600, gone when closed) and returns it rewound, with its size.
async fn spool<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<(tokio::fs::File, u64)> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncSeekExt;
    let f = tempfile::tempfile()?;
    // O_TMPFILE files take 0666 & umask: make it owner-only before writing.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let mut f = tokio::fs::File::from_std(f);
    let size = tokio::io::copy(reader, &mut f).await?;
    f.flush().await?;
    f.seek(std::io::SeekFrom::Start(0)).await?;
    Ok((f, size))
}

/// Where a command's output goes: a Packer stream, or nowhere.
enum Sink {
    Conn(Conn),
    Null,
}

impl Sink {
    async fn close(&mut self) {
        if let Sink::Conn(c) = self {
            let _ = c.shutdown().await;
        }
    }
}

impl tokio::io::AsyncWrite for Sink {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Sink::Conn(c) => std::pin::Pin::new(c).poll_write(cx, buf),
            Sink::Null => std::task::Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Conn(c) => std::pin::Pin::new(c).poll_flush(cx),
            Sink::Null => std::task::Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Conn(c) => std::pin::Pin::new(c).poll_shutdown(cx),
            Sink::Null => std::task::Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uploads_are_spooled_where_no_one_else_can_read_them() {
        use std::os::unix::fs::MetadataExt;
        use tokio::io::AsyncReadExt;
        let mut data: &[u8] = b"secret provisioning script";
        let (mut f, size) = spool(&mut data).await.unwrap();
        assert_eq!(size, 26);
        let meta = f.metadata().await.unwrap();
        assert_eq!(meta.mode() & 0o077, 0, "mode {:o}", meta.mode());
        assert_eq!(meta.nlink(), 0, "the spool file has a name in a folder");
        let mut back = String::new();
        f.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, "secret provisioning script");
    }
}

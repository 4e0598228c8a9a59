//! Image sources of `libvirt_volume`: a local file or an http(s) URL,
//! fetched to a sparse local file so the upload can skip its holes.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kvmhost::source as host;
use sha2::{Digest, Sha256};

/// Where a volume's content comes from: a file on the machine running
/// Terraform or an http(s) URL.
pub use kvmhost::source::Location as Source;

/// A source available as a local file.
pub struct Local {
    /// The file.
    pub path: PathBuf,
    /// [`checksum_file`] of its content.
    pub checksum: String,
    /// Removed on drop when the file was downloaded.
    _temp: Option<tempfile::NamedTempFile>,
}

/// The largest image downloaded: a server that sends without end must
/// not fill the disk.
pub const MAX_DOWNLOAD: u64 = 256 << 30;

/// Size and modification time of a local file: a cheap change signal.
pub fn stamp(path: &Path) -> std::io::Result<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

/// Size of the blocks [`checksum_file`] hashes.
const BLOCK: u64 = 1 << 20;

/// A content checksum that costs only the data of a sparse image: sha256
/// over each 1 MiB block that is not all zeros, with its index, then the
/// length. Holes and zero blocks are skipped, so the same bytes give the
/// same checksum whatever the file's hole layout.
pub fn checksum_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let regions = kvmhost::libvirt::volume::data_regions(&f, len)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BLOCK as usize];
    let mut next_block = 0u64;
    for (start, end) in regions {
        let first = (start / BLOCK).max(next_block);
        let last = (end - 1) / BLOCK;
        for b in first..=last {
            let at = b * BLOCK;
            let n = BLOCK.min(len - at) as usize;
            f.seek(SeekFrom::Start(at))?;
            f.read_exact(&mut buf[..n])?;
            if !kvmhost::libvirt::volume::is_zero(&buf[..n]) {
                h.update(b.to_le_bytes());
                h.update(&buf[..n]);
            }
        }
        next_block = last + 1;
    }
    h.update(len.to_le_bytes());
    Ok(hex::encode(h.finalize()))
}

/// Why a source is not available locally; its text is shown to the user.
#[derive(Debug)]
pub enum FetchError {
    /// The task reading or checksumming the file did not finish.
    Task(tokio::task::JoinError),
    /// The local file (or the downloaded one) could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No temporary file for the download.
    TempFile(std::io::Error),
    /// The download's file could not be opened.
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The download's file could not be written.
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The download broke off.
    Interrupted {
        /// The URL.
        url: String,
        /// How much had arrived.
        after: u64,
        /// What the HTTP client said.
        message: String,
    },
    /// The download failed otherwise.
    Download {
        /// The URL.
        url: String,
        /// Why.
        source: host::Error,
    },
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Task(e) => write!(f, "{e}"),
            FetchError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            FetchError::TempFile(e) => write!(f, "cannot create a temporary file: {e}"),
            FetchError::Open { path, source } => {
                write!(f, "cannot open {}: {source}", path.display())
            }
            FetchError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            FetchError::Interrupted {
                url,
                after,
                message,
            } => write!(f, "downloading {url} failed after {after} bytes: {message}"),
            FetchError::Download { url, source } => {
                write!(f, "cannot download {url}: {}", source.detail())
            }
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Task(e) => Some(e),
            FetchError::Read { source, .. }
            | FetchError::Open { source, .. }
            | FetchError::Write { source, .. } => Some(source),
            FetchError::TempFile(e) => Some(e),
            FetchError::Interrupted { .. } => None,
            FetchError::Download { source, .. } => Some(source),
        }
    }
}

/// Makes the source available locally.
pub async fn fetch(source: &Source) -> Result<Local, FetchError> {
    match source {
        Source::File(p) => {
            let path = p.clone();
            let sum = tokio::task::spawn_blocking(move || checksum_file(&path))
                .await
                .map_err(FetchError::Task)?
                .map_err(|source| FetchError::Read {
                    path: p.clone(),
                    source,
                })?;
            Ok(Local {
                path: p.clone(),
                checksum: sum,
                _temp: None,
            })
        }
        Source::Url(url) => download_capped(url, MAX_DOWNLOAD).await,
    }
}

/// Downloads `url` to a private temporary file (mode 0600, a random
/// name), refusing more than `cap` bytes. Zero chunks become holes in the
/// file, so the upload that follows finds them with SEEK_HOLE and does
/// not send them.
async fn download_capped(url: &str, cap: u64) -> Result<Local, FetchError> {
    let temp = tempfile::Builder::new()
        .prefix("terraform-provider-libvirt-")
        .suffix(".img")
        .tempfile()
        .map_err(FetchError::TempFile)?;
    host::download(url, &temp, cap, host::Zeros::Holes)
        .await
        .map_err(|e| match e {
            host::Error::Create { path, source } => FetchError::Open { path, source },
            host::Error::Write { path, source } => FetchError::Write { path, source },
            host::Error::Interrupted { after, message, .. } => FetchError::Interrupted {
                url: url.to_string(),
                after,
                message,
            },
            source => FetchError::Download {
                url: url.to_string(),
                source,
            },
        })?;
    let path = temp.path().to_path_buf();
    let sum_path = path.clone();
    let checksum = tokio::task::spawn_blocking(move || checksum_file(&sum_path))
        .await
        .map_err(FetchError::Task)?
        .map_err(|source| FetchError::Read {
            path: path.clone(),
            source,
        })?;
    Ok(Local {
        path,
        checksum,
        _temp: Some(temp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn checksum_ignores_the_hole_layout_but_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("sparse");
        let dense = dir.path().join("dense");
        let mut f = std::fs::File::create(&sparse).unwrap();
        f.set_len(8 << 20).unwrap();
        f.seek(SeekFrom::Start(5 << 20)).unwrap();
        f.write_all(b"data").unwrap();
        drop(f);
        std::fs::write(&dense, std::fs::read(&sparse).unwrap()).unwrap();
        assert_eq!(
            checksum_file(&sparse).unwrap(),
            checksum_file(&dense).unwrap()
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&dense)
            .unwrap();
        f.seek(SeekFrom::Start(1)).unwrap();
        f.write_all(b"x").unwrap();
        drop(f);
        assert_ne!(
            checksum_file(&sparse).unwrap(),
            checksum_file(&dense).unwrap()
        );
    }

    /// Serves `body` once, with a Content-Length header when `len`.
    fn serve_once(body: Vec<u8>, len: bool) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).unwrap();
            if len {
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n", body.len());
            } else {
                let _ = write!(s, "HTTP/1.1 200 OK\r\n");
            }
            let _ = write!(s, "Connection: close\r\n\r\n");
            let _ = s.write_all(&body);
        });
        port
    }

    #[tokio::test]
    async fn a_download_is_private_while_it_lasts() {
        use std::os::unix::fs::PermissionsExt;
        let port = serve_once(b"secret image".to_vec(), true);
        let local = fetch(&Source::Url(format!("http://127.0.0.1:{port}/img")))
            .await
            .unwrap();
        let mode = std::fs::metadata(&local.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }

    #[tokio::test]
    async fn a_download_past_the_size_cap_is_refused() {
        for len in [true, false] {
            let port = serve_once(vec![1u8; 256 * 1024], len);
            let e = download_capped(&format!("http://127.0.0.1:{port}/img"), 64 * 1024)
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(e.starts_with("cannot download http://"), "{e}");
            assert!(e.contains("larger than 65536 bytes"), "{e}");
        }
    }

    #[tokio::test]
    async fn http_source_is_downloaded_with_holes_and_checksummed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut body = vec![0u8; 4 << 20];
        body[3 << 20] = 7;
        let served = body.clone();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).unwrap();
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                served.len()
            )
            .unwrap();
            s.write_all(&served).unwrap();
        });
        let local = fetch(&Source::Url(format!("http://127.0.0.1:{port}/img")))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&local.path).unwrap(), body);
        assert_eq!(local.checksum, checksum_file(&local.path).unwrap());
        let path = local.path.clone();
        drop(local);
        assert!(!path.exists());
    }
}

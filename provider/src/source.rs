//! Image sources of `libvirt_volume`: a local file or an http(s) URL,
//! fetched to a sparse local file so the upload can skip its holes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where a volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on the machine running Terraform.
    File(PathBuf),
    /// An http(s) URL.
    Url(String),
}

impl Source {
    /// Parses the `source` attribute.
    pub fn parse(s: &str) -> Source {
        if s.starts_with("http://") || s.starts_with("https://") {
            Source::Url(s.to_string())
        } else {
            Source::File(PathBuf::from(s.strip_prefix("file://").unwrap_or(s)))
        }
    }
}

/// A source available as a local file.
pub struct Local {
    /// The file.
    pub path: PathBuf,
    /// [`checksum_file`] of its content.
    pub checksum: String,
    /// Removed on drop when the file was downloaded.
    _temp: Option<TempFile>,
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

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

/// Makes the source available locally. Errors are user-facing text.
pub async fn fetch(source: &Source) -> Result<Local, String> {
    match source {
        Source::File(p) => {
            let path = p.clone();
            let sum = tokio::task::spawn_blocking(move || checksum_file(&path))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Ok(Local {
                path: p.clone(),
                checksum: sum,
                _temp: None,
            })
        }
        Source::Url(url) => download(url).await,
    }
}

async fn download(url: &str) -> Result<Local, String> {
    let mut resp = reqwest::get(url)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("cannot download {url}: {e}"))?;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "terraform-provider-libvirt-{}-{}.img",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let temp = TempFile(path.clone());
    let mut file = std::fs::File::create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut len = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("downloading {url} failed after {len} bytes: {e}"))?
    {
        // Zero blocks become holes in the temporary file, so the upload
        // that follows finds them with SEEK_HOLE and does not send them.
        let write = if kvmhost::libvirt::volume::is_zero(&chunk) {
            file.seek(SeekFrom::Current(chunk.len() as i64)).map(|_| ())
        } else {
            file.write_all(&chunk)
        };
        write.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        len += chunk.len() as u64;
    }
    file.set_len(len)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    drop(file);
    let sum_path = path.clone();
    let checksum = tokio::task::spawn_blocking(move || checksum_file(&sum_path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Local {
        path,
        checksum,
        _temp: Some(temp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert_eq!(
            Source::parse("https://x/a.qcow2"),
            Source::Url("https://x/a.qcow2".into())
        );
        assert_eq!(Source::parse("file:///a/b"), Source::File("/a/b".into()));
        assert_eq!(Source::parse("b.img"), Source::File("b.img".into()));
    }

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

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
    /// Hex sha256 of its content.
    pub sha256: String,
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

/// sha256 of a local file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Makes the source available locally. Errors are user-facing text.
pub async fn fetch(source: &Source) -> Result<Local, String> {
    match source {
        Source::File(p) => {
            let path = p.clone();
            let sha = tokio::task::spawn_blocking(move || sha256_file(&path))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Ok(Local {
                path: p.clone(),
                sha256: sha,
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
    let mut h = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("downloading {url} failed after {len} bytes: {e}"))?
    {
        h.update(&chunk);
        // Zero blocks become holes in the temporary file, so the upload
        // that follows finds them with SEEK_HOLE and does not send them.
        let write = if chunk.iter().all(|b| *b == 0) {
            file.seek(SeekFrom::Current(chunk.len() as i64)).map(|_| ())
        } else {
            file.write_all(&chunk)
        };
        write.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        len += chunk.len() as u64;
    }
    file.set_len(len)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Local {
        path,
        sha256: hex::encode(h.finalize()),
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

    #[tokio::test]
    async fn http_source_is_downloaded_with_holes_and_checksummed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut body = vec![0u8; 4 << 20];
        body[3 << 20] = 7;
        let expected = hex::encode(Sha256::digest(&body));
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
        assert_eq!(local.sha256, expected);
        assert_eq!(std::fs::read(&local.path).unwrap(), body);
        let path = local.path.clone();
        drop(local);
        assert!(!path.exists());
    }
}

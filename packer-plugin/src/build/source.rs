//! The source image: a local file or a download, checked against its
//! checksum, downloads kept in Packer's cache folder for the next build.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256, Sha512};
use tokio::io::AsyncWriteExt;

use crate::config::Checksum;

/// Why no source could be had.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A local file is missing or unreadable.
    #[error("iso_url: {path}: {source}")]
    Local {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A download failed.
    #[error("iso_url: downloading {url}: {message}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The checksum did not match.
    #[error("iso_checksum: {what} has {algo} {got}, expected {want}")]
    Mismatch {
        /// The file or URL.
        what: String,
        /// The algorithm.
        algo: &'static str,
        /// The actual digest.
        got: String,
        /// The configured digest.
        want: String,
    },
    /// Every URL failed.
    #[error("iso_url: no source could be fetched:\n{0}")]
    AllFailed(String),
}

/// Packer's cache folder: `PACKER_CACHE_DIR`, else `packer_cache` in the
/// current folder, as Packer's own builders use it.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("PACKER_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("packer_cache"))
}

/// Hashes a file with the checksum's algorithm and compares.
pub fn verify(path: &Path, want: &Checksum, what: &str) -> Result<(), SourceError> {
    let (algo, want_hex) = match want {
        Checksum::None => return Ok(()),
        Checksum::Sha256(h) => ("sha256", h),
        Checksum::Sha512(h) => ("sha512", h),
    };
    let local = |source| SourceError::Local {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(local)?;
    let mut buf = vec![0u8; 1 << 20];
    let got = if algo == "sha256" {
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf).map_err(local)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        hex::encode(h.finalize())
    } else {
        let mut h = Sha512::new();
        loop {
            let n = f.read(&mut buf).map_err(local)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        hex::encode(h.finalize())
    };
    if &got != want_hex {
        return Err(SourceError::Mismatch {
            what: what.to_string(),
            algo,
            got,
            want: want_hex.clone(),
        });
    }
    Ok(())
}

/// A local path for the first URL that works, downloaded and cached if
/// remote, always verified. Returns the path and whether it came from the
/// cache.
pub async fn fetch(urls: &[String], checksum: &Checksum) -> Result<(PathBuf, bool), SourceError> {
    let mut failures = Vec::new();
    for url in urls {
        match fetch_one(url, checksum).await {
            Ok(r) => return Ok(r),
            Err(e) if urls.len() == 1 => return Err(e),
            Err(e) => failures.push(format!("  {e}")),
        }
    }
    Err(SourceError::AllFailed(failures.join("\n")))
}

async fn fetch_one(url: &str, checksum: &Checksum) -> Result<(PathBuf, bool), SourceError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return download(url, checksum).await;
    }
    let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
    let p = path.clone();
    let c = checksum.clone();
    let what = path.display().to_string();
    tokio::task::spawn_blocking(move || {
        std::fs::metadata(&p).map_err(|source| SourceError::Local {
            path: p.clone(),
            source,
        })?;
        verify(&p, &c, &what)
    })
    .await
    .expect("checksum task")?;
    Ok((path, false))
}

fn cache_name(url: &str, checksum: &Checksum) -> String {
    // Keyed by URL and checksum so a changed checksum never reuses a stale file.
    let mut h = Sha256::new();
    h.update(url.as_bytes());
    h.update(format!("{checksum:?}").as_bytes());
    let ext = url
        .rsplit('/')
        .next()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e)
        .filter(|e| e.len() <= 6 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or("img");
    format!("{}.{ext}", &hex::encode(h.finalize())[..40])
}

async fn download(url: &str, checksum: &Checksum) -> Result<(PathBuf, bool), SourceError> {
    let dir = cache_dir();
    let target = dir.join(cache_name(url, checksum));
    let dl = |message: String| SourceError::Download {
        url: url.to_string(),
        message,
    };
    if target.is_file() {
        let t = target.clone();
        let c = checksum.clone();
        let ok = tokio::task::spawn_blocking(move || verify(&t, &c, "cached file").is_ok())
            .await
            .expect("checksum task");
        // An unverifiable cache entry is downloaded again.
        if ok && *checksum != Checksum::None {
            return Ok((target, true));
        }
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| dl(format!("creating cache folder {}: {e}", dir.display())))?;
    let part = target.with_extension("part");
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| dl(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| dl(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(dl(format!("server answered {}", resp.status())));
    }
    let mut f = tokio::fs::File::create(&part)
        .await
        .map_err(|e| dl(format!("{}: {e}", part.display())))?;
    while let Some(chunk) = resp.chunk().await.map_err(|e| dl(e.to_string()))? {
        f.write_all(&chunk)
            .await
            .map_err(|e| dl(format!("{}: {e}", part.display())))?;
    }
    f.flush().await.map_err(|e| dl(e.to_string()))?;
    drop(f);
    let p = part.clone();
    let c = checksum.clone();
    let u = url.to_string();
    let verified = tokio::task::spawn_blocking(move || verify(&p, &c, &u))
        .await
        .expect("checksum task");
    if let Err(e) = verified {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    tokio::fs::rename(&part, &target)
        .await
        .map_err(|e| dl(format!("{}: {e}", target.display())))?;
    Ok((target, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_checksum_names_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify(&p, &Checksum::Sha256(good.into()), "f").unwrap();
        let e = verify(&p, &Checksum::Sha256("0".repeat(64)), "f").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("iso_checksum:"), "{text}");
        assert!(text.contains(good), "{text}");
    }

    #[tokio::test]
    async fn downloads_are_verified_cached_and_reused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = served.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
                    )
                    .await;
            }
        });
        let cache = tempfile::tempdir().unwrap();
        std::env::set_var("PACKER_CACHE_DIR", cache.path());
        let url = format!("http://{addr}/disk.qcow2");
        let sum = Checksum::Sha256(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        );
        let (p, cached) = fetch(std::slice::from_ref(&url), &sum).await.unwrap();
        assert!(!cached);
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        let (p2, cached) = fetch(std::slice::from_ref(&url), &sum).await.unwrap();
        assert!(cached);
        assert_eq!(p, p2);
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
        let bad = fetch(&[url], &Checksum::Sha256("0".repeat(64))).await;
        assert!(matches!(bad, Err(SourceError::Mismatch { .. })));
    }
}

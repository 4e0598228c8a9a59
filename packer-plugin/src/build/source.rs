//! The source image: a local file or a download, checked against its
//! checksum, downloads kept in Packer's cache folder for the next build.
//! The work is [`kvmhost::source`]'s; this module names the fields.

use std::path::{Path, PathBuf};

use kvmhost::source as host;

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
    /// The checksum list could not be read or does not name the source.
    #[error("iso_checksum: {list}: {message}")]
    List {
        /// The list's URL or path.
        list: String,
        /// What went wrong.
        message: String,
    },
    /// A compressed source could not be decompressed.
    #[error("iso_url: decompressing {path}: {message}")]
    Unpack {
        /// The compressed file.
        path: PathBuf,
        /// What went wrong.
        message: String,
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

/// The largest source image downloaded.
pub const MAX_DOWNLOAD: u64 = host::MAX_DOWNLOAD;

impl SourceError {
    /// Names the field a [`host::Error`] about `url` belongs to.
    fn from_host(url: &str, e: host::Error) -> SourceError {
        let download = |message: String| SourceError::Download {
            url: url.to_string(),
            message,
        };
        match e {
            host::Error::Read { path, source } => SourceError::Local { path, source },
            host::Error::Mismatch {
                what,
                algo,
                got,
                want,
            } => SourceError::Mismatch {
                what,
                algo,
                got,
                want,
            },
            host::Error::ListUnreadable { ref list, .. }
            | host::Error::ListTooLarge { ref list }
            | host::Error::ListNotText { ref list }
            | host::Error::NotInList { ref list, .. }
            | host::Error::ListUnread { ref list } => SourceError::List {
                list: list.clone(),
                message: e.detail(),
            },
            host::Error::Unpack { path, message } => SourceError::Unpack { path, message },
            host::Error::TooLarge { .. } => download(format!(
                "{}; this is not an image, or raise the limit",
                e.detail()
            )),
            host::Error::Create { path, source } => {
                download(format!("creating a file in {}: {source}", path.display()))
            }
            host::Error::Write { .. } => download(e.to_string()),
            host::Error::Request { .. }
            | host::Error::Status { .. }
            | host::Error::Interrupted { .. }
            | host::Error::Task(_) => download(e.detail()),
        }
    }
}

/// Decompresses an `.xz`, `.gz` or `.bz2` source into Packer's cache
/// folder (reused while newer than the source); `None` for any other file.
pub async fn unpack(path: &Path) -> Result<Option<PathBuf>, SourceError> {
    host::unpack(path, &cache_dir())
        .await
        .map_err(|e| SourceError::from_host(&path.display().to_string(), e))
}

/// Hashes a file with the checksum's algorithm and compares.
pub fn verify(path: &Path, want: &Checksum, what: &str) -> Result<(), SourceError> {
    host::verify(path, want, what).map_err(|e| SourceError::from_host(what, e))
}

/// A local path for the first URL that works, downloaded and cached if
/// remote, always verified. Returns the path and whether it came from the
/// cache.
pub async fn fetch(urls: &[String], checksum: &Checksum) -> Result<(PathBuf, bool), SourceError> {
    fetch_capped(urls, checksum, &cache_dir(), MAX_DOWNLOAD).await
}

/// [`fetch`] into the cache folder `dir`, refusing downloads of more
/// than `cap` bytes.
async fn fetch_capped(
    urls: &[String],
    checksum: &Checksum,
    dir: &Path,
    cap: u64,
) -> Result<(PathBuf, bool), SourceError> {
    let mut failures = Vec::new();
    for url in urls {
        match host::fetch_verified(url, checksum, dir, cap).await {
            Ok(r) => return Ok(r),
            Err(e) if urls.len() == 1 => return Err(SourceError::from_host(url, e)),
            Err(e) => failures.push(format!("  {}", SourceError::from_host(url, e))),
        }
    }
    Err(SourceError::AllFailed(failures.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    /// A file `disk.img` holding `abc`, and a `SHA256SUMS` beside it.
    fn image_and_list(sums: &str) -> (tempfile::TempDir, String, Checksum) {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, b"abc").unwrap();
        let list = dir.path().join("SHA256SUMS");
        std::fs::write(&list, sums).unwrap();
        let url = img.display().to_string();
        (dir, url, Checksum::File(list.display().to_string()))
    }

    #[tokio::test]
    async fn checksum_list_problems_name_iso_checksum() {
        let (dir, url, sum) = image_and_list(&format!("{ABC_SHA256}  disk.img\n"));
        fetch(std::slice::from_ref(&url), &sum).await.unwrap();
        let missing = Checksum::File(dir.path().join("nope").display().to_string());
        let e = fetch(std::slice::from_ref(&url), &missing)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("iso_checksum: "), "{e}");
        let line = format!("{}  other.img\n", "a".repeat(64));
        let (_dir, url, sum) =
            image_and_list(&line.repeat((host::MAX_CHECKSUM_LIST / line.len()) + 10));
        let text = fetch(&[url], &sum).await.unwrap_err().to_string();
        assert!(text.starts_with("iso_checksum: "), "{text}");
        assert!(text.contains("larger than"), "{text}");
    }

    #[tokio::test]
    async fn a_missing_image_names_iso_url_and_every_failed_url_is_listed() {
        let (dir, url, _) = image_and_list("");
        let gone = dir.path().join("gone.img").display().to_string();
        let e = fetch(std::slice::from_ref(&gone), &Checksum::None)
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("iso_url: {gone}: ")),
            "{e}"
        );
        let bad = Checksum::Sha256("0".repeat(64));
        let text = fetch(&[gone.clone(), url], &bad)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("iso_url: no source could be fetched:"),
            "{text}"
        );
        assert!(text.contains(&format!("  iso_url: {gone}: ")), "{text}");
        assert!(text.contains("  iso_checksum: "), "{text}");
    }

    #[tokio::test]
    async fn a_download_past_the_size_cap_names_iso_url_and_leaves_nothing() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let _ = c.read(&mut [0u8; 1024]).await;
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = c.write_all(&[7u8; 64 * 1024]).await;
            }
        });
        let cache = tempfile::tempdir().unwrap();
        let url = format!("http://{addr}/disk.qcow2");
        let e = fetch_capped(&[url], &Checksum::None, cache.path(), 16 * 1024)
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("iso_url: downloading http://"), "{text}");
        assert!(
            text.contains("larger than 16384 bytes; this is not an image"),
            "{text}"
        );
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_wrong_checksum_names_iso_checksum_and_both_digests() {
        let (dir, _, _) = image_and_list("");
        let p = dir.path().join("disk.img");
        verify(&p, &Checksum::Sha256(ABC_SHA256.into()), "f").unwrap();
        let e = verify(&p, &Checksum::Sha256("0".repeat(64)), "f").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("iso_checksum: f has sha256 "), "{text}");
        assert!(text.contains(ABC_SHA256), "{text}");
    }
}

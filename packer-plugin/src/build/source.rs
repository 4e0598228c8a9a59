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

/// The decompressor for a compressed source, by its file name's ending
/// (the checksum is of the compressed file, as the image sites publish it).
fn decompressor(path: &Path) -> Option<(&'static str, &'static str, &'static str)> {
    let name = path.file_name()?.to_str()?;
    [
        (".xz", "xz", "xz-utils"),
        (".gz", "gzip", "gzip"),
        (".bz2", "bzip2", "bzip2"),
    ]
    .into_iter()
    .find(|(ext, _, _)| name.len() > ext.len() && name.ends_with(ext))
}

/// Decompresses an `.xz`, `.gz` or `.bz2` source into Packer's cache
/// folder (reused while newer than the source); `None` for any other file.
pub async fn unpack(path: &Path) -> Result<Option<PathBuf>, SourceError> {
    let Some((ext, tool, package)) = decompressor(path) else {
        return Ok(None);
    };
    let err = |message: String| SourceError::Unpack {
        path: path.to_path_buf(),
        message,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n[..n.len() - ext.len()].to_string())
        .ok_or_else(|| err("no file name".into()))?;
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let src_meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    // Named after the compressed file's size and time, so a changed
    // source is never answered by a stale copy.
    let stamp = src_meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = dir.join(format!("{stamp}-{}-{name}", src_meta.len()));
    if out.is_file() {
        return Ok(Some(out));
    }
    let part = out.with_extension("part");
    let file = std::fs::File::create(&part).map_err(|e| err(format!("{}: {e}", part.display())))?;
    let status = tokio::process::Command::new(tool)
        .kill_on_drop(true)
        .args(["-dc"])
        .arg(path)
        .stdout(file)
        .status()
        .await
        .map_err(|e| err(format!("running {tool} (install {package}): {e}")));
    let ok = matches!(&status, Ok(s) if s.success());
    if !ok {
        let _ = std::fs::remove_file(&part);
        status?;
        return Err(err(format!(
            "{tool} -dc failed: the file is damaged or not {ext}"
        )));
    }
    std::fs::rename(&part, &out).map_err(|e| err(e.to_string()))?;
    Ok(Some(out))
}

/// Hashes a file with the checksum's algorithm and compares.
pub fn verify(path: &Path, want: &Checksum, what: &str) -> Result<(), SourceError> {
    let (algo, want_hex) = match want {
        Checksum::None => return Ok(()),
        Checksum::File(list) => {
            return Err(SourceError::List {
                list: list.clone(),
                message: "the list was not read before verifying".into(),
            })
        }
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

/// The digest a checksum list gives for the file `name`: GNU lines
/// (`HEX  name`, `HEX *name`) or BSD lines (`SHA256 (name) = HEX`).
pub fn digest_in_list(text: &str, name: &str) -> Option<Checksum> {
    let matches = |n: &str| n == name || n.rsplit('/').next() == Some(name);
    let hex = text.lines().find_map(|line| {
        let line = line.trim();
        if let Some((left, hex)) = line.split_once(") = ") {
            let n = left.split_once(" (")?.1;
            return matches(n).then(|| hex.trim().to_string());
        }
        let (hex, rest) = line.split_once(char::is_whitespace)?;
        let n = rest.trim_start().trim_start_matches('*');
        matches(n).then(|| hex.to_string())
    })?;
    let hex = hex.to_ascii_lowercase();
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        64 => Some(Checksum::Sha256(hex)),
        128 => Some(Checksum::Sha512(hex)),
        _ => None,
    }
}

/// The longest checksum list read: real ones (SHA256SUMS and the like)
/// are a few KiB.
pub const MAX_CHECKSUM_LIST: usize = 4 << 20;

/// The largest source image downloaded: far above any install ISO or
/// cloud image, yet a server that sends without end cannot fill the disk.
pub const MAX_DOWNLOAD: u64 = 64 << 30;

/// True when a redirect goes from `https` to plain `http`, which would
/// let anyone on the path swap the image (or read the URL's secrets).
pub fn downgrade(from: &reqwest::Url, to: &reqwest::Url) -> bool {
    from.scheme() == "https" && to.scheme() != "https"
}

/// The HTTP client of downloads: at most 10 redirects, never from https
/// to http.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let downgraded = attempt
            .previous()
            .last()
            .is_some_and(|from| downgrade(from, attempt.url()));
        if downgraded {
            let to = attempt.url().to_string();
            attempt.error(format!(
                "refusing the redirect from https to plain http ({to})"
            ))
        } else if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder().redirect(policy).build()
}

/// Fails once `len` bytes are more than `cap`.
fn check_cap(len: u64, cap: u64) -> Result<(), String> {
    if len > cap {
        Err(format!(
            "larger than {cap} bytes; this is not an image, or raise the limit"
        ))
    } else {
        Ok(())
    }
}

/// Reads a checksum list, at most [`MAX_CHECKSUM_LIST`] bytes.
async fn read_list(list: &str) -> Result<String, String> {
    let too_big = || format!("larger than {MAX_CHECKSUM_LIST} bytes: not a checksum list");
    let mut bytes = Vec::new();
    if list.starts_with("http://") || list.starts_with("https://") {
        let mut resp = http_client()
            .map_err(|e| e.to_string())?
            .get(list)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("server answered {}", resp.status()));
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if bytes.len() + chunk.len() > MAX_CHECKSUM_LIST {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
    } else {
        use tokio::io::AsyncReadExt;
        let path = list.strip_prefix("file://").unwrap_or(list);
        let f = tokio::fs::File::open(path)
            .await
            .map_err(|e| e.to_string())?;
        f.take(MAX_CHECKSUM_LIST as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| e.to_string())?;
        if bytes.len() > MAX_CHECKSUM_LIST {
            return Err(too_big());
        }
    }
    String::from_utf8(bytes).map_err(|_| "not text: not a checksum list".to_string())
}

/// Turns a `file:` checksum into the digest for `url`'s file name.
async fn resolve(url: &str, checksum: &Checksum) -> Result<Checksum, SourceError> {
    let Checksum::File(list) = checksum else {
        return Ok(checksum.clone());
    };
    let err = |message: String| SourceError::List {
        list: list.clone(),
        message,
    };
    let text = read_list(list).await.map_err(err)?;
    let name = url.rsplit('/').next().unwrap_or(url);
    digest_in_list(&text, name).ok_or_else(|| {
        err(format!(
            "no sha256 or sha512 digest for `{name}` in the list"
        ))
    })
}

async fn fetch_one(url: &str, checksum: &Checksum) -> Result<(PathBuf, bool), SourceError> {
    let resolved = resolve(url, checksum).await?;
    let checksum = &resolved;
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
    download_capped(url, checksum, &cache_dir(), MAX_DOWNLOAD).await
}

/// Downloads `url` into the cache folder `dir`, refusing more than `cap`
/// bytes. The partial file is private (mode 0600, a random name) and
/// removed on any failure.
async fn download_capped(
    url: &str,
    checksum: &Checksum,
    dir: &Path,
    cap: u64,
) -> Result<(PathBuf, bool), SourceError> {
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
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| dl(format!("creating cache folder {}: {e}", dir.display())))?;
    let client = http_client().map_err(|e| dl(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| dl(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(dl(format!("server answered {}", resp.status())));
    }
    if let Some(len) = resp.content_length() {
        check_cap(len, cap).map_err(dl)?;
    }
    let part = tempfile::Builder::new()
        .prefix(".download-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| dl(format!("creating a file in {}: {e}", dir.display())))?;
    let part_path = part.path().to_path_buf();
    let mut f = tokio::fs::File::from_std(
        part.reopen()
            .map_err(|e| dl(format!("{}: {e}", part_path.display())))?,
    );
    let mut len = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| dl(e.to_string()))? {
        len += chunk.len() as u64;
        check_cap(len, cap).map_err(dl)?;
        f.write_all(&chunk)
            .await
            .map_err(|e| dl(format!("{}: {e}", part_path.display())))?;
    }
    f.flush().await.map_err(|e| dl(e.to_string()))?;
    drop(f);
    let c = checksum.clone();
    let u = url.to_string();
    let part = tokio::task::spawn_blocking(move || verify(part.path(), &c, &u).map(|()| part))
        .await
        .expect("checksum task")?;
    // The image is public: only the partial file needed to be private.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(part.path(), std::fs::Permissions::from_mode(0o644));
    part.persist(&target)
        .map_err(|e| dl(format!("{}: {}", target.display(), e.error)))?;
    Ok((target, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_lists_in_gnu_and_bsd_form_give_the_digest_for_the_name() {
        let a = "a".repeat(64);
        let b = "b".repeat(128);
        let gnu = format!("{a}  other.img\n{a}  disk.qcow2\n");
        assert_eq!(
            digest_in_list(&gnu, "disk.qcow2"),
            Some(Checksum::Sha256(a.clone()))
        );
        let star = format!("{b} *dir/disk.qcow2\n");
        assert_eq!(
            digest_in_list(&star, "disk.qcow2"),
            Some(Checksum::Sha512(b.clone()))
        );
        let bsd = format!("SHA256 (disk.qcow2) = {a}\n");
        assert_eq!(
            digest_in_list(&bsd, "disk.qcow2"),
            Some(Checksum::Sha256(a))
        );
        assert_eq!(digest_in_list(&gnu, "missing.iso"), None);
    }

    #[tokio::test]
    async fn a_file_checksum_is_looked_up_in_its_list_before_verifying() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, b"abc").unwrap();
        let list = dir.path().join("SHA256SUMS");
        std::fs::write(
            &list,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  disk.img\n",
        )
        .unwrap();
        let url = img.display().to_string();
        let sum = Checksum::File(list.display().to_string());
        fetch(std::slice::from_ref(&url), &sum).await.unwrap();
        std::fs::write(&img, b"abd").unwrap();
        assert!(matches!(
            fetch(&[url], &sum).await,
            Err(SourceError::Mismatch { .. })
        ));
        let missing = Checksum::File(dir.path().join("nope").display().to_string());
        let e = fetch(&[img.display().to_string()], &missing)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("iso_checksum:"), "{e}");
    }

    #[tokio::test]
    async fn a_checksum_list_larger_than_any_real_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, b"abc").unwrap();
        let list = dir.path().join("SHA256SUMS");
        let line = format!("{}  other.img\n", "a".repeat(64));
        std::fs::write(&list, line.repeat((MAX_CHECKSUM_LIST / line.len()) + 10)).unwrap();
        let sum = Checksum::File(list.display().to_string());
        let e = fetch(&[img.display().to_string()], &sum).await.unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("iso_checksum:"), "{text}");
        assert!(text.contains("larger than"), "{text}");
    }

    /// Serves `body` once per connection, with a Content-Length when `len`.
    async fn serve(body: Vec<u8>, len: bool) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let head = if len {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = c.write_all(head.as_bytes()).await;
                let _ = c.write_all(&body).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_download_past_the_size_cap_is_refused_and_leaves_nothing() {
        let cache = tempfile::tempdir().unwrap();
        for len in [true, false] {
            let addr = serve(vec![7u8; 64 * 1024], len).await;
            let url = format!("http://{addr}/disk.qcow2");
            let e = download_capped(&url, &Checksum::None, cache.path(), 16 * 1024)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("larger than"), "{e}");
            assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn a_redirect_from_https_to_plain_http_is_refused() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(downgrade(&u("https://a/x"), &u("http://b/x")));
        assert!(!downgrade(&u("https://a/x"), &u("https://b/x")));
        assert!(!downgrade(&u("http://a/x"), &u("http://b/x")));
        assert!(!downgrade(&u("http://a/x"), &u("https://b/x")));
    }

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

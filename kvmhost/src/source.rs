//! Image sources: a local path or an http(s) URL, their checksums
//! (`sha256:HEX`, `sha512:HEX`, `file:` checksum lists such as
//! `SHA256SUMS`), verification, and downloads that stop at a size cap.
//!
//! The provider and the Packer builder both fetch images through here;
//! each maps [`Error`] to messages that name its own fields.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Why a source could not be had. The messages name no configuration
/// field: the programs add theirs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file is missing or unreadable.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file or folder could not be created or opened for writing.
    #[error("{}: {source}", path.display())]
    Create {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a download failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file written to.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The request could not be made or was not answered.
    #[error("{url}: {message}")]
    Request {
        /// The URL.
        url: String,
        /// What the HTTP client said.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{url}: server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status line's code and reason.
        status: String,
    },
    /// The body broke off.
    #[error("{url}: failed after {after} bytes: {message}")]
    Interrupted {
        /// The URL.
        url: String,
        /// How much had arrived.
        after: u64,
        /// What the HTTP client said.
        message: String,
    },
    /// The body is longer than the cap.
    #[error("{url}: larger than {cap} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap in bytes.
        cap: u64,
    },
    /// The content's digest is not the expected one.
    #[error("{what} has {algo} {got}, expected {want}")]
    Mismatch {
        /// The file or URL.
        what: String,
        /// The algorithm.
        algo: &'static str,
        /// The actual digest.
        got: String,
        /// The expected digest.
        want: String,
    },
    /// A checksum list could not be read.
    #[error("{list}: {message}")]
    ListUnreadable {
        /// The list's URL or path.
        list: String,
        /// What went wrong.
        message: String,
    },
    /// A checksum list is larger than any real one.
    #[error("{list}: larger than {MAX_CHECKSUM_LIST} bytes: not a checksum list")]
    ListTooLarge {
        /// The list's URL or path.
        list: String,
    },
    /// A checksum list is not text.
    #[error("{list}: not text: not a checksum list")]
    ListNotText {
        /// The list's URL or path.
        list: String,
    },
    /// A checksum list has no digest for the file.
    #[error("{list}: no sha256 or sha512 digest for `{name}` in the list")]
    NotInList {
        /// The list's URL or path.
        list: String,
        /// The file name looked up.
        name: String,
    },
    /// A `file:` checksum was used without reading its list first.
    #[error("{list}: the list was not read before verifying")]
    ListUnread {
        /// The list's URL or path.
        list: String,
    },
    /// A compressed file could not be decompressed.
    #[error("decompressing {}: {message}", path.display())]
    Unpack {
        /// The compressed file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A blocking task (hashing) ended without an answer.
    #[error("{0}")]
    Task(String),
}

impl Error {
    /// The part of the message after the file, URL or list it is about:
    /// what the programs put behind their own prefix.
    pub fn detail(&self) -> String {
        match self {
            Error::Read { source, .. }
            | Error::Create { source, .. }
            | Error::Write { source, .. } => source.to_string(),
            Error::Request { message, .. } | Error::ListUnreadable { message, .. } => {
                message.clone()
            }
            Error::Status { status, .. } => format!("server answered {status}"),
            Error::Interrupted { after, message, .. } => {
                format!("failed after {after} bytes: {message}")
            }
            Error::TooLarge { cap, .. } => format!("larger than {cap} bytes"),
            Error::ListTooLarge { .. } => {
                format!("larger than {MAX_CHECKSUM_LIST} bytes: not a checksum list")
            }
            Error::ListNotText { .. } => "not text: not a checksum list".into(),
            Error::NotInList { name, .. } => {
                format!("no sha256 or sha512 digest for `{name}` in the list")
            }
            Error::ListUnread { .. } => "the list was not read before verifying".into(),
            Error::Unpack { message, .. } => message.clone(),
            Error::Mismatch { .. } | Error::Task(_) => self.to_string(),
        }
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file on this machine (a plain path or a `file://` URL).
    File(PathBuf),
    /// An http(s) URL.
    Url(String),
}

impl Location {
    /// Tells URLs and paths apart; `file://` is stripped to its path.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("http://") || s.starts_with("https://") {
            Location::Url(s.to_string())
        } else {
            Location::File(PathBuf::from(s.strip_prefix("file://").unwrap_or(s)))
        }
    }
}

/// A checksum to verify an image against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// Verification explicitly turned off.
    None,
    /// SHA-256, lowercase hex.
    Sha256(String),
    /// SHA-512, lowercase hex.
    Sha512(String),
    /// A checksum list (`file:` URL or path) to look the source's name up in.
    File(String),
}

/// Why a checksum setting does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumSpecError {
    /// `file:` with nothing after it.
    #[error("`file:` needs the URL or path of a checksum list after it")]
    EmptyList,
    /// An algorithm other than sha256 and sha512.
    #[error("checksum type `{0}` is not supported: use sha256:HEX, sha512:HEX or none")]
    Unsupported(String),
    /// The digest is not the algorithm's length in hex.
    #[error("a {algo} checksum is {want} hex digits, got `{got}`")]
    BadDigest {
        /// The algorithm.
        algo: String,
        /// How many hex digits it takes.
        want: usize,
        /// What was given.
        got: String,
    },
}

impl Checksum {
    /// Parses `sha256:HEX`, `sha512:HEX`, a bare hex digest (its length
    /// picks the algorithm), `file:LIST` or `none`, as Packer writes them.
    pub fn parse(s: &str) -> Result<Checksum, ChecksumSpecError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(Checksum::None);
        }
        if let Some(list) = s.strip_prefix("file:") {
            if list.is_empty() {
                return Err(ChecksumSpecError::EmptyList);
            }
            return Ok(Checksum::File(list.to_string()));
        }
        let (algo, hex) = match s.split_once(':') {
            Some((a, h)) => (a.to_ascii_lowercase(), h.trim().to_ascii_lowercase()),
            None => (
                match s.len() {
                    128 => "sha512".into(),
                    _ => "sha256".into(),
                },
                s.to_ascii_lowercase(),
            ),
        };
        let want = match algo.as_str() {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(ChecksumSpecError::Unsupported(algo)),
        };
        if hex.len() != want || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ChecksumSpecError::BadDigest {
                algo,
                want,
                got: hex,
            });
        }
        Ok(match algo.as_str() {
            "sha256" => Checksum::Sha256(hex),
            _ => Checksum::Sha512(hex),
        })
    }

    /// Turns a `file:` checksum into the digest its list gives for the
    /// last path component of `url`; any other checksum is returned as is.
    pub async fn resolve(&self, url: &str) -> Result<Checksum, Error> {
        let Checksum::File(list) = self else {
            return Ok(self.clone());
        };
        let text = read_list(list).await?;
        let name = url.rsplit('/').next().unwrap_or(url);
        digest_in_list(&text, name).ok_or_else(|| Error::NotInList {
            list: list.clone(),
            name: name.to_string(),
        })
    }
}

/// The digest a checksum list gives for the file `name`: GNU lines
/// (`HEX  name`, `HEX *name`) or BSD lines (`SHA256 (name) = HEX`); a
/// listed `dir/name` matches too.
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

/// Reads a checksum list (a path, `file://` or http(s) URL), at most
/// [`MAX_CHECKSUM_LIST`] bytes.
pub async fn read_list(list: &str) -> Result<String, Error> {
    let unreadable = |message: String| Error::ListUnreadable {
        list: list.to_string(),
        message,
    };
    let too_big = || Error::ListTooLarge {
        list: list.to_string(),
    };
    let mut bytes = Vec::new();
    match Location::parse(list) {
        Location::Url(url) => {
            let mut resp = get(&url).await.map_err(|e| unreadable(e.detail()))?;
            while let Some(chunk) = resp.chunk().await.map_err(|e| unreadable(e.to_string()))? {
                if bytes.len() + chunk.len() > MAX_CHECKSUM_LIST {
                    return Err(too_big());
                }
                bytes.extend_from_slice(&chunk);
            }
        }
        Location::File(path) => {
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| unreadable(e.to_string()))?;
            f.take(MAX_CHECKSUM_LIST as u64 + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| unreadable(e.to_string()))?;
            if bytes.len() > MAX_CHECKSUM_LIST {
                return Err(too_big());
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| Error::ListNotText {
        list: list.to_string(),
    })
}

/// Hashes a file with the checksum's algorithm and compares; `what`
/// names the file in a mismatch. Blocking: see [`verify_blocking`].
pub fn verify(path: &Path, want: &Checksum, what: &str) -> Result<(), Error> {
    let (algo, want_hex) = match want {
        Checksum::None => return Ok(()),
        Checksum::File(list) => return Err(Error::ListUnread { list: list.clone() }),
        Checksum::Sha256(h) => ("sha256", h),
        Checksum::Sha512(h) => ("sha512", h),
    };
    let read = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(read)?;
    let got = if algo == "sha256" {
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(read)?;
        hex::encode(h.finalize())
    } else {
        let mut h = Sha512::new();
        std::io::copy(&mut f, &mut h).map_err(read)?;
        hex::encode(h.finalize())
    };
    if &got != want_hex {
        return Err(Error::Mismatch {
            what: what.to_string(),
            algo,
            got,
            want: want_hex.clone(),
        });
    }
    Ok(())
}

/// [`verify`] on the blocking pool, so hashing gigabytes does not hold up
/// the async runtime.
pub async fn verify_blocking(path: &Path, want: &Checksum, what: &str) -> Result<(), Error> {
    let (p, c, w) = (path.to_path_buf(), want.clone(), what.to_string());
    tokio::task::spawn_blocking(move || verify(&p, &c, &w))
        .await
        .map_err(|e| Error::Task(format!("hashing {}: {e}", path.display())))?
}

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

/// A GET through [`http_client`] that fails on an error status.
async fn get(url: &str) -> Result<reqwest::Response, Error> {
    let request = |e: reqwest::Error| Error::Request {
        url: url.to_string(),
        message: e.to_string(),
    };
    let resp = http_client()
        .map_err(request)?
        .get(url)
        .send()
        .await
        .map_err(request)?;
    if !resp.status().is_success() {
        return Err(Error::Status {
            url: url.to_string(),
            status: resp.status().to_string(),
        });
    }
    Ok(resp)
}

/// What a download does with all-zero chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zeros {
    /// Writes them like any data.
    Write,
    /// Leaves holes, so a later upload that seeks for data skips them.
    Holes,
}

/// Downloads `url` into `part` (a file created by the caller, which
/// decides its folder and mode), refusing more than `cap` bytes; returns
/// the length. The caller removes `part` on failure (a
/// `tempfile::NamedTempFile` does that on drop).
pub async fn download(
    url: &str,
    part: &tempfile::NamedTempFile,
    cap: u64,
    zeros: Zeros,
) -> Result<u64, Error> {
    let too_big = || Error::TooLarge {
        url: url.to_string(),
        cap,
    };
    let mut resp = get(url).await?;
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let path = part.path().to_path_buf();
    let write = |source| Error::Write {
        path: path.clone(),
        source,
    };
    let mut file = tokio::fs::File::from_std(part.reopen().map_err(|source| Error::Create {
        path: path.clone(),
        source,
    })?);
    let mut len = 0u64;
    loop {
        let chunk = resp.chunk().await.map_err(|e| Error::Interrupted {
            url: url.to_string(),
            after: len,
            message: e.to_string(),
        })?;
        let Some(chunk) = chunk else { break };
        len += chunk.len() as u64;
        if len > cap {
            return Err(too_big());
        }
        if zeros == Zeros::Holes && crate::libvirt::volume::is_zero(&chunk) {
            file.seek(std::io::SeekFrom::Current(chunk.len() as i64))
                .await
                .map_err(write)?;
        } else {
            file.write_all(&chunk).await.map_err(write)?;
        }
    }
    // A trailing hole is only a seek: the length makes it part of the file.
    file.set_len(len).await.map_err(write)?;
    file.flush().await.map_err(write)?;
    Ok(len)
}

/// The largest image [`fetch_verified`] downloads: far above any install
/// ISO or cloud image, yet a server that sends without end cannot fill
/// the disk.
pub const MAX_DOWNLOAD: u64 = 64 << 30;

/// A local, verified copy of `url` (a path, `file://` or http(s) URL),
/// with a `file:` checksum looked up in its list first. Downloads are
/// kept in `cache` under a name made of the URL and the checksum, reused
/// while they verify, and at most `cap` bytes. Returns the path and
/// whether it came from the cache.
pub async fn fetch_verified(
    url: &str,
    checksum: &Checksum,
    cache: &Path,
    cap: u64,
) -> Result<(PathBuf, bool), Error> {
    let checksum = checksum.resolve(url).await?;
    match Location::parse(url) {
        Location::Url(url) => download_cached(&url, &checksum, cache, cap).await,
        Location::File(path) => {
            tokio::fs::metadata(&path)
                .await
                .map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
            let what = path.display().to_string();
            verify_blocking(&path, &checksum, &what).await?;
            Ok((path, false))
        }
    }
}

/// The cache file name of a download: keyed by URL and checksum, so a
/// changed checksum never reuses a stale file.
fn cache_name(url: &str, checksum: &Checksum) -> String {
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

/// Downloads `url` into the cache folder `dir`. The partial file is
/// private (mode 0600, a random name) and removed on any failure.
async fn download_cached(
    url: &str,
    checksum: &Checksum,
    dir: &Path,
    cap: u64,
) -> Result<(PathBuf, bool), Error> {
    let target = dir.join(cache_name(url, checksum));
    // An unverifiable cache entry is downloaded again.
    if *checksum != Checksum::None
        && target.is_file()
        && verify_blocking(&target, checksum, "cached file")
            .await
            .is_ok()
    {
        return Ok((target, true));
    }
    let create = |source| Error::Create {
        path: dir.to_path_buf(),
        source,
    };
    tokio::fs::create_dir_all(dir).await.map_err(create)?;
    let part = tempfile::Builder::new()
        .prefix(".download-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(create)?;
    download(url, &part, cap, Zeros::Write).await?;
    verify_blocking(part.path(), checksum, url).await?;
    // The image is public: only the partial file needed to be private.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(part.path(), std::fs::Permissions::from_mode(0o644));
    part.persist(&target).map_err(|e| Error::Write {
        path: target.clone(),
        source: e.error,
    })?;
    Ok((target, false))
}

/// The decompressor for a compressed image, by its file name's ending
/// (the checksum is of the compressed file, as the image sites publish
/// it): (ending, tool, Debian package).
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

/// Decompresses an `.xz`, `.gz` or `.bz2` image into the folder `dir`
/// (reused while the compressed file keeps its size and time); `None`
/// for any other file.
pub async fn unpack(path: &Path, dir: &Path) -> Result<Option<PathBuf>, Error> {
    let Some((ext, tool, package)) = decompressor(path) else {
        return Ok(None);
    };
    let err = |message: String| Error::Unpack {
        path: path.to_path_buf(),
        message,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n[..n.len() - ext.len()].to_string())
        .ok_or_else(|| err("no file name".into()))?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let src_meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| err(e.to_string()))?;
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
    tokio::fs::rename(&part, &out)
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert_eq!(
            Location::parse("https://x/a.qcow2"),
            Location::Url("https://x/a.qcow2".into())
        );
        assert_eq!(
            Location::parse("file:///a/b"),
            Location::File("/a/b".into())
        );
        assert_eq!(Location::parse("b.img"), Location::File("b.img".into()));
    }

    #[test]
    fn checksum_settings_parse_like_packer() {
        assert!(matches!(
            Checksum::parse(&format!("sha256:{}", "a".repeat(64))),
            Ok(Checksum::Sha256(_))
        ));
        assert!(matches!(
            Checksum::parse(&"B".repeat(128)),
            Ok(Checksum::Sha512(h)) if h == "b".repeat(128)
        ));
        assert_eq!(Checksum::parse("NONE"), Ok(Checksum::None));
        assert_eq!(
            Checksum::parse("file:https://x/SHA256SUMS"),
            Ok(Checksum::File("https://x/SHA256SUMS".into()))
        );
        assert_eq!(Checksum::parse("file:"), Err(ChecksumSpecError::EmptyList));
        let e = Checksum::parse("md5:abc").unwrap_err();
        assert!(e.to_string().contains("`md5` is not supported"), "{e}");
        let e = Checksum::parse("sha256:abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a sha256 checksum is 64 hex digits, got `abc`"
        );
    }

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
        assert_eq!(digest_in_list("xyz  disk.qcow2\n", "disk.qcow2"), None);
    }

    #[tokio::test]
    async fn a_file_checksum_is_looked_up_in_its_list_before_verifying() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, b"abc").unwrap();
        let list = dir.path().join("SHA256SUMS");
        std::fs::write(&list, format!("{ABC_SHA256}  disk.img\n")).unwrap();
        let url = img.display().to_string();
        let sum = Checksum::File(list.display().to_string());
        let cache = dir.path().join("cache");
        let (p, cached) = fetch_verified(&url, &sum, &cache, MAX_DOWNLOAD)
            .await
            .unwrap();
        assert_eq!((p, cached), (img.clone(), false));
        std::fs::write(&img, b"abd").unwrap();
        assert!(matches!(
            fetch_verified(&url, &sum, &cache, MAX_DOWNLOAD).await,
            Err(Error::Mismatch { .. })
        ));
        let missing = Checksum::File(dir.path().join("nope").display().to_string());
        assert!(matches!(
            fetch_verified(&url, &missing, &cache, MAX_DOWNLOAD).await,
            Err(Error::ListUnreadable { .. })
        ));
        let other = dir.path().join("other.img");
        std::fs::write(&other, b"abc").unwrap();
        let e = fetch_verified(&other.display().to_string(), &sum, &cache, MAX_DOWNLOAD)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::NotInList { name, .. } if name == "other.img"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_checksum_list_larger_than_any_real_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("SHA256SUMS");
        let line = format!("{}  other.img\n", "a".repeat(64));
        std::fs::write(&list, line.repeat((MAX_CHECKSUM_LIST / line.len()) + 10)).unwrap();
        let e = read_list(&list.display().to_string()).await.unwrap_err();
        assert!(matches!(e, Error::ListTooLarge { .. }), "{e}");
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn a_wrong_checksum_names_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        verify(&p, &Checksum::Sha256(ABC_SHA256.into()), "f").unwrap();
        let e = verify(&p, &Checksum::Sha256("0".repeat(64)), "f").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("f has sha256 "), "{text}");
        assert!(text.contains(ABC_SHA256), "{text}");
    }

    #[test]
    fn a_redirect_from_https_to_plain_http_is_refused() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(downgrade(&u("https://a/x"), &u("http://b/x")));
        assert!(!downgrade(&u("https://a/x"), &u("https://b/x")));
        assert!(!downgrade(&u("http://a/x"), &u("http://b/x")));
        assert!(!downgrade(&u("http://a/x"), &u("https://b/x")));
    }

    /// Serves `body` on every connection, with a Content-Length when
    /// `len`; counts the connections.
    async fn serve(
        body: Vec<u8>,
        len: bool,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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
        (addr, served)
    }

    #[tokio::test]
    async fn a_download_past_the_size_cap_is_refused_and_leaves_nothing() {
        let cache = tempfile::tempdir().unwrap();
        for len in [true, false] {
            let (addr, _) = serve(vec![7u8; 64 * 1024], len).await;
            let url = format!("http://{addr}/disk.qcow2");
            let e = fetch_verified(&url, &Checksum::None, cache.path(), 16 * 1024)
                .await
                .unwrap_err();
            assert!(matches!(e, Error::TooLarge { cap: 16384, .. }), "{e}");
            assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
        }
    }

    #[tokio::test]
    async fn downloads_are_verified_cached_and_reused() {
        let (addr, served) = serve(b"abc".to_vec(), true).await;
        let cache = tempfile::tempdir().unwrap();
        let url = format!("http://{addr}/disk.qcow2");
        let sum = Checksum::Sha256(ABC_SHA256.into());
        let (p, cached) = fetch_verified(&url, &sum, cache.path(), MAX_DOWNLOAD)
            .await
            .unwrap();
        assert!(!cached);
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        let (p2, cached) = fetch_verified(&url, &sum, cache.path(), MAX_DOWNLOAD)
            .await
            .unwrap();
        assert!(cached);
        assert_eq!(p, p2);
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
        let bad = Checksum::Sha256("0".repeat(64));
        let e = fetch_verified(&url, &bad, cache.path(), MAX_DOWNLOAD).await;
        assert!(matches!(e, Err(Error::Mismatch { .. })));
    }

    #[tokio::test]
    async fn a_download_with_holes_keeps_its_bytes_and_skips_zero_chunks() {
        let mut body = vec![0u8; 4 << 20];
        body[3 << 20] = 7;
        let (addr, _) = serve(body.clone(), true).await;
        let part = tempfile::NamedTempFile::new().unwrap();
        let url = format!("http://{addr}/img");
        let len = download(&url, &part, MAX_DOWNLOAD, Zeros::Holes)
            .await
            .unwrap();
        assert_eq!(len, body.len() as u64);
        assert_eq!(std::fs::read(part.path()).unwrap(), body);
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(part.path()).unwrap().blocks() * 512;
        assert!(allocated < len / 2, "{allocated} of {len} bytes allocated");
    }

    #[tokio::test]
    async fn an_error_status_is_reported_with_its_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let part = tempfile::NamedTempFile::new().unwrap();
        let url = format!("http://{addr}/img");
        let e = download(&url, &part, MAX_DOWNLOAD, Zeros::Write)
            .await
            .unwrap_err();
        assert_eq!(e.detail(), "server answered 404 Not Found");
    }
}

//! Files powernapd reads commands from must be as trusted as powernapd:
//! owned by root (or by the user it runs as) and writable by no one else.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a file is not trusted; each says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file's owner and mode cannot be read.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Someone other than root or powernapd's user owns it.
    #[error(
        "{p} is owned by uid {uid}, so that user could make powernapd run any command; \
         run `chown root: {p}`",
        p = path.display()
    )]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Group or others may write it.
    #[error(
        "{p} is writable by others (mode {mode:04o}), so they could make powernapd run any \
         command; run `chmod go-w {p}`",
        p = path.display()
    )]
    Writable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Checks that `path` (a config file or an action script) is owned by
/// root or by the user powernapd runs as, and not writable by group or
/// others.
pub fn check_owner_and_mode(path: &Path) -> Result<(), TrustError> {
    let meta = std::fs::metadata(path).map_err(|source| TrustError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(TrustError::Owner {
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(TrustError::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

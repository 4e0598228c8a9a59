//! Files powernapd reads commands from must be as trusted as powernapd:
//! owned by root (or by the user it runs as) and writable by no one else,
//! in folders no one else can change either.
//!
//! A file is opened once and its owner and mode are read from the open
//! file (`fstat`), so what is checked is what is read: a file swapped in
//! between a check by name and a second open cannot slip through.

use std::fs::{File, Metadata};
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
    /// A folder on the way to the file is owned by someone else.
    #[error(
        "{p}: the folder {d} is owned by uid {uid}, so that user could replace the file and \
         make powernapd run any command; run `chown root: {d}`",
        p = path.display(),
        d = dir.display()
    )]
    FolderOwner {
        /// The file.
        path: PathBuf,
        /// The folder.
        dir: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A folder on the way to the file may be written by group or others.
    #[error(
        "{p}: the folder {d} is writable by others (mode {mode:04o}), so they could replace \
         the file and make powernapd run any command; run `chmod go-w {d}`",
        p = path.display(),
        d = dir.display()
    )]
    FolderWritable {
        /// The file.
        path: PathBuf,
        /// The folder.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The name led to another file by the time its folders were checked.
    #[error(
        "{} was replaced while powernapd checked it; start powernapd again once nothing \
         changes it",
        path.display()
    )]
    Replaced {
        /// The file.
        path: PathBuf,
    },
}

/// Opens `path` (a config file or an action script) and checks, on the
/// open file, that it is owned by root or by the user powernapd runs as
/// and not writable by group or others; then that no one else can change
/// the folders that lead to it. Read the file through the returned handle.
pub fn open_trusted(path: &Path) -> Result<File, TrustError> {
    let unreadable = |source| TrustError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !trusted_owner(&meta) {
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
    // The folders are those of the file's real path (symlinks resolved);
    // the same device and inode prove the name still leads to what was
    // opened.
    let real = std::fs::canonicalize(path).map_err(unreadable)?;
    let now = std::fs::metadata(&real).map_err(unreadable)?;
    if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
        return Err(TrustError::Replaced {
            path: path.to_path_buf(),
        });
    }
    for dir in real.ancestors().skip(1) {
        check_folder(path, dir)?;
    }
    Ok(file)
}

/// The rule sshd's StrictModes applies to the folders above a user's
/// keys: each folder up to `/` is owned by root or by us and is not
/// writable by group or others, since whoever may write a folder can
/// rename the file in it away and put their own in its place. One
/// exception: a root-owned folder with the sticky bit (`/tmp`, mode 1777)
/// lets others add names but not rename or remove a name someone else
/// owns, and the entry below it is checked to be root's or ours, so it
/// cannot be swapped either.
fn check_folder(path: &Path, dir: &Path) -> Result<(), TrustError> {
    let meta = std::fs::metadata(dir).map_err(|source| TrustError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })?;
    if !trusted_owner(&meta) {
        return Err(TrustError::FolderOwner {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            uid: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    let sticky_root = mode & 0o1000 != 0 && meta.uid() == 0;
    if mode & 0o022 != 0 && !sticky_root {
        return Err(TrustError::FolderWritable {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Root or the user powernapd runs as.
fn trusted_owner(meta: &Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    meta.uid() == 0 || meta.uid() == me
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn am_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// `dir/shared/file`, the file 0644, `shared` of `mode`.
    fn file_in_folder(dir: &Path, mode: u32) -> PathBuf {
        let shared = dir.join("shared");
        std::fs::create_dir(&shared).unwrap();
        let file = shared.join("powernapd.conf");
        std::fs::write(&file, "interval 1\n").unwrap();
        chmod(&file, 0o644);
        chmod(&shared, mode);
        file
    }

    #[test]
    fn a_root_owned_sticky_folder_like_tmp_is_fine() {
        let t = tempfile::tempdir().unwrap();
        let file = file_in_folder(t.path(), 0o1777);
        let r = open_trusted(&file);
        if am_root() {
            r.unwrap();
        } else {
            // Ours, not root's: others could not swap the file, but the
            // rule asks for root's sticky folders only.
            assert!(matches!(r, Err(TrustError::FolderWritable { .. })), "{r:?}");
        }
    }

    #[test]
    fn a_folder_someone_else_owns_is_refused() {
        if !am_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let file = file_in_folder(t.path(), 0o755);
        std::os::unix::fs::chown(file.parent().unwrap(), Some(4242), None).unwrap();
        let e = open_trusted(&file).unwrap_err().to_string();
        assert!(
            e.contains("is owned by uid 4242") && e.contains("chown root:"),
            "{e}"
        );
    }

    #[test]
    fn the_folders_of_a_symlinks_target_are_the_ones_checked() {
        let t = tempfile::tempdir().unwrap();
        let file = file_in_folder(t.path(), 0o777);
        let link = t.path().join("link.conf");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = open_trusted(&link).unwrap_err();
        assert!(matches!(e, TrustError::FolderWritable { .. }), "{e}");
    }
}

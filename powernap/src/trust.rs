//! Files powernapd reads commands from must be as trusted as powernapd:
//! owned by root (or by the user it runs as) and writable by no one else.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Checks that `path` (a config file or an action script) is owned by
/// root or by the user powernapd runs as, and not writable by group or
/// others; the error says which and how to fix it.
pub fn check_owner_and_mode(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let p = path.display();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{p} is owned by uid {}, so that user could make powernapd run any command; \
             run `chown root: {p}`",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{p} is writable by others (mode {mode:04o}), so they could make powernapd run any \
             command; run `chmod go-w {p}`"
        ));
    }
    Ok(())
}

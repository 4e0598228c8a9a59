//! A digest of an image folder's sources, to tell when a template changed
//! since its last build.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Folders inside an image folder that are outputs or caches, not sources.
const NOT_SOURCES: &[&str] = &["builds", "packer_cache", "output", ".git"];

/// SHA-256 over every source file's path (relative, `/`-separated) and
/// content, in path order. Symlinks count by their target's name.
pub fn sources_digest(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for rel in files {
        let path = dir.join(&rel);
        let name = rel.to_string_lossy().replace('\\', "/");
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        let content = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(Error::io(&path))?;
            target.to_string_lossy().into_owned().into_bytes()
        } else {
            std::fs::read(&path).map_err(Error::io(&path))?
        };
        h.update((content.len() as u64).to_le_bytes());
        h.update(&content);
    }
    Ok(hex::encode(h.finalize()))
}

fn walk(top: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let path = entry.path();
        let rel = path.strip_prefix(top).unwrap_or(&path).to_path_buf();
        let kind = entry.file_type().map_err(Error::io(&path))?;
        if dir == top {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if NOT_SOURCES.contains(&name.as_ref()) || name.starts_with("crash.log") {
                continue;
            }
        }
        if kind.is_dir() {
            walk(top, &path, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_source_changes_the_digest_and_a_new_build_does_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.pkr.hcl"), "source {}").unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        std::fs::write(dir.path().join("files/user-data"), "#cloud-config").unwrap();
        let first = sources_digest(dir.path()).unwrap();

        std::fs::create_dir_all(dir.path().join("builds/2026-12-01T00:00:00Z")).unwrap();
        std::fs::write(dir.path().join("builds/latest-version"), "x").unwrap();
        std::fs::create_dir(dir.path().join("packer_cache")).unwrap();
        assert_eq!(sources_digest(dir.path()).unwrap(), first);

        std::fs::write(dir.path().join("files/user-data"), "#cloud-config\n").unwrap();
        assert_ne!(sources_digest(dir.path()).unwrap(), first);
    }

    #[test]
    fn moving_content_between_files_changes_the_digest() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("a"), "xy").unwrap();
        std::fs::write(a.path().join("b"), "").unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("a"), "x").unwrap();
        std::fs::write(b.path().join("b"), "y").unwrap();
        assert_ne!(
            sources_digest(a.path()).unwrap(),
            sources_digest(b.path()).unwrap()
        );
    }
}

//! The `sshkey` data source: an SSH key pair for a build's installer to
//! authorise and the build to log in with, kept in Packer's cache so
//! every build of a template uses the same one. It takes and gives what
//! the `sshkey` data-source plugin templates use (`name`, `type`;
//! `public_key`, `private_key`, `private_key_path`), so a template moves
//! over by changing `data "sshkey"` to `data "libvirt-sshkey"`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use russh::keys::ssh_key::{private::Ed25519Keypair, LineEnding, PrivateKey};

use crate::packer::builder::JsonMap;
use crate::packer::datasource::{DataSource, DataSourceError};
use crate::protocol::spec::{CtyType, ObjectSpec, Spec};

/// The data source, with the settings of its block.
#[derive(Default)]
pub struct SshKey {
    name: Mutex<String>,
    /// The cache folder; Packer's when `None`.
    cache: Option<PathBuf>,
}

const OUTPUTS: &[&str] = &["public_key", "private_key", "private_key_path"];

/// Why the `sshkey` data source refused its settings or made no key.
#[derive(Debug, thiserror::Error)]
pub enum SshKeyError {
    /// A setting the block does not take.
    #[error("{0}: unknown setting of the sshkey data source (it takes `name` and `type`)")]
    UnknownSetting(String),
    /// A key type other than ed25519.
    #[error("type: \"{0}\" is not offered: only \"ed25519\" keys are made (every OpenSSH since 6.5 and dropbear since 2020.79 accepts them); remove `type` or set it to \"ed25519\"")]
    Type(String),
    /// A name that cannot be part of the key's file name.
    #[error("name: \"{0}\" is used in a file name: no '/' and no leading '.'")]
    Name(String),
    /// The cached key file holds something else.
    #[error("{} is not an OpenSSH private key ({source}): remove it and a new key is made", path.display())]
    NotAKey {
        /// The cached key file.
        path: PathBuf,
        /// What the parser said.
        source: russh::keys::ssh_key::Error,
    },
    /// No randomness for a new key.
    #[error("/dev/urandom: {0}")]
    Random(std::io::Error),
    /// The key could not be written out as OpenSSH text.
    #[error("encoding the {which} key: {source}")]
    Encode {
        /// `public` or `private`.
        which: &'static str,
        /// What the encoder said.
        source: russh::keys::ssh_key::Error,
    },
    /// A file or folder of the cache could not be made, written or found.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// `map_err` for an I/O failure on `path`.
fn file(path: &Path) -> impl FnOnce(std::io::Error) -> SshKeyError + '_ {
    move |source| SshKeyError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// `map_err` for an encoding failure of the `which` key.
fn encode(which: &'static str) -> impl FnOnce(russh::keys::ssh_key::Error) -> SshKeyError {
    move |source| SshKeyError::Encode { which, source }
}

impl SshKey {
    /// The data source keeping its keys in `dir` instead of Packer's cache.
    pub fn in_dir(dir: PathBuf) -> Self {
        SshKey {
            cache: Some(dir),
            ..Default::default()
        }
    }

    /// Where the key of `name` is kept: Packer's cache folder
    /// (`PACKER_CACHE_DIR`, else `~/.cache/packer`).
    fn path(&self, name: &str) -> PathBuf {
        let dir = self
            .cache
            .clone()
            .or_else(|| std::env::var_os("PACKER_CACHE_DIR").map(PathBuf::from))
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("packer")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/packer")))
            .unwrap_or_else(|| PathBuf::from("packer_cache"));
        dir.join(format!("sshkey-{name}-ed25519"))
    }

    fn load_or_make(path: &PathBuf) -> Result<PrivateKey, SshKeyError> {
        if let Ok(text) = std::fs::read_to_string(path) {
            return PrivateKey::from_openssh(&text).map_err(|source| SshKeyError::NotAKey {
                path: path.clone(),
                source,
            });
        }
        let mut seed = [0u8; 32];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").map_err(SshKeyError::Random)?,
            &mut seed,
        )
        .map_err(SshKeyError::Random)?;
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        let text = key.to_openssh(LineEnding::LF).map_err(encode("private"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(file(dir))?;
        }
        // Written to a private temporary name, then renamed: two builds
        // starting at once never read half a key.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(file(&tmp))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(file(&tmp))?;
        std::fs::rename(&tmp, path).map_err(file(path))?;
        Ok(key)
    }
}

impl DataSource for SshKey {
    fn config_spec(&self) -> ObjectSpec {
        ["name", "type"]
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Spec::Attr {
                        ty: CtyType::String,
                        required: false,
                    },
                )
            })
            .collect()
    }

    fn outputs(&self) -> &'static [&'static str] {
        OUTPUTS
    }

    fn configure(&self, config: &JsonMap) -> Result<(), DataSourceError> {
        for key in config.keys() {
            if key != "name" && key != "type" {
                return Err(SshKeyError::UnknownSetting(key.clone()).into());
            }
        }
        let text = |k: &str| {
            config
                .get(k)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        match text("type") {
            None | Some("ed25519") => {}
            Some(other) => return Err(SshKeyError::Type(other.to_string()).into()),
        }
        let name = text("name").unwrap_or("packer");
        if name.contains('/') || name.starts_with('.') {
            return Err(SshKeyError::Name(name.to_string()).into());
        }
        *self.name.lock().expect("name lock") = name.to_string();
        Ok(())
    }

    fn execute(&self) -> Result<BTreeMap<String, String>, DataSourceError> {
        let name = self.name.lock().expect("name lock").clone();
        let path = self.path(&name);
        let key = Self::load_or_make(&path)?;
        let public = key.public_key().to_openssh().map_err(encode("public"))?;
        let private = key.to_openssh(LineEnding::LF).map_err(encode("private"))?;
        let abs = std::path::absolute(&path).map_err(file(&path))?;
        Ok(BTreeMap::from([
            ("public_key".to_string(), format!("{public} {name}")),
            ("private_key".to_string(), private.to_string()),
            ("private_key_path".to_string(), abs.display().to_string()),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: serde_json::Value) -> JsonMap {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_key_is_made_once_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ds = SshKey::in_dir(dir.path().to_path_buf());
        ds.configure(&config(json!({"name": "install"}))).unwrap();
        let a = ds.execute().unwrap();
        let b = ds.execute().unwrap();
        assert_eq!(a, b, "the cached key is used again");
        assert!(
            a["public_key"].starts_with("ssh-ed25519 ") && a["public_key"].ends_with(" install")
        );
        assert!(a["private_key"].contains("BEGIN OPENSSH PRIVATE KEY"));
        let path = PathBuf::from(&a["private_key_path"]);
        assert_eq!(path, dir.path().join("sshkey-install-ed25519"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let ds = SshKey::default();
        let e = ds
            .configure(&config(json!({"type": "rsa"})))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("type: \"rsa\" is not offered"), "{e}");
        let e = ds
            .configure(&config(json!({"name": "../x"})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "name: \"../x\" is used in a file name: no '/' and no leading '.'"
        );
        let e = ds
            .configure(&config(json!({"bits": 4096})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "bits: unknown setting of the sshkey data source (it takes `name` and `type`)"
        );
        ds.configure(&config(json!({"type": "ed25519", "name": null})))
            .unwrap();
    }
}

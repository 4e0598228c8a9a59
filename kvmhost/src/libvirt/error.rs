//! The one error type of the libvirt layer.

use std::path::PathBuf;

use virt::error::ErrorNumber;

/// What went wrong talking to a libvirt host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection could not be opened.
    #[error("cannot connect to libvirt at '{uri}': {message}")]
    Connect {
        /// The URI that was tried.
        uri: String,
        /// libvirt's own message.
        message: String,
    },
    /// A named object does not exist on the host.
    #[error("{kind} '{name}' does not exist on the host")]
    NotFound {
        /// "domain", "storage pool", "volume" or "network".
        kind: &'static str,
        /// The name, UUID, key or path that was looked up.
        name: String,
    },
    /// libvirt refused an operation.
    #[error("{context}: {message}")]
    Libvirt {
        /// What was being done, e.g. "define domain 'web'".
        context: String,
        /// libvirt's own message.
        message: String,
    },
    /// A local file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// XML from libvirt or from the caller could not be understood.
    #[error("{context}: {message}")]
    Xml {
        /// What was being parsed.
        context: String,
        /// What is wrong with it.
        message: String,
    },
    /// A local image names a host file that QEMU would open with it.
    #[error("the image names the {kind} '{path}', a host file QEMU would read as part of the disk; flatten it where that file exists (`qemu-img convert -O qcow2 IMAGE FLAT.qcow2`) and use the flat image")]
    NamesHostFile {
        /// Which file it is.
        kind: super::image::HostFileKind,
        /// The file's name as the image's header writes it.
        path: String,
    },
    /// A host lock was taken over by another taker while it was held:
    /// its holder could not renew it for longer than its hold time.
    #[error("the host lock '{name}' was taken over while held (not renewed within its hold time): what was done under it was not alone")]
    LockLost {
        /// The lock's name.
        name: String,
    },
    /// A host lock could not be released (most likely its connection
    /// died): it stays on the host until [`super::Host::remove_lock`]
    /// removes it by this UUID, or a taker takes it over after its hold time.
    #[error("the host lock '{name}' (UUID {uuid}) could not be released and stays on the host: {message}")]
    LockLeft {
        /// The lock's name.
        name: String,
        /// The UUID of the domain that is the lock.
        uuid: String,
        /// What the release said.
        message: String,
    },
    /// A value given by the caller cannot be used.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field that is wrong.
        field: &'static str,
        /// Why, and what to do instead.
        message: String,
    },
}

/// Result of the libvirt layer.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// True when the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// Turns a libvirt error into ours; a "no such object" code about the
/// object acted on (`kind`) becomes [`Error::NotFound`] so callers can
/// detect deletion done outside. One about another object (starting a
/// domain whose network is missing) keeps libvirt's message: calling it
/// the domain's absence would mislead.
pub(crate) fn lv(
    context: impl Into<String>,
    kind: &'static str,
    name: &str,
) -> impl FnOnce(virt::error::Error) -> Error {
    let context = context.into();
    let name = name.to_string();
    move |e| {
        let code = e.code();
        let missing_kind = [
            (ErrorNumber::NoDomain, "domain"),
            (ErrorNumber::NoStoragePool, "storage pool"),
            (ErrorNumber::NoStorageVolume, "volume"),
            (ErrorNumber::NoNetwork, "network"),
        ]
        .into_iter()
        .find(|(n, _)| code.is_any(vec![*n]))
        .map(|(_, k)| k);
        if missing_kind == Some(kind) {
            Error::NotFound { kind, name }
        } else {
            Error::Libvirt {
                context,
                message: e.message().to_string(),
            }
        }
    }
}

//! What can go wrong, each with what to do about it.

use std::path::PathBuf;

/// An error of the deployment commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The image folder has no template, or more than one.
    #[error("{dir}: {what}: an image folder holds exactly one Packer template (*.pkr.hcl or *.json); name it with --template")]
    Template {
        /// The image folder.
        dir: PathBuf,
        /// What was found.
        what: String,
    },
    /// A program could not be started.
    #[error("cannot run {program}: {source} (is it installed and on PATH? --packer/--terraform or PACKER/TERRAFORM name another)")]
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{what} failed ({status}){log}")]
    Failed {
        /// The command, as a person would type it.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Where its output is kept, when it is.
        log: String,
    },
    /// A program's output was not what it should be.
    #[error("{what}: {detail}")]
    Output {
        /// The command.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// A build's folder exists already.
    #[error("{0}: exists already; builds are named by the second they start, wait a second and build again")]
    Exists(PathBuf),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

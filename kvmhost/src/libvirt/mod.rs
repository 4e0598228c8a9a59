//! libvirt: the one connection type and what it manages on a host.
//!
//! [`Host`] wraps a libvirt connection (`qemu:///system`, `qemu+ssh://...`,
//! `test:///default`). Storage pools ([`pool`]), volumes with sparse
//! upload ([`volume`]), networks ([`network`]) and domains ([`domain`])
//! are reached through it; [`domain_xml`] is the typed model of a domain
//! definition that every front end builds and reads back.
//!
//! Every call here blocks on libvirt's C library: async callers run them
//! on a blocking thread, with [`Host::run_blocking`] (the `async` feature)
//! or on a thread of their own.
//!
//! ```no_run
//! use kvmhost::libvirt::{Host, volume::{VolumeSpec, VolumeFormat}};
//! let host = Host::open("qemu:///system")?;
//! let vol = host.create_volume("default", &VolumeSpec::new("disk.qcow2", 1 << 30, VolumeFormat::Qcow2))?;
//! println!("{}", vol.path);
//! # Ok::<(), kvmhost::libvirt::Error>(())
//! ```

pub mod address;
#[cfg(feature = "async")]
mod blocking;
mod connection;
pub mod domain;
pub mod domain_xml;
mod error;
pub mod instance;
pub mod lock;
pub mod network;
pub mod pool;
pub mod template;
pub mod uri;
pub mod volume;
mod volume_download;
mod xml;

#[cfg(feature = "async")]
pub use blocking::TaskError;
pub use connection::{Host, NodeInfo};
pub use error::{Error, Result};
pub use uri::{SshOptions, Uri, UriError};

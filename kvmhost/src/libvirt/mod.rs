//! libvirt: the one connection type and what it manages on a host.
//!
//! [`Host`] wraps a libvirt connection (`qemu:///system`, `qemu+ssh://...`,
//! `test:///default`). Storage pools ([`pool`]), volumes with sparse
//! upload ([`volume`]), networks ([`network`]) and domains ([`domain`]), saved
//! and restored ([`saved`]), are reached through it; [`domain_xml`] is the typed model of a domain
//! definition that every front end builds and reads back.
//!
//! Every call here blocks on libvirt's C library: async callers reach a
//! host through [`handle::HostHandle`] (the `async` feature), which opens,
//! wakes and reopens the connection and runs calls on a blocking thread.
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
pub mod channel;
mod connection;
pub mod domain;
pub mod domain_xml;
mod error;
#[cfg(feature = "async")]
pub mod handle;
pub mod image;
pub mod instance;
pub mod lock;
pub mod network;
pub mod pool;
pub mod saved;
pub mod slot;
pub mod stylesheet;
pub mod template;
pub mod uri;
pub mod volume;
mod volume_download;
pub mod xml;

#[cfg(feature = "async")]
pub use blocking::TaskError;
pub use connection::{Host, NodeInfo};
pub use error::{Error, Result};
pub use uri::{SshOptions, Uri, UriError};

//! Everything about talking to a KVM host.
//!
//! The provider, the Packer plugin, the launcher and powernap are thin
//! front ends; the host work they share lives here, once.

#![deny(missing_docs)]

pub mod deadline;
pub mod duration;
pub mod libvirt;
pub mod nocloud;
#[cfg(feature = "source")]
pub mod source;
pub mod wake;

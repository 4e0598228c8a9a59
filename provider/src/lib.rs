//! A Terraform provider (tfplugin6) for libvirt hosts, compatible with the
//! `dmacvicar/libvirt` 0.8 HCL.
//!
//! The host work (volumes, domains, networks, image sources, wake-up) is
//! `kvmhost`'s; this crate holds the Terraform side: the provider
//! configuration, one file per resource under [`resources`] (a folder for
//! the domain) and the data sources, each mapping `kvmhost` errors to
//! diagnostics that name the attribute. The `terraform-provider-libvirt` binary only serves
//! [`LibvirtProvider`] over the plugin protocol.

#![deny(missing_docs)]

mod connection;
mod data_sources;
mod diagnostics;
mod provider;
mod resources;
mod schema;
mod source;
mod state;
mod wake;

pub use provider::LibvirtProvider;

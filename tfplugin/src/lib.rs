//! A Terraform provider server for plugin protocol 6 (tfplugin6), on
//! `tonic` and `prost`.
//!
//! - The go-plugin handshake as Terraform and OpenTofu expect it: the
//!   magic cookie, a Unix socket in a private (0700) directory, and
//!   AutoMTLS with the client certificate *required* and pinned to the one
//!   in `PLUGIN_CLIENT_CERT`, so no other local process can drive the
//!   provider.
//! - Typed resources and data sources ([`Resource`], [`DataSource`]) whose
//!   state is a serde struct of [`value::Value`] fields; schema versions
//!   with [`Resource::upgrade`] for stored state of older versions or of
//!   other providers; private state; sensitive attributes; diagnostics
//!   with attribute paths.
//! - `GRPCStdio` and `GRPCController` (Shutdown ends the process cleanly).
//!
//! ```no_run
//! # struct MyProvider;
//! # fn x<P: tfplugin::Provider>(p: P) {
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! rt.block_on(tfplugin::serve("libvirt", p)).unwrap();
//! # }
//! ```

#![deny(missing_docs)]

pub mod client;
pub mod diagnostics;
pub mod proto;
pub mod resource;
pub mod schema;
mod serve;
pub mod service;
pub mod tls;
pub mod value;

pub use diagnostics::{AttributePath, AttributePathStep, Diagnostic, Diagnostics};
pub use resource::{DataSource, DynamicDataSource, DynamicResource, Provider, Resource};
pub use serve::{serve, ServeError, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE, PROTOCOL_VERSION};

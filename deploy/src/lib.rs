//! The deployment's own commands: build an image with Packer into
//! `builds/<UTC timestamp>/`, deploy a Terraform root, keep only the builds
//! that matter, and rebuild images that have gone stale.
//!
//! An *image folder* holds one Packer template and its support files;
//! builds land in its `builds/` folder:
//!
//! ```text
//! debian-agent-image/
//!   debian-agent.pkr.hcl      the template (declares variable "output_dir")
//!   builds/
//!     2026-12-01T10:00:00Z/   one build: the image, build.log, template.sha256
//!     latest -> 2026-12-01T10:00:00Z
//!     latest-version          "2026-12-01T10:00:00Z", read by Terraform
//!     deployed/<root>         the builds a Terraform root's state uses
//! ```
//!
//! ```no_run
//! use deploy::{ImageDir, Freshness};
//! use std::time::{Duration, SystemTime};
//!
//! let dir = ImageDir::open("packer/build-agents/debian-agent-image".as_ref())?;
//! match dir.freshness(Duration::from_secs(30 * 86400), SystemTime::now())? {
//!     Freshness::Fresh { version, .. } => println!("fresh: {version}"),
//!     Freshness::Stale(why) => println!("stale: {why}"),
//! }
//! # Ok::<(), deploy::Error>(())
//! ```

#![deny(missing_docs)]

mod digest;
mod error;
mod image;
mod retention;
mod state;
mod timestamp;
pub mod tools;

pub use error::Error;
pub use image::{human, Build, Freshness, ImageDir, Staleness};
pub use retention::prune_plan;
pub use state::{deployed_builds, Deployed, ShowJson};
pub use timestamp::{format_utc, parse_utc};

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

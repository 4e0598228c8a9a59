//! Data sources: read-only views of the host, one file each.

mod domain;
mod image_build;
mod node_info;
mod volume;

pub use domain::DomainSource;
pub use image_build::ImageBuildSource;
pub use node_info::NodeInfoSource;
pub use volume::VolumeSource;

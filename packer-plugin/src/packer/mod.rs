//! Packer's components as RPC services: the builder and data source we
//! serve, the artifact and communicator we serve back.

pub mod artifact;
pub mod builder;
pub mod communicator;
pub mod datasource;

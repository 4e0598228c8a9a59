//! Packer's components as RPC services and clients: the builder we
//! serve, the Ui and Hook we call, the artifact and communicator we serve
//! back.

pub mod artifact;
pub mod builder;
pub mod communicator;
pub mod datasource;
pub mod ui;

//! The guest program's dealings with its VM: the port and the system.

pub mod apply;
pub mod port;

//! One file per resource: schema, plan, CRUD and import.

pub mod cloudinit;
pub mod domain;
pub mod network;
pub mod pool;
pub mod template;
pub mod volume;

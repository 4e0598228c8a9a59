//! One file (or folder) per resource, named as its type without the
//! `libvirt_` prefix: schema, plan, CRUD and import.

pub mod cloudinit_disk;
pub mod domain;
pub mod domain_template;
pub mod network;
pub mod pool;
pub mod volume;

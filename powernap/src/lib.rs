//! powernapd and powerwake: hosts and VMs power themselves off when idle,
//! and are woken again over the network.
//!
//! The packets are in [`kvmhost::wake`]; this crate holds the daemon's
//! config, monitors, idle timing and actions, and powerwake's target
//! lookup. The binaries only parse arguments and call in here.

#![deny(missing_docs)]

pub mod action;
pub mod config;
pub mod daemon;
pub mod hosts;
pub mod idle;
pub mod log;
pub mod monitor;
pub mod trust;

//! The Buildkite agent launcher: turns jobs waiting for an agent into
//! agent VMs on KVM hosts, one VM per job.
//!
//! [`config`] reads the TOML file, [`rules`] is the agent's targeting
//! rules, [`schedule`] decides which job goes where, [`stacks`] talks to
//! Buildkite's Stacks API, [`hosts`] does the host work through `kvmhost`,
//! and [`daemon`] runs the loop.

#![deny(missing_docs)]

pub mod config;
pub mod rules;
pub mod schedule;

//! The Buildkite agent launcher: turns jobs waiting for an agent into
//! agent VMs on KVM hosts, one VM per job.
//!
//! [`config`] reads the TOML file, [`rules`] is the agent's targeting
//! rules, [`schedule`] decides which job goes where, [`stacks`] talks to
//! Buildkite's Stacks API with [`retry`] (and issues each VM its job
//! acquisition token, [`stacks::jat`]).

#![deny(missing_docs)]

pub mod config;
pub mod daemon;
pub mod hosts;
pub mod hours;
pub mod http;
pub mod metrics;
pub mod persist;
pub mod rest;
pub mod retry;
pub mod rules;
pub mod saved;
pub mod schedule;
pub mod sdnotify;
pub mod stacks;
pub mod stages;
pub mod status;
pub mod throttled_log;
pub mod warm;
pub mod webhook;

#[cfg(test)]
mod fake_api;

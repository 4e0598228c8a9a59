//! The Buildkite agent launcher's library.
//!
//! So far it holds the rule that decides which agent may take which job;
//! the daemon that polls Buildkite and starts VMs builds on it.

#![deny(missing_docs)]

pub mod rules;

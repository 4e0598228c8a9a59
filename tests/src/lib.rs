//! The test bed: the real programs our tools serve, started and torn down
//! by the tests themselves, never touching the host's own networking.

pub mod browser;
pub mod buildkite;
pub mod guest;
pub mod guest_agent;
pub mod hosts;
pub mod launcher;
pub mod libvirtd;
pub mod mirror;
pub mod netns;
pub mod packer;
pub mod peers;
pub mod terraform;
pub mod tinyproxy;
pub mod tools;
pub mod util;
pub mod winrm;

//! The Packer plugin protocol, apart from what the plugin does: starting
//! up under Packer (handshake), the yamux session and its broker (mux),
//! Go `net/rpc` over msgpack (rpc), gob and the HCL2 specs it carries
//! (gob, spec), and serving one connection (serve).

pub mod gob;
pub mod handshake;
pub mod mux;
pub mod rpc;
pub mod serve;
pub mod spec;

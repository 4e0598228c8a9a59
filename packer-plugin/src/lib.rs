//! Packer builder plugin `libvirt`: the Packer plugin protocol (handshake,
//! yamux, mux broker, net/rpc over msgpack, gob-encoded HCL2 specs) and a
//! builder that makes VM images through libvirt with `kvmhost`.

#![deny(missing_docs)]

pub mod build;
pub mod config;
pub mod packer;
pub mod protocol;
pub mod provision;
pub mod remote;
pub mod secrets;
pub mod ssh;
pub mod sshkey;
pub mod template;
pub mod ui;
pub mod winrm;

/// `s` with its `%XX` escapes decoded (a malformed one is kept as it is),
/// read as UTF-8 with replacement characters: URL paths and the user
/// information of proxy URLs.
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

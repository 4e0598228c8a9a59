//! The msgpack RPC decoder on any byte stream from Packer, and what the
//! builder makes of the decoded values (`Prepare`'s configs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use packer_plugin_libvirt::packer::builder::split_configs;
use packer_plugin_libvirt::protocol::rpc::codec::ValueReader;
use packer_plugin_libvirt::protocol::rpc::value::{field, str_field, to_json};

fuzz_target!(|data: &[u8]| {
    let mut reader = ValueReader::new(data);
    futures::executor::block_on(async {
        // A few values are enough: each is a header or a body.
        for _ in 0..16 {
            match reader.next().await {
                Ok(Some(v)) => {
                    let _ = str_field(&v, "ServiceMethod");
                    let _ = field(&v, "Seq");
                    let _ = to_json(&v);
                    let _ = split_configs(&v);
                }
                _ => break,
            }
        }
    });
});

//! The builder's configuration as `Prepare` delivers it (JSON maps of
//! user options and `packer_*` settings), its durations and sizes, and
//! the secrets it masks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packer_plugin_libvirt::config::{parse_duration, parse_size, Config};
use packer_plugin_libvirt::secrets::Secrets;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_duration(text);
    let _ = parse_size(text);
    let Ok(serde_json::Value::Object(top)) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let empty = serde_json::Map::new();
    let user = top
        .get("user")
        .and_then(|v| v.as_object())
        .unwrap_or(&empty);
    let packer = top
        .get("packer")
        .and_then(|v| v.as_object())
        .unwrap_or(&empty);
    let secrets = Secrets::from_prepare(user, packer);
    match Config::parse(user, packer) {
        Ok(c) => {
            for w in c.warnings() {
                let _ = secrets.mask(&w);
            }
        }
        Err(e) => {
            let _ = secrets.mask(&e.to_string());
        }
    }
});

//! powernapd's config file and durations on any text.
#![no_main]

use kvmhost::duration::parse_duration;
use libfuzzer_sys::fuzz_target;
use powernap::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_duration(text);
    if let Err(e) = Config::parse(text, std::path::Path::new("/etc/powernap/powernapd.conf")) {
        let _ = e.to_string();
    }
});

//! The launcher's TOML config and agent tags on any text: an error naming
//! the file and key, or a config, never a panic.
#![no_main]

use launcher::rules::AgentTags;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/etc/buildkite-agent-launcher/launcher.toml");
    if let Err(e) = launcher::config::parse(path, text, |_| Some("from-env".to_string())) {
        let _ = e.to_string();
    }
    let _ = AgentTags::parse(text.split(','));
    let _ = launcher::daemon::parse_rfc3339(text);
});

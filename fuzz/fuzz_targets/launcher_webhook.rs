//! A webhook delivery from anyone on the network: headers and body in any
//! shape are refused or accepted, never a panic.
#![no_main]

use launcher::config::Secret;
use launcher::webhook::{event_of, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Token line, signature line, then the body.
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let token = parts.next().and_then(|t| std::str::from_utf8(t).ok());
    let signature = parts.next().and_then(|s| std::str::from_utf8(s).ok());
    let body = parts.next().unwrap_or_default();
    let secret = Secret::new("webhook-secret");
    let max_age = std::time::Duration::from_secs(300);
    let _ = verify(token, signature, body, &secret, max_age, 1_700_000_000);
    let _ = verify(None, signature, body, &secret, max_age, u64::MAX);
    let _ = event_of(None, body);
});

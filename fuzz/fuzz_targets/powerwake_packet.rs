//! What powernapd and powerwake read from the network: requests, replies,
//! magic packets, and MAC addresses as text.
#![no_main]

use kvmhost::wake::{contains_magic_packet, parse_reply, Mac, PowerwakeRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = PowerwakeRequest::parse(data) {
        // A parsed request answers with a reply that parses back.
        assert_eq!(parse_reply(&req.reply()), Some(req.nonce));
        assert!(req.is_reply(&req.reply()));
    }
    let _ = parse_reply(data);
    let mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    let _ = contains_magic_packet(data, mac);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = text.parse::<Mac>() {
            assert_eq!(m.to_string().parse::<Mac>().ok(), Some(m));
        }
    }
});

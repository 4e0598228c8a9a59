//! What a template or a guest sends must give an error, never a panic.

use std::time::Duration;

use packer_plugin_libvirt::config::parse_duration;

#[test]
fn a_duration_too_long_for_the_clock_is_refused_not_a_panic() {
    assert_eq!(parse_duration("99999999999999999999h"), None);
    assert_eq!(parse_duration("1e400s"), None);
    // Valid but longer than any Instant can hold: parsing is fine, the
    // deadline must not panic either.
    let d = parse_duration("3000000000000000h").unwrap();
    let _ = kvmhost::deadline::after(d);
    assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
}

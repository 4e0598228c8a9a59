//! `Seed::from_iso` on any bytes: an error or a seed, never a panic, and
//! never more file data than the image holds.
#![no_main]

use kvmhost::nocloud::Seed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(seed) = Seed::from_iso(data) {
        let total: usize = seed.files().map(|(_, c)| c.len()).sum();
        assert!(
            total <= data.len(),
            "{total} bytes of files from {} bytes",
            data.len()
        );
    }
});

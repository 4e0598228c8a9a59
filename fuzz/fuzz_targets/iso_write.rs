//! The seed writer on any label, names and contents: an error or an image
//! that reads back to the same files, never a panic.
#![no_main]

use kvmhost::nocloud::Seed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Fields separated by NUL: label, then name, content, name, content...
    let mut fields = data.split(|b| *b == 0);
    let label = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let mut seed = Seed::new().label(&label);
    while let (Some(name), Some(content)) = (fields.next(), fields.next()) {
        seed = seed.file(&String::from_utf8_lossy(name), content);
    }
    let Ok(iso) = seed.to_iso() else { return };
    assert_eq!(iso.len() % 2048, 0);
    let back = Seed::from_iso(&iso).expect("our own image reads back");
    assert_eq!(back.volume_label(), seed.volume_label());
    let mut want: Vec<(&str, &[u8])> = seed.files().collect();
    let mut got: Vec<(&str, &[u8])> = back.files().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
});

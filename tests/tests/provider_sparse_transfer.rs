//! kvmhost's volume transfers against a real libvirtd: an upload sends
//! only the data of a sparse image, and a download keeps the holes.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use kvmhost::libvirt::volume::{VolumeFormat, VolumeSpec};
use kvmhost::libvirt::Host;
use testbed::libvirtd::{Libvirtd, POOL};

#[test]
fn sparse_upload_and_download_move_only_the_data() {
    let d = Libvirtd::start().unwrap();
    let src = d.dir().join("src.raw");
    let mut f = std::fs::File::create(&src).unwrap();
    f.set_len(64 << 20).unwrap();
    f.seek(SeekFrom::Start(40 << 20)).unwrap();
    f.write_all(&vec![0xa5; 1 << 20]).unwrap();
    drop(f);

    let host = Host::open(&d.uri()).unwrap();
    let vol = host
        .create_volume(POOL, &VolumeSpec::new("t.raw", 64 << 20, VolumeFormat::Raw))
        .unwrap();
    let up = host.upload_file(&vol.key, &src).unwrap();
    assert_eq!(up.data_bytes, 1 << 20);
    assert_eq!(up.hole_bytes, 63 << 20);

    let dest = d.dir().join("back.raw");
    let len = host.download_volume(&vol.key, &dest).unwrap();
    assert_eq!(len, 64 << 20);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&src).unwrap());
    let allocated = std::fs::metadata(&dest).unwrap().blocks() * 512;
    assert!(
        allocated < 8 << 20,
        "the download is not sparse: {allocated} bytes"
    );
    host.delete_volume(&vol.key).unwrap();
}

#[test]
fn zero_blocks_written_inside_data_are_not_sent() {
    let d = Libvirtd::start().unwrap();
    let src = d.dir().join("dense.raw");
    // A fully allocated 4 MiB file: 64 KiB of data, then 64 KiB of
    // written zeros, and so on; SEEK_HOLE sees no hole in it.
    let block: Vec<u8> = (0..4u32 << 20)
        .map(|i| {
            if (i >> 16) % 2 == 0 {
                (i % 251) as u8 | 1
            } else {
                0
            }
        })
        .collect();
    std::fs::write(&src, &block).unwrap();

    let host = Host::open(&d.uri()).unwrap();
    let vol = host
        .create_volume(POOL, &VolumeSpec::new("d.raw", 4 << 20, VolumeFormat::Raw))
        .unwrap();
    let up = host.upload_file(&vol.key, &src).unwrap();
    assert_eq!(up.data_bytes, 2 << 20, "{up:?}");
    assert_eq!(up.hole_bytes, 2 << 20, "{up:?}");
    assert_eq!(std::fs::read(&vol.path).unwrap(), block);
    host.delete_volume(&vol.key).unwrap();
}

//! Uploads a local image into an existing volume with kvmhost's sparse
//! upload, the one the provider and the Packer plugin use, so that a
//! benchmark can time it apart from Terraform, in the same namespace and
//! over the same transport as `virsh vol-upload --sparse`.
//!
//! Usage: bed-upload URI VOLUME-KEY IMAGE
//!
//! Prints one line: `data_bytes=N hole_bytes=N connect_s=F upload_s=F`.

use std::path::Path;
use std::process::exit;
use std::time::Instant;

use kvmhost::libvirt::Host;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [uri, key, image] = args.as_slice() else {
        eprintln!("bed-upload: expected URI VOLUME-KEY IMAGE, got {args:?}");
        exit(2)
    };
    let t0 = Instant::now();
    let host = Host::open(uri).unwrap_or_else(|e| {
        eprintln!("bed-upload: connect to {uri}: {e}");
        exit(1)
    });
    let connect = t0.elapsed();
    let t1 = Instant::now();
    let stats = host.upload_file(key, Path::new(image)).unwrap_or_else(|e| {
        eprintln!("bed-upload: upload {image} to {key}: {e}");
        exit(1)
    });
    let upload = t1.elapsed();
    println!(
        "data_bytes={} hole_bytes={} connect_s={:.4} upload_s={:.4}",
        stats.data_bytes,
        stats.hole_bytes,
        connect.as_secs_f64(),
        upload.as_secs_f64()
    );
}

//! A build on a remote libvirt host over OpenSSH (`qemu+ssh://`, the
//! seed's transport): Packer runs on the lab's client, the guest on a VM
//! host. (libvirt 9.0's libssh transport, `qemu+libssh://`, stalls or
//! crashes now and then in volume streams; see the README.) No communicator: the seed-only
//! tiny guest runs the CD's user-data script, which powers it off; the
//! builder then downloads the disk volume over the libvirt connection,
//! writes the image and removes everything it made on the host.

use std::path::Path;
use testbed::util::{OutputWithin, COMMAND_LIMIT};

use testbed::guest::TinyGuest;
use testbed::hosts::Lab;
use testbed::libvirtd::POOL;
use testbed::packer::{packer_in, show, workdir};

#[test]
fn a_build_on_a_remote_host_downloads_the_disk_and_cleans_the_host() {
    let mut lab = Lab::new().unwrap();
    lab.add_host("pk", true).unwrap();
    let host = &lab.hosts()[0];
    // OpenSSH is the lab's `ssh` (its key, the hosts' keys pinned), first
    // on PATH.
    let uri = format!("qemu+ssh://root@{}/system", host.ip);
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("remote").unwrap();
    let vm_name = format!("pk-remote-{}", std::process::id());
    let template = serde_json::json!({
        "builders": [{
            "type": "libvirt",
            "libvirt_uri": uri,
            "pool": POOL,
            "network": testbed::libvirtd::NETWORK,
            "vm_name": vm_name,
            "accelerator": "qemu",
            "memory": 256,
            "disk_size": "64M",
            "kernel": guest.kernel.display().to_string(),
            "initrd": guest.initrd.display().to_string(),
            "kernel_args": guest.cmdline,
            "cd_content": {
                "meta-data": "local-hostname: remote-build\n",
                "user-data": "#!/bin/sh\necho remote build done\npoweroff\n"
            },
            "communicator": "none",
            "shutdown_timeout": "2m",
            "format": "raw",
            "output_directory": dir.join("out").display().to_string()
        }]
    });
    let path = dir.join("remote.json");
    std::fs::write(&path, serde_json::to_string_pretty(&template).unwrap()).unwrap();

    let path_var = format!(
        "{}:{}",
        lab.ssh_path_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = packer_in(lab.client(), &dir, &["build", &path.to_string_lossy()])
        .unwrap()
        .env("PATH", path_var)
        .output_within(COMMAND_LIMIT)
        .unwrap();
    show("packer build (remote)", &out);
    assert!(out.status.success(), "remote build failed");

    let image = dir.join(format!("out/{vm_name}.raw"));
    let size = std::fs::metadata(&image).unwrap().len();
    assert_eq!(size, 64 << 20, "a raw image of disk_size");
    let sums = std::fs::read_to_string(dir.join("out/SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("{vm_name}.raw")));
    assert!(
        !Path::new(&image.with_extension("download")).exists(),
        "the downloaded copy is removed"
    );

    let daemon = host.daemon();
    assert!(!daemon.domains().unwrap().iter().any(|d| d == &vm_name));
    let vols = daemon.volumes(POOL).unwrap();
    assert!(
        !vols.iter().any(|v| v.starts_with(&vm_name)),
        "volumes left: {vols:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

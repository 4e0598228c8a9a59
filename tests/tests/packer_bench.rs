//! Benchmark: the same image (the tiny root-disk guest, TCG, one shell
//! provisioner, `poweroff`) built by Packer 1.6.6's own `qemu` builder and
//! by our `libvirt` builder, in one run. Prints the wall-time and output
//! size ratios (ours / qemu; the goal is <= 1.0 for both). Neither types a
//! boot command, so the qemu builder gets `boot_wait = "0s"`.

use std::path::Path;
use std::time::Instant;

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};

fn timed_build(bed: &Libvirtd, dir: &Path, template: &serde_json::Value, what: &str) -> f64 {
    let path = dir.join(format!("{what}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(template).unwrap()).unwrap();
    let t0 = Instant::now();
    let out = testbed::packer::packer_in(bed.netns(), dir, &["build", &path.to_string_lossy()])
        .unwrap()
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} build failed:\n{text}");
    secs
}

#[test]
fn our_builder_against_packers_qemu_builder_on_the_same_guest() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = testbed::packer::workdir("bench").unwrap();
    let shell = serde_json::json!([{ "type": "shell", "inline": ["echo bench > /root/marker"] }]);

    let qemu = serde_json::json!({
        "builders": [{
            "type": "qemu",
            "disk_image": true,
            "iso_url": guest.root_disk.display().to_string(),
            "iso_checksum": "none",
            "skip_resize_disk": true,
            "accelerator": "tcg",
            "headless": true,
            "boot_wait": "0s",
            "memory": 256,
            "format": "qcow2",
            "disk_interface": "virtio",
            "net_device": "virtio-net",
            "qemuargs": [
                ["-kernel", guest.kernel.display().to_string()],
                ["-initrd", guest.root_initrd.display().to_string()],
                ["-append", guest.root_cmdline],
                ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"]
            ],
            "host_port_min": 2222,
            "host_port_max": 2299,
            "ssh_username": "root",
            "ssh_private_key_file": guest.ssh_key.display().to_string(),
            "ssh_timeout": "2m",
            "shutdown_command": "poweroff",
            "vm_name": "bench.qcow2",
            "output_directory": dir.join("out-qemu").display().to_string()
        }],
        "provisioners": shell
    });
    let ours = serde_json::json!({
        "builders": [{
            "type": "libvirt",
            "libvirt_uri": bed.uri(),
            "pool": POOL,
            "network": NETWORK,
            "vm_name": format!("bench-{}", std::process::id()),
            "disk_image": true,
            "iso_url": guest.root_disk.display().to_string(),
            "iso_checksum": "none",
            "accelerator": "qemu",
            "memory": 256,
            "kernel": guest.kernel.display().to_string(),
            "initrd": guest.root_initrd.display().to_string(),
            "kernel_args": guest.root_cmdline,
            "ssh_username": "root",
            "ssh_private_key_file": guest.ssh_key.display().to_string(),
            "ssh_timeout": "2m",
            "shutdown_command": "poweroff",
            "output_directory": dir.join("out-ours").display().to_string()
        }],
        "provisioners": shell
    });

    let t_qemu = timed_build(&bed, &dir, &qemu, "qemu");
    let t_ours = timed_build(&bed, &dir, &ours, "libvirt");
    let size_qemu = std::fs::metadata(dir.join("out-qemu/bench.qcow2"))
        .unwrap()
        .len();
    let size_ours =
        std::fs::metadata(dir.join(format!("out-ours/bench-{}.qcow2", std::process::id())))
            .unwrap()
            .len();
    println!("packer qemu builder: {t_qemu:.2} s, {size_qemu} bytes");
    println!("our libvirt builder: {t_ours:.2} s, {size_ours} bytes");
    println!(
        "ratio ours/qemu: wall time {:.2} (goal <= 1.0), output size {:.2} (goal <= 1.0)",
        t_ours / t_qemu,
        size_ours as f64 / size_qemu as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

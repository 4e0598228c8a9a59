//! Templates written for Packer's QEMU builder, moved over by renaming the
//! builder type, build with ours under the real Packer 1.6.6: the seed's
//! options (an `.xz` source, `vm_name` with its extension, disk driver
//! settings, an extra disk, `qemuargs`, the HTTP server, `use_backing_file`,
//! `ssh_wait_timeout`) do what the QEMU builder does with them, and the
//! options only its own QEMU process understands are warned about.

use std::process::Command;
use testbed::util::{OutputWithin, COMMAND_LIMIT};

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::packer::{packer_in, show, workdir};

#[test]
fn a_seed_shaped_json_template_builds_with_the_qemu_builders_meaning() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("compat").unwrap();
    // The source as FreeBSD publishes its images: compressed with xz, the
    // checksum of the compressed file.
    let xz = dir.join("root.qcow2.xz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -T1 -1 -c {} > {}",
            guest.root_disk.display(),
            xz.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&xz).unwrap(),
    ));
    let vm_name = format!("seedlike-{}.qcow2", std::process::id());
    let out_dir = dir.join("output");
    let xml_copy = dir.join("domain.xml");
    let t = serde_json::json!({
        "variables": { "sum": sum },
        "builders": [{
            "type": "libvirt",
            "libvirt_uri": bed.uri(),
            "pool": POOL,
            "network": NETWORK,
            "vm_name": vm_name,
            "iso_url": xz.display().to_string(),
            "iso_checksum": "sha256:{{user `sum`}}",
            "disk_image": true,
            "use_backing_file": true,
            "accelerator": "qemu",
            "memory": 256,
            "kernel": guest.kernel.display().to_string(),
            "initrd": guest.root_initrd.display().to_string(),
            "kernel_args": guest.root_cmdline,
            "disk_cache": "unsafe",
            "disk_discard": "unmap",
            "disk_detect_zeroes": "unmap",
            "disk_additional_size": ["16M"],
            "net_device": "virtio-net",
            "qemuargs": [["-smbios", "type=1,serial=qa-{{ .Name }}"]],
            "http_content": { "/hello.txt": "served to the guest\n" },
            "headless": true,
            "host_port_min": 2222,
            "host_port_max": 2229,
            "vnc_bind_address": "0.0.0.0",
            "ssh_username": "root",
            "ssh_private_key_file": guest.ssh_key.display().to_string(),
            "ssh_wait_timeout": "2m",
            "shutdown_command": "poweroff",
            "format": "qcow2",
            "output_directory": out_dir.display().to_string()
        }],
        "provisioners": [
            { "type": "shell-local", "inline": [format!("virsh -c '{}' dumpxml '{vm_name}' > {}", bed.uri(), xml_copy.display())] },
            { "type": "shell", "inline": [
                "cat /sys/class/dmi/id/product_serial",
                "wget -q -O - \"http://$PACKER_HTTP_ADDR/hello.txt\"",
                "test -b /dev/vdb && echo second-disk-present",
                "echo compat > /root/marker"
            ] }
        ]
    });
    let path = dir.join("seedlike.json");
    std::fs::write(&path, serde_json::to_string_pretty(&t).unwrap()).unwrap();
    let out = packer_in(bed.netns(), &dir, &["build", &path.to_string_lossy()])
        .unwrap()
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build (seed-shaped)", &out);
    assert!(out.status.success(), "build failed");

    // QEMU-process options: accepted, each with a reason.
    for o in ["headless:", "host_port_min:", "vnc_bind_address:"] {
        assert!(text.contains(o), "no warning for {o}:\n{text}");
    }
    assert!(text.contains("ignored by the libvirt builder"), "{text}");
    // qemuargs reached QEMU with {{ .Name }} filled in; the HTTP server
    // was reachable from the guest; the extra disk was attached.
    assert!(text.contains(&format!("qa-{vm_name}")), "{text}");
    assert!(text.contains("served to the guest"), "{text}");
    assert!(text.contains("second-disk-present"), "{text}");
    let xml = std::fs::read_to_string(&xml_copy).unwrap();
    assert_eq!(
        xml.matches("cache='unsafe' discard='unmap' detect_zeroes='unmap'")
            .count(),
        2,
        "{xml}"
    );

    // vm_name as given, the extra disk named as the QEMU builder names it.
    let image = out_dir.join(&vm_name);
    let extra = out_dir.join(format!("{vm_name}-1"));
    assert!(image.is_file() && extra.is_file(), "{text}");
    let sums = std::fs::read_to_string(out_dir.join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("  {vm_name}\n")) && sums.contains(&format!("  {vm_name}-1\n")),
        "{sums}"
    );
    // use_backing_file: the output is an overlay on the (decompressed)
    // source, holding only the build's changes.
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&image)
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let backing = info["backing-filename"].as_str().unwrap_or_default();
    assert!(
        backing.contains("root.qcow2") && !backing.ends_with(".xz"),
        "{info}"
    );
    let domains = bed.domains().unwrap();
    assert!(!domains.iter().any(|d| d == &vm_name), "{domains:?}");
    let vols = bed.volumes(POOL).unwrap();
    assert!(!vols.iter().any(|v| v.starts_with("seedlike-")), "{vols:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn misspelt_options_are_refused_ntlm_is_taken_and_packers_template_values_reach_the_engine() {
    let dir = workdir("compat-refused").unwrap();
    let t = serde_json::json!({
        "builders": [{
            "type": "libvirt",
            "iso_url": "/nonexistent.iso",
            "iso_checksum": "none",
            "communicator": "winrm",
            "winrm_username": "Administrator",
            "winrm_use_ntlm": true,
            "disk_chache": "unsafe"
        }]
    });
    let path = dir.join("refused.json");
    std::fs::write(&path, serde_json::to_string_pretty(&t).unwrap()).unwrap();
    let out = testbed::tools::packer(&dir)
        .unwrap()
        .args(["validate", &path.to_string_lossy()])
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer validate (ntlm, misspelt)", &out);
    assert!(!out.status.success());
    // NTLM is taken: only the misspelling is refused.
    assert!(!text.contains("winrm_use_ntlm"), "{text}");
    assert!(
        text.contains("disk_chache: unknown option; did you mean `disk_cache`?"),
        "{text}"
    );

    // Packer passes the template's path, its version and the build name:
    // the engine's functions see them (shown here through vm_name's error,
    // which quotes the rendered value).
    let t = serde_json::json!({
        "builders": [{
            "type": "libvirt",
            "kernel": "/proc/self/exe",
            "communicator": "none",
            "vm_name": "{{template_dir}}|{{packer_version}}|{{build_name}}|{{isotime \"2006\"}}"
        }]
    });
    std::fs::write(&path, serde_json::to_string_pretty(&t).unwrap()).unwrap();
    let out = testbed::tools::packer(&dir)
        .unwrap()
        .args(["validate", &path.to_string_lossy()])
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer validate (template functions)", &out);
    let year = Command::new("date").args(["-u", "+%Y"]).output().unwrap();
    let year = String::from_utf8_lossy(&year.stdout).trim().to_string();
    assert!(
        text.contains(&format!("`{}|1.6.6|libvirt|{year}`", dir.display())),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

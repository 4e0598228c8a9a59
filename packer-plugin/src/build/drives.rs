//! `qemuargs` drives. The QEMU builder starts QEMU in Packer's folder,
//! so `-drive file=extra.qcow2,...` opens `extra.qcow2` there; libvirt
//! starts QEMU in `/`: such paths are made absolute against the plugin's
//! folder, which is Packer's.
//!
//! QEMU creates the device of an `if=virtio` or `if=scsi` drive itself,
//! on the first free PCI slot, which with libvirt's own devices (each at
//! an address libvirt chose) is taken: QEMU refuses to start. Such a
//! drive becomes a disk of the domain instead, after the build's own
//! disks, as the QEMU builder's QEMU orders them; libvirt then gives it an
//! address, and QEMU (running as libvirt's user) access to the file.

use std::path::Path;

use kvmhost::libvirt::domain_xml::{DiskBus, DiskDef, DiskDevice, DiskDriver, DiskSource};
use kvmhost::libvirt::image::image_info;
use kvmhost::libvirt::volume::VolumeFormat;

/// Takes the `-drive` arguments of `args` that a disk of the domain
/// expresses out of them: a drive with an absolute `file=`, `if=virtio`
/// or `if=scsi`, and only the options `format` (`qcow2` or `raw`; read
/// from the file when not given), `cache`, `discard`, `detect-zeroes` and
/// `media=disk`. Returns the arguments left and the disks, in order.
pub fn drives_as_disks(args: &[Vec<String>]) -> (Vec<Vec<String>>, Vec<DiskDef>) {
    let mut left: Vec<Vec<String>> = Vec::new();
    let mut disks = Vec::new();
    // (list, position) of a `-drive` whose value is still to come.
    let mut pending: Option<(usize, usize)> = None;
    for list in args {
        let mut kept = Vec::new();
        for arg in list {
            if let Some((l, i)) = pending.take() {
                if let Some(disk) = disk_of(arg) {
                    disks.push(disk);
                    // Drop the `-drive` already kept.
                    if l == left.len() {
                        kept.remove(i);
                    } else {
                        left[l].remove(i);
                    }
                    continue;
                }
            }
            if arg == "-drive" || arg == "--drive" {
                pending = Some((left.len(), kept.len()));
            }
            kept.push(arg.clone());
        }
        left.push(kept);
    }
    left.retain(|l| !l.is_empty());
    (left, disks)
}

/// The disk that the `-drive` value `opts` describes, if one does.
fn disk_of(opts: &str) -> Option<DiskDef> {
    let mut file = None;
    let mut bus = None;
    let mut format = None;
    let mut driver = DiskDriver::default();
    for opt in split_options(opts) {
        let (key, value) = opt.split_once('=')?;
        let value = value.to_string();
        match key {
            "file" => file = Some(value),
            "if" => {
                bus = Some(match value.as_str() {
                    "virtio" => DiskBus::Virtio,
                    "scsi" => DiskBus::Scsi,
                    _ => return None,
                })
            }
            "format" if value == "qcow2" || value == "raw" => format = Some(value),
            "cache" => driver.cache = Some(value),
            "discard" => {
                driver.discard = Some(match value.as_str() {
                    "unmap" | "on" => "unmap".into(),
                    "ignore" | "off" => "ignore".into(),
                    _ => return None,
                })
            }
            "detect-zeroes" => driver.detect_zeroes = Some(value),
            "media" if value == "disk" => {}
            _ => return None,
        }
    }
    let file = file.filter(|f| f.starts_with('/'))?;
    let format = match format {
        Some(f) => f,
        None => match image_info(Path::new(&file)).ok()?.format {
            VolumeFormat::Qcow2 => "qcow2".into(),
            _ => "raw".into(),
        },
    };
    Some(DiskDef {
        device: DiskDevice::Disk,
        source: DiskSource::File(file),
        format: Some(format),
        bus: bus?,
        target: String::new(),
        wwn: None,
        driver,
    })
}

/// Makes the relative `file=` of every `-drive` in `args` absolute
/// against `cwd`. A file name QEMU would read as a protocol (a `:` before
/// any `/`, as in `nbd:...` or `json:{...}`) is left as it is.
pub fn absolute_drive_files(args: &mut [Vec<String>], cwd: &Path) {
    let mut after_drive = false;
    for arg in args.iter_mut().flatten() {
        if after_drive {
            *arg = absolute_file_option(arg, cwd);
        }
        after_drive = arg == "-drive" || arg == "--drive";
    }
}

/// `opts` (QEMU's `key=value,...`, a comma in a value doubled) with a
/// relative `file=` made absolute.
fn absolute_file_option(opts: &str, cwd: &Path) -> String {
    split_options(opts)
        .into_iter()
        .map(|opt| match opt.strip_prefix("file=") {
            Some(file) if is_relative_path(file) => {
                format!("file={}", cwd.join(file).display()).replace(',', ",,")
            }
            _ => opt.replace(',', ",,"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The options of `opts`, unescaped: `a=1,,2,b` is `a=1,2` and `b`.
fn split_options(opts: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = opts.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                out.last_mut().expect("never empty").push(',');
            } else {
                out.push(String::new());
            }
        } else {
            out.last_mut().expect("never empty").push(c);
        }
    }
    out
}

/// A file name QEMU opens as a path relative to its own folder.
fn is_relative_path(file: &str) -> bool {
    let protocol = match (file.find(':'), file.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        (None, _) => false,
    };
    !file.is_empty() && !protocol && Path::new(file).is_relative()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|a| a.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn a_relative_drive_file_is_taken_from_packers_folder_as_the_qemu_builder_takes_it() {
        let mut a = args(&[
            &[
                "-drive",
                "file=output/extra.qcow2,if=virtio,cache=unsafe,format=qcow2",
            ],
            &["-drive", "if=none,id=d2,file=../base/OpenCore.qcow2"],
            // Split over two lists, as some templates write it.
            &["-drive"],
            &["file=a,,b.img,if=ide"],
        ]);
        absolute_drive_files(&mut a, Path::new("/work/packer"));
        assert_eq!(
            a,
            args(&[
                &[
                    "-drive",
                    "file=/work/packer/output/extra.qcow2,if=virtio,cache=unsafe,format=qcow2",
                ],
                &[
                    "-drive",
                    "if=none,id=d2,file=/work/packer/../base/OpenCore.qcow2"
                ],
                &["-drive"],
                &["file=/work/packer/a,,b.img,if=ide"],
            ])
        );
    }

    #[test]
    fn a_virtio_drive_becomes_a_disk_of_the_domain_and_other_arguments_stay() {
        let given = args(&[
            &["-smbios", "type=1"],
            &[
                "-drive",
                "file=/w/extra.qcow2,if=virtio,cache=unsafe,discard=unmap,format=qcow2,detect-zeroes=unmap",
            ],
            &["-drive"],
            &["file=/w/s.img,if=scsi,format=raw,discard=on,media=disk", "-usb"],
            // Not expressed by a disk: left to QEMU as given.
            &["-drive", "if=none,id=d2,format=qcow2,file=/w/OpenCore.qcow2"],
            &["-device", "ide-hd,drive=d2"],
            &["-drive", "file=/w/x.qcow2,if=virtio,format=qcow2,serial=abc"],
            &["-drive", "file=rel.qcow2,if=virtio,format=qcow2"],
            &["-drive", "file=/w/cd.iso,if=ide,media=cdrom"],
        ]);
        let (left, disks) = drives_as_disks(&given);
        assert_eq!(
            left,
            args(&[
                &["-smbios", "type=1"],
                &["-usb"],
                &[
                    "-drive",
                    "if=none,id=d2,format=qcow2,file=/w/OpenCore.qcow2"
                ],
                &["-device", "ide-hd,drive=d2"],
                &[
                    "-drive",
                    "file=/w/x.qcow2,if=virtio,format=qcow2,serial=abc"
                ],
                &["-drive", "file=rel.qcow2,if=virtio,format=qcow2"],
                &["-drive", "file=/w/cd.iso,if=ide,media=cdrom"],
            ])
        );
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].source, DiskSource::File("/w/extra.qcow2".into()));
        assert_eq!(
            (disks[0].bus, disks[0].format.as_deref()),
            (DiskBus::Virtio, Some("qcow2"))
        );
        assert_eq!(
            disks[0].driver,
            DiskDriver {
                cache: Some("unsafe".into()),
                discard: Some("unmap".into()),
                detect_zeroes: Some("unmap".into()),
            }
        );
        assert_eq!(
            (disks[1].bus, disks[1].format.as_deref()),
            (DiskBus::Scsi, Some("raw"))
        );
        assert_eq!(disks[1].driver.discard.as_deref(), Some("unmap"));
    }

    #[test]
    fn a_drive_without_format_takes_its_files_and_one_that_cannot_be_read_stays() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk");
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("1M")
            .status()
            .unwrap();
        assert!(made.success());
        let drive = format!("file={},if=virtio", img.display());
        let (left, disks) = drives_as_disks(&args(&[&["-drive", &drive]]));
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(disks[0].format.as_deref(), Some("qcow2"));
        let gone = format!("file={}/gone,if=virtio", dir.path().display());
        let given = args(&[&["-drive", &gone]]);
        let (left, disks) = drives_as_disks(&given);
        assert_eq!((left, disks.len()), (given, 0));
    }

    #[test]
    fn absolute_paths_protocols_and_other_options_are_left_as_they_are() {
        let given = args(&[
            &["-drive", "file=/srv/disk.qcow2,if=virtio"],
            &["-drive", "file=nbd:localhost:10809,if=virtio"],
            &["-drive", "file=json:{\"a\":1},,x,if=none"],
            &["-drive", "if=none,id=cd"],
            &["-device", "file=relative"],
            &["-smbios", "type=1,serial=x,,y"],
        ]);
        let mut a = given.clone();
        absolute_drive_files(&mut a, Path::new("/work/packer"));
        assert_eq!(a, given);
    }
}

//! Local image files, read from their header: the format, the sizes, and
//! the host files a qcow2 image names.
//!
//! A qcow2 image can name other files on the host: a backing file, which
//! the image is an overlay of, and (version 3) an external data file,
//! which holds its data. QEMU opens both with the image, and so does
//! `qemu-img convert`, and libvirt grants QEMU access to them. An image
//! from a URL or a user's file that names `/root/.ssh/id_ed25519` as its
//! backing file therefore hands that file to the guest as part of its
//! disk; [`ImageInfo::refuse_host_files`] is the check against that.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::error::{Error, Result};
use super::volume::VolumeFormat;

/// Format, sizes and named host files of a local image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// qcow2 when the file starts with the qcow2 magic, raw otherwise.
    pub format: VolumeFormat,
    /// Size the guest sees.
    pub virtual_size: u64,
    /// Size of the file.
    pub file_size: u64,
    /// The backing file a qcow2 overlay names, as written in its header.
    pub backing_file: Option<String>,
    /// The external data file a qcow2 image names, as written in its
    /// header (empty when only the feature bit says there is one).
    pub data_file: Option<String>,
}

/// What an image names outside itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFileKind {
    /// The file the image is an overlay of.
    Backing,
    /// The file that holds the image's data.
    Data,
}

impl std::fmt::Display for HostFileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostFileKind::Backing => "backing file",
            HostFileKind::Data => "external data file",
        })
    }
}

/// Whether the user asked for an image that is an overlay of a host file
/// (the Packer builder's `use_backing_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    /// A backing file is refused.
    Refused,
    /// A backing file is what the user asked for.
    Allowed,
}

impl ImageInfo {
    /// Fails when the image names a host file that QEMU would read as part
    /// of the disk, for an image from a URL or a user's file: an external
    /// data file always, a backing file unless `overlay` allows it.
    pub fn refuse_host_files(&self, overlay: Overlay) -> Result<()> {
        let named = match (&self.data_file, &self.backing_file, overlay) {
            (Some(path), _, _) => Some((HostFileKind::Data, path)),
            (None, Some(path), Overlay::Refused) => Some((HostFileKind::Backing, path)),
            _ => None,
        };
        match named {
            None => Ok(()),
            Some((kind, path)) => Err(Error::NamesHostFile {
                kind,
                path: path.clone(),
            }),
        }
    }
}

/// qcow2's (and the old qcow's) first four bytes.
const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";
/// Incompatible feature bit 2: the data is in an external file.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Header extension naming the external data file ("DATA").
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// How much of an image is read: QEMU keeps the header, its extensions
/// and the backing file's name in the first cluster, 2 MiB at most.
const MAX_HEADER: u64 = 2 << 20;

/// Reads the format, sizes and named host files of a local image.
pub fn image_info(path: &Path) -> Result<ImageInfo> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    let file_size = f.metadata().map_err(io)?.len();
    let mut head = Vec::new();
    f.take(MAX_HEADER).read_to_end(&mut head).map_err(io)?;
    Ok(image_info_from_header(&head, file_size))
}

/// Same as [`image_info`] for the first bytes of an image (up to its
/// first cluster).
///
/// The qcow2 header, big-endian: magic at 0, version at 4, the backing
/// file name's offset (8 bytes) at 8 and length (4) at 16, the virtual
/// size at 24; from version 3 the incompatible features at 72 and the
/// header's length at 100, after which the extensions follow (at 72 in
/// version 2), each a type and a length (4 bytes each) and its data
/// padded to 8 bytes, until type 0. The old qcow format shares the magic
/// and the first 32 bytes' layout.
pub fn image_info_from_header(head: &[u8], file_size: u64) -> ImageInfo {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(head.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(head.get(at..at + 8)?.try_into().ok()?))
    };
    let raw = ImageInfo {
        format: VolumeFormat::Raw,
        virtual_size: file_size,
        file_size,
        backing_file: None,
        data_file: None,
    };
    if head.get(..4) != Some(&QCOW_MAGIC[..]) {
        return raw;
    }
    let (Some(version), Some(virtual_size)) = (u32_at(4), u64_at(24)) else {
        return raw;
    };
    // A name QEMU would read but that lies past what was read here is
    // still a backing file: it is shown as far as it was read.
    let text = |at: u64, len: u64| -> String {
        let start = usize::try_from(at).unwrap_or(usize::MAX).min(head.len());
        let end = usize::try_from(at.saturating_add(len))
            .unwrap_or(usize::MAX)
            .min(head.len());
        // Shown in messages: no control characters to forge lines with.
        String::from_utf8_lossy(&head[start..end])
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    let backing_file = match (u64_at(8), u32_at(16)) {
        (Some(at), Some(len)) if at != 0 && len != 0 => Some(text(at, len.into())),
        _ => None,
    };
    let mut data_file = None;
    if version >= 3 && u64_at(72).is_some_and(|f| f & INCOMPAT_DATA_FILE != 0) {
        data_file = Some(String::new());
    }
    let mut at = match version {
        2 => Some(72),
        3.. => u32_at(100).map(|n| n as usize),
        _ => None,
    };
    while let Some(ext) = at {
        let (Some(kind), Some(len)) = (u32_at(ext), u32_at(ext + 4)) else {
            break;
        };
        if kind == 0 {
            break;
        }
        if kind == EXT_DATA_FILE {
            data_file = Some(text(ext as u64 + 8, len.into()));
        }
        at = (ext + 8).checked_add((len as usize).div_ceil(8) * 8);
    }
    ImageInfo {
        format: VolumeFormat::Qcow2,
        virtual_size,
        file_size,
        backing_file,
        data_file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `qemu-img create -f qcow2 OPTIONS NAME SIZE` in `dir`; returns
    /// the image.
    fn qemu_img(dir: &Path, name: &str, options: &[&str], size: &str) -> std::path::PathBuf {
        let out = Command::new("qemu-img")
            .current_dir(dir)
            .args(["create", "-q", "-f", "qcow2"])
            .args(options)
            .args([name, size])
            .output()
            .expect("qemu-img (qemu-utils) is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join(name)
    }

    #[test]
    fn a_plain_qcow2_image_names_no_host_file() {
        let dir = tempfile::tempdir().unwrap();
        for compat in ["0.10", "1.1"] {
            let img = qemu_img(
                dir.path(),
                "plain.qcow2",
                &["-o", &format!("compat={compat}")],
                "3G",
            );
            let info = image_info(&img).unwrap();
            assert_eq!(info.format, VolumeFormat::Qcow2, "compat {compat}");
            assert_eq!(info.virtual_size, 3 << 30);
            assert_eq!((info.backing_file, info.data_file), (None, None));
            info_refuses_nothing(&img);
        }
    }

    fn info_refuses_nothing(img: &Path) {
        image_info(img)
            .unwrap()
            .refuse_host_files(Overlay::Refused)
            .unwrap();
    }

    #[test]
    fn an_overlay_names_its_backing_file_in_both_qcow2_versions() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("id_ed25519");
        std::fs::write(&secret, "key").unwrap();
        let secret = secret.display().to_string();
        for compat in ["0.10", "1.1"] {
            let img = qemu_img(
                dir.path(),
                "overlay.qcow2",
                &[
                    "-o",
                    &format!("compat={compat}"),
                    "-b",
                    &secret,
                    "-F",
                    "raw",
                ],
                "1M",
            );
            let info = image_info(&img).unwrap();
            assert_eq!(
                info.backing_file.as_deref(),
                Some(secret.as_str()),
                "compat {compat}"
            );
            assert_eq!(info.data_file, None);
            let err = info.refuse_host_files(Overlay::Refused).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("the image names the backing file '{secret}', a host file QEMU would read as part of the disk; flatten it where that file exists (`qemu-img convert -O qcow2 IMAGE FLAT.qcow2`) and use the flat image")
            );
            info.refuse_host_files(Overlay::Allowed).unwrap();
        }
    }

    #[test]
    fn an_external_data_file_is_refused_even_for_an_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("shadow").display().to_string();
        let img = qemu_img(
            dir.path(),
            "data.qcow2",
            &["-o", &format!("data_file={data}")],
            "1M",
        );
        let info = image_info(&img).unwrap();
        assert_eq!(info.data_file.as_deref(), Some(data.as_str()));
        assert_eq!(info.backing_file, None);
        let err = info.refuse_host_files(Overlay::Allowed).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("the image names the external data file '{data}'")),
            "{err}"
        );
    }

    #[test]
    fn a_header_cut_short_is_still_read_as_far_as_it_goes() {
        let mut head = [0u8; 32];
        head[..4].copy_from_slice(QCOW_MAGIC);
        head[4..8].copy_from_slice(&3u32.to_be_bytes());
        head[8..16].copy_from_slice(&4096u64.to_be_bytes());
        head[16..20].copy_from_slice(&11u32.to_be_bytes());
        head[24..32].copy_from_slice(&(20u64 << 30).to_be_bytes());
        let info = image_info_from_header(&head, 4096);
        assert_eq!(info.format, VolumeFormat::Qcow2);
        assert_eq!(info.virtual_size, 20 << 30);
        // The name lies past the bytes given: a backing file all the same.
        assert_eq!(info.backing_file.as_deref(), Some(""));
        let raw = image_info_from_header(b"hello", 5);
        assert_eq!((raw.format, raw.virtual_size), (VolumeFormat::Raw, 5));
        assert_eq!(raw.backing_file, None);
    }
}

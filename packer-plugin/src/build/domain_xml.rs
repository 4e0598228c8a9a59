//! What the build adds to the domain XML that `kvmhost`'s model does not
//! carry: the hard disks' driver settings (`disk_cache`, `disk_discard`,
//! `disk_detect_zeroes`) and `qemuargs` through libvirt's QEMU
//! command-line passthrough.

use crate::config::DiskDriver;

const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// The domain XML with the driver settings on every hard disk and the
/// extra QEMU arguments appended.
pub fn finish(xml: &str, driver: &DiskDriver, qemuargs: &[Vec<String>]) -> String {
    let mut attrs = String::new();
    for (name, v) in [
        ("cache", &driver.cache),
        ("discard", &driver.discard),
        ("detect_zeroes", &driver.detect_zeroes),
    ] {
        if let Some(v) = v {
            attrs.push_str(&format!(" {name}='{}'", esc(v)));
        }
    }
    let mut out = String::with_capacity(xml.len() + 256);
    let mut rest = xml;
    const DISK: &str = "device='disk'><driver name='qemu'";
    while let Some(i) = rest.find(DISK) {
        let after = i + DISK.len();
        let end = rest[after..].find("/>").map(|e| after + e).unwrap_or(after);
        out.push_str(&rest[..end]);
        out.push_str(&attrs);
        rest = &rest[end..];
    }
    out.push_str(rest);
    if qemuargs.is_empty() {
        return out;
    }
    let mut cmdline = String::from("<qemu:commandline>");
    for arg in qemuargs.iter().flatten() {
        cmdline.push_str(&format!("<qemu:arg value='{}'/>", esc(arg)));
    }
    cmdline.push_str("</qemu:commandline>");
    let out = out.replacen("<domain ", &format!("<domain xmlns:qemu='{QEMU_NS}' "), 1);
    match out.rfind("</domain>") {
        Some(i) => format!("{}{cmdline}{}", &out[..i], &out[i..]),
        None => out,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain type='qemu'><name>v</name><devices>\
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/a'/></disk>\
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/b'/></disk>\
        <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/c'/></disk>\
        </devices></domain>";

    #[test]
    fn driver_settings_go_on_every_hard_disk_and_not_on_cds() {
        let d = DiskDriver {
            cache: Some("unsafe".into()),
            discard: Some("unmap".into()),
            detect_zeroes: Some("unmap".into()),
        };
        let x = finish(XML, &d, &[]);
        assert_eq!(
            x.matches("<driver name='qemu' type='qcow2' cache='unsafe' discard='unmap' detect_zeroes='unmap'/>")
                .count(),
            2,
            "{x}"
        );
        assert!(x.contains("<driver name='qemu' type='raw'/>"), "{x}");
        assert_eq!(finish(XML, &DiskDriver::default(), &[]), XML);
    }

    #[test]
    fn qemuargs_become_a_qemu_commandline_in_the_qemu_namespace() {
        let args = vec![
            vec!["-device".to_string(), "usb-tablet".to_string()],
            vec!["-smbios".to_string(), "type=2,x='<y>'".to_string()],
        ];
        let x = finish(XML, &DiskDriver::default(), &args);
        assert!(
            x.starts_with(&format!("<domain xmlns:qemu='{QEMU_NS}' type='qemu'>")),
            "{x}"
        );
        assert!(x.ends_with(
            "<qemu:commandline><qemu:arg value='-device'/><qemu:arg value='usb-tablet'/>\
             <qemu:arg value='-smbios'/><qemu:arg value='type=2,x=&apos;&lt;y&gt;&apos;'/></qemu:commandline></domain>"
        ), "{x}");
    }
}

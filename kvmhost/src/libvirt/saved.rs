//! Saved domains: a running domain's memory written to a state file on
//! the host, and restored from it, possibly many times, with new host
//! paths for its disks and channels.
//!
//! A saved domain is warm capacity: boot once, save, then restore a clone
//! per job onto a fresh copy-on-write overlay of the disk it was saved
//! with (see [`super::volume::VolumeSpec::overlay`]). libvirt restores a
//! state file only under the identity it was saved with (name, UUID, MAC
//! addresses, the whole guest ABI), so each state file gives at most one
//! live domain at a time.
//!
//! # Why the restore XML is not built from [`super::domain_xml::DomainDef`]
//!
//! The XML inside a state file is libvirt's complete definition: PCI
//! addresses, controllers, device aliases, the machine type's exact
//! version, security labels. libvirt checks a restore XML against it for
//! ABI stability. The domain model keeps only what the project manages and
//! leaves the rest to libvirt's defaults, so an XML written from the model
//! would differ from the saved one in ways libvirt refuses or, worse,
//! accepts with a changed guest. The saved XML is therefore changed in
//! place and nowhere else: [`rewrite_host_paths`] replaces the values of
//! two kinds of attributes found through the parsed tree, a file disk's
//! `<source file>` (chosen by its target device) and a unix channel's
//! `<source path>` (chosen by its target name), drops the changed disk's
//! saved `<backingStore>` (see below), and keeps every other byte.
//! [`check_only_host_paths_differ`] refuses a caller's XML that
//! differs from the saved one anywhere else, naming the first difference.
//!
//! What libvirt (9.0, QEMU 7.2) does with a state file, as the tests found:
//! - The saved XML keeps a file disk's `<backingStore/>`; an empty one
//!   means "no backing file", so it is dropped with a new source, and
//!   libvirt reads the overlay's chain from its header.
//! - A channel whose socket libvirt chose has no `<source>` in the saved
//!   XML (libvirt chooses again at the restore); to move a socket, define
//!   the channel with its own path.
//! - libvirt itself refuses a changed name, UUID, MAC or memory size
//!   ("Target domain name 'b' does not match source 'a'"), and a restore
//!   while the domain is running ("domain 'a' is already active"); it
//!   accepts a changed serial log file, which this module does not offer.
//! - The serial log file is truncated when the restored domain starts.

use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::domain::DomainStatus;
use super::error::{lv, Error, Result};
use super::volume::{VolumeInfo, VolumeSpec};
use super::xml::{child, child_attr, children, esc, parse};
use super::Host;

/// The state a restored domain starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAs {
    /// Its vCPUs run at once.
    Running,
    /// Its vCPUs wait for a resume.
    Paused,
}

impl ResumeAs {
    fn flag(self) -> virt::sys::virDomainSaveRestoreFlags {
        match self {
            ResumeAs::Running => virt::sys::VIR_DOMAIN_SAVE_RUNNING,
            ResumeAs::Paused => virt::sys::VIR_DOMAIN_SAVE_PAUSED,
        }
    }
}

/// A host-side path a restore may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPath {
    /// The file behind the `<disk type='file'>` whose target is `target`
    /// (e.g. "vda").
    Disk {
        /// Guest device name of the disk.
        target: String,
        /// New file on the host.
        file: String,
    },
    /// The socket of the `<channel type='unix'>` whose target is named
    /// `name` (e.g. "org.qemu.guest_agent.0").
    ChannelSocket {
        /// Target name of the channel.
        name: String,
        /// New socket path on the host.
        path: String,
    },
}

/// A restore onto a fresh overlay of the disk a domain was saved with.
#[derive(Debug, Clone, Copy)]
pub struct OverlayRestore<'a> {
    /// The state file on the host.
    pub state_file: &'a Path,
    /// The disk the domain was saved with, now only read.
    pub base: &'a VolumeInfo,
    /// Guest device name of that disk in the saved domain (e.g. "vda").
    pub target: &'a str,
    /// Pool the overlay is created in.
    pub pool: &'a str,
    /// Name of the new overlay volume.
    pub overlay: &'a str,
    /// Further host paths to change (channel sockets).
    pub changes: &'a [HostPath],
}

/// A domain restored onto its own overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The running domain.
    pub domain: DomainStatus,
    /// The overlay its disk writes go to.
    pub overlay: VolumeInfo,
}

impl Host {
    /// Creates a qcow2 overlay of `r.base` and restores the saved domain
    /// with its disk `r.target` on it. When the state file cannot be read
    /// nothing is created; when the restore fails the overlay is deleted.
    pub fn restore_on_overlay(&self, r: &OverlayRestore) -> Result<Restored> {
        let saved = self.saved_domain_xml(r.state_file)?;
        let mut changes = r.changes.to_vec();
        let overlay = self.create_volume(r.pool, &VolumeSpec::overlay(r.overlay, r.base)?)?;
        changes.push(HostPath::Disk {
            target: r.target.to_string(),
            file: overlay.path.clone(),
        });
        let restored = rewrite_host_paths(&saved, &changes)
            .and_then(|xml| self.restore_checked(r.state_file, &saved, &xml));
        match restored {
            Ok(domain) => Ok(Restored { domain, overlay }),
            Err(e) => {
                // The restore's error is the one to report; a failed
                // delete leaves a volume named for the sweep.
                let _ = self.delete_volume(&overlay.key);
                Err(e)
            }
        }
    }

    /// Writes the memory of running domain `id` to `state_file` on the
    /// host and stops it: a transient domain is gone afterwards, a
    /// persistent one stays defined and shut off. The disks are left as
    /// they were at the save; a restore needs them (or overlays of them)
    /// unchanged. `resume` is the state a restore starts the domain in.
    pub fn save_domain(&self, id: &str, state_file: &Path, resume: ResumeAs) -> Result<()> {
        let dom = self.lookup_domain(id)?;
        let to = c_path(state_file)?;
        // SAFETY: `dom` holds a live domain pointer for the whole call and
        // `to` is a NUL-terminated string that outlives it; a null dxml
        // keeps the domain's own XML.
        let rc = unsafe {
            virt::sys::virDomainSaveFlags(
                dom.as_ptr(),
                to.as_ptr(),
                std::ptr::null(),
                resume.flag(),
            )
        };
        if rc < 0 {
            return Err(lv(
                format!("save domain '{id}' to {}", state_file.display()),
                "domain",
                id,
            )(virt::error::Error::last_error()));
        }
        Ok(())
    }

    /// The domain XML inside a state file on the host.
    pub fn saved_domain_xml(&self, state_file: &Path) -> Result<String> {
        self.raw()
            .save_image_xml_desc(&path_str(state_file)?, 0)
            .map_err(|e| Error::Libvirt {
                context: format!("read the saved domain in {}", state_file.display()),
                message: e.message().to_string(),
            })
    }

    /// Restores the domain saved in `state_file` with the host paths in
    /// `changes` and nothing else changed, and returns its status. The
    /// domain comes back running or paused as it was saved; transient,
    /// unless a persistent definition of it is still there.
    pub fn restore_domain(&self, state_file: &Path, changes: &[HostPath]) -> Result<DomainStatus> {
        let saved = self.saved_domain_xml(state_file)?;
        let xml = rewrite_host_paths(&saved, changes)?;
        self.restore_checked(state_file, &saved, &xml)
    }

    /// Restores the domain saved in `state_file` with `xml`, which may
    /// differ from [`Host::saved_domain_xml`] only in host paths (see the
    /// module docs); any other change is refused before libvirt is asked.
    pub fn restore_domain_xml(&self, state_file: &Path, xml: &str) -> Result<DomainStatus> {
        let saved = self.saved_domain_xml(state_file)?;
        self.restore_checked(state_file, &saved, xml)
    }

    fn restore_checked(&self, state_file: &Path, saved: &str, xml: &str) -> Result<DomainStatus> {
        check_only_host_paths_differ(saved, xml)?;
        let doc = parse("saved domain XML", saved)?;
        let name = child(doc.root_element(), "name")
            .and_then(|n| n.text())
            .unwrap_or_default()
            .trim()
            .to_string();
        self.raw()
            .restore_domain_flags(&path_str(state_file)?, Some(xml), 0)
            .map_err(|e| Error::Libvirt {
                context: format!("restore domain '{name}' from {}", state_file.display()),
                message: e.message().to_string(),
            })?;
        self.domain_status(&name)
    }
}

fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Invalid {
            field: "state_file",
            message: format!("{} is not UTF-8: use a UTF-8 path", p.display()),
        })
}

fn c_path(p: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Invalid {
        field: "state_file",
        message: format!("{} contains a NUL byte", p.display()),
    })
}

/// The saved XML with the host paths in `changes` replaced and every
/// other byte kept. A change naming a disk or channel the XML does not
/// have, or a path that is not absolute, is refused naming it.
pub fn rewrite_host_paths(saved: &str, changes: &[HostPath]) -> Result<String> {
    let doc = parse("saved domain XML", saved)?;
    let devices = child(doc.root_element(), "devices").ok_or_else(|| Error::Xml {
        context: "saved domain XML".into(),
        message: "it has no <devices>".into(),
    })?;
    let mut edits: Vec<(Range<usize>, String)> = Vec::with_capacity(changes.len());
    for change in changes {
        let (field, kind, key, attr, value) = match change {
            HostPath::Disk { target, file } => ("disk", "file", target, "file", file),
            HostPath::ChannelSocket { name, path } => ("channel", "unix", name, "path", path),
        };
        if !value.starts_with('/') {
            return Err(Error::Invalid {
                field: if field == "disk" {
                    "disk.file"
                } else {
                    "channel.path"
                },
                message: format!("'{value}' is not an absolute path on the host"),
            });
        }
        let target_attr = if field == "disk" { "dev" } else { "name" };
        let candidates: Vec<roxmltree::Node> = children(devices, field)
            .filter(|d| d.attribute("type") == Some(kind))
            .collect();
        let device = candidates
            .iter()
            .find(|d| child_attr(**d, "target", target_attr).as_deref() == Some(key.as_str()));
        let source = device.and_then(|d| child(*d, "source")).and_then(|s| {
            s.attributes()
                .find(|a| a.name() == attr && a.namespace().is_none())
        });
        let Some(source) = source else {
            if device.is_some() {
                return Err(Error::Invalid {
                    field: if field == "disk" { "disk.file" } else { "channel.path" },
                    message: format!(
                        "the saved {field} '{key}' has no {attr} of its own (libvirt chose it): \
                         define the domain with <source {attr}='...'/> on it to change it at a restore"
                    ),
                });
            }
            let known: Vec<String> = candidates
                .iter()
                .filter_map(|d| child_attr(*d, "target", target_attr))
                .collect();
            return Err(Error::Invalid {
                field: if field == "disk" {
                    "disk.target"
                } else {
                    "channel.name"
                },
                message: format!(
                    "the saved domain has no {kind} {field} '{key}' with a source {attr} (it has: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        };
        let range = source.range_value();
        if edits.iter().any(|(r, _)| *r == range) {
            return Err(Error::Invalid {
                field: "changes",
                message: format!("the {field} '{key}' is changed twice: give it once"),
            });
        }
        edits.push((range, esc(value)));
        // The saved chain is the old file's: an empty <backingStore/>
        // says it had none, and kept with an overlay it would hide the
        // base (the guest reads zeros). Without it libvirt reads the new
        // file's chain from its header.
        if let Some(chain) = device.and_then(|d| child(*d, "backingStore")) {
            edits.push((chain.range(), String::new()));
        }
    }
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = String::with_capacity(saved.len() + 256);
    let mut at = 0;
    for (range, value) in edits {
        out.push_str(&saved[at..range.start]);
        out.push_str(&value);
        at = range.end;
    }
    out.push_str(&saved[at..]);
    Ok(out)
}

/// Refuses `given` unless it is `saved` with at most a file disk's
/// `<source file>` and a unix channel's `<source path>` changed; the error
/// names the first other difference (e.g. `/domain/name`).
pub fn check_only_host_paths_differ(saved: &str, given: &str) -> Result<()> {
    let a = parse("saved domain XML", saved)?;
    let b = parse("restore XML", given)?;
    let mut path = String::new();
    compare(a.root_element(), b.root_element(), &mut path).map_err(|what| Error::Invalid {
        field: "xml",
        message: format!(
            "{what}: a saved domain comes back with its own name, UUID, MAC addresses and devices; \
             only a disk's source file and a channel's socket path may differ"
        ),
    })?;
    stale_backing_chains(a.root_element(), b.root_element())
}

/// Refuses a moved file disk that keeps the saved `<backingStore>`: it
/// describes the old file, and an empty one would hide the new file's
/// backing file from QEMU.
fn stale_backing_chains(saved: roxmltree::Node, given: roxmltree::Node) -> Result<()> {
    let file_disks =
        |root: roxmltree::Node<'_, '_>| -> Vec<(Option<String>, Option<String>, Option<String>)> {
            child(root, "devices")
                .map(|d| {
                    children(d, "disk")
                        .filter(|d| d.attribute("type") == Some("file"))
                        .map(|d| {
                            (
                                child_attr(d, "target", "dev"),
                                child_attr(d, "source", "file"),
                                child(d, "backingStore").map(|b| {
                                    let r = b.range();
                                    b.document().input_text()[r].to_string()
                                }),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
    for ((target, old, old_chain), (_, new, new_chain)) in
        file_disks(saved).into_iter().zip(file_disks(given))
    {
        if old != new && old_chain.is_some() && new_chain == old_chain {
            return Err(Error::Invalid {
                field: "xml",
                message: format!(
                    "disk '{}' gets a new source but keeps the saved <backingStore>, which describes the old file: \
                     drop it, and libvirt reads the new file's chain from its header",
                    target.unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
}

/// Where and how a restore XML differs from the saved one beyond host
/// paths; `path` is the element's, as `/domain/devices/disk`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Difference {
    /// Another element in the same place.
    #[error("{path} is <{tag}> in the restore XML")]
    Element {
        /// The saved element's path.
        path: String,
        /// The restore XML's element.
        tag: String,
    },
    /// An attribute added, dropped or changed: `(none)` or its quoted value.
    #[error("the restore XML changes {path}/@{name} from {from} to {to}")]
    Attribute {
        /// The element's path.
        path: String,
        /// The attribute's name.
        name: String,
        /// The saved value.
        from: String,
        /// The restore XML's value.
        to: String,
    },
    /// Other text, or text where the other has an element.
    #[error("the restore XML changes {path} from '{from}' to '{to}'")]
    Content {
        /// The element's path.
        path: String,
        /// The saved child.
        from: String,
        /// The restore XML's child.
        to: String,
    },
    /// A child element more or less.
    #[error("the restore XML {} <{tag}> in {path}", if *.dropped { "drops" } else { "adds" })]
    Child {
        /// The element's path.
        path: String,
        /// Whether the restore XML has the fewer children.
        dropped: bool,
        /// The first child one of them lacks.
        tag: String,
    },
}

fn compare(
    a: roxmltree::Node,
    b: roxmltree::Node,
    path: &mut String,
) -> std::result::Result<(), Difference> {
    let len = path.len();
    path.push('/');
    path.push_str(a.tag_name().name());
    if a.tag_name() != b.tag_name() {
        return Err(Difference::Element {
            path: path.clone(),
            tag: b.tag_name().name().to_string(),
        });
    }
    let host_path_attr = host_path_attribute(a);
    let attrs = |n: roxmltree::Node<'_, '_>| {
        let mut v: Vec<(Option<String>, String, String)> = n
            .attributes()
            .filter(|x| Some(x.name()) != host_path_attr)
            .map(|x| {
                (
                    x.namespace().map(str::to_string),
                    x.name().to_string(),
                    x.value().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (aa, ba) = (attrs(a), attrs(b));
    if aa != ba {
        let name = aa
            .iter()
            .chain(&ba)
            .find(|x| !aa.contains(x) || !ba.contains(x))
            .map(|x| x.1.clone())
            .unwrap_or_default();
        let value = |v: &[(Option<String>, String, String)]| {
            v.iter()
                .find(|x| x.1 == name)
                .map_or("(none)".to_string(), |x| format!("'{}'", x.2))
        };
        return Err(Difference::Attribute {
            path: path.clone(),
            from: value(&aa),
            to: value(&ba),
            name,
        });
    }
    let (ak, bk) = (kids(a), kids(b));
    for (x, y) in ak.iter().zip(&bk) {
        match (x.is_element(), y.is_element()) {
            (true, true) => compare(*x, *y, path)?,
            (false, false) if x.text().map(str::trim) == y.text().map(str::trim) => {}
            _ => {
                return Err(Difference::Content {
                    path: path.clone(),
                    from: node_text(*x),
                    to: node_text(*y),
                })
            }
        }
    }
    if ak.len() != bk.len() {
        let extra = if ak.len() > bk.len() {
            &ak[bk.len()]
        } else {
            &bk[ak.len()]
        };
        return Err(Difference::Child {
            path: path.clone(),
            dropped: ak.len() > bk.len(),
            tag: extra.tag_name().name().to_string(),
        });
    }
    path.truncate(len);
    Ok(())
}

/// Child elements and text that is not layout; a file disk's
/// `<backingStore>` is left out, being the host-side chain of its source.
fn kids<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> Vec<roxmltree::Node<'a, 'i>> {
    let file_disk = n.tag_name().name() == "disk"
        && n.attribute("type") == Some("file")
        && n.parent_element()
            .is_some_and(|d| d.tag_name().name() == "devices");
    n.children()
        .filter(|c| {
            if c.is_element() {
                !(file_disk && c.tag_name().name() == "backingStore")
            } else {
                c.is_text() && !c.text().unwrap_or("").trim().is_empty()
            }
        })
        .collect()
}

fn node_text(n: roxmltree::Node) -> String {
    if n.is_element() {
        format!("<{}>", n.tag_name().name())
    } else {
        n.text().unwrap_or("").trim().to_string()
    }
}

/// The attribute of `n` that holds a host path a restore may change.
fn host_path_attribute(n: roxmltree::Node) -> Option<&'static str> {
    let parent = n.parent_element()?;
    let in_devices = parent
        .parent_element()
        .is_some_and(|d| d.tag_name().name() == "devices");
    if n.tag_name().name() != "source" || !in_devices {
        return None;
    }
    match (parent.tag_name().name(), parent.attribute("type")) {
        ("disk", Some("file")) => Some("file"),
        ("channel", Some("unix")) => Some("path"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = r#"<domain type='qemu' id='3'>
  <name>slot-1</name>
  <uuid>5b1c0d6e-1f5a-4c3e-9a55-3f7a9e0c2b11</uuid>
  <genid>0d3c5d7e-8a54-4ec8-b0d2-2a6f1c3e9b77</genid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/pool/frozen.qcow2' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/pool/seed &amp; more.iso'/>
      <target dev='sda' bus='scsi'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:01'/>
      <source network='bed'/>
    </interface>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-slot-1/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
    </channel>
  </devices>
</domain>"#;

    fn disk(target: &str, file: &str) -> HostPath {
        HostPath::Disk {
            target: target.into(),
            file: file.into(),
        }
    }

    #[test]
    fn only_the_named_disk_source_and_channel_socket_change() {
        let out = rewrite_host_paths(
            SAVED,
            &[
                HostPath::ChannelSocket {
                    name: "org.qemu.guest_agent.0".into(),
                    path: "/run/slots/1/qga.sock".into(),
                },
                disk("vda", "/pool/job-7 'a'.qcow2"),
            ],
        )
        .unwrap();
        let expected = SAVED
            .replace("<backingStore/>", "")
            .replace("/pool/frozen.qcow2", "/pool/job-7 &apos;a&apos;.qcow2")
            .replace(
                "/var/lib/libvirt/qemu/channel/target/domain-3-slot-1/org.qemu.guest_agent.0",
                "/run/slots/1/qga.sock",
            );
        assert_eq!(out, expected);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let file = doc
            .descendants()
            .find(|n| n.has_tag_name("source") && n.attribute("index") == Some("1"))
            .and_then(|n| n.attribute("file"));
        assert_eq!(file, Some("/pool/job-7 'a'.qcow2"));
        check_only_host_paths_differ(SAVED, &out).unwrap();
    }

    #[test]
    fn a_disk_the_saved_domain_lacks_is_refused_naming_those_it_has() {
        let err = rewrite_host_paths(SAVED, &[disk("vdb", "/pool/x.qcow2")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid disk.target: the saved domain has no file disk 'vdb' with a source file (it has: vda, sda)"
        );
    }

    #[test]
    fn a_channel_whose_socket_libvirt_chose_cannot_be_moved() {
        let saved = SAVED.replace(
            "<source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-slot-1/org.qemu.guest_agent.0'/>",
            "",
        );
        let err = rewrite_host_paths(
            &saved,
            &[HostPath::ChannelSocket {
                name: "org.qemu.guest_agent.0".into(),
                path: "/run/a.sock".into(),
            }],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("invalid channel.path: the saved channel 'org.qemu.guest_agent.0' has no path of its own"),
            "{err}"
        );
    }

    #[test]
    fn a_new_disk_source_under_the_saved_backing_chain_is_refused() {
        let given = SAVED.replace("/pool/frozen.qcow2", "/pool/overlay.qcow2");
        let err = check_only_host_paths_differ(SAVED, &given)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "invalid xml: disk 'vda' gets a new source but keeps the saved <backingStore>"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_relative_path_is_refused() {
        let err = rewrite_host_paths(SAVED, &[disk("vda", "x.qcow2")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid disk.file: 'x.qcow2' is not an absolute"),
            "{err}"
        );
    }

    #[test]
    fn the_same_disk_twice_is_refused() {
        let err = rewrite_host_paths(SAVED, &[disk("vda", "/a"), disk("vda", "/b")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'vda' is changed twice"), "{err}");
    }

    #[test]
    fn a_changed_name_is_refused_naming_it() {
        let err = check_only_host_paths_differ(SAVED, &SAVED.replace("slot-1<", "slot-2<"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "invalid xml: the restore XML changes /domain/name from 'slot-1' to 'slot-2'"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_device_more_less_or_other_is_refused_naming_it() {
        let err = |given: String| {
            check_only_host_paths_differ(SAVED, &given)
                .unwrap_err()
                .to_string()
        };
        let added =
            err(SAVED.replace("  </devices>", "  <memballoon model='none'/>\n  </devices>"));
        assert!(
            added.starts_with("invalid xml: the restore XML adds <memballoon> in /domain/devices:"),
            "{added}"
        );
        let channel =
            &SAVED[SAVED.find("    <channel").unwrap()..SAVED.find("  </devices>").unwrap()];
        let dropped = err(SAVED.replace(channel, ""));
        assert!(
            dropped.starts_with("invalid xml: the restore XML drops <channel> in /domain/devices:"),
            "{dropped}"
        );
        let other = err(SAVED
            .replace("<genid>", "<title>")
            .replace("</genid>", "</title>"));
        assert!(
            other.starts_with("invalid xml: /domain/genid is <title> in the restore XML:"),
            "{other}"
        );
    }

    #[test]
    fn a_changed_mac_is_refused_naming_it() {
        let err = check_only_host_paths_differ(SAVED, &SAVED.replace("aa:bb:01", "aa:bb:02"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "changes /domain/devices/interface/mac/@address from '52:54:00:aa:bb:01' to '52:54:00:aa:bb:02'"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_changed_network_source_is_not_a_host_path() {
        let err =
            check_only_host_paths_differ(SAVED, &SAVED.replace("network='bed'", "network='other'"))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("/domain/devices/interface/source/@network"),
            "{err}"
        );
    }

    #[test]
    fn a_dropped_device_is_refused() {
        let start = SAVED.find("<interface").unwrap();
        let end = SAVED.find("</interface>").unwrap() + "</interface>".len();
        let given = format!("{}{}", &SAVED[..start], &SAVED[end..]);
        let err = check_only_host_paths_differ(SAVED, &given)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/domain/devices"), "{err}");
    }

    #[test]
    fn layout_and_quoting_do_not_count_as_changes() {
        let given = SAVED.replace('\'', "\"").replace("\n  ", "\n");
        check_only_host_paths_differ(SAVED, &given).unwrap();
    }
}

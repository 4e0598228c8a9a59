//! Starting up under Packer: which protocol generation the parent speaks,
//! the socket it connects to, and the one line that tells it where.
//!
//! Packer before 1.7 reads `5|unix|PATH` and rejects a fourth part;
//! Packer 1.7 and later reads `5|0|unix|PATH` and rejects three parts.
//! Both set the same environment, so the plugin looks at the program
//! that started it: a Go binary names its main module and dependencies in
//! its `.go.buildinfo` section, which is a few hundred bytes to read.
//! Packer 1.7+ depends on the separate `packer-plugin-sdk` module; 1.6
//! carries the SDK in its own tree. A Packer built without module data
//! (distribution builds in GOPATH mode) is told apart by the source paths
//! in its function table (`.gopclntab`): only 1.7+ has files under
//! `github.com/hashicorp/packer-plugin-sdk/`. Running `packer version`
//! instead would make that Packer discover plugins again, this one
//! included, without end.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::protocol::spec::Flavor;

/// The environment variable Packer sets for its plugins.
pub const MAGIC_COOKIE_KEY: &str = "PACKER_PLUGIN_MAGIC_COOKIE";
/// Its value.
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

/// The generation of the plugin protocol the parent Packer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Packer 1.6 and older: 3-part handshake, vendored type names.
    Legacy,
    /// Packer 1.7 and later: 4-part handshake with the minor API version.
    Current,
}

impl Protocol {
    /// The handshake line for a unix socket at `path`.
    pub fn line(self, path: &Path) -> String {
        match self {
            Protocol::Legacy => format!("5|unix|{}", path.display()),
            Protocol::Current => format!("5|0|unix|{}", path.display()),
        }
    }

    /// How the running Packer names the spec types it decodes.
    pub fn flavor(self) -> Flavor {
        match self {
            Protocol::Legacy => Flavor::Vendored,
            Protocol::Current => Flavor::Module,
        }
    }
}

/// What the parent process is, as far as the handshake cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// A Packer whose build data settles the question.
    Packer(Protocol),
    /// A Packer built without module data: its function table tells.
    PackerUnversioned(PathBuf),
    /// Not a Packer (a client of our own, a test): speak the current form.
    Other,
}

/// Decides the protocol for the process that started this one.
pub fn detect() -> Protocol {
    let ppid = std::os::unix::process::parent_id();
    let exe = std::fs::read_link(format!("/proc/{ppid}/exe"));
    let parent = match exe {
        Ok(exe) => classify(&exe),
        Err(_) => Parent::Other,
    };
    match parent {
        Parent::Packer(p) => p,
        Parent::Other => Protocol::Current,
        Parent::PackerUnversioned(exe) => protocol_from_sources(&exe).unwrap_or(Protocol::Current),
    }
}

/// Classifies a program by its Go build data.
pub fn classify(exe: &Path) -> Parent {
    match read_buildinfo(exe) {
        Some(info) => classify_buildinfo(&info, exe),
        None => Parent::Other,
    }
}

/// Classifies from the text of a Go build-info blob.
pub fn classify_buildinfo(info: &str, exe: &Path) -> Parent {
    let mut is_packer = false;
    let mut main_version = None;
    for line in info.lines() {
        let mut parts = line.split('\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("path"), Some("github.com/hashicorp/packer"), _) => is_packer = true,
            (Some("mod"), Some("github.com/hashicorp/packer"), Some(v)) => {
                is_packer = true;
                main_version = Some(v.to_string());
            }
            (Some("dep"), Some("github.com/hashicorp/packer-plugin-sdk"), _) => {
                return Parent::Packer(Protocol::Current)
            }
            _ => {}
        }
    }
    if !is_packer {
        return Parent::Other;
    }
    match main_version.as_deref().and_then(parse_version) {
        Some(v) => Parent::Packer(protocol_for(v)),
        None => Parent::PackerUnversioned(exe.to_path_buf()),
    }
}

fn protocol_for((major, minor): (u32, u32)) -> Protocol {
    if (major, minor) < (1, 7) {
        Protocol::Legacy
    } else {
        Protocol::Current
    }
}

/// Parses `v1.6.6`, `1.11.2-dev`, `Packer v1.6.6` into (major, minor).
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    let s = s.strip_prefix("Packer ").unwrap_or(s);
    let s = s.strip_prefix('v').unwrap_or(s);
    let mut it = s.split(['.', '-', ' ']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Every source path of the SDK contains this, then `/` or (in module
/// builds) `@version/`.
const SDK_DIR: &[u8] = b"/packer-plugin-sdk";
/// What precedes it in Packer 1.6, which carries the SDK in its own tree.
const IN_TREE: &[u8] = b"github.com/hashicorp/packer";
/// What precedes it where the SDK is a module of its own (1.7+), vendored
/// or not.
const OWN_MODULE: &[u8] = b"github.com/hashicorp";

/// Decides from the source paths a Go binary was built from. The first
/// SDK path settles it, and it comes early in the file table, so only the
/// start of the function table is usually read.
pub fn protocol_from_sources(exe: &Path) -> Option<Protocol> {
    let mut f = std::fs::File::open(exe).ok()?;
    let (off, size) = elf_section(&mut f, ".gopclntab")?;
    f.seek(SeekFrom::Start(off)).ok()?;
    let chunk = 1usize << 20;
    let keep = IN_TREE.len() + SDK_DIR.len() + 1;
    let mut window: Vec<u8> = Vec::with_capacity(chunk + keep);
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(chunk as u64)).ok()?;
        let start = window.len();
        window.resize(start + n, 0);
        f.read_exact(&mut window[start..]).ok()?;
        left -= n as u64;
        if let Some(p) = classify_sdk_paths(&window) {
            return Some(p);
        }
        // Keep a tail so a path split between reads is still seen whole.
        let cut = window.len().saturating_sub(keep);
        window.drain(..cut);
    }
    // No SDK at all: a Packer older than the SDK, so the old protocol.
    Some(Protocol::Legacy)
}

/// The protocol the first SDK source path in `bytes` implies, if any.
pub fn classify_sdk_paths(bytes: &[u8]) -> Option<Protocol> {
    for at in memchr::memmem::find_iter(bytes, SDK_DIR) {
        if !matches!(bytes.get(at + SDK_DIR.len()), Some(b'/') | Some(b'@')) {
            continue;
        }
        let before = &bytes[..at];
        if before.ends_with(IN_TREE) {
            return Some(Protocol::Legacy);
        }
        if before.ends_with(OWN_MODULE) {
            return Some(Protocol::Current);
        }
    }
    None
}

const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Reads the module text of a Go binary's `.go.buildinfo` section.
pub fn read_buildinfo(exe: &Path) -> Option<String> {
    let mut f = std::fs::File::open(exe).ok()?;
    let (off, size) = elf_section(&mut f, ".go.buildinfo")?;
    let size = size.min(64 * 1024);
    f.seek(SeekFrom::Start(off)).ok()?;
    let mut sec = vec![0u8; size as usize];
    f.read_exact(&mut sec).ok()?;
    if !sec.starts_with(BUILDINFO_MAGIC) || sec.len() < 32 {
        return None;
    }
    // Flag bit 1 (Go 1.18+): the version and module strings follow inline,
    // each as a varint length and bytes. Older layouts hold pointers only.
    if sec[15] & 2 == 0 {
        return None;
    }
    let mut p = &sec[32..];
    let _go_version = take_varint_string(&mut p)?;
    let modinfo = take_varint_string(&mut p)?;
    // The module text is framed by 16 marker bytes on each side.
    let text = if modinfo.len() >= 33 {
        &modinfo[16..modinfo.len() - 16]
    } else {
        modinfo
    };
    Some(String::from_utf8_lossy(text).into_owned())
}

fn take_varint_string<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut n: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, rest) = p.split_first()?;
        *p = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let n = usize::try_from(n).ok()?;
    if p.len() < n {
        return None;
    }
    let (s, rest) = p.split_at(n);
    *p = rest;
    Some(s)
}

/// Finds a section of a little-endian ELF64 file: (file offset, size).
fn elf_section(f: &mut std::fs::File, name: &str) -> Option<(u64, u64)> {
    let mut hdr = [0u8; 64];
    f.seek(SeekFrom::Start(0)).ok()?;
    f.read_exact(&mut hdr).ok()?;
    if &hdr[..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let shoff = u64_at(&hdr, 0x28);
    let shentsize = u64::from(u16_at(&hdr, 0x3a));
    let shnum = u64::from(u16_at(&hdr, 0x3c));
    let shstrndx = u64::from(u16_at(&hdr, 0x3e));
    if shentsize < 64 || shnum == 0 || shnum > 4096 {
        return None;
    }
    let mut table = vec![0u8; (shentsize * shnum) as usize];
    f.seek(SeekFrom::Start(shoff)).ok()?;
    f.read_exact(&mut table).ok()?;
    let entry = |i: u64| &table[(i * shentsize) as usize..((i + 1) * shentsize) as usize];
    let strtab = entry(shstrndx);
    let (str_off, str_size) = (u64_at(strtab, 0x18), u64_at(strtab, 0x20).min(1 << 20));
    let mut names = vec![0u8; str_size as usize];
    f.seek(SeekFrom::Start(str_off)).ok()?;
    f.read_exact(&mut names).ok()?;
    for i in 0..shnum {
        let e = entry(i);
        let n = u32_at(e, 0) as usize;
        let end = names[n..].iter().position(|&b| b == 0).map(|p| n + p)?;
        if &names[n..end] == name.as_bytes() {
            return Some((u64_at(e, 0x18), u64_at(e, 0x20)));
        }
    }
    None
}

/// Creates the unix socket Packer connects to, in a private folder
/// (mode 0700, a random name) of the temp folder, so no other local user
/// can connect first and drive the builder. The caller removes the socket
/// and its folder once Packer is connected.
pub fn listen() -> std::io::Result<(tokio::net::UnixListener, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("packer-plugin-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()?
        .keep();
    let path = dir.join("plugin.sock");
    match tokio::net::UnixListener::bind(&path) {
        Ok(l) => Ok((l, path)),
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_three_parts_for_legacy_and_four_for_current() {
        let p = Path::new("/tmp/s");
        assert_eq!(Protocol::Legacy.line(p), "5|unix|/tmp/s");
        assert_eq!(Protocol::Current.line(p), "5|0|unix|/tmp/s");
    }

    #[tokio::test]
    async fn the_socket_lies_in_a_folder_only_we_can_enter() {
        use std::os::unix::fs::MetadataExt;
        let (_listener, path) = listen().unwrap();
        let dir = path.parent().unwrap();
        let meta = std::fs::metadata(dir).unwrap();
        let mode = meta.mode() & 0o7777;
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(dir);
        assert_eq!(
            mode,
            0o700,
            "socket folder {} has mode {mode:o}",
            dir.display()
        );
        // SAFETY: geteuid has no preconditions.
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    }

    #[test]
    fn versions_parse_with_or_without_prefixes() {
        assert_eq!(parse_version("Packer v1.6.6"), Some((1, 6)));
        assert_eq!(parse_version("v1.11.2-dev"), Some((1, 11)));
        assert_eq!(parse_version("(devel)"), None);
    }

    #[test]
    fn module_builds_are_told_apart_by_the_sdk_dependency_or_version() {
        let exe = Path::new("/x/packer");
        let new = "path\tgithub.com/hashicorp/packer\nmod\tgithub.com/hashicorp/packer\t(devel)\t\ndep\tgithub.com/hashicorp/packer-plugin-sdk\tv0.5.2\th1:x\n";
        assert_eq!(
            classify_buildinfo(new, exe),
            Parent::Packer(Protocol::Current)
        );
        let old =
            "path\tgithub.com/hashicorp/packer\nmod\tgithub.com/hashicorp/packer\tv1.6.6\th1:y\n";
        assert_eq!(
            classify_buildinfo(old, exe),
            Parent::Packer(Protocol::Legacy)
        );
        let gopath = "path\tgithub.com/hashicorp/packer\nbuild\t-compiler=gc\n";
        assert_eq!(
            classify_buildinfo(gopath, exe),
            Parent::PackerUnversioned(exe.to_path_buf())
        );
        let other = "path\tgithub.com/someone/else\n";
        assert_eq!(classify_buildinfo(other, exe), Parent::Other);
    }

    #[test]
    fn sdk_source_paths_tell_the_in_tree_sdk_from_the_module() {
        let old = b"..github.com/hashicorp/packer/packer-plugin-sdk/rpc/server.go..";
        assert_eq!(classify_sdk_paths(old), Some(Protocol::Legacy));
        let module = b"..github.com/hashicorp/packer-plugin-sdk@v0.5.2/rpc/server.go..";
        assert_eq!(classify_sdk_paths(module), Some(Protocol::Current));
        let plain = b"..github.com/hashicorp/packer-plugin-sdk/rpc/server.go..";
        assert_eq!(classify_sdk_paths(plain), Some(Protocol::Current));
        let vendored =
            b"github.com/hashicorp/packer/vendor/github.com/hashicorp/packer-plugin-sdk/rpc/x.go";
        assert_eq!(classify_sdk_paths(vendored), Some(Protocol::Current));
        assert_eq!(classify_sdk_paths(b"nothing here"), None);
    }

    #[test]
    fn the_installed_packer_is_recognised_as_legacy() {
        let exe = Path::new("/usr/bin/packer");
        if !exe.exists() {
            return;
        }
        let info = read_buildinfo(exe).expect("Go build data in /usr/bin/packer");
        assert!(info.contains("github.com/hashicorp/packer"), "{info}");
        let parent = classify(exe);
        let proto = match parent {
            Parent::Packer(p) => p,
            Parent::PackerUnversioned(exe) => {
                protocol_from_sources(&exe).expect("a function table")
            }
            Parent::Other => panic!("not recognised as Packer"),
        };
        assert_eq!(proto, Protocol::Legacy);
    }
}

//! NoCloud (cloud-init) seed images.
//!
//! A seed is a small ISO 9660 image labelled `cidata` that holds
//! `user-data`, `meta-data` and optionally `network-config`; cloud-init
//! (and cloudbase-init on Windows) read it from a CD-ROM or disk. The image
//! carries a Joliet tree so the long, lower-case names survive; the
//! primary tree holds 8.3 aliases for readers that know only ISO 9660.
//! It is written here rather than by `mkisofs` so that hosts need nothing
//! installed, and it is deterministic: the same files give the same bytes.
//!
//! ```
//! use kvmhost::nocloud::Seed;
//! let iso = Seed::nocloud("#cloud-config\n", "instance-id: a\n", None)
//!     .to_iso()
//!     .unwrap();
//! assert_eq!(iso.len() % 2048, 0);
//! ```

use std::collections::BTreeSet;

const SECTOR: usize = 2048;
/// System area (16 sectors), primary, Joliet, terminator.
const PVD: usize = 16;
const SVD: usize = 17;
const TERMINATOR: usize = 18;
const PATH_L: usize = 19;
const PATH_M: usize = 20;
const JPATH_L: usize = 21;
const JPATH_M: usize = 22;
const ROOT: usize = 23;
/// Where file data starts when both root directories fit one sector each;
/// larger directories push it further.
#[cfg(test)]
const FIRST_FILE: usize = 25;

/// Longest Joliet file name, in UTF-16 code units.
const JOLIET_MAX: usize = 64;

/// The files of a seed and its volume label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    label: String,
    files: Vec<(String, Vec<u8>)>,
}

/// Why a seed cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeedError {
    /// A file name is empty, too long or has a character a CD cannot hold.
    #[error("seed file name {0:?} is not usable: use 1 to 64 characters without '/', ';' or control characters")]
    BadName(String),
    /// Two files share a name.
    #[error("seed file {0:?} is given twice")]
    Duplicate(String),
    /// The volume label is empty, longer than 16 characters or not plain ASCII.
    #[error("seed label {0:?} is not usable: use 1 to 16 ASCII letters, digits, '_' or '-'")]
    BadLabel(String),
    /// The seed's files do not fit the 4 GiB an ISO 9660 file may hold.
    #[error("seed file {0:?} is larger than 4 GiB")]
    TooLarge(String),
    /// The bytes read back are not an ISO 9660 image at all.
    #[error("the seed image is not an ISO 9660 image ({0}); give a NoCloud seed made by this provider or by `genisoimage -J -r -V cidata`")]
    NotIso(String),
    /// The bytes read back look like ISO 9660 but point outside themselves.
    #[error("the seed image is damaged: {0}; recreate the seed")]
    Damaged(String),
}

impl Seed {
    /// An empty seed labelled `cidata`.
    pub fn new() -> Self {
        Self {
            label: "cidata".into(),
            files: Vec::new(),
        }
    }

    /// The usual NoCloud seed: `user-data`, `meta-data` and, when given,
    /// `network-config`.
    pub fn nocloud(user_data: &str, meta_data: &str, network_config: Option<&str>) -> Self {
        let mut seed = Self::new()
            .file("user-data", user_data.as_bytes())
            .file("meta-data", meta_data.as_bytes());
        if let Some(n) = network_config {
            seed = seed.file("network-config", n.as_bytes());
        }
        seed
    }

    /// Sets the volume label (`cidata` by default; `config-2` style labels
    /// for other datasources).
    pub fn label(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }

    /// Adds a file at the root of the image.
    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_string(), contents.into()));
        self
    }

    /// The files, in the order given.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(n, c)| (n.as_str(), c.as_slice()))
    }

    /// The file `name` at the root of the image, if there is one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_slice())
    }

    /// The volume label (`cidata` for NoCloud).
    pub fn volume_label(&self) -> &str {
        &self.label
    }

    /// Reads the label and root-directory files of an ISO 9660 image:
    /// the Joliet tree when there is one (it keeps long, lower-case
    /// names), else the primary tree with Rock Ridge names when present.
    /// Subdirectories are skipped: a NoCloud seed keeps its files at the root.
    pub fn from_iso(img: &[u8]) -> Result<Seed, SeedError> {
        let mut primary = None;
        let mut joliet = None;
        for sector in PVD..PVD + MAX_DESCRIPTORS {
            let Some(d) = img.get(sector * SECTOR..(sector + 1) * SECTOR) else {
                return Err(if sector == PVD {
                    SeedError::NotIso(format!("only {} bytes long", img.len()))
                } else {
                    SeedError::Damaged("the volume descriptors have no terminator".into())
                });
            };
            if &d[1..6] != b"CD001" {
                return Err(if sector == PVD {
                    SeedError::NotIso("no CD001 volume descriptor at sector 16".into())
                } else {
                    SeedError::Damaged(format!("volume descriptor {sector} lacks CD001"))
                });
            }
            match d[0] {
                1 if primary.is_none() => primary = Some(d),
                2 if matches!(&d[88..91], b"%/@" | b"%/C" | b"%/E") => joliet = Some(d),
                255 => break,
                _ => {}
            }
        }
        if let Some(d) = joliet {
            return read_tree(img, d, true);
        }
        match primary {
            Some(d) => read_tree(img, d, false),
            None => Err(SeedError::NotIso("no primary volume descriptor".into())),
        }
    }

    /// Writes the ISO 9660 + Joliet image.
    pub fn to_iso(&self) -> Result<Vec<u8>, SeedError> {
        self.check()?;
        let mut files: Vec<&(String, Vec<u8>)> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));

        let short = short_names(files.iter().map(|f| f.0.as_str()));
        let short_ids: Vec<Vec<u8>> = short.iter().map(|s| s.as_bytes().to_vec()).collect();
        let joliet_ids: Vec<Vec<u8>> = files.iter().map(|f| ucs2(&f.0)).collect();

        // The two root directories, as many sectors as their records
        // need, then the file data.
        let root = Dir {
            sector: ROOT,
            sectors: dir_sectors(&short_ids),
        };
        let jroot = Dir {
            sector: root.sector + root.sectors,
            sectors: dir_sectors(&joliet_ids),
        };
        let mut extents = Vec::with_capacity(files.len());
        let mut next = jroot.sector + jroot.sectors;
        for (_, data) in &files {
            extents.push(next);
            next += data.len().div_ceil(SECTOR);
        }
        let total = next;
        if u32::try_from(total).is_err() {
            return Err(SeedError::TooLarge("(all files together)".into()));
        }
        let mut img = vec![0u8; total * SECTOR];

        let entries = |ids: Vec<Vec<u8>>| -> Vec<Entry> {
            ids.into_iter()
                .zip(&files)
                .zip(&extents)
                .map(|((id, f), &e)| Entry::file(id, e, f.1.len()))
                .collect()
        };
        write_dir(&mut img, root, &entries(short_ids));
        write_dir(&mut img, jroot, &entries(joliet_ids));
        for (sector, table) in [(PATH_L, root.sector), (JPATH_L, jroot.sector)] {
            write_path_table(&mut img, sector, table, false);
            write_path_table(&mut img, sector + 1, table, true);
        }
        self.write_descriptor(&mut img, PVD, total, root);
        self.write_descriptor(&mut img, SVD, total, jroot);
        let t = &mut img[TERMINATOR * SECTOR..];
        t[0] = 255;
        t[1..6].copy_from_slice(b"CD001");
        t[6] = 1;

        for ((_, data), &e) in files.iter().zip(&extents) {
            img[e * SECTOR..e * SECTOR + data.len()].copy_from_slice(data);
        }
        Ok(img)
    }

    fn check(&self) -> Result<(), SeedError> {
        let l = &self.label;
        if l.is_empty()
            || l.len() > 16
            || !l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(SeedError::BadLabel(l.clone()));
        }
        let mut seen = BTreeSet::new();
        for (name, data) in &self.files {
            if name.is_empty()
                || name.encode_utf16().count() > JOLIET_MAX
                || name
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '/' | ';' | '\\'))
                || name == "."
                || name == ".."
            {
                return Err(SeedError::BadName(name.clone()));
            }
            if u32::try_from(data.len()).is_err() {
                return Err(SeedError::TooLarge(name.clone()));
            }
            if !seen.insert(name.as_str()) {
                return Err(SeedError::Duplicate(name.clone()));
            }
        }
        Ok(())
    }

    fn write_descriptor(&self, img: &mut [u8], sector: usize, total: usize, root: Dir) {
        let joliet = sector == SVD;
        let d = &mut img[sector * SECTOR..(sector + 1) * SECTOR];
        d[0] = if joliet { 2 } else { 1 };
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        let text = |d: &mut [u8], at: usize, len: usize, s: &str| {
            if joliet {
                let mut u = ucs2(s);
                while u.len() < len {
                    u.extend_from_slice(&[0, b' ']);
                }
                d[at..at + len].copy_from_slice(&u[..len]);
            } else {
                let mut b = s.as_bytes().to_vec();
                b.resize(len, b' ');
                d[at..at + len].copy_from_slice(&b[..len]);
            }
        };
        text(d, 8, 32, "LINUX");
        text(d, 40, 32, &self.label);
        both32(&mut d[80..88], total as u32);
        if joliet {
            // UCS-2 level 3.
            d[88..91].copy_from_slice(b"%/E");
        }
        both16(&mut d[120..124], 1);
        both16(&mut d[124..128], 1);
        both16(&mut d[128..132], SECTOR as u16);
        both32(&mut d[132..140], PATH_TABLE_LEN as u32);
        let (l, m) = if joliet {
            (JPATH_L, JPATH_M)
        } else {
            (PATH_L, PATH_M)
        };
        d[140..144].copy_from_slice(&(l as u32).to_le_bytes());
        d[148..152].copy_from_slice(&(m as u32).to_be_bytes());
        Entry::dir(vec![0], root).write(&mut d[156..190]);
        for (at, len) in [(190, 128), (318, 128), (446, 128), (574, 128)] {
            text(d, at, len, "");
        }
        for (at, len) in [(702, 37), (739, 37), (776, 37)] {
            text(d, at, len, "");
        }
        for at in [813, 830, 847, 864] {
            // "Not specified" dates keep the image deterministic.
            d[at..at + 16].copy_from_slice(b"0000000000000000");
        }
        d[881] = 1;
    }
}

impl Default for Seed {
    fn default() -> Self {
        Self::new()
    }
}

/// Volume descriptors read before giving up on finding the terminator.
const MAX_DESCRIPTORS: usize = 32;

/// Reads the label and root files of the tree whose descriptor is `d`.
fn read_tree(img: &[u8], d: &[u8], joliet: bool) -> Result<Seed, SeedError> {
    let text = |b: &[u8]| -> Result<String, SeedError> {
        let s = if joliet {
            ucs2_text(b)?
        } else {
            String::from_utf8_lossy(b).into_owned()
        };
        Ok(s.trim_end_matches([' ', '\0']).to_string())
    };
    let label = text(&d[40..72])?;
    let root = &d[156..190];
    let dir = extent(img, root, "root directory")?;
    let mut files = Vec::new();
    // The files of a real image never overlap, so what they hold together
    // fits in the image; records that repeat one extent would otherwise
    // make a small image copy without end.
    let mut copied = 0usize;
    let mut at = 0;
    while at < dir.len() {
        let len = dir[at] as usize;
        if len == 0 {
            // Records never straddle a sector; zeros pad to the next one.
            at = (at / SECTOR + 1) * SECTOR;
            continue;
        }
        let r = dir
            .get(at..at + len)
            .filter(|r| r.len() >= 34 && 33 + r[32] as usize <= r.len())
            .ok_or_else(|| {
                SeedError::Damaged(format!("directory record at byte {at} is cut short"))
            })?;
        at += len;
        let id = &r[33..33 + r[32] as usize];
        // Skip `.`, `..` and subdirectories.
        if r[25] & 2 != 0 || id == [0] || id == [1] {
            continue;
        }
        let name = if joliet {
            ucs2_text(id)?
        } else {
            rock_ridge_name(r, id.len()).unwrap_or_else(|| String::from_utf8_lossy(id).into_owned())
        };
        let name = match name.rsplit_once(';') {
            Some((n, v)) if v.bytes().all(|b| b.is_ascii_digit()) => n.to_string(),
            _ => name,
        };
        // ISO 9660 names without an extension keep their dot (`USERDATA.`).
        let name = match name.strip_suffix('.') {
            Some(n) if !joliet && !n.is_empty() => n.to_string(),
            _ => name,
        };
        let data = extent(img, r, &name)?;
        copied += data.len();
        if copied > img.len() {
            return Err(SeedError::Damaged(format!(
                "its files add up to more bytes than the image holds ({} bytes); \
                 records share their data",
                img.len()
            )));
        }
        files.push((name, data.to_vec()));
    }
    Ok(Seed { label, files })
}

/// The bytes a directory record points at, checked against the image.
fn extent<'a>(img: &'a [u8], r: &[u8], what: &str) -> Result<&'a [u8], SeedError> {
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let start = le32(&r[2..6]).checked_mul(SECTOR);
    let len = le32(&r[10..14]);
    start
        .and_then(|s| img.get(s..s.checked_add(len)?))
        .ok_or_else(|| {
            SeedError::Damaged(format!(
                "{what} ({len} bytes at sector {}) lies beyond the image's {} bytes",
                le32(&r[2..6]),
                img.len()
            ))
        })
}

/// The Rock Ridge `NM` (alternate name) of a primary directory record.
fn rock_ridge_name(r: &[u8], id_len: usize) -> Option<String> {
    let mut at = 33 + id_len + (id_len + 1) % 2;
    let mut name = Vec::new();
    while at + 4 <= r.len() {
        let len = r[at + 2] as usize;
        if len < 4 {
            break;
        }
        let entry = r.get(at..at + len)?;
        if &entry[..2] == b"NM" && len >= 5 {
            name.extend_from_slice(&entry[5..]);
            // Flag 1: the name continues in the next NM entry.
            if entry[4] & 1 == 0 {
                return String::from_utf8(name).ok();
            }
        }
        at += len;
    }
    None
}

/// Joliet text: UCS-2, big-endian.
fn ucs2_text(b: &[u8]) -> Result<String, SeedError> {
    if !b.len().is_multiple_of(2) {
        return Err(SeedError::Damaged(format!(
            "a Joliet name has an odd length ({} bytes)",
            b.len()
        )));
    }
    let units = b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    Ok(char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect())
}

/// A path table with the root directory only.
const PATH_TABLE_LEN: usize = 10;

fn write_path_table(img: &mut [u8], sector: usize, root: usize, big_endian: bool) {
    let t = &mut img[sector * SECTOR..];
    t[0] = 1;
    let loc = root as u32;
    t[2..6].copy_from_slice(&if big_endian {
        loc.to_be_bytes()
    } else {
        loc.to_le_bytes()
    });
    t[6..8].copy_from_slice(&if big_endian {
        1u16.to_be_bytes()
    } else {
        1u16.to_le_bytes()
    });
}

struct Entry {
    id: Vec<u8>,
    extent: usize,
    len: usize,
    dir: bool,
}

impl Entry {
    fn file(id: Vec<u8>, extent: usize, len: usize) -> Self {
        Self {
            id,
            extent,
            len,
            dir: false,
        }
    }

    fn dir(id: Vec<u8>, dir: Dir) -> Self {
        Self {
            id,
            extent: dir.sector,
            len: dir.sectors * SECTOR,
            dir: true,
        }
    }

    fn size(&self) -> usize {
        record_size(self.id.len())
    }

    fn write(&self, r: &mut [u8]) {
        r[0] = self.size() as u8;
        both32(&mut r[2..10], self.extent as u32);
        both32(&mut r[10..18], self.len as u32);
        // 2000-01-01 00:00:00 UTC.
        r[18..25].copy_from_slice(&[100, 1, 1, 0, 0, 0, 0]);
        r[25] = if self.dir { 2 } else { 0 };
        both16(&mut r[28..32], 1);
        r[32] = self.id.len() as u8;
        r[33..33 + self.id.len()].copy_from_slice(&self.id);
    }
}

/// Where a directory lies: its first sector and how many it takes.
#[derive(Debug, Clone, Copy)]
struct Dir {
    sector: usize,
    sectors: usize,
}

/// The length of a directory record whose identifier has `id_len` bytes.
fn record_size(id_len: usize) -> usize {
    let n = 33 + id_len;
    n + n % 2
}

/// The record sizes of a root directory: `.`, `..`, then the files.
fn dir_records(ids: &[Vec<u8>]) -> impl Iterator<Item = usize> + '_ {
    [1, 1]
        .into_iter()
        .chain(ids.iter().map(|i| i.len()))
        .map(record_size)
}

/// Sectors a root directory with these file identifiers takes: a record
/// never straddles a sector, so one that does not fit starts the next.
fn dir_sectors(ids: &[Vec<u8>]) -> usize {
    let mut sectors = 1;
    let mut used = 0;
    for size in dir_records(ids) {
        if used + size > SECTOR {
            sectors += 1;
            used = 0;
        }
        used += size;
    }
    sectors
}

/// Writes a root directory: `.`, `..`, then the files, in the sectors
/// `dir_sectors` gave it.
fn write_dir(img: &mut [u8], dir: Dir, files: &[Entry]) {
    let entries = [Entry::dir(vec![0], dir), Entry::dir(vec![1], dir)];
    let mut sector = dir.sector;
    let mut used = 0;
    for e in entries.iter().chain(files) {
        if used + e.size() > SECTOR {
            sector += 1;
            used = 0;
        }
        debug_assert!(sector < dir.sector + dir.sectors);
        let at = sector * SECTOR + used;
        e.write(&mut img[at..at + e.size()]);
        used += e.size();
    }
}

/// ISO 9660 level 1 aliases (`USERDATA.;1`), unique among themselves.
fn short_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .filter_map(|c| match c.to_ascii_uppercase() {
                c @ ('A'..='Z' | '0'..='9' | '_') => Some(c),
                '-' | ' ' => None,
                _ => Some('_'),
            })
            .take(max)
            .collect()
    };
    let mut used = BTreeSet::new();
    names
        .map(|name| {
            let (stem, ext) = match name.rsplit_once('.') {
                Some((s, e)) if !s.is_empty() => (s, e),
                _ => (name, ""),
            };
            let ext = clean(ext, 3);
            let mut stem = clean(stem, 8);
            if stem.is_empty() {
                stem.push('_');
            }
            let mut n = 0;
            let mut candidate = format!("{stem}.{ext};1");
            while !used.insert(candidate.clone()) {
                n += 1;
                let suffix = n.to_string();
                let keep = 8usize.saturating_sub(suffix.len()).min(stem.len());
                candidate = format!("{}{suffix}.{ext};1", &stem[..keep]);
            }
            candidate
        })
        .collect()
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

fn both16(b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..4].copy_from_slice(&v.to_be_bytes());
}

fn both32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod test;

//! NoCloud (cloud-init) seed images.
//!
//! A seed is a small ISO 9660 image labelled `cidata` that holds
//! `user-data`, `meta-data` and optionally `network-config`; cloud-init
//! (and cloudbase-init on Windows) read it from a CD-ROM or disk. The image
//! carries a Joliet tree so the long, lower-case names survive; the
//! primary tree holds 8.3 aliases for readers that know only ISO 9660.
//! Files may sit in folders (`openstack/latest/meta_data.json` on an
//! OpenStack config drive labelled `config-2`).
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
/// Most parts of a path: ISO 9660 nests directories 8 deep, root included.
const MAX_DEPTH: usize = 8;

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
    #[error("seed file name {0:?} is not usable: use up to 8 '/'-separated parts (folders, then the file) of 1 to 64 characters each, without ';', '\\' or control characters, none of them '.' or '..'")]
    BadName(String),
    /// A file's name is also a folder on another file's path.
    #[error("seed file {0:?} is also a folder of another file: rename one of them")]
    FileIsFolder(String),
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

    /// Adds a file: at the root of the image, or in folders when `name`
    /// has `/` (`openstack/latest/meta_data.json`).
    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_string(), contents.into()));
        self
    }

    /// The files, in the order given.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(n, c)| (n.as_str(), c.as_slice()))
    }

    /// The file `name` (a path for files in folders), if there is one.
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

    /// Reads the label and files of an ISO 9660 image: the Joliet tree
    /// when there is one (it keeps long, lower-case names), else the
    /// primary tree with Rock Ridge names when present. Files in folders
    /// are named by their path (`openstack/latest/meta_data.json`).
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

    /// Writes the ISO 9660 + Joliet image. Names with `/` are files in
    /// folders (`openstack/latest/meta_data.json` on a config drive).
    pub fn to_iso(&self) -> Result<Vec<u8>, SeedError> {
        self.check()?;
        let mut files: Vec<&(String, Vec<u8>)> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let tree = Tree::of(files.iter().map(|f| f.0.as_str()));
        let short = tree.ids(false);
        let joliet = tree.ids(true);

        // The directories of both trees (roots first), as many sectors as
        // their records need, then the file data.
        let mut next = ROOT;
        let mut place = |ids: &Vec<Vec<Vec<u8>>>| -> Vec<Dir> {
            ids.iter()
                .map(|children| {
                    let d = Dir {
                        sector: next,
                        sectors: dir_sectors(children),
                    };
                    next += d.sectors;
                    d
                })
                .collect()
        };
        let dirs = place(&short);
        let jdirs = place(&joliet);
        let mut extents = Vec::with_capacity(files.len());
        for (_, data) in &files {
            extents.push(next);
            next += data.len().div_ceil(SECTOR);
        }
        let total = next;
        if u32::try_from(total).is_err() {
            return Err(SeedError::TooLarge("(all files together)".into()));
        }
        let mut img = vec![0u8; total * SECTOR];

        let mut table_len = [0; 2];
        for (t, (places, ids)) in [(&dirs, &short), (&jdirs, &joliet)].into_iter().enumerate() {
            for (d, node) in tree.dirs.iter().enumerate() {
                let entries: Vec<Entry> = node
                    .children
                    .iter()
                    .zip(&ids[d])
                    .map(|(c, id)| match *c {
                        Child::File(f) => Entry::file(id.clone(), extents[f], files[f].1.len()),
                        Child::Dir(sub) => Entry::dir(id.clone(), places[sub]),
                    })
                    .collect();
                write_dir(&mut img, places[d], places[node.parent], &entries);
            }
            let names: Vec<&[u8]> = (0..tree.dirs.len()).map(|d| tree.dir_id(d, ids)).collect();
            let (l, m) = if t == 0 {
                (PATH_L, PATH_M)
            } else {
                (JPATH_L, JPATH_M)
            };
            table_len[t] = write_path_table(&mut img, l, &tree, places, &names, false)?;
            write_path_table(&mut img, m, &tree, places, &names, true)?;
        }
        self.write_descriptor(&mut img, PVD, total, dirs[0], table_len[0]);
        self.write_descriptor(&mut img, SVD, total, jdirs[0], table_len[1]);
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
            let parts: Vec<&str> = name.split('/').collect();
            if parts.len() > MAX_DEPTH
                || parts.iter().any(|part| {
                    part.is_empty()
                        || part.encode_utf16().count() > JOLIET_MAX
                        || part
                            .chars()
                            .any(|c| c.is_control() || matches!(c, ';' | '\\'))
                        || *part == "."
                        || *part == ".."
                })
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
        let folders: BTreeSet<&str> = self
            .files
            .iter()
            .flat_map(|(name, _)| name.match_indices('/').map(move |(i, _)| &name[..i]))
            .collect();
        if let Some(both) = seen.intersection(&folders).next() {
            return Err(SeedError::FileIsFolder(both.to_string()));
        }
        Ok(())
    }

    fn write_descriptor(
        &self,
        img: &mut [u8],
        sector: usize,
        total: usize,
        root: Dir,
        path_table_len: usize,
    ) {
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
        both32(&mut d[132..140], path_table_len as u32);
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

/// Reads the label and files of the tree whose descriptor is `d`.
fn read_tree(img: &[u8], d: &[u8], joliet: bool) -> Result<Seed, SeedError> {
    let label = if joliet {
        ucs2_text(&d[40..72])?
    } else {
        String::from_utf8_lossy(&d[40..72]).into_owned()
    };
    let label = label.trim_end_matches([' ', '\0']).to_string();
    let root = &d[156..190];
    let dir = extent(img, root, "root directory")?;
    let mut reader = TreeReader {
        img,
        joliet,
        files: Vec::new(),
        read: 0,
    };
    reader.dir(dir, "", 1)?;
    Ok(Seed {
        label,
        files: reader.files,
    })
}

/// Walks the directories of one tree of an image.
struct TreeReader<'a> {
    img: &'a [u8],
    joliet: bool,
    files: Vec<(String, Vec<u8>)>,
    /// Bytes of files and directories read so far. The extents of a real
    /// image never overlap, so they fit in the image together; records
    /// that repeat one extent (or a directory that holds itself) would
    /// otherwise make a small image copy without end.
    read: usize,
}

impl TreeReader<'_> {
    fn count(&mut self, n: usize) -> Result<(), SeedError> {
        self.read += n;
        if self.read > self.img.len() {
            return Err(SeedError::Damaged(format!(
                "its files and folders add up to more bytes than the image holds ({} bytes); \
                 records share their data",
                self.img.len()
            )));
        }
        Ok(())
    }

    /// Reads the files of directory `dir` (at `depth`, the root being 1),
    /// named `prefix` + their name, and of the directories in it.
    fn dir(&mut self, dir: &[u8], prefix: &str, depth: usize) -> Result<(), SeedError> {
        self.count(dir.len())?;
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
            if id == [0] || id == [1] {
                continue;
            }
            let name = if self.joliet {
                ucs2_text(id)?
            } else {
                rock_ridge_name(r, id.len())
                    .unwrap_or_else(|| String::from_utf8_lossy(id).into_owned())
            };
            let name = match name.rsplit_once(';') {
                Some((n, v)) if v.bytes().all(|b| b.is_ascii_digit()) => n.to_string(),
                _ => name,
            };
            // ISO 9660 names without an extension keep their dot (`USERDATA.`).
            let name = match name.strip_suffix('.') {
                Some(n) if !self.joliet && !n.is_empty() => n.to_string(),
                _ => name,
            };
            let path = format!("{prefix}{name}");
            let data = extent(self.img, r, &path)?;
            if r[25] & 2 != 0 {
                // Deeper than ISO 9660 allows: not a seed's folder.
                if depth < MAX_DEPTH {
                    self.dir(data, &format!("{path}/"), depth + 1)?;
                }
                continue;
            }
            self.count(data.len())?;
            self.files.push((path, data.to_vec()));
        }
        Ok(())
    }
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

/// Writes a path table (one sector): every directory in tree order, its
/// identifier, extent and parent's number. Returns its length.
fn write_path_table(
    img: &mut [u8],
    sector: usize,
    tree: &Tree,
    places: &[Dir],
    names: &[&[u8]],
    big_endian: bool,
) -> Result<usize, SeedError> {
    let t = &mut img[sector * SECTOR..(sector + 1) * SECTOR];
    let mut at = 0;
    for (d, node) in tree.dirs.iter().enumerate() {
        let id = names[d];
        let len = 8 + id.len() + id.len() % 2;
        if at + len > SECTOR {
            return Err(SeedError::TooLarge("(the folder names together)".into()));
        }
        let r = &mut t[at..at + len];
        r[0] = id.len() as u8;
        let loc = places[d].sector as u32;
        let parent = (node.parent + 1) as u16;
        if big_endian {
            r[2..6].copy_from_slice(&loc.to_be_bytes());
            r[6..8].copy_from_slice(&parent.to_be_bytes());
        } else {
            r[2..6].copy_from_slice(&loc.to_le_bytes());
            r[6..8].copy_from_slice(&parent.to_le_bytes());
        }
        r[8..8 + id.len()].copy_from_slice(id);
        at += len;
    }
    Ok(at)
}

/// What a directory holds.
#[derive(Debug, Clone, Copy)]
enum Child {
    /// The file at this index of the sorted files.
    File(usize),
    /// The directory at this index of [`Tree::dirs`].
    Dir(usize),
}

/// A directory of the image.
#[derive(Debug)]
struct Node {
    /// Index of its parent in [`Tree::dirs`] (the root is its own).
    parent: usize,
    /// Its files and directories, by name.
    children: Vec<Child>,
    /// The names of `children`.
    names: Vec<String>,
}

/// The directories of an image, root first, then level by level (the
/// order path tables need): a seed whose files are all at the root has
/// the root alone.
#[derive(Debug)]
struct Tree {
    dirs: Vec<Node>,
}

impl Tree {
    /// The tree of `paths` (sorted, checked).
    fn of<'a>(paths: impl Iterator<Item = &'a str>) -> Tree {
        // Built by path first, then numbered level by level.
        #[derive(Default)]
        struct Folder<'a> {
            files: Vec<(&'a str, usize)>,
            folders: std::collections::BTreeMap<&'a str, Folder<'a>>,
        }
        let mut root = Folder::default();
        for (i, path) in paths.enumerate() {
            let mut parts: Vec<&str> = path.split('/').collect();
            let file = parts.pop().unwrap_or_default();
            let mut f = &mut root;
            for p in parts {
                f = f.folders.entry(p).or_default();
            }
            f.files.push((file, i));
        }
        let mut tree = Tree {
            dirs: vec![Node {
                parent: 0,
                children: Vec::new(),
                names: Vec::new(),
            }],
        };
        let mut queue = std::collections::VecDeque::from([(0usize, &root)]);
        while let Some((d, folder)) = queue.pop_front() {
            let mut children: Vec<(&str, Child)> = folder
                .files
                .iter()
                .map(|&(name, i)| (name, Child::File(i)))
                .collect();
            for (name, sub) in &folder.folders {
                let n = tree.dirs.len();
                tree.dirs.push(Node {
                    parent: d,
                    children: Vec::new(),
                    names: Vec::new(),
                });
                children.push((name, Child::Dir(n)));
                queue.push_back((n, sub));
            }
            children.sort_by(|a, b| a.0.cmp(b.0));
            tree.dirs[d].names = children.iter().map(|c| c.0.to_string()).collect();
            tree.dirs[d].children = children.into_iter().map(|c| c.1).collect();
        }
        tree
    }

    /// The identifiers of every directory's children, primary (8.3
    /// aliases, unique per directory) or Joliet.
    fn ids(&self, joliet: bool) -> Vec<Vec<Vec<u8>>> {
        self.dirs
            .iter()
            .map(|node| {
                if joliet {
                    return node.names.iter().map(|n| ucs2(n)).collect();
                }
                let is_file = |c: &Child| matches!(c, Child::File(_));
                let mut files = short_names(
                    node.children
                        .iter()
                        .zip(&node.names)
                        .filter(|(c, _)| is_file(c))
                        .map(|(_, n)| n.as_str()),
                )
                .into_iter();
                let mut dirs = short_dir_names(
                    node.children
                        .iter()
                        .zip(&node.names)
                        .filter(|(c, _)| !is_file(c))
                        .map(|(_, n)| n.as_str()),
                )
                .into_iter();
                node.children
                    .iter()
                    .map(|c| {
                        let id = if is_file(c) {
                            files.next()
                        } else {
                            dirs.next()
                        };
                        id.unwrap_or_default().into_bytes()
                    })
                    .collect()
            })
            .collect()
    }

    /// Directory `d`'s identifier in its parent (`[0]` for the root).
    fn dir_id<'a>(&self, d: usize, ids: &'a [Vec<Vec<u8>>]) -> &'a [u8] {
        if d == 0 {
            return &[0];
        }
        let parent = &self.dirs[self.dirs[d].parent];
        parent
            .children
            .iter()
            .position(|c| matches!(c, Child::Dir(x) if *x == d))
            .map(|i| ids[self.dirs[d].parent][i].as_slice())
            .unwrap_or(&[0])
    }
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

/// The record sizes of a directory: `.`, `..`, then its children.
fn dir_records(ids: &[Vec<u8>]) -> impl Iterator<Item = usize> + '_ {
    [1, 1]
        .into_iter()
        .chain(ids.iter().map(|i| i.len()))
        .map(record_size)
}

/// Sectors a directory with these child identifiers takes: a record
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

/// Writes a directory: `.`, `..` (the root's is itself), then its files
/// and directories, in the sectors `dir_sectors` gave it.
fn write_dir(img: &mut [u8], dir: Dir, parent: Dir, files: &[Entry]) {
    let entries = [Entry::dir(vec![0], dir), Entry::dir(vec![1], parent)];
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

/// ISO 9660 directory names (`OPENSTAC`), unique among themselves.
fn short_dir_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut used = BTreeSet::new();
    names
        .map(|name| {
            let mut stem: String = name
                .chars()
                .filter_map(|c| match c.to_ascii_uppercase() {
                    c @ ('A'..='Z' | '0'..='9' | '_') => Some(c),
                    '-' | ' ' => None,
                    _ => Some('_'),
                })
                .take(8)
                .collect();
            if stem.is_empty() {
                stem.push('_');
            }
            let mut candidate = stem.clone();
            let mut n = 0;
            while !used.insert(candidate.clone()) {
                n += 1;
                let suffix = n.to_string();
                let keep = 8usize.saturating_sub(suffix.len()).min(stem.len());
                candidate = format!("{}{suffix}", &stem[..keep]);
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

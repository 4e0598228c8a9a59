//! Storage volumes: create, overlay, look up, delete, and upload as a
//! sparse stream so that holes in an image are never sent.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::Path;

use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::error::{lv, Error, Result};
use super::xml::{child, child_attr, child_text, esc, parse, size_of};
use super::Host;

/// On-disk format of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFormat {
    /// QEMU copy-on-write v2.
    Qcow2,
    /// Plain bytes.
    Raw,
    /// ISO 9660 image (raw bytes, named for clarity).
    Iso,
}

impl VolumeFormat {
    /// Name libvirt uses.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeFormat::Qcow2 => "qcow2",
            VolumeFormat::Raw => "raw",
            VolumeFormat::Iso => "iso",
        }
    }

    /// Parses libvirt's name; `field` names the input in the error.
    pub fn parse(s: &str, field: &'static str) -> Result<VolumeFormat> {
        match s {
            "qcow2" => Ok(VolumeFormat::Qcow2),
            "raw" => Ok(VolumeFormat::Raw),
            "iso" => Ok(VolumeFormat::Iso),
            other => Err(Error::Invalid {
                field,
                message: format!("unknown volume format '{other}': use qcow2, raw or iso"),
            }),
        }
    }
}

/// A volume to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// Name inside the pool.
    pub name: String,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Format.
    pub format: VolumeFormat,
    /// Backing volume for a copy-on-write overlay.
    pub backing: Option<Backing>,
    /// File mode on the host, e.g. 0o600 for secrets.
    pub mode: Option<u32>,
}

/// The backing store of an overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    /// Path of the backing file on the host.
    pub path: String,
    /// Format of the backing file.
    pub format: VolumeFormat,
}

impl VolumeSpec {
    /// A plain volume.
    pub fn new(name: &str, capacity: u64, format: VolumeFormat) -> VolumeSpec {
        VolumeSpec {
            name: name.to_string(),
            capacity,
            format,
            backing: None,
            mode: None,
        }
    }

    /// A qcow2 copy-on-write overlay of `base`, as large as it: reads
    /// come from `base` until written, writes stay in the overlay.
    pub fn overlay(name: &str, base: &VolumeInfo) -> Result<VolumeSpec> {
        Ok(VolumeSpec {
            backing: Some(Backing {
                path: base.path.clone(),
                format: VolumeFormat::parse(&base.format, "backing.format")?,
            }),
            ..VolumeSpec::new(name, base.capacity, VolumeFormat::Qcow2)
        })
    }

    /// The volume's libvirt XML; nothing is preallocated, so files stay sparse.
    pub fn to_xml(&self) -> String {
        let mut x = format!(
            "<volume><name>{}</name><capacity unit='bytes'>{}</capacity><allocation>0</allocation><target><format type='{}'/>",
            esc(&self.name),
            self.capacity,
            self.format.as_str()
        );
        if let Some(mode) = self.mode {
            x.push_str(&format!(
                "<permissions><mode>{mode:04o}</mode></permissions>"
            ));
        }
        x.push_str("</target>");
        if let Some(b) = &self.backing {
            x.push_str(&format!(
                "<backingStore><path>{}</path><format type='{}'/></backingStore>",
                esc(&b.path),
                b.format.as_str()
            ));
        }
        x.push_str("</volume>");
        x
    }
}

/// A volume as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Name inside its pool.
    pub name: String,
    /// Pool name.
    pub pool: String,
    /// libvirt's key (the path, for directory pools).
    pub key: String,
    /// Path on the host.
    pub path: String,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Bytes allocated on the host.
    pub allocation: u64,
    /// Format name as libvirt reports it ("qcow2", "raw", "iso", ...).
    pub format: String,
    /// Backing file path of an overlay.
    pub backing_path: Option<String>,
}

/// What a sparse upload moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Bytes sent as data.
    pub data_bytes: u64,
    /// Bytes sent as holes (announced, not transferred).
    pub hole_bytes: u64,
}

fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

const CHUNK: usize = 1 << 20;

impl Host {
    /// Creates a volume in `pool`. For an overlay, `spec.backing` names
    /// the base file; the overlay's capacity may not be smaller than it.
    pub fn create_volume(&self, pool: &str, spec: &VolumeSpec) -> Result<VolumeInfo> {
        if spec.name.is_empty() || spec.name.contains('/') {
            return Err(Error::Invalid {
                field: "name",
                message: format!(
                    "'{}' is not a valid volume name: it may not be empty or contain '/'",
                    spec.name
                ),
            });
        }
        let p = self.raw().lookup_storage_pool_by_name(pool).map_err(lv(
            format!("look up storage pool '{pool}'"),
            "storage pool",
            pool,
        ))?;
        let vol = StorageVol::create_xml(&p, &spec.to_xml(), 0).map_err(|e| Error::Libvirt {
            context: format!("create volume '{}' in pool '{pool}'", spec.name),
            message: e.message().to_string(),
        })?;
        volume_info(&vol, &spec.name)
    }

    /// Looks a volume up by its key.
    pub fn volume_by_key(&self, key: &str) -> Result<VolumeInfo> {
        let vol = self.raw().lookup_storage_vol_by_key(key).map_err(lv(
            format!("look up volume {key}"),
            "volume",
            key,
        ))?;
        volume_info(&vol, key)
    }

    /// Looks a volume up by its path on the host.
    pub fn volume_by_path(&self, path: &str) -> Result<VolumeInfo> {
        let vol = self.raw().lookup_storage_vol_by_path(path).map_err(lv(
            format!("look up volume {path}"),
            "volume",
            path,
        ))?;
        volume_info(&vol, path)
    }

    /// Looks a volume up by pool and name.
    pub fn volume(&self, pool: &str, name: &str) -> Result<VolumeInfo> {
        let p = self.raw().lookup_storage_pool_by_name(pool).map_err(lv(
            format!("look up storage pool '{pool}'"),
            "storage pool",
            pool,
        ))?;
        let _ = p.refresh(0);
        let full = format!("{pool}/{name}");
        let vol = p.lookup_storage_vol_by_name(name).map_err(lv(
            format!("look up volume {full}"),
            "volume",
            &full,
        ))?;
        volume_info(&vol, &full)
    }

    /// Deletes a volume given its key.
    pub fn delete_volume(&self, key: &str) -> Result<()> {
        let vol = self.raw().lookup_storage_vol_by_key(key).map_err(lv(
            format!("look up volume {key}"),
            "volume",
            key,
        ))?;
        vol.delete(0).map_err(|e| Error::Libvirt {
            context: format!("delete volume {key}"),
            message: e.message().to_string(),
        })
    }

    /// Grows a volume to `capacity` bytes (libvirt cannot shrink safely).
    pub fn resize_volume(&self, key: &str, capacity: u64) -> Result<()> {
        let vol = self.raw().lookup_storage_vol_by_key(key).map_err(lv(
            format!("look up volume {key}"),
            "volume",
            key,
        ))?;
        vol.resize(capacity, 0).map_err(|e| Error::Libvirt {
            context: format!("resize volume {key} to {capacity} bytes"),
            message: e.message().to_string(),
        })
    }

    /// Uploads a local file into a volume as a sparse stream: holes in
    /// the file (`SEEK_HOLE`) and all-zero blocks are announced, not sent.
    pub fn upload_file(&self, key: &str, path: &Path) -> Result<UploadStats> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let regions = data_regions(&f, len).map_err(io)?;
        self.upload_with(key, len, |sink| {
            let mut buf = vec![0u8; CHUNK];
            let mut at = 0u64;
            for (start, end) in &regions {
                sink.hole(start - at)?;
                f.seek(SeekFrom::Start(*start)).map_err(io)?;
                let mut left = end - start;
                while left > 0 {
                    let want = left.min(CHUNK as u64) as usize;
                    let n = read_full(&mut f, &mut buf[..want]).map_err(io)?;
                    if n == 0 {
                        return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    sink.data_or_hole(&buf[..n])?;
                    left -= n as u64;
                }
                at = *end;
            }
            sink.hole(len - at)
        })
    }

    /// Uploads exactly `len` bytes from `reader` into a volume as a
    /// sparse stream (all-zero blocks become holes).
    pub fn upload_reader(&self, key: &str, reader: &mut dyn Read, len: u64) -> Result<UploadStats> {
        self.upload_with(key, len, |sink| {
            let mut buf = vec![0u8; CHUNK];
            let mut left = len;
            while left > 0 {
                let want = left.min(CHUNK as u64) as usize;
                let n = read_full(reader, &mut buf[..want]).map_err(|source| Error::Io {
                    path: "<upload source>".into(),
                    source,
                })?;
                if n == 0 {
                    return Err(Error::Invalid {
                        field: "source",
                        message: format!("the source ended {left} bytes before its announced size"),
                    });
                }
                sink.data_or_hole(&buf[..n])?;
                left -= n as u64;
            }
            Ok(())
        })
    }

    /// Replaces a volume's content with `bytes`.
    pub fn upload_bytes(&self, key: &str, bytes: &[u8]) -> Result<UploadStats> {
        let mut r = bytes;
        self.upload_reader(key, &mut r, bytes.len() as u64)
    }

    fn upload_with(
        &self,
        key: &str,
        len: u64,
        feed: impl FnOnce(&mut Sink) -> Result<()>,
    ) -> Result<UploadStats> {
        let vol = self.raw().lookup_storage_vol_by_key(key).map_err(lv(
            format!("look up volume {key}"),
            "volume",
            key,
        ))?;
        let fail = |what: &'static str| {
            let context = format!("{what} volume {key}");
            move |e: virt::error::Error| Error::Libvirt {
                context,
                message: e.message().to_string(),
            }
        };
        let stream = Stream::new(self.raw(), 0).map_err(fail("open a stream to"))?;
        vol.upload(
            &stream,
            0,
            len,
            virt::sys::VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM,
        )
        .map_err(fail("start upload to"))?;
        let mut sink = Sink {
            stream: &stream,
            pending_hole: 0,
            stats: UploadStats::default(),
            key,
        };
        let fed = feed(&mut sink).and_then(|()| sink.flush_hole());
        let stats = sink.stats;
        match fed {
            Ok(()) => {
                stream.finish().map_err(fail("finish upload to"))?;
                Ok(stats)
            }
            Err(e) => {
                let _ = stream.abort();
                Err(e)
            }
        }
    }
}

/// Granularity of zero detection: a block of this many zero bytes inside
/// data is sent as a hole. 64 KiB is a qcow2 cluster and keeps the number
/// of stream messages small when data and zeros alternate finely.
const ZERO_BLOCK: usize = 64 << 10;

static ZEROS: [u8; ZERO_BLOCK] = [0; ZERO_BLOCK];

/// True when every byte is zero. Slice equality compiles to the C
/// library's `memcmp`, which stays vectorised and fast in unoptimised
/// builds, where a byte or word loop runs 50-100 times slower; this runs
/// over every byte of an image.
pub fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(ZERO_BLOCK).all(|c| c == &ZEROS[..c.len()])
}

/// Splits `chunk` into runs of all-zero [`ZERO_BLOCK`]s (true) and of
/// other blocks (false), so that each run of data is one stream message.
fn runs(chunk: &[u8]) -> Vec<(bool, Range<usize>)> {
    let mut out: Vec<(bool, Range<usize>)> = Vec::new();
    let mut at = 0;
    for block in chunk.chunks(ZERO_BLOCK) {
        let zero = is_zero(block);
        let end = at + block.len();
        match out.last_mut() {
            Some((z, r)) if *z == zero => r.end = end,
            _ => out.push((zero, at..end)),
        }
        at = end;
    }
    out
}

/// Sends data and holes, merging neighbouring holes into one message.
struct Sink<'a> {
    stream: &'a Stream,
    pending_hole: u64,
    stats: UploadStats,
    key: &'a str,
}

impl Sink<'_> {
    fn hole(&mut self, len: u64) -> Result<()> {
        self.pending_hole += len;
        Ok(())
    }

    /// Sends `chunk`: its all-zero blocks as holes, the rest as data.
    fn data_or_hole(&mut self, chunk: &[u8]) -> Result<()> {
        for (zero, range) in runs(chunk) {
            if zero {
                self.hole(range.len() as u64)?;
            } else {
                self.send(&chunk[range])?;
            }
        }
        Ok(())
    }

    fn send(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.flush_hole()?;
        let mut sent = 0;
        while sent < data.len() {
            let n = self.stream.send(&data[sent..]).map_err(|e| self.err(e))?;
            sent += n as usize;
        }
        self.stats.data_bytes += data.len() as u64;
        Ok(())
    }

    fn flush_hole(&mut self) -> Result<()> {
        if self.pending_hole == 0 {
            return Ok(());
        }
        let len = self.pending_hole as i64;
        // SAFETY: the stream pointer is valid for the borrow's lifetime;
        // virStreamSendHole only reads it.
        let rc = unsafe { virt::sys::virStreamSendHole(self.stream.as_ptr(), len, 0) };
        if rc < 0 {
            return Err(self.err(virt::error::Error::last_error()));
        }
        self.stats.hole_bytes += self.pending_hole;
        self.pending_hole = 0;
        Ok(())
    }

    fn err(&self, e: virt::error::Error) -> Error {
        Error::Libvirt {
            context: format!("upload to volume {}", self.key),
            message: e.message().to_string(),
        }
    }
}

/// The data regions of a file as (start, end) pairs, from SEEK_DATA /
/// SEEK_HOLE; a filesystem without hole support yields one region.
pub fn data_regions(f: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let mut regions = Vec::new();
    let mut at: i64 = 0;
    let len = len as i64;
    while at < len {
        // SAFETY: plain lseek on a file descriptor we own.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENXIO) => break,
                Some(libc::EINVAL) => {
                    regions.push((at as u64, len as u64));
                    break;
                }
                _ => return Err(err),
            }
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let end = hole.min(len);
        regions.push((data as u64, end as u64));
        at = end;
    }
    Ok(regions)
}

fn volume_info(vol: &StorageVol, name: &str) -> Result<VolumeInfo> {
    let fail = |e: virt::error::Error| Error::Libvirt {
        context: format!("read volume {name}"),
        message: e.message().to_string(),
    };
    let xml = vol.xml_desc(0).map_err(fail)?;
    let pool = vol
        .lookup_storage_pool()
        .map_err(fail)?
        .name()
        .map_err(fail)?;
    let doc = parse(&format!("XML of volume {name}"), &xml)?;
    let root = doc.root_element();
    let target = child(root, "target");
    Ok(VolumeInfo {
        name: child_text(root, "name").unwrap_or_default(),
        pool,
        key: vol.key().map_err(fail)?,
        path: vol.path().map_err(fail)?,
        capacity: size_of(root, "capacity", "bytes").unwrap_or(0),
        allocation: size_of(root, "allocation", "bytes").unwrap_or(0),
        format: target
            .and_then(|t| child_attr(t, "format", "type"))
            .unwrap_or_else(|| "raw".into()),
        backing_path: child(root, "backingStore").and_then(|b| child_text(b, "path")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn volume_is_created_found_by_key_and_name_and_deleted() {
        let host = Host::open("test:///default").unwrap();
        let spec = VolumeSpec::new("disk0.qcow2", 1 << 30, VolumeFormat::Qcow2);
        let vol = host.create_volume("default-pool", &spec).unwrap();
        assert_eq!(vol.capacity, 1 << 30);
        assert_eq!(vol.pool, "default-pool");
        assert_eq!(host.volume_by_key(&vol.key).unwrap().name, "disk0.qcow2");
        assert_eq!(
            host.volume("default-pool", "disk0.qcow2").unwrap().key,
            vol.key
        );
        host.delete_volume(&vol.key).unwrap();
        assert!(host.volume_by_key(&vol.key).unwrap_err().is_not_found());
    }

    #[test]
    fn volume_in_a_missing_pool_names_the_pool() {
        let host = Host::open("test:///default").unwrap();
        let err = host
            .create_volume("nopool", &VolumeSpec::new("a", 1, VolumeFormat::Raw))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage pool 'nopool' does not exist on the host"
        );
    }

    #[test]
    fn overlay_xml_names_its_backing_file() {
        let mut spec = VolumeSpec::new("o.qcow2", 10, VolumeFormat::Qcow2);
        spec.backing = Some(Backing {
            path: "/p/base.qcow2".into(),
            format: VolumeFormat::Qcow2,
        });
        spec.mode = Some(0o600);
        assert_eq!(
            spec.to_xml(),
            "<volume><name>o.qcow2</name><capacity unit='bytes'>10</capacity><allocation>0</allocation><target><format type='qcow2'/>\
             <permissions><mode>0600</mode></permissions></target><backingStore><path>/p/base.qcow2</path>\
             <format type='qcow2'/></backingStore></volume>"
        );
    }

    #[test]
    fn zero_detection_sees_a_single_byte() {
        let mut buf = vec![0u8; 3 * ZERO_BLOCK + 99];
        assert!(is_zero(&buf));
        assert!(is_zero(&[]));
        for at in [0, 17, ZERO_BLOCK - 1, ZERO_BLOCK, buf.len() - 1] {
            buf[at] = 1;
            assert!(!is_zero(&buf), "byte {at}");
            buf[at] = 0;
        }
    }

    #[test]
    fn zero_blocks_inside_data_become_holes_and_data_stays_in_one_run() {
        let b = ZERO_BLOCK;
        // data, zero, zero, data, data, then a short all-zero tail
        let mut chunk = vec![0u8; 5 * b + 100];
        chunk[10] = 1;
        chunk[3 * b] = 2;
        chunk[5 * b - 1] = 3;
        assert_eq!(
            runs(&chunk),
            vec![
                (false, 0..b),
                (true, b..3 * b),
                (false, 3 * b..5 * b),
                (true, 5 * b..5 * b + 100)
            ]
        );
        let data = vec![7u8; 2 * b + 1];
        assert_eq!(runs(&data), vec![(false, 0..2 * b + 1)]);
        assert_eq!(runs(&[]), vec![]);
    }

    #[test]
    fn data_regions_skip_holes() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.sync_all().unwrap();
        let regions = data_regions(&f, 64 << 20).unwrap();
        let data: u64 = regions.iter().map(|(s, e)| e - s).sum();
        assert!(data < 8 << 20, "{regions:?}");
        assert!(regions.iter().any(|(s, e)| *s <= 32 << 20 && *e > 32 << 20));
    }
}

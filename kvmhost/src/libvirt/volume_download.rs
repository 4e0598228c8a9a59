//! Reading a volume's bytes back from the host into a local file, as a
//! sparse stream: holes on the host are announced, not sent, and stay
//! holes in the local file.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use virt::stream::Stream;

use super::error::{lv, Error, Result};
use super::Host;

/// What `virStreamRecvFlags` returns when the stream is at a hole.
const AT_HOLE: i32 = -3;

impl Host {
    /// Downloads the whole volume `key` into the local file `path`
    /// (created or truncated), whether the host is this machine or not.
    /// Returns the volume's length in bytes.
    pub fn download_volume(&self, key: &str, path: &Path) -> Result<u64> {
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
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = File::create(path).map_err(io)?;
        let stream = Stream::new(self.raw(), 0).map_err(fail("open a stream from"))?;
        vol.download(
            &stream,
            0,
            0,
            virt::sys::VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM,
        )
        .map_err(fail("start download of"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let received = (|| loop {
            // SAFETY: the buffer outlives the call and its length is passed.
            let n = unsafe {
                virt::sys::virStreamRecvFlags(
                    stream.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    virt::sys::VIR_STREAM_RECV_STOP_AT_HOLE,
                )
            };
            match n {
                0 => return Ok(()),
                n if n > 0 => {
                    out.write_all(&buf[..n as usize]).map_err(io)?;
                    total += n as u64;
                }
                AT_HOLE => {
                    let mut len: std::os::raw::c_longlong = 0;
                    // SAFETY: `len` is a valid out-pointer for the call.
                    let rc = unsafe { virt::sys::virStreamRecvHole(stream.as_ptr(), &mut len, 0) };
                    if rc < 0 {
                        return Err(fail("read a hole of")(virt::error::Error::last_error()));
                    }
                    out.seek(SeekFrom::Current(len)).map_err(io)?;
                    total += len as u64;
                }
                _ => return Err(fail("read")(virt::error::Error::last_error())),
            }
        })();
        if let Err(e) = received {
            let _ = stream.abort();
            return Err(e);
        }
        stream.finish().map_err(fail("finish download of"))?;
        // A trailing hole was only seeked over: give the file its length.
        out.set_len(total).map_err(io)?;
        out.flush().map_err(io)?;
        Ok(total)
    }
}

//! Reading a volume's bytes back from the host into a local file.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use virt::stream::Stream;

use super::error::{lv, Error, Result};
use super::Host;

impl Host {
    /// Downloads the whole volume `key` into the local file `path`
    /// (created or truncated), whether the host is this machine or not.
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
        vol.download(&stream, 0, 0, 0)
            .map_err(fail("start download of"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match stream.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = stream.abort();
                    return Err(fail("read")(e));
                }
            };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            if let Err(e) = out.write_all(&buf[..n]) {
                let _ = stream.abort();
                return Err(io(e));
            }
            total += n as u64;
        }
        stream.finish().map_err(fail("finish download of"))?;
        out.flush().map_err(io)?;
        Ok(total)
    }
}

//! Go `net/rpc` messages as Packer frames them: two consecutive msgpack
//! values per message, a header map and then the body.

use rmpv::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads whole msgpack values from a byte stream.
pub struct ValueReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> ValueReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> Self {
        ValueReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The next value, or `None` at a clean end of stream.
    pub async fn next(&mut self) -> std::io::Result<Option<Value>> {
        loop {
            if !self.buf.is_empty() {
                let mut cur = std::io::Cursor::new(&self.buf[..]);
                match rmpv::decode::read_value(&mut cur) {
                    Ok(v) => {
                        let used = cur.position() as usize;
                        self.buf.drain(..used);
                        return Ok(Some(v));
                    }
                    Err(e) if is_short(&e) => {}
                    Err(e) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("bad msgpack from Packer: {e}"),
                        ))
                    }
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn is_short(e: &rmpv::decode::Error) -> bool {
    match e {
        rmpv::decode::Error::InvalidMarkerRead(io) | rmpv::decode::Error::InvalidDataRead(io) => {
            io.kind() == std::io::ErrorKind::UnexpectedEof
        }
        _ => false,
    }
}

/// Encodes a header and a body as one message.
pub fn frame(header: &Value, body: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, header).expect("write to Vec");
    rmpv::encode::write_value(&mut out, body).expect("write to Vec");
    out
}

/// Writes one framed message.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    header: &Value,
    body: &Value,
) -> std::io::Result<()> {
    w.write_all(&frame(header, body)).await?;
    w.flush().await
}

//! The multiplexed connection to Packer: one yamux session (the plugin is
//! the yamux server) and the broker that names its streams.
//!
//! A logical connection id is a `u32`. Whoever dials id `N` opens a yamux
//! stream and writes `N` (4 bytes, little-endian); the side that accepts
//! `N` answers with the same 4 bytes. Id 0 is the main RPC stream.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// One logical connection: a yamux stream with tokio's I/O traits.
pub type Conn = Compat<yamux::Stream>;

/// How long a dialed or expected stream may take to show up.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the mux layer.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// The yamux session is gone (Packer closed the connection).
    #[error("the connection to Packer is closed")]
    Closed,
    /// The peer did not dial the id we waited for.
    #[error("timed out waiting for Packer to connect stream {0}")]
    AcceptTimeout(u32),
    /// The peer acknowledged another id than the one dialed.
    #[error("stream {dialed} was acknowledged as {acked}")]
    BadAck {
        /// The id we dialed.
        dialed: u32,
        /// The id that came back.
        acked: u32,
    },
    /// An I/O error on a stream.
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
}

type OpenRequest = oneshot::Sender<Result<yamux::Stream, MuxError>>;

enum Slot {
    Waiting(oneshot::Sender<Conn>),
    Arrived(Conn),
}

/// Hands out logical connections by id over one yamux session.
pub struct Broker {
    opener: mpsc::Sender<OpenRequest>,
    slots: Mutex<HashMap<u32, Slot>>,
    next_id: AtomicU32,
}

impl Broker {
    /// Starts a yamux session over `socket` in the given mode and returns
    /// its broker. The session runs on a spawned task until the peer
    /// closes it; `closed` fires then.
    pub fn start<T>(socket: T, mode: yamux::Mode) -> (Arc<Broker>, oneshot::Receiver<()>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut cfg = yamux::Config::default();
        // Packer's side keeps streams open until it reads EOF: let ours
        // read what arrives after a local close too.
        cfg.set_read_after_close(true);
        let mut conn = yamux::Connection::new(socket, cfg, mode);
        let (open_tx, mut open_rx) = mpsc::channel::<OpenRequest>(16);
        let broker = Arc::new(Broker {
            opener: open_tx,
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(0),
        });
        let (closed_tx, closed_rx) = oneshot::channel();
        let b = broker.clone();
        tokio::spawn(async move {
            let mut waiting: Option<OpenRequest> = None;
            poll_fn(|cx| loop {
                if waiting.is_none() {
                    if let Poll::Ready(Some(req)) = open_rx.poll_recv(cx) {
                        waiting = Some(req);
                    }
                }
                if let Some(req) = waiting.take() {
                    match conn.poll_new_outbound(cx) {
                        Poll::Ready(r) => {
                            let _ = req.send(r.map_err(|_| MuxError::Closed));
                            continue;
                        }
                        Poll::Pending => waiting = Some(req),
                    }
                }
                match conn.poll_next_inbound(cx) {
                    Poll::Ready(Some(Ok(stream))) => {
                        let b = b.clone();
                        tokio::spawn(async move { b.arrived(stream.compat()).await });
                    }
                    Poll::Ready(Some(Err(_))) | Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            })
            .await;
            if let Some(req) = waiting {
                let _ = req.send(Err(MuxError::Closed));
            }
            let _ = closed_tx.send(());
        });
        (broker, closed_rx)
    }

    /// The client side of a session over a unix socket, as Packer holds
    /// it (for tests and tools that drive the plugin like Packer does).
    pub fn client_unix(sock: tokio::net::UnixStream) -> (Arc<Broker>, oneshot::Receiver<()>) {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        Broker::start(sock.compat(), yamux::Mode::Client)
    }

    async fn arrived(&self, mut conn: Conn) {
        let mut id = [0u8; 4];
        if conn.read_exact(&mut id).await.is_err() {
            return;
        }
        let id = u32::from_le_bytes(id);
        let mut slots = self.slots.lock().expect("broker lock");
        match slots.remove(&id) {
            Some(Slot::Waiting(tx)) => {
                if let Err(conn) = tx.send(conn) {
                    slots.insert(id, Slot::Arrived(conn));
                }
            }
            _ => {
                slots.insert(id, Slot::Arrived(conn));
            }
        }
    }

    /// A fresh id for a stream this side will accept.
    pub fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Waits for the peer to dial `id`, then acknowledges it.
    pub async fn accept(&self, id: u32) -> Result<Conn, MuxError> {
        let rx = {
            let mut slots = self.slots.lock().expect("broker lock");
            match slots.remove(&id) {
                Some(Slot::Arrived(conn)) => Ok(conn),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(id, Slot::Waiting(tx));
                    Err(rx)
                }
            }
        };
        let mut conn = match rx {
            Ok(conn) => conn,
            Err(rx) => match tokio::time::timeout(ACCEPT_TIMEOUT, rx).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(_)) => return Err(MuxError::Closed),
                Err(_) => {
                    self.slots.lock().expect("broker lock").remove(&id);
                    return Err(MuxError::AcceptTimeout(id));
                }
            },
        };
        conn.write_all(&id.to_le_bytes()).await?;
        Ok(conn)
    }

    /// Opens a stream to the peer's id `id` and waits for its acknowledgement.
    pub async fn dial(&self, id: u32) -> Result<Conn, MuxError> {
        let (tx, rx) = oneshot::channel();
        self.opener.send(tx).await.map_err(|_| MuxError::Closed)?;
        let mut conn = rx.await.map_err(|_| MuxError::Closed)??.compat();
        conn.write_all(&id.to_le_bytes()).await?;
        let mut ack = [0u8; 4];
        conn.read_exact(&mut ack).await?;
        let acked = u32::from_le_bytes(ack);
        if acked != id {
            return Err(MuxError::BadAck { dialed: id, acked });
        }
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    #[tokio::test]
    async fn a_dialed_id_reaches_the_matching_accept_in_either_order() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (server, _) = Broker::start(a.compat(), yamux::Mode::Server);
        let (client, _) = Broker::start(b.compat(), yamux::Mode::Client);
        // Dial before the accept is registered, and after.
        let early = tokio::spawn({
            let client = client.clone();
            async move { client.dial(7).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut s7 = server.accept(7).await.unwrap();
        let mut c7 = early.await.unwrap().unwrap();
        let late = tokio::spawn({
            let server = server.clone();
            async move { server.accept(3).await }
        });
        let mut c3 = client.dial(3).await.unwrap();
        let mut s3 = late.await.unwrap().unwrap();

        c7.write_all(b"seven").await.unwrap();
        c3.write_all(b"three").await.unwrap();
        let mut buf = [0u8; 5];
        s3.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"three");
        s7.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"seven");
    }
}

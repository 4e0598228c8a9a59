//! Go `net/rpc` over msgpack, both ways: serving our components to Packer
//! and calling Packer's (Ui, Hook). Calls on one stream overlap
//! (`Builder.Cancel` arrives while `Builder.Run` is pending), so each
//! request runs on its own task and replies go out as they finish.

pub mod codec;
pub mod value;

pub use rmpv::Value;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio::sync::{oneshot, Mutex};

use crate::protocol::mux::Conn;
use codec::{write_frame, ValueReader};
use value::{field, object, str_field};

/// What a method returns: a body, or an error message for Packer's user.
/// The message is a string because that is what Go's `net/rpc` carries
/// in a response header's `Error`; services keep typed errors and turn
/// them into text only here.
pub type Reply = Result<Value, String>;

/// A boxed future of a reply.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// One RPC service (`Builder`, `Ui`, `Communicator`, `Artifact`...).
pub trait Service: Send + Sync + 'static {
    /// Handles `method` (the part after the dot) with its decoded argument.
    fn call(self: Arc<Self>, method: &str, arg: Value) -> ReplyFuture;
}

/// The services served on one stream, by name.
#[derive(Default, Clone)]
pub struct Router {
    services: HashMap<&'static str, Arc<dyn Service>>,
    prefixed: Vec<(&'static str, Arc<dyn Service>)>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service under `name`.
    pub fn with(mut self, name: &'static str, svc: Arc<dyn Service>) -> Self {
        self.services.insert(name, svc);
        self
    }

    /// Adds a service that answers for every service name starting with
    /// `prefix` that has no service of its own; it gets the whole
    /// `Service.Method` (Packer's Ui registers helpers such as
    /// `Ui<id>.Add` for progress bars on the fly).
    pub fn with_prefix(mut self, prefix: &'static str, svc: Arc<dyn Service>) -> Self {
        self.prefixed.push((prefix, svc));
        self
    }

    fn dispatch(&self, service_method: &str, arg: Value) -> ReplyFuture {
        let Some((svc, method)) = service_method.split_once('.') else {
            let msg = format!("rpc: service/method request ill-formed: {service_method}");
            return Box::pin(async move { Err(msg) });
        };
        let prefixed = self.prefixed.iter().find(|(p, _)| svc.starts_with(p));
        match (self.services.get(svc), prefixed) {
            (Some(s), _) => s.clone().call(method, arg),
            (None, Some((_, s))) => s.clone().call(service_method, arg),
            (None, None) => {
                let msg = format!("rpc: can't find service {service_method}");
                Box::pin(async move { Err(msg) })
            }
        }
    }

    /// Serves requests on `conn` until the peer closes it.
    pub async fn serve<S>(self, conn: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(conn);
        let wr = Arc::new(Mutex::new(wr));
        let mut rd = ValueReader::new(rd);
        let router = Arc::new(self);
        loop {
            let header = match rd.next().await {
                Ok(Some(h)) => h,
                _ => break,
            };
            let body = match rd.next().await {
                Ok(Some(b)) => b,
                _ => break,
            };
            let method = str_field(&header, "ServiceMethod");
            let seq = field(&header, "Seq").cloned().unwrap_or(Value::from(0));
            let router = router.clone();
            let wr = wr.clone();
            tokio::spawn(async move {
                let reply = guarded(&method, router.dispatch(&method, body)).await;
                let (err, body) = match reply {
                    Ok(b) => (String::new(), b),
                    Err(e) => (e, Value::Nil),
                };
                let header = object([
                    ("ServiceMethod", Value::from(method.as_str())),
                    ("Seq", seq),
                    ("Error", Value::from(err.as_str())),
                ]);
                let mut w = wr.lock().await;
                let _ = write_frame(&mut *w, &header, &body).await;
            });
        }
    }
}

/// Runs a method's future; a panic in it becomes the method's error, so
/// Packer gets an answer (and fails the build) instead of waiting for ever.
pub async fn guarded<F>(method: &str, fut: F) -> Reply
where
    F: std::future::Future<Output = Reply>,
{
    catch_panic(fut).await.unwrap_or_else(|p| {
        Err(format!(
            "internal error in {method}: {p}; please report this bug"
        ))
    })
}

/// A panic caught in a task, by its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Panic(pub String);

/// Runs `fut`, turning a panic inside it into `Err` with its message.
pub async fn catch_panic<F: std::future::Future>(fut: F) -> Result<F::Output, Panic> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into())
        })
        .map_err(Panic)
}

/// Errors of an outgoing call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The stream closed before the reply came.
    #[error("the connection to Packer closed during {0}")]
    Closed(String),
    /// The remote method returned an error.
    #[error("{0}")]
    Remote(String),
    /// Writing the request failed.
    #[error("sending {method}: {source}")]
    Io {
        /// The method called.
        method: String,
        /// The cause.
        source: std::io::Error,
    },
}

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// A client of the services the peer serves on one stream.
pub struct Client {
    writer: Mutex<WriteHalf<Conn>>,
    pending: Pending,
    seq: AtomicU64,
}

impl Client {
    /// Starts a client on a dialed stream.
    pub fn new(conn: Conn) -> Arc<Client> {
        let (rd, wr) = tokio::io::split(conn);
        let pending: Pending = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            let mut rd = ValueReader::new(rd);
            loop {
                let (Ok(Some(header)), Ok(Some(body))) = (rd.next().await, rd.next().await) else {
                    break;
                };
                let seq = field(&header, "Seq").and_then(Value::as_u64).unwrap_or(0);
                let err = str_field(&header, "Error");
                let reply = if err.is_empty() { Ok(body) } else { Err(err) };
                if let Some(tx) = p.lock().expect("pending lock").remove(&seq) {
                    let _ = tx.send(reply);
                }
            }
            // Dropping the senders wakes every waiting call with `Closed`.
            p.lock().expect("pending lock").clear();
        });
        Arc::new(Client {
            writer: Mutex::new(wr),
            pending,
            seq: AtomicU64::new(0),
        })
    }

    /// Calls `method` ("Service.Method") with `arg` and waits for the reply.
    pub async fn call(&self, method: &str, arg: Value) -> Result<Value, CallError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(seq, tx);
        let header = object([
            ("ServiceMethod", Value::from(method)),
            ("Seq", Value::from(seq)),
        ]);
        {
            let mut w = self.writer.lock().await;
            if let Err(source) = write_frame(&mut *w, &header, &arg).await {
                self.pending.lock().expect("pending lock").remove(&seq);
                return Err(CallError::Io {
                    method: method.to_string(),
                    source,
                });
            }
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Remote(e)),
            Err(_) => Err(CallError::Closed(method.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mux::Broker;
    use std::time::Duration;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    struct Slow;
    impl Service for Slow {
        fn call(self: Arc<Self>, method: &str, arg: Value) -> ReplyFuture {
            let method = method.to_string();
            Box::pin(async move {
                match method.as_str() {
                    "Wait" => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(Value::from("waited"))
                    }
                    "Echo" => Ok(arg),
                    "Panic" => panic!("a bug in a service"),
                    _ => Err(format!("no method {method}")),
                }
            })
        }
    }

    struct Named;
    impl Service for Named {
        fn call(self: Arc<Self>, method: &str, _arg: Value) -> ReplyFuture {
            let m = method.to_string();
            Box::pin(async move { Ok(Value::from(m)) })
        }
    }

    #[tokio::test]
    async fn services_made_on_the_fly_reach_the_prefix_service_with_their_full_name() {
        let r = Router::new()
            .with("Ui", Arc::new(Named))
            .with_prefix("Ui", Arc::new(Named));
        assert_eq!(
            r.dispatch("Ui.Say", Value::Nil).await,
            Ok(Value::from("Say"))
        );
        assert_eq!(
            r.dispatch("Uiabc123.Add", Value::Nil).await,
            Ok(Value::from("Uiabc123.Add"))
        );
        assert!(r.dispatch("Other.X", Value::Nil).await.is_err());
    }

    #[tokio::test]
    async fn a_quick_call_is_answered_while_a_slow_one_is_pending() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (server, _) = Broker::start(a.compat(), yamux::Mode::Server);
        let (client, _) = Broker::start(b.compat(), yamux::Mode::Client);
        tokio::spawn(async move {
            let conn = server.accept(0).await.unwrap();
            Router::new().with("Slow", Arc::new(Slow)).serve(conn).await;
        });
        let c = Client::new(client.dial(0).await.unwrap());
        let slow = tokio::spawn({
            let c = c.clone();
            async move { c.call("Slow.Wait", Value::Nil).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let quick = c.call("Slow.Echo", Value::from(42)).await.unwrap();
        assert_eq!(quick, Value::from(42));
        assert!(!slow.is_finished(), "echo must not wait for the slow call");
        assert_eq!(slow.await.unwrap(), Value::from("waited"));
        let err = c.call("Slow.Nope", Value::Nil).await.unwrap_err();
        assert_eq!(err.to_string(), "no method Nope");
        let err = c.call("Other.X", Value::Nil).await.unwrap_err();
        assert_eq!(err.to_string(), "rpc: can't find service Other.X");
    }

    #[tokio::test]
    async fn a_service_that_panics_still_answers_with_an_error() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (server, _) = Broker::start(a.compat(), yamux::Mode::Server);
        let (client, _) = Broker::start(b.compat(), yamux::Mode::Client);
        tokio::spawn(async move {
            let conn = server.accept(0).await.unwrap();
            Router::new().with("Slow", Arc::new(Slow)).serve(conn).await;
        });
        let c = Client::new(client.dial(0).await.unwrap());
        let reply = tokio::time::timeout(Duration::from_secs(5), c.call("Slow.Panic", Value::Nil))
            .await
            .expect("the call got no answer");
        let err = reply.unwrap_err().to_string();
        assert!(
            err.contains("Slow.Panic") && err.contains("a bug in a service"),
            "{err}"
        );
        // The connection still serves other calls.
        assert_eq!(
            c.call("Slow.Echo", Value::from(1)).await.unwrap(),
            Value::from(1)
        );
    }
}

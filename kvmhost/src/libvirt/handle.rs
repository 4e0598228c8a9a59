//! One way to reach a host from async code.
//!
//! [`HostAddress`] says where a host is (a parsed [`Uri`]) and how to wake
//! it when it sleeps; [`HostHandle`] turns that into a connection on first
//! use, wakes the host first when asked to, opens a new connection when
//! the old one died, and hands out [`Connection`]s whose calls run on
//! tokio's blocking pool, one at a time where the transport needs that.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use kvmhost::libvirt::handle::{HostAddress, HostHandle};
//! use kvmhost::libvirt::Uri;
//! let handle = HostHandle::new(HostAddress::new(Uri::parse("qemu:///system")?));
//! let conn = handle.connect().await?;
//! let info = conn.run(|h| h.node_info()).await??;
//! println!("{} CPUs", info.cpus);
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Error, Host, TaskError, Uri};
use crate::wake::{open_waking, WakeOpenError, WakeTarget};

/// How to wake a sleeping host: the packets to send, about every
/// `interval`, until libvirt answers or `timeout` has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeSpec {
    /// Where wake packets go (a magic packet and a powerwake request,
    /// usually).
    pub targets: Vec<WakeTarget>,
    /// How long the host may take to answer.
    pub timeout: Duration,
    /// How often the packets are sent again.
    pub interval: Duration,
}

/// Where a host is and how to wake it, parsed once from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    /// The libvirt URI, SSH options included.
    pub uri: Uri,
    /// How to wake it; a host without is never woken.
    pub wake: Option<WakeSpec>,
}

impl HostAddress {
    /// A host that is never woken.
    pub fn new(uri: Uri) -> Self {
        Self { uri, wake: None }
    }

    /// Whether calls over this transport must go one at a time: libvirt
    /// 9.0's libssh client crashed (SIGSEGV) when two threads used one
    /// connection at once.
    pub fn serialises_calls(&self) -> bool {
        matches!(self.uri.transport(), Some("libssh" | "libssh2"))
    }
}

/// Why a host could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// libvirt refused or did not answer, and waking was not asked for
    /// or not configured.
    #[error(transparent)]
    Connect(#[from] Error),
    /// The host was woken but did not answer in time, or a wake packet
    /// could not be sent.
    #[error(transparent)]
    Wake(#[from] WakeOpenError),
    /// The opening call did not return (a panic, or the runtime shutting
    /// down).
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// An open connection and the rule for using it.
#[derive(Clone)]
pub struct Connection {
    host: Arc<Host>,
    // Taken around every call where the transport needs calls alone.
    alone: Option<Arc<Mutex<()>>>,
}

impl Connection {
    /// The connection itself, for code that already runs on a blocking
    /// thread and keeps to the transport's rule ([`Self::run_here`]).
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Runs `f` on tokio's blocking pool and waits for it without
    /// blocking the runtime.
    pub async fn run<T, F>(&self, f: F) -> Result<T, TaskError>
    where
        T: Send + 'static,
        F: FnOnce(&Host) -> T + Send + 'static,
    {
        let this = self.clone();
        Ok(tokio::task::spawn_blocking(move || this.run_here(f)).await?)
    }

    /// Runs `f` on this thread (a blocking one), alone where the
    /// transport needs that.
    pub fn run_here<T>(&self, f: impl FnOnce(&Host) -> T) -> T {
        let _alone = self
            .alone
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        f(&self.host)
    }

    /// True while the remote end still answers.
    pub fn is_alive(&self) -> bool {
        self.host.is_alive()
    }
}

/// A host reached through one connection, opened on first use.
pub struct HostHandle {
    address: HostAddress,
    conn: Mutex<Option<Arc<Host>>>,
    // Held while opening, so callers arriving meanwhile wait for that
    // connection (or that wake) instead of opening their own.
    opening: tokio::sync::Mutex<()>,
    alone: Option<Arc<Mutex<()>>>,
}

impl HostHandle {
    /// A handle for `address`; nothing is contacted yet.
    pub fn new(address: HostAddress) -> Self {
        let alone = address.serialises_calls().then(|| Arc::new(Mutex::new(())));
        Self {
            address,
            conn: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            alone,
        }
    }

    /// Where the host is.
    pub fn address(&self) -> &HostAddress {
        &self.address
    }

    fn wrap(&self, host: Arc<Host>) -> Connection {
        Connection {
            host,
            alone: self.alone.clone(),
        }
    }

    /// The open connection if it still answers; never opens one.
    pub fn current(&self) -> Option<Connection> {
        let host = self
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|h| h.is_alive())?
            .clone();
        Some(self.wrap(host))
    }

    /// The open connection, opening one when there is none or it died,
    /// and waking the host first when it does not answer and the address
    /// says how.
    pub async fn connect(&self) -> Result<Connection, OpenError> {
        self.open(true).await.map(|(c, _)| c)
    }

    /// [`Self::connect`], also saying how long the wake took (zero when
    /// the host answered at once or a connection was open).
    pub async fn connect_timed(&self) -> Result<(Connection, Duration), OpenError> {
        self.open(true).await
    }

    /// The open connection, or a new one if the host answers now; never
    /// wakes it.
    pub async fn try_connect(&self) -> Result<Connection, OpenError> {
        self.open(false).await.map(|(c, _)| c)
    }

    /// [`Self::try_connect`] for code on a blocking thread (never inside
    /// the async runtime's own threads).
    pub fn try_connect_blocking(&self) -> Result<Connection, OpenError> {
        let _one = self.opening.blocking_lock();
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let host = Arc::new(Host::open_uri(&self.address.uri)?);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(host.clone());
        Ok(self.wrap(host))
    }

    /// Drops the connection; the next call opens a new one.
    pub fn forget(&self) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn open(&self, wake: bool) -> Result<(Connection, Duration), OpenError> {
        let _one = self.opening.lock().await;
        if let Some(c) = self.current() {
            return Ok((c, Duration::ZERO));
        }
        let uri = self.address.uri.clone();
        let wake = self.address.wake.clone().filter(|_| wake);
        let (host, took) = tokio::task::spawn_blocking(move || -> Result<_, OpenError> {
            match wake {
                None => Ok((Host::open_uri(&uri)?, Duration::ZERO)),
                Some(w) => Ok(open_waking(
                    uri.as_str(),
                    || Host::open_uri(&uri),
                    &w.targets,
                    w.timeout,
                    w.interval,
                )?),
            }
        })
        .await
        .map_err(TaskError::from)??;
        let host = Arc::new(host);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(host.clone());
        Ok((self.wrap(host), took))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_handle() -> HostHandle {
        HostHandle::new(HostAddress::new(Uri::parse("test:///default").unwrap()))
    }

    #[tokio::test]
    async fn the_connection_is_opened_once_and_shared() {
        let handle = test_handle();
        assert!(handle.current().is_none(), "nothing opened yet");
        let a = handle.connect().await.unwrap();
        let b = handle.connect().await.unwrap();
        assert!(Arc::ptr_eq(a.host(), b.host()));
        let cpus = a.run(|h| h.node_info().map(|i| i.cpus)).await.unwrap();
        assert!(cpus.unwrap() > 0);
        assert!(handle.current().is_some());
        handle.forget();
        assert!(handle.current().is_none());
        let c = handle.try_connect().await.unwrap();
        assert!(
            !Arc::ptr_eq(a.host(), c.host()),
            "a new connection after forget"
        );
        // The blocking face shares the same connection.
        let d = tokio::task::spawn_blocking(move || handle.try_connect_blocking().unwrap())
            .await
            .unwrap();
        assert!(Arc::ptr_eq(c.host(), d.host()));
    }

    #[tokio::test]
    async fn a_host_that_does_not_answer_and_has_no_wake_settings_fails_at_once() {
        let handle = HostHandle::new(HostAddress::new(
            Uri::parse("qemu+tcp://127.0.0.1:1/system").unwrap(),
        ));
        let e = handle.connect().await.err().expect("nothing listens there");
        assert!(matches!(e, OpenError::Connect(_)), "{e}");
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
    }

    #[tokio::test]
    async fn a_host_that_never_wakes_fails_after_the_wake_timeout_naming_the_rounds() {
        let mut address = HostAddress::new(Uri::parse("qemu+tcp://127.0.0.1:1/system").unwrap());
        address.wake = Some(WakeSpec {
            // Loopback: the packets go nowhere that matters.
            targets: vec![WakeTarget::new(
                "52:54:00:00:00:01".parse().unwrap(),
                ([127, 0, 0, 1], 9).into(),
            )],
            timeout: Duration::from_millis(300),
            interval: Duration::from_millis(100),
        });
        let handle = HostHandle::new(address);
        let e = handle.connect().await.err().expect("nothing listens there");
        assert!(
            matches!(e, OpenError::Wake(WakeOpenError::Timeout { .. })),
            "{e}"
        );
        // Without waking, the same address fails as a plain connect.
        let e = handle.try_connect().await.err().unwrap();
        assert!(matches!(e, OpenError::Connect(_)), "{e}");
    }

    #[tokio::test]
    async fn a_panicking_call_is_an_error_that_can_be_resumed() {
        let conn = test_handle().connect().await.unwrap();
        let e = conn.run(|_| -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(e.is_panic());
        let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.resume()));
        let payload = resumed.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    }

    #[test]
    fn only_libssh_transports_take_calls_one_at_a_time() {
        let at = |u: &str| HostAddress::new(Uri::parse(u).unwrap()).serialises_calls();
        assert!(at("qemu+libssh://root@h/system"));
        assert!(at("qemu+libssh2://root@h/system"));
        assert!(!at("qemu+ssh://root@h/system"));
        assert!(!at("qemu:///system"));
    }

    #[tokio::test]
    async fn calls_over_a_serialised_transport_never_overlap() {
        // test:///default with the rule forced on: two calls that would
        // overlap if run freely.
        let handle = test_handle();
        let conn = Connection {
            alone: Some(Arc::new(Mutex::new(()))),
            ..handle.connect().await.unwrap()
        };
        let inside = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let most = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let call = |conn: Connection| {
            let (inside, most) = (inside.clone(), most.clone());
            async move {
                conn.run(move |_| {
                    let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
                .await
                .unwrap()
            }
        };
        tokio::join!(call(conn.clone()), call(conn.clone()), call(conn));
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

//! The libvirt connection.

use std::sync::Once;

use virt::connect::Connect;

use super::error::{Error, Result};
use super::uri::Uri;

/// One open libvirt connection to a host.
///
/// Cloneable handles are not offered on purpose: share it behind an
/// `Arc`. libvirt connections are thread-safe, so `&Host` may be used
/// from several blocking threads at once.
pub struct Host {
    conn: Connect,
    uri: String,
    /// Host locks held by others, as this connection last saw them (see
    /// [`Host::lock`]): what a taker must have watched unchanged before
    /// it takes a lock over, across its calls.
    pub(super) lock_sightings:
        std::sync::Mutex<std::collections::HashMap<String, super::lock::Sighting>>,
}

/// What a host offers, from `virNodeGetInfo` and `virNodeGetFreeMemory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Host name as libvirt reports it.
    pub hostname: String,
    /// CPU model, e.g. "x86_64".
    pub cpu_model: String,
    /// Number of active CPUs.
    pub cpus: u32,
    /// Total memory in KiB.
    pub memory_kib: u64,
    /// Free memory in bytes.
    pub free_memory_bytes: u64,
}

static ERROR_CALLBACK: Once = Once::new();
static EVENT_LOOP: Once = Once::new();

/// How often a quiet remote connection is probed, in seconds, and how
/// many probes may go unanswered before libvirt calls the host dead.
/// A host that vanished mid-call (powered off, cable pulled, daemon
/// killed) then fails the call after about 20 s instead of blocking it
/// forever. The probe also wakes a blocked call: libvirt's libssh
/// transport can leave a reply sitting in libssh's buffer where poll()
/// does not see it, and a stream download over it stalled until the
/// next packet arrived.
const KEEPALIVE_INTERVAL_S: i32 = 5;
const KEEPALIVE_COUNT: u32 = 3;

/// libvirt sends keepalive probes and answers the host's only when the
/// process runs an event loop: one thread, started once, runs it.
fn start_event_loop() {
    EVENT_LOOP.call_once(|| {
        if virt::event::event_register_default_impl().is_err() {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if virt::event::event_run_default_impl().is_err() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
    });
}

/// libvirt's default handler prints every error to stderr, which a
/// Terraform provider or Packer plugin would show as noise next to the
/// diagnostics that already carry the message; errors reach callers
/// through return values, so the callback only swallows them.
extern "C" fn swallow_libvirt_error(
    _user_data: *mut std::ffi::c_void,
    _error: virt::sys::virErrorPtr,
) {
}

fn install_error_callback() {
    ERROR_CALLBACK.call_once(|| {
        // SAFETY: the callback has the C signature libvirt expects and
        // touches nothing; a null user pointer is allowed.
        unsafe { virt::sys::virSetErrorFunc(std::ptr::null_mut(), Some(swallow_libvirt_error)) };
    });
}

impl Host {
    /// Opens a read-write connection to `uri` (e.g. `qemu:///system`).
    pub fn open(uri: &str) -> Result<Host> {
        match Uri::parse(uri) {
            Ok(parsed) => Self::open_uri(&parsed),
            // libvirt may still know a form our parser does not.
            Err(_) => Self::connect(uri, false),
        }
    }

    /// Opens a read-write connection to a URI parsed already.
    pub fn open_uri(uri: &Uri) -> Result<Host> {
        Self::connect(uri.as_str(), uri.is_remote())
    }

    fn connect(uri: &str, remote: bool) -> Result<Host> {
        install_error_callback();
        start_event_loop();
        let conn = Connect::open(Some(uri)).map_err(|e| Error::Connect {
            uri: uri.to_string(),
            message: e.message().to_string(),
        })?;
        if remote {
            // Refused only by daemons too old for keepalive; the calls
            // still work, just without a dead-host timeout.
            let _ = conn.set_keep_alive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT);
        }
        Ok(Host {
            conn,
            uri: uri.to_string(),
            lock_sightings: Default::default(),
        })
    }

    /// The URI this connection was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The underlying `virt` connection, for calls this layer does not wrap.
    pub fn raw(&self) -> &Connect {
        &self.conn
    }

    /// True while the remote end still answers.
    pub fn is_alive(&self) -> bool {
        self.conn.is_alive().unwrap_or(false)
    }

    /// CPUs, memory and free memory of the host.
    pub fn node_info(&self) -> Result<NodeInfo> {
        let ctx = |what: &str| {
            let what = what.to_string();
            move |e: virt::error::Error| Error::Libvirt {
                context: what,
                message: e.message().to_string(),
            }
        };
        let info = self.conn.node_info().map_err(ctx("read node info"))?;
        Ok(NodeInfo {
            hostname: self.conn.hostname().map_err(ctx("read host name"))?,
            cpu_model: info.model,
            cpus: info.cpus,
            memory_kib: info.memory,
            free_memory_bytes: self.conn.free_memory().map_err(ctx("read free memory"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_test_driver_reports_node_info() {
        let host = Host::open("test:///default").unwrap();
        let info = host.node_info().unwrap();
        assert!(info.cpus > 0);
        assert!(info.memory_kib > 0);
        assert!(host.is_alive());
    }

    #[test]
    fn open_bad_uri_names_the_uri() {
        let err = match Host::open("nosuchdriver:///nothing") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a bogus driver opened"),
        };
        assert!(err.contains("nosuchdriver:///nothing"), "{err}");
    }
}

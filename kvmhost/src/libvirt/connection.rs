//! The libvirt connection.

use std::sync::Once;

use virt::connect::Connect;

use super::error::{Error, Result};

/// One open libvirt connection to a host.
///
/// Cloneable handles are not offered on purpose: share it behind an
/// `Arc`. libvirt connections are thread-safe, so `&Host` may be used
/// from several blocking threads at once.
pub struct Host {
    conn: Connect,
    uri: String,
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
        install_error_callback();
        start_event_loop();
        let conn = Connect::open(Some(uri)).map_err(|e| Error::Connect {
            uri: uri.to_string(),
            message: e.message().to_string(),
        })?;
        if is_remote(uri) {
            // Refused only by daemons too old for keepalive; the calls
            // still work, just without a dead-host timeout.
            let _ = conn.set_keep_alive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT);
        }
        Ok(Host {
            conn,
            uri: uri.to_string(),
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

/// Whether `uri` reaches libvirt over a network transport (ssh, libssh,
/// tcp, tls), where a dead peer would otherwise block a call forever.
fn is_remote(uri: &str) -> bool {
    let scheme = uri.split("://").next().unwrap_or_default();
    scheme.contains('+') && !scheme.ends_with("+unix")
        || uri
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.starts_with('/'))
}

/// How to reach a host over SSH with libvirt's `ssh` transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshOptions {
    /// Private key file (`keyfile=`).
    pub keyfile: Option<String>,
    /// known_hosts file (`known_hosts=`).
    pub known_hosts: Option<String>,
    /// Skip host key verification (`no_verify=1`); off unless asked for.
    pub no_verify: bool,
}

impl Host {
    /// Adds SSH options to a `qemu+ssh://` URI as libvirt query parameters.
    /// The host key is always verified unless `no_verify`: the OpenSSH
    /// transport gets `no_tty=1` (BatchMode, so it never offers to trust
    /// a key) and refuses `known_hosts`, which only the libssh transports
    /// read.
    ///
    /// Parameters already in the URI win, so a user's explicit URI is
    /// never rewritten behind their back.
    pub fn uri_with_ssh(uri: &str, ssh: &SshOptions) -> Result<String> {
        let (scheme, _) = uri.split_once("://").ok_or(Error::Invalid {
            field: "uri",
            message: format!("'{uri}' is not a libvirt URI; write e.g. qemu:///system or qemu+ssh://root@host/system"),
        })?;
        let wants_ssh = ssh.keyfile.is_some() || ssh.known_hosts.is_some() || ssh.no_verify;
        if !scheme.ends_with("+ssh")
            && !scheme.ends_with("+libssh2")
            && !scheme.ends_with("+libssh")
        {
            if wants_ssh {
                return Err(Error::Invalid {
                    field: "uri",
                    message: format!(
                        "SSH options need an ssh transport, but '{uri}' uses '{scheme}'; write qemu+ssh://user@host/system"
                    ),
                });
            }
            return Ok(uri.to_string());
        }
        let present = |key: &str| {
            uri.split_once('?')
                .is_some_and(|(_, q)| q.split('&').any(|kv| kv.split('=').next() == Some(key)))
        };
        let openssh = scheme.ends_with("+ssh");
        if openssh && (ssh.known_hosts.is_some() || present("known_hosts")) {
            // libvirt runs OpenSSH with only `keyfile` and `no_verify`:
            // the file would be ignored and the key checked against
            // ~/.ssh/known_hosts instead.
            return Err(Error::Invalid {
                field: "known_hosts",
                message: format!(
                    "libvirt's ssh transport ('{scheme}') runs OpenSSH, which ignores known_hosts and checks ~/.ssh/known_hosts instead; \
                     use qemu+libssh://user@host/system?sshauth=privkey (which reads this file), or drop known_hosts and pin the host key in ~/.ssh/known_hosts"
                ),
            });
        }
        let mut params = Vec::new();
        if let Some(k) = &ssh.keyfile {
            if !present("keyfile") {
                params.push(format!("keyfile={}", query_escape(k)));
            }
        }
        if let Some(k) = &ssh.known_hosts {
            if !present("known_hosts") {
                params.push(format!("known_hosts={}", query_escape(k)));
            }
        }
        if ssh.no_verify && !present("no_verify") {
            params.push("no_verify=1".to_string());
        }
        if openssh && !ssh.no_verify && !present("no_tty") {
            // BatchMode: OpenSSH never asks on a terminal whether to trust
            // a key; an unknown or changed host key fails the connection.
            params.push("no_tty=1".to_string());
        }
        if params.is_empty() {
            return Ok(uri.to_string());
        }
        let sep = if uri.contains('?') { '&' } else { '?' };
        Ok(format!("{uri}{sep}{}", params.join("&")))
    }
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_transports_count_as_remote() {
        for uri in [
            "qemu+ssh://root@h/system",
            "qemu+libssh://root@10.0.0.2/system?sshauth=privkey",
            "qemu+tcp://h/system",
            "qemu://h/system",
        ] {
            assert!(is_remote(uri), "{uri}");
        }
        for uri in ["qemu:///system", "qemu+unix:///system", "test:///default"] {
            assert!(!is_remote(uri), "{uri}");
        }
    }

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

    #[test]
    fn ssh_options_become_query_parameters() {
        let ssh = SshOptions {
            keyfile: Some("/root/.ssh/id ed".into()),
            known_hosts: Some("/tmp/kh".into()),
            no_verify: false,
        };
        let uri = Host::uri_with_ssh("qemu+libssh://root@10.0.0.2/system", &ssh).unwrap();
        assert_eq!(
            uri,
            "qemu+libssh://root@10.0.0.2/system?keyfile=/root/.ssh/id%20ed&known_hosts=/tmp/kh"
        );
    }

    #[test]
    fn known_hosts_with_the_openssh_transport_is_refused_naming_the_way_out() {
        // libvirt's `ssh` transport runs OpenSSH with only keyfile and
        // no_verify: a known_hosts given there would silently do nothing.
        let ssh = SshOptions {
            known_hosts: Some("/tmp/kh".into()),
            ..Default::default()
        };
        let err = Host::uri_with_ssh("qemu+ssh://root@10.0.0.2/system", &ssh).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "known_hosts",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("qemu+libssh://"), "{err}");
        // In the URI itself too.
        let err = Host::uri_with_ssh(
            "qemu+ssh://root@10.0.0.2/system?known_hosts=/tmp/kh",
            &SshOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("qemu+libssh://"), "{err}");
    }

    #[test]
    fn the_openssh_transport_never_prompts_so_an_unknown_or_changed_key_fails() {
        let uri = Host::uri_with_ssh("qemu+ssh://root@h/system", &SshOptions::default()).unwrap();
        assert_eq!(uri, "qemu+ssh://root@h/system?no_tty=1");
    }

    #[test]
    fn ssh_options_keep_parameters_the_user_wrote() {
        let ssh = SshOptions {
            keyfile: Some("/k".into()),
            known_hosts: None,
            no_verify: true,
        };
        let uri = Host::uri_with_ssh("qemu+ssh://h/system?keyfile=/mine", &ssh).unwrap();
        assert_eq!(uri, "qemu+ssh://h/system?keyfile=/mine&no_verify=1");
        let uri =
            Host::uri_with_ssh("qemu+ssh://h/system?no_tty=0", &SshOptions::default()).unwrap();
        assert_eq!(uri, "qemu+ssh://h/system?no_tty=0");
    }

    #[test]
    fn ssh_options_on_a_local_uri_are_refused() {
        let ssh = SshOptions {
            keyfile: Some("/k".into()),
            ..Default::default()
        };
        let err = Host::uri_with_ssh("qemu:///system", &ssh).unwrap_err();
        assert!(err.to_string().contains("qemu+ssh://"), "{err}");
    }
}

//! libvirt connection URIs, parsed once.
//!
//! `driver[+transport]://[user@][host][:port][/path][?k=v&...]`, as in
//! `qemu:///system`, `qemu+ssh://root@vmhost01/system?keyfile=/k` or
//! `test:///default`. The programs ask a [`Uri`] whether it reaches this
//! machine or a remote one, which host it names, and add SSH options to
//! it, instead of looking at the text themselves.

use std::fmt;
use std::str::FromStr;

use super::error::{Error, Result};

/// A parsed libvirt URI; shown as the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    text: String,
    driver: String,
    transport: Option<String>,
    user: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: String,
    query: Vec<(String, String)>,
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

/// Text that is not a libvirt URI. The message names the text and shows
/// the form; the program puts its own field name in front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a libvirt URI{detail}; write e.g. qemu:///system or qemu+ssh://root@host/system")]
pub struct UriError {
    /// The text that was given.
    pub text: String,
    /// What in it is wrong, in parentheses, or empty.
    detail: String,
}

impl From<UriError> for Error {
    fn from(e: UriError) -> Error {
        Error::Invalid {
            field: "uri",
            message: e.to_string(),
        }
    }
}

fn invalid(uri: &str, why: &str) -> UriError {
    UriError {
        text: uri.to_string(),
        detail: why.to_string(),
    }
}

impl Uri {
    /// Parses `text`; the error names the text and shows the form.
    pub fn parse(text: &str) -> std::result::Result<Uri, UriError> {
        let (scheme, rest) = text.split_once("://").ok_or_else(|| invalid(text, ""))?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(invalid(
                text,
                " (the part before :// must be a driver such as qemu)",
            ));
        }
        let (driver, transport) = match scheme.split_once('+') {
            Some((d, t)) => (d.to_string(), Some(t.to_string())),
            None => (scheme.to_string(), None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| invalid(text, " (an IPv6 host needs its closing ])"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| {
                invalid(text, &format!(" (port '{p}' is not a number up to 65535)"))
            })?),
        };
        let query = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.to_string(), String::new()),
            })
            .collect();
        Ok(Uri {
            text: text.to_string(),
            driver,
            transport,
            user,
            host: Some(host.to_string()).filter(|h| !h.is_empty()),
            port,
            path: path.to_string(),
            query,
        })
    }

    /// The URI as text, as libvirt takes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The hypervisor driver: `qemu`, `test`, ...
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The transport after `+` (`ssh`, `libssh`, `tcp`, `unix`, ...), if any.
    pub fn transport(&self) -> Option<&str> {
        self.transport.as_deref()
    }

    /// The user before `@`, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The host name or address (without brackets), if the URI names one.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The port, if given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The path, e.g. `/system`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The value of query parameter `key` as written (not unescaped).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the URI reaches a libvirt daemon on this machine: no host
    /// and no transport but the local socket.
    pub fn is_local(&self) -> bool {
        self.host.is_none() && matches!(self.transport(), None | Some("unix"))
    }

    /// Whether the URI reaches libvirt over a network transport (ssh,
    /// libssh, tcp, tls, or a host name), where a dead peer would
    /// otherwise block a call forever.
    pub fn is_remote(&self) -> bool {
        self.host.is_some() || self.transport().is_some_and(|t| t != "unix")
    }

    /// Whether the transport runs over SSH (`ssh`, `libssh`, `libssh2`).
    pub fn is_ssh(&self) -> bool {
        matches!(self.transport(), Some("ssh" | "libssh" | "libssh2"))
    }

    /// This URI with SSH options added as libvirt query parameters.
    /// The host key is always verified unless `no_verify`: the OpenSSH
    /// transport gets `no_tty=1` (BatchMode, so it never offers to trust
    /// a key) and refuses `known_hosts`, which only the libssh transports
    /// read.
    ///
    /// Parameters already in the URI win, so a user's explicit URI is
    /// never rewritten behind their back.
    pub fn with_ssh(&self, ssh: &SshOptions) -> Result<Uri> {
        let scheme = self.text.split("://").next().unwrap_or_default();
        let wants_ssh = ssh.keyfile.is_some() || ssh.known_hosts.is_some() || ssh.no_verify;
        if !self.is_ssh() {
            if wants_ssh {
                return Err(Error::Invalid {
                    field: "uri",
                    message: format!(
                        "SSH options need an ssh transport, but '{}' uses '{scheme}'; write qemu+ssh://user@host/system",
                        self.text
                    ),
                });
            }
            return Ok(self.clone());
        }
        let present = |key: &str| self.param(key).is_some();
        let openssh = self.transport() == Some("ssh");
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
            return Ok(self.clone());
        }
        let sep = if self.text.contains('?') { '&' } else { '?' };
        Ok(Uri::parse(&format!(
            "{}{sep}{}",
            self.text,
            params.join("&")
        ))?)
    }
}

impl FromStr for Uri {
    type Err = UriError;

    fn from_str(s: &str) -> std::result::Result<Uri, UriError> {
        Uri::parse(s)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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

    fn uri(s: &str) -> Uri {
        Uri::parse(s).unwrap()
    }

    fn opts(keyfile: Option<&str>, known_hosts: Option<&str>, no_verify: bool) -> SshOptions {
        SshOptions {
            keyfile: keyfile.map(str::to_string),
            known_hosts: known_hosts.map(str::to_string),
            no_verify,
        }
    }

    fn with_ssh(s: &str, ssh: &SshOptions) -> Result<String> {
        uri(s).with_ssh(ssh).map(|u| u.to_string())
    }

    #[test]
    fn the_parts_of_a_remote_uri_are_read() {
        let u = uri("qemu+libssh://root@10.0.0.2:2222/system?sshauth=privkey&keyfile=/k");
        assert_eq!(u.driver(), "qemu");
        assert_eq!(u.transport(), Some("libssh"));
        assert_eq!(u.user(), Some("root"));
        assert_eq!(u.host(), Some("10.0.0.2"));
        assert_eq!(u.port(), Some(2222));
        assert_eq!(u.path(), "/system");
        assert_eq!(u.param("sshauth"), Some("privkey"));
        assert_eq!(u.param("keyfile"), Some("/k"));
        assert_eq!(u.param("socket"), None);
        assert_eq!(
            u.to_string(),
            "qemu+libssh://root@10.0.0.2:2222/system?sshauth=privkey&keyfile=/k"
        );
        let u = uri("qemu+ssh://[fd00::2]:22/system");
        assert_eq!(u.host(), Some("fd00::2"));
        assert_eq!(u.port(), Some(22));
        let u = uri("qemu:///system?socket=/run/x.sock");
        assert_eq!((u.host(), u.path()), (None, "/system"));
        assert_eq!(u.param("socket"), Some("/run/x.sock"));
    }

    #[test]
    fn only_network_transports_count_as_remote() {
        for s in [
            "qemu+ssh://root@h/system",
            "qemu+libssh://root@10.0.0.2/system?sshauth=privkey",
            "qemu+tcp://h/system",
            "qemu://h/system",
        ] {
            assert!(uri(s).is_remote(), "{s}");
            assert!(!uri(s).is_local(), "{s}");
        }
        for s in ["qemu:///system", "qemu+unix:///system", "test:///default"] {
            assert!(!uri(s).is_remote(), "{s}");
            assert!(uri(s).is_local(), "{s}");
        }
    }

    #[test]
    fn text_that_is_no_uri_is_refused_naming_it_and_the_form() {
        for s in [
            "qemu",
            "/system",
            "://h/system",
            "qemu://h:99999/system",
            "qemu+ssh://[fd00::2/x",
        ] {
            let err = Error::from(Uri::parse(s).unwrap_err());
            assert!(
                matches!(err, Error::Invalid { field: "uri", .. }),
                "{s}: {err}"
            );
            assert!(err.to_string().contains("qemu:///system"), "{err}");
            assert!(err.to_string().contains(s), "{err}");
        }
    }

    #[test]
    fn ssh_options_become_query_parameters() {
        let ssh = opts(Some("/root/.ssh/id ed"), Some("/tmp/kh"), false);
        let u = uri("qemu+libssh://root@10.0.0.2/system")
            .with_ssh(&ssh)
            .unwrap();
        assert_eq!(
            u.to_string(),
            "qemu+libssh://root@10.0.0.2/system?keyfile=/root/.ssh/id%20ed&known_hosts=/tmp/kh"
        );
        assert_eq!(u.param("known_hosts"), Some("/tmp/kh"));
    }

    #[test]
    fn known_hosts_with_the_openssh_transport_is_refused_naming_the_way_out() {
        // libvirt's `ssh` transport runs OpenSSH with only keyfile and
        // no_verify: a known_hosts given there would silently do nothing.
        let ssh = opts(None, Some("/tmp/kh"), false);
        let err = with_ssh("qemu+ssh://root@10.0.0.2/system", &ssh).unwrap_err();
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
        let err = with_ssh(
            "qemu+ssh://root@10.0.0.2/system?known_hosts=/tmp/kh",
            &SshOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("qemu+libssh://"), "{err}");
    }

    #[test]
    fn the_openssh_transport_never_prompts_so_an_unknown_or_changed_key_fails() {
        let u = with_ssh("qemu+ssh://root@h/system", &SshOptions::default()).unwrap();
        assert_eq!(u, "qemu+ssh://root@h/system?no_tty=1");
    }

    #[test]
    fn ssh_options_keep_parameters_the_user_wrote() {
        let ssh = opts(Some("/k"), None, true);
        let u = with_ssh("qemu+ssh://h/system?keyfile=/mine", &ssh).unwrap();
        assert_eq!(u, "qemu+ssh://h/system?keyfile=/mine&no_verify=1");
        let u = with_ssh("qemu+ssh://h/system?no_tty=0", &SshOptions::default()).unwrap();
        assert_eq!(u, "qemu+ssh://h/system?no_tty=0");
    }

    #[test]
    fn ssh_options_on_a_local_uri_are_refused() {
        let ssh = opts(Some("/k"), None, false);
        let err = with_ssh("qemu:///system", &ssh).unwrap_err();
        assert!(err.to_string().contains("qemu+ssh://"), "{err}");
    }
}

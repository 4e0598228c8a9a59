//! The one message the launcher sends a warm VM: its job and what goes with it.

use std::fmt;

use crate::json::{self, Value};

/// What a warm VM needs to run its job. Its `Debug` leaves the token out.
#[derive(Clone, PartialEq)]
pub struct Message {
    /// The Buildkite job to acquire (`--acquire-job`).
    pub job: String,
    /// The job acquisition token (`BUILDKITE_AGENT_TOKEN`).
    pub token: String,
    /// The VM's host name from now on (the agent's name).
    pub hostname: String,
    /// The launcher's clock, seconds since the Unix epoch: a VM that
    /// waited long may have drifted, and TLS wants a right clock.
    pub time: f64,
    /// Whether to renew the DHCP lease (so DNS learns the new host name).
    pub renew_dhcp: bool,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("job", &self.job)
            .field("token", &"<redacted>")
            .field("hostname", &self.hostname)
            .field("time", &self.time)
            .field("renew_dhcp", &self.renew_dhcp)
            .finish()
    }
}

/// Why a line is not a usable message; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError(pub String);

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MessageError {}

fn bad(text: String) -> MessageError {
    MessageError(text)
}

impl Message {
    /// Parses one line (a JSON object), checking each field.
    pub fn parse(line: &str) -> Result<Message, MessageError> {
        let mut fields =
            json::parse_object(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let mut string = |key: &str| match fields.remove(key) {
            Some(Value::Str(s)) => Ok(s),
            Some(_) => Err(bad(format!("{key}: must be a string"))),
            None => Err(bad(format!("{key}: missing"))),
        };
        let job = string("job")?;
        let token = string("token")?;
        let hostname = string("hostname")?;
        let time = match fields.remove("time") {
            Some(Value::Num(n)) => n,
            Some(_) => return Err(bad("time: must be a number (Unix seconds)".into())),
            None => return Err(bad("time: missing".into())),
        };
        let renew_dhcp = match fields.remove("renew_dhcp") {
            Some(Value::Bool(b)) => b,
            None | Some(Value::Null) => false,
            Some(_) => return Err(bad("renew_dhcp: must be true or false".into())),
        };
        let msg = Message {
            job,
            token,
            hostname,
            time,
            renew_dhcp,
        };
        msg.check()?;
        Ok(msg)
    }

    /// Checks each field as the guest will use it: the job and token go
    /// on a command line and into the environment, the host name to the
    /// kernel, the time to the clock.
    pub fn check(&self) -> Result<(), MessageError> {
        let ok_job = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if self.job.is_empty() || self.job.len() > 64 || !self.job.chars().all(ok_job) {
            return Err(bad(
                "job: must be a Buildkite job id (1-64 letters, digits and '-')".into(),
            ));
        }
        if self.token.is_empty()
            || self.token.len() > 4096
            || self.token.chars().any(|c| !c.is_ascii_graphic())
        {
            return Err(bad(
                "token: must be 1-4096 printable ASCII characters, no spaces".into(),
            ));
        }
        if !valid_hostname(&self.hostname) {
            return Err(bad(format!(
                "hostname: {:?} is not a host name (1-64 characters; labels of letters, digits and '-', not starting or ending with '-')",
                self.hostname
            )));
        }
        if !(self.time >= 1.0 && self.time < 1e11) {
            return Err(bad(format!(
                "time: {} is not a time (seconds since 1970)",
                self.time
            )));
        }
        Ok(())
    }

    /// The message as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        let mut out = String::from("{\"job\":");
        json::push_string(&mut out, &self.job);
        out.push_str(",\"token\":");
        json::push_string(&mut out, &self.token);
        out.push_str(",\"hostname\":");
        json::push_string(&mut out, &self.hostname);
        // Whole seconds print as integers; `{}` of an f64 never uses an exponent.
        out.push_str(&format!(
            ",\"time\":{},\"renew_dhcp\":{}}}",
            self.time, self.renew_dhcp
        ));
        out
    }
}

/// A name `sethostname` takes and DHCP servers pass on: at most 64 bytes
/// (the kernel's limit), dot-separated labels of letters, digits and '-'.
fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod test {
    use super::*;

    fn sample() -> Message {
        Message {
            job: "01901234-5678-4abc-8def-0123456789ab".into(),
            token: "bkjat_abc.DEF-123".into(),
            hostname: "debian-0190-x7k2".into(),
            time: 1_765_110_000.0,
            renew_dhcp: true,
        }
    }

    #[test]
    fn a_message_reads_back_as_written() {
        let m = sample();
        let line = m.to_line();
        assert_eq!(
            line,
            r#"{"job":"01901234-5678-4abc-8def-0123456789ab","token":"bkjat_abc.DEF-123","hostname":"debian-0190-x7k2","time":1765110000,"renew_dhcp":true}"#
        );
        assert_eq!(Message::parse(&line).unwrap(), m);
        let frac = Message {
            time: 1_765_110_000.25,
            ..sample()
        };
        assert_eq!(Message::parse(&frac.to_line()).unwrap(), frac);
    }

    #[test]
    fn renew_dhcp_defaults_to_false_and_unknown_keys_are_ignored() {
        let m = Message::parse(r#"{"job":"j-1","token":"t","hostname":"h","time":5,"later":"x"}"#)
            .unwrap();
        assert!(!m.renew_dhcp);
        assert_eq!(m.hostname, "h");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#"{"token":"t","hostname":"h","time":5}"#, "job: missing"),
            (
                r#"{"job":7,"token":"t","hostname":"h","time":5}"#,
                "job: must be a string",
            ),
            (
                r#"{"job":"a b","token":"t","hostname":"h","time":5}"#,
                "job: must be",
            ),
            (
                r#"{"job":"--x;rm","token":"t","hostname":"h","time":5}"#,
                "job: must be",
            ),
            (r#"{"job":"j","hostname":"h","time":5}"#, "token: missing"),
            (
                r#"{"job":"j","token":"a b","hostname":"h","time":5}"#,
                "token: must be",
            ),
            (
                r#"{"job":"j","token":"","hostname":"h","time":5}"#,
                "token: must be",
            ),
            (
                r#"{"job":"j","token":"t","hostname":"-h","time":5}"#,
                "hostname: \"-h\"",
            ),
            (
                r#"{"job":"j","token":"t","hostname":"a..b","time":5}"#,
                "hostname:",
            ),
            (
                r#"{"job":"j","token":"t","hostname":"h_1","time":5}"#,
                "hostname:",
            ),
            (r#"{"job":"j","token":"t","hostname":"h"}"#, "time: missing"),
            (
                r#"{"job":"j","token":"t","hostname":"h","time":"5"}"#,
                "time: must be a number",
            ),
            (
                r#"{"job":"j","token":"t","hostname":"h","time":-5}"#,
                "time: -5 is not",
            ),
            (
                r#"{"job":"j","token":"t","hostname":"h","time":5,"renew_dhcp":1}"#,
                "renew_dhcp:",
            ),
            ("ready", "not a JSON object"),
        ];
        for (line, want) in cases {
            let err = Message::parse(line).unwrap_err().to_string();
            assert!(err.starts_with(want), "{line}: got {err:?}, want {want:?}");
        }
        let long = "a".repeat(65);
        assert!(Message::parse(&format!(
            r#"{{"job":"j","token":"t","hostname":"{long}","time":5}}"#
        ))
        .is_err());
    }

    #[test]
    fn debug_leaves_the_token_out() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("bkjat_abc"), "{text}");
        assert!(text.contains("debian-0190-x7k2"));
    }
}

//! Checking Buildkite webhooks: `X-Buildkite-Token` (the token itself) or
//! `X-Buildkite-Signature: timestamp=T,signature=S` with S the hex
//! HMAC-SHA256 of `T.body` under the token. Both are compared in
//! constant time; signatures older (or newer) than the allowed age are
//! refused, so a captured request cannot be replayed later.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Neither header is present.
    #[error("no X-Buildkite-Token or X-Buildkite-Signature header")]
    Unsigned,
    /// The token does not match.
    #[error("the X-Buildkite-Token does not match")]
    BadToken,
    /// The signature header is not `timestamp=T,signature=S`.
    #[error("the X-Buildkite-Signature header is malformed")]
    Malformed,
    /// The HMAC does not match.
    #[error("the signature does not match the body")]
    BadSignature,
    /// The timestamp is too far from now.
    #[error("the signature's timestamp is {0} s away from now; refused as a replay")]
    Stale(u64),
}

/// Checks one delivery. `token` and `signature` are the header values,
/// `now` the current Unix time.
pub fn verify(
    token: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    secret: &Secret,
    max_age: Duration,
    now: u64,
) -> Result<(), Refused> {
    if let Some(sig) = signature {
        let mut ts = None;
        let mut hexsig = None;
        for part in sig.split(',') {
            match part.trim().split_once('=') {
                Some(("timestamp", v)) => ts = v.parse::<u64>().ok(),
                Some(("signature", v)) => hexsig = hex::decode(v).ok(),
                _ => {}
            }
        }
        let (Some(ts), Some(given)) = (ts, hexsig) else {
            return Err(Refused::Malformed);
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(ts.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&given)
            .map_err(|_| Refused::BadSignature)?;
        let age = now.abs_diff(ts);
        if age > max_age.as_secs() {
            return Err(Refused::Stale(age));
        }
        return Ok(());
    }
    match token {
        Some(t) if constant_time_eq(t.as_bytes(), secret.expose().as_bytes()) => Ok(()),
        Some(_) => Err(Refused::BadToken),
        None => Err(Refused::Unsigned),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The event a delivery carries (`job.scheduled`, `ping`, ...).
pub fn event_of(header: Option<&str>, body: &[u8]) -> Option<String> {
    if let Some(h) = header {
        return Some(h.to_string());
    }
    #[derive(serde::Deserialize)]
    struct Body {
        event: String,
    }
    serde_json::from_slice::<Body>(body).ok().map(|b| b.event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, ts: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        format!(
            "timestamp={ts},signature={}",
            hex::encode(mac.finalize().into_bytes())
        )
    }

    const AGE: Duration = Duration::from_secs(300);

    #[test]
    fn a_signed_delivery_is_accepted_and_a_changed_body_is_not() {
        let s = Secret::new("hook-secret");
        let body = br#"{"event":"job.scheduled"}"#;
        let sig = sign("hook-secret", 1000, body);
        assert_eq!(verify(None, Some(&sig), body, &s, AGE, 1010), Ok(()));
        assert_eq!(
            verify(None, Some(&sig), b"{}", &s, AGE, 1010),
            Err(Refused::BadSignature)
        );
        let other = sign("other", 1000, body);
        assert_eq!(
            verify(None, Some(&other), body, &s, AGE, 1010),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn an_old_signature_is_refused_as_a_replay() {
        let s = Secret::new("k");
        let sig = sign("k", 1000, b"x");
        assert_eq!(
            verify(None, Some(&sig), b"x", &s, AGE, 1000 + 301),
            Err(Refused::Stale(301))
        );
    }

    #[test]
    fn tokens_and_garbage_headers() {
        let s = Secret::new("tok");
        assert_eq!(verify(Some("tok"), None, b"", &s, AGE, 0), Ok(()));
        assert_eq!(
            verify(Some("tok2"), None, b"", &s, AGE, 0),
            Err(Refused::BadToken)
        );
        assert_eq!(verify(None, None, b"", &s, AGE, 0), Err(Refused::Unsigned));
        assert_eq!(
            verify(None, Some("timestamp=x,signature=zz"), b"", &s, AGE, 0),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn the_event_comes_from_the_header_or_the_body() {
        assert_eq!(event_of(Some("ping"), b""), Some("ping".into()));
        assert_eq!(
            event_of(None, br#"{"event":"job.scheduled","job":{}}"#),
            Some("job.scheduled".into())
        );
        assert_eq!(event_of(None, b"nonsense"), None);
    }
}

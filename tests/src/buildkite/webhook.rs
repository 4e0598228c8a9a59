//! Webhook deliveries and their `X-Buildkite-Signature` scheme:
//! `timestamp=T,signature=hex(HMAC-SHA256(secret, "T.body"))`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::config::{WebhookAuth, WebhookConfig};
use super::timefmt::unix_secs;

/// One rendered event waiting to be sent.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// `job.scheduled`, `job.started` or `job.finished`.
    pub event: String,
    /// The job's UUID.
    pub job_id: String,
    /// The JSON body.
    pub body: String,
}

/// One attempted delivery.
#[derive(Clone, Debug)]
pub struct WebhookDelivery {
    /// The event name sent in `X-Buildkite-Event`.
    pub event: String,
    /// The job it was about.
    pub job_id: String,
    /// The exact body sent.
    pub body: String,
    /// `X-Buildkite-Signature` as sent, when signing.
    pub signature: Option<String>,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Deliveries so far, with a condition variable to wait for more.
#[derive(Debug, Default)]
pub struct Deliveries {
    list: Mutex<Vec<WebhookDelivery>>,
    grew: Condvar,
}

impl Deliveries {
    /// A copy of every delivery so far.
    pub fn snapshot(&self) -> Vec<WebhookDelivery> {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until at least `count` deliveries happened or `timeout` passed.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<WebhookDelivery> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        let (list, _) = self
            .grew
            .wait_timeout_while(list, timeout, |l| l.len() < count)
            .unwrap_or_else(|e| e.into_inner());
        list.clone()
    }

    fn push(&self, delivery: WebhookDelivery) {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(delivery);
        self.grew.notify_all();
    }
}

/// The `X-Buildkite-Signature` value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    format!(
        "timestamp={timestamp},signature={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

fn mac(secret: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    keyed(secret, timestamp, body)
        .finalize()
        .into_bytes()
        .to_vec()
}

fn keyed(secret: &str, timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is not `timestamp=T,signature=HEX`.
    #[error("X-Buildkite-Signature {0:?} is not of the form timestamp=T,signature=HEX")]
    Malformed(String),
    /// The HMAC does not match the body and secret.
    #[error("X-Buildkite-Signature does not match the body; check the webhook secret")]
    Mismatch,
    /// The timestamp is further from now than allowed (replay protection).
    #[error("X-Buildkite-Signature timestamp is {age_secs} s away from now, more than the {tolerance_secs} s allowed")]
    Stale {
        /// Distance from now in seconds.
        age_secs: u64,
        /// Allowed distance in seconds.
        tolerance_secs: u64,
    },
}

/// Checks an `X-Buildkite-Signature` header against `body` and `secret`,
/// refusing timestamps more than `tolerance` away from `now`.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secret: &str,
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let malformed = || SignatureError::Malformed(header.to_string());
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("timestamp", v)) => timestamp = Some(v.parse::<u64>().map_err(|_| malformed())?),
            Some(("signature", v)) => signature = Some(hex::decode(v).map_err(|_| malformed())?),
            _ => return Err(malformed()),
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(malformed());
    };
    // verify_slice compares in constant time.
    keyed(secret, timestamp, body)
        .verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)?;
    let age = unix_secs(now).abs_diff(timestamp);
    if age > tolerance.as_secs() {
        return Err(SignatureError::Stale {
            age_secs: age,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    Ok(())
}

/// Sends queued events one at a time, in order, recording each attempt.
pub async fn deliver(
    config: WebhookConfig,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    deliveries: Arc<Deliveries>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("buildkite stand-in: webhook client: {e}");
            return;
        }
    };
    while let Some(out) = queue.recv().await {
        let mut request = client
            .post(&config.url)
            .header("Content-Type", "application/json")
            .header("User-Agent", "Buildkite-Request")
            .header("X-Buildkite-Event", &out.event);
        let mut signature = None;
        match &config.auth {
            WebhookAuth::Token(token) => request = request.header("X-Buildkite-Token", token),
            WebhookAuth::Secret(secret) => {
                let value = sign(secret, unix_secs(SystemTime::now()), out.body.as_bytes());
                request = request.header("X-Buildkite-Signature", &value);
                signature = Some(value);
            }
        }
        let result = request.body(out.body.clone()).send().await;
        deliveries.push(WebhookDelivery {
            event: out.event,
            job_id: out.job_id,
            body: out.body,
            signature,
            status: result.as_ref().ok().map(|r| r.status().as_u16()),
            error: result.err().map(|e| e.to_string()),
        });
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_body_and_secret() {
        let now = SystemTime::now();
        let header = sign("s3cret", unix_secs(now), b"{\"a\":1}");
        let ok = Duration::from_secs(300);
        assert_eq!(
            verify_signature(&header, b"{\"a\":1}", "s3cret", now, ok),
            Ok(())
        );
        assert_eq!(
            verify_signature(&header, b"{\"a\":2}", "s3cret", now, ok),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&header, b"{\"a\":1}", "other", now, ok),
            Err(SignatureError::Mismatch)
        );
        let later = now + Duration::from_secs(600);
        assert!(matches!(
            verify_signature(&header, b"{\"a\":1}", "s3cret", later, ok),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            verify_signature("sig=abc", b"", "s3cret", now, ok),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // HMAC-SHA256("key", "1.body") computed with `openssl dgst -sha256 -hmac key`.
        assert_eq!(
            sign("key", 1, b"body"),
            "timestamp=1,signature=91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5"
        );
    }
}

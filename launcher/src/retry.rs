//! The one retry helper: calls to Buildkite that fail for a reason that
//! may pass (429, 5xx, timeouts, refused connections, bodies that do not
//! parse) are tried again after exponential backoff with full jitter, or
//! after the time the server asks for (`Retry-After`, `RateLimit-Reset`).
//!
//! A server's wait is a number from the network: it is read by
//! [`server_wait`], which never fails and never gives more than
//! [`MAX_SERVER_WAIT`], so no answer can panic the clock arithmetic or
//! park the launcher for hours.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The longest wait taken from a server's `Retry-After` or
/// `RateLimit-Reset` (five minutes, Buildkite's longest rate-limit
/// window is one): a longer value, or one too big for the clock, counts
/// as this much.
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(5 * 60);

/// The longest sleep between two tries of one request, whatever the
/// server asks: a pass stalled much longer would starve the systemd
/// watchdog, which is fed only while passes complete.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// How long a server asks us to wait, from the value of a `Retry-After`
/// or `RateLimit-Reset` header: whole seconds or an HTTP date (`Sun, 06
/// Nov 1994 08:49:37 GMT`, measured from `now`), at most
/// [`MAX_SERVER_WAIT`]; a date already past is no wait. Anything else
/// (negative, fractional, words) is no hint at all.
pub fn server_wait(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 is still "very long".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_SERVER_WAIT));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_SERVER_WAIT),
    )
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// May pass if tried again later; `wait` is the server's hint.
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// How long the server asked us to wait.
        wait: Option<Duration>,
    },
    /// Will not pass by retrying (bad token, unknown job, refused input).
    #[error("{message}")]
    Permanent {
        /// HTTP status, when there was one.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
}

impl ApiError {
    /// The same error with `what` (the request) in front of its message.
    pub fn context(self, what: &str) -> ApiError {
        match self {
            ApiError::Transient { message, wait } => ApiError::Transient {
                message: format!("{what}: {message}"),
                wait,
            },
            ApiError::Permanent { status, message } => ApiError::Permanent {
                status,
                message: format!("{what}: {message}"),
            },
        }
    }

    /// The HTTP status of a permanent error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Permanent { status, .. } => *status,
            ApiError::Transient { .. } => None,
        }
    }
}

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Backoff before the second try; doubles each time.
    pub base: Duration,
    /// Longest backoff.
    pub max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts: 5,
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl Policy {
    /// The backoff before try `n + 1` (n >= 1): uniform in [0, min(max, base * 2^(n-1))].
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(16))
            .min(self.max);
        cap.mul_f64(jitter())
    }
}

/// Runs `call` until it succeeds, fails permanently, or the attempts are
/// used up; returns the last error then. `on_retry` hears each retry.
pub async fn retry<T, F, Fut>(
    policy: Policy,
    mut call: F,
    mut on_retry: impl FnMut(&ApiError, Duration),
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut n = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e @ ApiError::Permanent { .. }) => return Err(e),
            Err(e) if n >= policy.attempts => return Err(e),
            Err(e) => {
                let wait = match &e {
                    ApiError::Transient {
                        wait: Some(hint), ..
                    } => (*hint).min(MAX_RETRY_WAIT),
                    _ => policy.backoff(n),
                };
                on_retry(&e, wait);
                tokio::time::sleep(wait).await;
                n += 1;
            }
        }
    }
}

/// [`retry`] for one Buildkite request named `what`: each retry is
/// logged, and the final error names the request.
pub async fn retry_request<T, F, Fut>(policy: Policy, what: &str, call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    retry(policy, call, |e, wait| {
        eprintln!(
            "buildkite: {what}: {e}; retrying in {} ms",
            wait.as_millis()
        )
    })
    .await
    .map_err(|e| e.context(what))
}

static SEED: AtomicU64 = AtomicU64::new(0);

/// A number in [0, 1) that differs between calls and processes (xorshift
/// seeded from the clock and the pid); good enough to spread retries.
fn jitter() -> f64 {
    let mut x = SEED.load(Ordering::Relaxed);
    if x == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        x = t ^ (u64::from(std::process::id()) << 32) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    SEED.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn a_server_wait_is_whole_seconds_or_a_date_and_at_most_five_minutes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let wait = |v: &str| server_wait(v, now);
        assert_eq!(wait("7"), Some(Duration::from_secs(7)));
        assert_eq!(wait(" 0 "), Some(Duration::ZERO));
        assert_eq!(wait("301"), Some(MAX_SERVER_WAIT));
        assert_eq!(wait("18446744073709551615"), Some(MAX_SERVER_WAIT));
        assert_eq!(wait("99999999999999999999999999"), Some(MAX_SERVER_WAIT));
        assert_eq!(wait("-5"), None);
        assert_eq!(wait("1.5"), None);
        assert_eq!(wait("soon"), None);
        assert_eq!(wait(""), None);
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            wait("Tue, 14 Nov 2023 22:13:50 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(wait("Tue, 14 Nov 2023 22:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(wait("Fri, 31 Dec 9999 23:59:59 GMT"), Some(MAX_SERVER_WAIT));
    }

    #[test]
    fn backoff_grows_to_the_cap_and_is_jittered() {
        let p = Policy::default();
        for n in 1..20 {
            let cap = p.base.saturating_mul(1 << (n - 1).min(16)).min(p.max);
            let b = p.backoff(n);
            assert!(b <= cap, "{n}: {b:?} > {cap:?}");
        }
        let samples: Vec<Duration> = (0..20).map(|_| p.backoff(5)).collect();
        assert!(samples.windows(2).any(|w| w[0] != w[1]), "no jitter");
    }

    #[tokio::test]
    async fn transient_errors_are_retried_and_permanent_ones_are_not() {
        let p = Policy {
            attempts: 4,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let calls = AtomicU32::new(0);
        let got = retry(
            p,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    Err(ApiError::Transient {
                        message: "503".into(),
                        wait: None,
                    })
                } else {
                    Ok(n)
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(got, Ok(2));

        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry(
            p,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ApiError::Permanent {
                    status: Some(401),
                    message: "bad token".into(),
                })
            },
            |_, _| {},
        )
        .await;
        assert_eq!(got.unwrap_err().status(), Some(401));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry(
            p,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ApiError::Transient {
                    message: "timeout".into(),
                    wait: Some(Duration::from_millis(1)),
                })
            },
            |_, _| {},
        )
        .await;
        assert!(got.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}

//! What both Buildkite API clients (Stacks and REST) share: the HTTP
//! client, sending a request and sorting its answer into retryable and
//! permanent failures, the server's wait hint, and the text helpers for
//! error messages and URLs.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::retry::{server_wait, ApiError};

/// Shortens `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" ({u})"), "").replace(u.as_str(), "");
    }
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

pub(crate) fn message_of(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Msg {
        message: String,
    }
    match serde_json::from_slice::<Msg>(bytes) {
        Ok(m) => m.message,
        Err(_) => truncate(&String::from_utf8_lossy(bytes), 200),
    }
}

/// The HTTP client both Buildkite APIs use, with a request `timeout`.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!(
            "buildkite-agent-launcher/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .expect("a plain reqwest client builds")
}

/// Sends `req` and sorts the answer: no answer, 429 and 5xx are worth
/// retrying (with the server's wait hint); another failure status is
/// permanent, its message followed by `hint(status)`; a success gives
/// the headers and the body.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    hint: impl Fn(u16) -> &'static str,
) -> Result<(HeaderMap, Vec<u8>), ApiError> {
    let resp = req.send().await.map_err(|e| ApiError::Transient {
        message: if e.is_timeout() {
            "timed out".into()
        } else {
            format!("cannot reach Buildkite: {}", without_url(&e))
        },
        wait: None,
    })?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(|e| ApiError::Transient {
        message: format!("reading the answer: {}", without_url(&e)),
        wait: None,
    })?;
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(ApiError::Transient {
            message: format!("HTTP {status}"),
            wait: wait_hint(&headers),
        });
    }
    if !status.is_success() {
        return Err(ApiError::Permanent {
            status: Some(status.as_u16()),
            message: format!(
                "HTTP {status}: {}{}",
                message_of(&bytes),
                hint(status.as_u16())
            ),
        });
    }
    Ok((headers, bytes.to_vec()))
}

/// The server's hint of how long to wait: `Retry-After` (seconds or a
/// date), else `RateLimit-Reset` (seconds until the window resets); at
/// most [`crate::retry::MAX_SERVER_WAIT`], a value that is neither is no hint.
pub fn wait_hint(h: &HeaderMap) -> Option<Duration> {
    let wait = |name: &str| server_wait(h.get(name)?.to_str().ok()?, SystemTime::now());
    wait(RETRY_AFTER.as_str()).or_else(|| wait("ratelimit-reset"))
}

/// `s` percent-encoded for a URL path or query.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
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
    use crate::retry::MAX_SERVER_WAIT;

    #[test]
    fn the_wait_hint_prefers_retry_after() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", "7".parse().unwrap());
        assert_eq!(wait_hint(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(wait_hint(&h), Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_wait_hint_is_never_longer_than_five_minutes() {
        let hint = |retry_after: &str, reset: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, retry_after.parse().unwrap());
            h.insert("ratelimit-reset", reset.parse().unwrap());
            wait_hint(&h)
        };
        assert_eq!(
            hint("18446744073709551615", "1"),
            Some(MAX_SERVER_WAIT),
            "huge"
        );
        assert_eq!(hint("86400", "1"), Some(MAX_SERVER_WAIT));
        // A Retry-After that is no wait gives way to RateLimit-Reset.
        assert_eq!(hint("-1", "9"), Some(Duration::from_secs(9)), "negative");
        assert_eq!(hint("later", "9"), Some(Duration::from_secs(9)));
        assert_eq!(hint("later", "-9"), None);
        // An HTTP date: one long past is no wait, one far ahead is capped.
        assert_eq!(
            hint("Thu, 01 Jan 1970 00:00:00 GMT", "9"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            hint("Fri, 31 Dec 9999 23:59:59 GMT", "9"),
            Some(MAX_SERVER_WAIT)
        );
    }

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 5), "abc");
    }
}

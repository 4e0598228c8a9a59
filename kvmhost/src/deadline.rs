//! Deadlines from user-given timeouts, which may be absurdly long.

use std::time::{Duration, Instant};

/// The instant `timeout` from now; a timeout too long for the clock
/// (`Instant + Duration` would panic) waits, in effect, for ever.
pub fn after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(FOREVER))
        .unwrap_or(now)
}

/// About a century: longer than any build or host will run.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_timeout_gives_a_far_deadline_not_a_panic() {
        let d = after(Duration::MAX);
        assert!(d > Instant::now() + Duration::from_secs(3600 * 24 * 365));
        let d = after(Duration::from_secs(5));
        assert!(d <= Instant::now() + Duration::from_secs(5));
    }
}

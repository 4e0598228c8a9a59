//! Durations as people write them in config files and on command lines:
//! `90`, `30s`, `5m`, `1h30m`, `30d`.

use std::time::Duration;

/// Text that is not a duration, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a duration: write seconds (90) or a number with a unit (30s, 5m, 1h30m)")]
pub struct NotADuration(pub String);

/// Parses a bare number of seconds or one or more `<number><unit>` parts
/// with units `ms`, `s`, `m`, `h`, `d` (and their long forms like `sec`,
/// `min`, `hours`); decimals are allowed (`1.5m`).
pub fn parse_duration(s: &str) -> Result<Duration, NotADuration> {
    let bad = || NotADuration(s.to_string());
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(secs).ok_or_else(bad);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match rest[..unit_end].trim() {
            "ms" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    seconds(total).ok_or_else(bad)
}

fn seconds(secs: f64) -> Option<Duration> {
    // `try_`: a number too large for a Duration is an error, not a panic.
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_units_add_up() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("90"), Duration::from_secs(90));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5m"), Duration::from_secs(90));
        assert_eq!(d("2d"), Duration::from_secs(172_800));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("10min"), Duration::from_secs(600));
    }

    #[test]
    fn durations_too_long_for_the_clock_are_an_error_not_a_panic() {
        for s in [
            "99999999999999999999h",
            "1e300",
            "99999999999999999999999999d",
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.to_string().contains(&format!("'{s}'")), "{s}: {e}");
        }
    }

    #[test]
    fn nonsense_is_rejected_with_the_input_named() {
        for s in ["", "m", "5x", "-3", "5m3", "1..2s", "s5"] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.to_string().contains(&format!("'{s}'")), "{s}: {e}");
        }
    }
}

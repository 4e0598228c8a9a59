//! Hours of the week, as `warm_hours` gives them: when a definition's
//! warm VMs are kept. Outside them the launcher lets its warm VMs go, so
//! their hosts may sleep.
//!
//! A spec is one or more windows separated by `;`, each `DAYS HH:MM-HH:MM`
//! in the launcher's local time (`TZ`, else `/etc/localtime`):
//! - DAYS: `Mon`..`Sun`, ranges (`Mon-Fri`, `Fri-Mon` wraps), lists
//!   (`Mon,Wed,Fri`, `Mon-Wed,Sat`), or `daily`;
//! - the range starts at the first minute and ends before the second;
//!   `24:00` ends at midnight; an end before the start runs on past
//!   midnight into the next day (`Mon-Fri 22:00-06:00` ends on Saturday
//!   morning).
//!
//! ```
//! use launcher::hours::{Hours, LocalTime};
//! let h: Hours = "Mon-Fri 08:00-20:00; Sat 10:00-14:00".parse().unwrap();
//! assert!(h.contains(LocalTime { weekday: 0, minute: 8 * 60 }));
//! assert!(!h.contains(LocalTime { weekday: 0, minute: 20 * 60 }));
//! assert!(h.contains(LocalTime { weekday: 5, minute: 13 * 60 + 59 }));
//! assert!(!h.contains(LocalTime { weekday: 6, minute: 12 * 60 }));
//! ```

use std::fmt;
use std::str::FromStr;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A moment of the week in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// 0 for Monday to 6 for Sunday.
    pub weekday: u8,
    /// Minutes since midnight, 0-1439.
    pub minute: u16,
}

impl LocalTime {
    /// Now, in the launcher's local time (the C library's, which reads
    /// `TZ` and `/etc/localtime`).
    pub fn now() -> LocalTime {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as libc::time_t;
        // SAFETY: an all-zero `tm` is a valid value to be written over.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid for the call; localtime_r is
        // the thread-safe form.
        if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
            // No local time: take UTC's.
            let day = now.div_euclid(86_400);
            return LocalTime {
                // 1970-01-01 was a Thursday.
                weekday: ((day + 3).rem_euclid(7)) as u8,
                minute: (now.rem_euclid(86_400) / 60) as u16,
            };
        }
        LocalTime {
            weekday: ((tm.tm_wday + 6) % 7) as u8,
            minute: (tm.tm_hour * 60 + tm.tm_min) as u16,
        }
    }
}

/// One window: the days it starts on, and its minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    days: [bool; 7],
    start: u16,
    end: u16,
}

impl Window {
    fn contains(&self, t: LocalTime) -> bool {
        let day = t.weekday as usize % 7;
        if self.start < self.end {
            self.days[day] && (self.start..self.end).contains(&t.minute)
        } else {
            // Past midnight: the evening of a day it starts on, or the
            // morning after one.
            (self.days[day] && t.minute >= self.start)
                || (self.days[(day + 6) % 7] && t.minute < self.end)
        }
    }
}

/// The hours of a `warm_hours` spec, and the spec as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours {
    windows: Vec<Window>,
    spec: String,
}

impl Hours {
    /// Whether `t` falls in one of the windows.
    pub fn contains(&self, t: LocalTime) -> bool {
        self.windows.iter().any(|w| w.contains(t))
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// Why a spec cannot be read; the text says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoursError(String);

impl fmt::Display for HoursError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HoursError {}

const SHAPE: &str =
    "write DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 08:00-20:00\", windows separated by ';'";

impl FromStr for Hours {
    type Err = HoursError;

    fn from_str(spec: &str) -> Result<Hours, HoursError> {
        let mut windows = Vec::new();
        for part in spec.split(';') {
            let part = part.trim();
            let (days, range) = part
                .rsplit_once(char::is_whitespace)
                .ok_or_else(|| HoursError(format!("{part:?}: {SHAPE}")))?;
            let days = parse_days(days.trim())?;
            let (start, end) = range
                .split_once('-')
                .ok_or_else(|| HoursError(format!("{range:?}: {SHAPE}")))?;
            let (start, end) = (minute(start, false)?, minute(end, true)?);
            // 24:00 ends at midnight, as 00:00 would (00:00-24:00 is the
            // whole day).
            let end = if end == 24 * 60 && start != 0 { 0 } else { end };
            if start == end {
                return Err(HoursError(format!(
                    "{range:?} is empty; give a range that is not, or 00:00-24:00 for the whole day"
                )));
            }
            windows.push(Window { days, start, end });
        }
        Ok(Hours {
            windows,
            spec: spec.trim().to_string(),
        })
    }
}

/// `Mon-Fri`, `Mon,Wed`, `Fri-Mon`, `daily`.
fn parse_days(text: &str) -> Result<[bool; 7], HoursError> {
    let mut days = [false; 7];
    if text.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    let day = |name: &str| {
        let lower = name.trim().to_ascii_lowercase();
        DAYS.iter().position(|d| *d == lower).ok_or_else(|| {
            HoursError(format!(
                "{name:?} is no day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges such as Mon-Fri, or daily"
            ))
        })
    };
    for item in text.split(',') {
        match item.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                let mut d = from;
                loop {
                    days[d] = true;
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day(item)?] = true,
        }
    }
    Ok(days)
}

/// `HH:MM` as minutes since midnight; `24:00` only as an end.
fn minute(text: &str, end: bool) -> Result<u16, HoursError> {
    let bad = || {
        HoursError(format!(
            "{text:?} is no time of day; write HH:MM from 00:00 to 23:59 (24:00 as an end)"
        ))
    };
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    match (h, m) {
        (24, 0) if end => Ok(24 * 60),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn at(weekday: u8, hh: u16, mm: u16) -> LocalTime {
        LocalTime {
            weekday,
            minute: hh * 60 + mm,
        }
    }

    fn hours(spec: &str) -> Hours {
        spec.parse().unwrap()
    }

    #[test]
    fn weekday_hours_hold_from_the_first_minute_to_before_the_last() {
        let h = hours("Mon-Fri 08:00-20:00");
        assert!(h.contains(at(0, 8, 0)));
        assert!(h.contains(at(4, 19, 59)));
        assert!(!h.contains(at(4, 20, 0)));
        assert!(!h.contains(at(0, 7, 59)));
        assert!(!h.contains(at(5, 12, 0)));
        assert!(!h.contains(at(6, 12, 0)));
        assert_eq!(h.to_string(), "Mon-Fri 08:00-20:00");
    }

    #[test]
    fn ranges_wrap_the_week_and_nights_run_past_midnight() {
        let h = hours("Fri-Mon 22:00-06:00");
        // Friday night into Saturday morning ...
        assert!(h.contains(at(4, 23, 0)));
        assert!(h.contains(at(5, 5, 59)));
        // ... Monday night into Tuesday morning, and not Tuesday night.
        assert!(h.contains(at(0, 22, 0)));
        assert!(h.contains(at(1, 3, 0)));
        assert!(!h.contains(at(1, 22, 0)));
        // Thursday night: not a start day; Friday morning neither.
        assert!(!h.contains(at(3, 23, 0)));
        assert!(!h.contains(at(4, 3, 0)));
    }

    #[test]
    fn lists_several_windows_whole_days_and_midnight_ends() {
        let h = hours("mon,wed 09:00-10:00; SAT 00:00-24:00; sun 18:00-24:00");
        assert!(h.contains(at(0, 9, 30)));
        assert!(!h.contains(at(1, 9, 30)));
        assert!(h.contains(at(2, 9, 0)));
        assert!(h.contains(at(5, 0, 0)));
        assert!(h.contains(at(5, 23, 59)));
        assert!(h.contains(at(6, 23, 59)));
        assert!(!hours("sun 18:00-24:00").contains(at(0, 0, 0)));
        assert!(hours("daily 12:00-13:00").contains(at(3, 12, 30)));
    }

    #[test]
    fn bad_specs_say_what_to_write() {
        let err = |spec: &str| spec.parse::<Hours>().unwrap_err().to_string();
        assert_eq!(
            err("08:00-20:00"),
            "\"08:00-20:00\": write DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 08:00-20:00\", windows separated by ';'"
        );
        assert!(err("Mon-Fry 08:00-20:00").starts_with("\"Fry\" is no day; use Mon"));
        assert!(err("Mon 8:00-20:00").starts_with("\"8:00\" is no time of day"));
        assert!(err("Mon 08:00-24:01").starts_with("\"24:01\" is no time of day"));
        assert!(err("Mon 24:00-08:00").starts_with("\"24:00\" is no time of day"));
        assert!(err("Mon 08:00-08:00").starts_with("\"08:00-08:00\" is empty"));
        assert!(err("Mon 08:00").starts_with("\"08:00\": write DAYS"));
        assert!(err("Mon 00:00-00:00").starts_with("\"00:00-00:00\" is empty"));
        assert!(err("Mon-Fri 08:00-20:00;").contains("write DAYS"));
    }

    #[test]
    fn now_is_a_moment_of_the_week() {
        let t = LocalTime::now();
        assert!(t.weekday < 7 && t.minute < 24 * 60, "{t:?}");
    }
}

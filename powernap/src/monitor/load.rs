//! `monitor load [threshold]`: the machine is busy computing.

use super::{Monitor, MonitorError};

/// Active while the 1-minute load average exceeds the threshold.
pub struct LoadMonitor {
    threshold: Option<f64>,
}

impl LoadMonitor {
    /// `None` uses the number of CPUs (the seed's `n`).
    pub fn new(threshold: Option<f64>) -> Self {
        Self { threshold }
    }

    fn threshold(&self) -> f64 {
        self.threshold.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0)
        })
    }
}

/// The 1-minute load average from `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

impl Monitor for LoadMonitor {
    fn describe(&self) -> String {
        match self.threshold {
            Some(t) => format!("load {t}"),
            None => "load n".into(),
        }
    }

    fn check(&mut self) -> Result<bool, MonitorError> {
        let text =
            std::fs::read_to_string("/proc/loadavg").map_err(|source| MonitorError::Proc {
                path: "/proc/loadavg",
                source,
            })?;
        let load = parse_loadavg(&text).ok_or_else(|| MonitorError::ProcFormat {
            path: "/proc/loadavg",
            text: text.clone(),
        })?;
        Ok(load > self.threshold())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_one_minute_average() {
        assert_eq!(parse_loadavg("0.52 0.40 0.33 1/234 5678\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn an_impossible_threshold_is_never_active_and_zero_is_active_under_load() {
        assert!(!LoadMonitor::new(Some(1e9)).check().unwrap());
        assert!(LoadMonitor::new(Some(-1.0)).check().unwrap());
    }
}

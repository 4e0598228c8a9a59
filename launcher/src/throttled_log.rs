//! Log lines that anyone on the network can cause (refused webhooks,
//! refused or timed-out connections) are printed at most once per
//! interval; the next printed line says how many were left out, so a
//! flood shows as a count instead of filling the journal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a [`ThrottledLog`] prints by default.
pub const EVERY: Duration = Duration::from_secs(60);

/// Where the lines go.
type Sink = Box<dyn Fn(&str) + Send + Sync>;

/// Prints at most one line per interval and counts the rest.
pub struct ThrottledLog {
    every: Duration,
    sink: Sink,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Instant>,
    left_out: u64,
}

impl std::fmt::Debug for ThrottledLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrottledLog")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl ThrottledLog {
    /// Lines to standard error, at most one per `every`.
    pub fn stderr(every: Duration) -> Self {
        Self::to(every, |line| eprintln!("{line}"))
    }

    /// Lines to `sink`, at most one per `every`.
    pub fn to(every: Duration, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        ThrottledLog {
            every,
            sink: Box::new(sink),
            state: Mutex::new(State::default()),
        }
    }

    /// Prints `line()` unless a line was printed less than the interval
    /// ago; then it only counts. `line` is called only when printed.
    pub fn log(&self, line: impl FnOnce() -> String) {
        let now = Instant::now();
        let left_out = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.last.is_some_and(|t| now.duration_since(t) < self.every) {
                s.left_out += 1;
                return;
            }
            s.last = Some(now);
            std::mem::take(&mut s.left_out)
        };
        let line = line();
        match left_out {
            0 => (self.sink)(&line),
            n => (self.sink)(&format!(
                "{line} (and {n} more like it since the last line, not logged)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn captured(every: Duration) -> (ThrottledLog, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let log = ThrottledLog::to(every, move |s| l.lock().unwrap().push(s.to_string()));
        (log, lines)
    }

    #[test]
    fn a_burst_prints_one_line_and_the_next_one_counts_the_rest() {
        let (log, lines) = captured(Duration::from_millis(200));
        for i in 0..50 {
            log.log(|| format!("refused {i}"));
        }
        assert_eq!(*lines.lock().unwrap(), ["refused 0"]);
        std::thread::sleep(Duration::from_millis(250));
        log.log(|| "refused 50".into());
        log.log(|| "refused 51".into());
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "refused 0",
                "refused 50 (and 49 more like it since the last line, not logged)"
            ]
        );
    }
}

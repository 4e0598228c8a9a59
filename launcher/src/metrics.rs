//! Prometheus metrics, rendered in the text exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Bucket bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    jobs_seen: u64,
    jobs_reserved: u64,
    jobs_finished: u64,
    started: BTreeMap<(String, String), u64>,
    start_failures: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    tokens: BTreeMap<&'static str, u64>,
    scheduled_to_start: Histogram,
    wake: Histogram,
    hosts_asleep: u64,
    vms_running: u64,
    vm_seconds: f64,
    passes: u64,
    last_pass_seconds: f64,
}

/// The launcher's counters; cheap to update from any task.
#[derive(Debug, Default)]
pub struct Metrics(Mutex<Inner>);

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Jobs seen waiting in one pass.
    pub fn jobs_seen(&self, n: usize) {
        self.with(|m| m.jobs_seen += n as u64);
    }

    /// Jobs reserved for us.
    pub fn jobs_reserved(&self, n: usize) {
        self.with(|m| m.jobs_reserved += n as u64);
    }

    /// Jobs given up (`finish`).
    pub fn job_finished(&self) {
        self.with(|m| m.jobs_finished += 1);
    }

    /// A VM start call succeeded.
    pub fn vm_started(&self, host: &str, definition: &str, since_scheduled: Option<Duration>) {
        self.with(|m| {
            *m.started
                .entry((host.to_string(), definition.to_string()))
                .or_default() += 1;
            if let Some(d) = since_scheduled {
                m.scheduled_to_start.observe(d.as_secs_f64());
            }
        });
    }

    /// A host failed to wake or to start a VM.
    pub fn start_failed(&self, host: &str) {
        self.with(|m| *m.start_failures.entry(host.to_string()).or_default() += 1);
    }

    /// A host woke after `d`.
    pub fn woke(&self, d: Duration) {
        self.with(|m| m.wake.observe(d.as_secs_f64()));
    }

    /// An error of `kind` (buildkite, libvirt, ...).
    pub fn error(&self, kind: &str) {
        self.with(|m| *m.errors.entry(kind.to_string()).or_default() += 1);
    }

    /// A job acquisition token request ended with `result` (`issued`,
    /// `not_issued`, `refused`, `failed` or `unavailable`).
    pub fn job_acquisition_token(&self, result: &'static str) {
        self.with(|m| *m.tokens.entry(result).or_default() += 1);
    }

    /// State after a pass: sleeping hosts, running VMs, and the pass's length
    /// (VM-minutes grow by running VMs times the time since the last pass).
    pub fn pass(&self, asleep: usize, vms: usize, since_last: Duration, took: Duration) {
        self.with(|m| {
            m.hosts_asleep = asleep as u64;
            m.vm_seconds += m.vms_running as f64 * since_last.as_secs_f64();
            m.vms_running = vms as u64;
            m.passes += 1;
            m.last_pass_seconds = took.as_secs_f64();
        });
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = String::new();
        let counter = |s: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |s: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut s,
            "launcher_jobs_seen_total",
            "Jobs seen waiting, summed over passes.",
            m.jobs_seen as f64,
        );
        counter(
            &mut s,
            "launcher_jobs_reserved_total",
            "Jobs reserved for a VM.",
            m.jobs_reserved as f64,
        );
        counter(
            &mut s,
            "launcher_jobs_finished_total",
            "Jobs given up because no VM could be had.",
            m.jobs_finished as f64,
        );
        let _ = writeln!(s, "# HELP launcher_vms_started_total VM start calls that succeeded.\n# TYPE launcher_vms_started_total counter");
        for ((h, d), v) in &m.started {
            let _ = writeln!(
                s,
                "launcher_vms_started_total{{host=\"{}\",definition=\"{}\"}} {v}",
                label(h),
                label(d)
            );
        }
        let _ = writeln!(s, "# HELP launcher_start_failures_total Failed wakes and VM starts.\n# TYPE launcher_start_failures_total counter");
        for (h, v) in &m.start_failures {
            let _ = writeln!(
                s,
                "launcher_start_failures_total{{host=\"{}\"}} {v}",
                label(h)
            );
        }
        let _ = writeln!(
            s,
            "# HELP launcher_errors_total Errors by kind.\n# TYPE launcher_errors_total counter"
        );
        for (k, v) in &m.errors {
            let _ = writeln!(s, "launcher_errors_total{{kind=\"{}\"}} {v}", label(k));
        }
        let _ = writeln!(s, "# HELP launcher_job_acquisition_tokens_total Job acquisition token requests by result.\n# TYPE launcher_job_acquisition_tokens_total counter");
        for (r, v) in &m.tokens {
            let _ = writeln!(
                s,
                "launcher_job_acquisition_tokens_total{{result=\"{r}\"}} {v}"
            );
        }
        histogram(
            &mut s,
            "launcher_scheduled_to_start_seconds",
            "From a job's scheduled_at to its VM start call.",
            &m.scheduled_to_start,
        );
        histogram(
            &mut s,
            "launcher_wake_seconds",
            "From the first wake packet until libvirt answered.",
            &m.wake,
        );
        gauge(
            &mut s,
            "launcher_hosts_asleep",
            "Hosts asleep at the last pass.",
            m.hosts_asleep as f64,
        );
        gauge(
            &mut s,
            "launcher_vms_running",
            "VMs of ours at the last pass.",
            m.vms_running as f64,
        );
        counter(
            &mut s,
            "launcher_vm_minutes_total",
            "VM-minutes of our VMs.",
            m.vm_seconds / 60.0,
        );
        counter(
            &mut s,
            "launcher_passes_total",
            "Scheduling passes.",
            m.passes as f64,
        );
        gauge(
            &mut s,
            "launcher_last_pass_seconds",
            "How long the last pass took.",
            m.last_pass_seconds,
        );
        s
    }
}

fn histogram(s: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (i, b) in BUCKETS.iter().enumerate() {
        let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {}", h.counts[i]);
    }
    let _ = writeln!(
        s,
        "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
        h.count, h.sum, h.count
    );
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_latencies_render_with_labels() {
        let m = Metrics::default();
        m.vm_started("vmhost01", "linux", Some(Duration::from_millis(1500)));
        m.error("buildkite");
        m.job_acquisition_token("issued");
        m.job_acquisition_token("not_issued");
        m.job_acquisition_token("issued");
        let text = m.render();
        assert!(
            text.contains("launcher_job_acquisition_tokens_total{result=\"issued\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("launcher_job_acquisition_tokens_total{result=\"not_issued\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("launcher_vms_started_total{host=\"vmhost01\",definition=\"linux\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("launcher_scheduled_to_start_seconds_bucket{le=\"2\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("launcher_scheduled_to_start_seconds_bucket{le=\"1\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("launcher_errors_total{kind=\"buildkite\"} 1"),
            "{text}"
        );
    }
}

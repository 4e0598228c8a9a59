//! Prometheus metrics, rendered in the text exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::stages::{Kind, Record};

/// Bucket bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Bucket bounds (seconds) of the start stage histograms: a reservation,
/// a token or a start call takes a fraction of a second, a wake minutes.
const STAGE_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with(&BUCKETS)
    }
}

impl Histogram {
    fn with(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, secs: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
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
    /// Per (definition, host, kind, stage span).
    stages: BTreeMap<(String, String, &'static str, &'static str), Histogram>,
    /// Per (definition, host, kind): seen to agent.
    starts: BTreeMap<(String, String, &'static str), Histogram>,
    scheduled_to_start: Histogram,
    wake: Histogram,
    hosts_asleep: u64,
    vms_running: u64,
    /// Per (definition, state `booting` or `waiting`): warm VMs.
    warm: BTreeMap<(String, &'static str), u64>,
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

    /// A job's agent took it: its start's stages, and its whole length
    /// from seen to agent, go to the histograms of its definition and host.
    pub fn job_started(&self, r: &Record) {
        let def = r.definition.clone().unwrap_or_default();
        let host = r.host.clone().unwrap_or_default();
        let kind = r.kind.unwrap_or(Kind::Cold).name();
        self.with(|m| {
            for (stage, d) in r.spans() {
                m.stages
                    .entry((def.clone(), host.clone(), kind, stage.span()))
                    .or_insert_with(|| Histogram::with(&STAGE_BUCKETS))
                    .observe(d.as_secs_f64());
            }
            m.starts
                .entry((def, host, kind))
                .or_insert_with(|| Histogram::with(&STAGE_BUCKETS))
                .observe(r.total().as_secs_f64());
        });
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

    /// The warm VMs at the last pass, per definition and state.
    pub fn warm_vms(&self, counts: BTreeMap<(String, &'static str), u64>) {
        self.with(|m| m.warm = counts);
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
        let _ = writeln!(
            s,
            "# HELP launcher_job_stage_seconds Time a job's start took to reach a stage from the one before (stage: reserve, wake, token, start, agent; kind: cold, warm, saved).\n# TYPE launcher_job_stage_seconds histogram"
        );
        for ((d, h, kind, stage), hist) in &m.stages {
            let labels = format!(
                "definition=\"{}\",host=\"{}\",kind=\"{kind}\",stage=\"{stage}\"",
                label(d),
                label(h)
            );
            series(&mut s, "launcher_job_stage_seconds", &labels, hist);
        }
        let _ = writeln!(
            s,
            "# HELP launcher_job_start_seconds From a job seen to its agent taking it, for jobs that got a VM.\n# TYPE launcher_job_start_seconds histogram"
        );
        for ((d, h, kind), hist) in &m.starts {
            let labels = format!(
                "definition=\"{}\",host=\"{}\",kind=\"{kind}\"",
                label(d),
                label(h)
            );
            series(&mut s, "launcher_job_start_seconds", &labels, hist);
        }
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
        let _ = writeln!(
            s,
            "# HELP launcher_warm_vms Warm VMs at the last pass (state: booting, waiting for a job).\n# TYPE launcher_warm_vms gauge"
        );
        for ((d, state), n) in &m.warm {
            let _ = writeln!(
                s,
                "launcher_warm_vms{{definition=\"{}\",state=\"{state}\"}} {n}",
                label(d)
            );
        }
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
    series(s, name, "", h);
}

/// One histogram's lines; `labels` (escaped, comma-separated) go before `le`.
fn series(s: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, b) in h.bounds.iter().enumerate() {
        let _ = writeln!(
            s,
            "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
            h.counts[i]
        );
    }
    let _ = writeln!(s, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        s,
        "{name}_sum{braced} {}\n{name}_count{braced} {}",
        h.sum, h.count
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
    use crate::stages::{Stage, Via};
    use std::time::Instant;

    #[test]
    fn start_stages_render_as_histograms_per_definition_host_and_stage() {
        let m = Metrics::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let start = |host: &str, wake: u64| {
            let mut r = Record::new("j", Via::Listing, t0);
            r.definition = Some("linux".into());
            r.host = Some(host.into());
            r.mark(Stage::Reserved, t0 + ms(20));
            r.mark(Stage::Awake, t0 + ms(20 + wake));
            r.mark(Stage::Started, t0 + ms(420 + wake));
            r.mark(Stage::Agent, t0 + ms(2_320 + wake));
            r
        };
        m.job_started(&start("vmhost02", 5_100));
        m.job_started(&start("vmhost02", 0));
        m.job_started(&start("vm\"host", 0));
        let text = m.render();
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        has("# TYPE launcher_job_stage_seconds histogram");
        let v2 = "definition=\"linux\",host=\"vmhost02\",kind=\"cold\"";
        has(&format!(
            "launcher_job_stage_seconds_bucket{{{v2},stage=\"wake\",le=\"0.05\"}} 1"
        ));
        has(&format!(
            "launcher_job_stage_seconds_bucket{{{v2},stage=\"wake\",le=\"5\"}} 1"
        ));
        has(&format!(
            "launcher_job_stage_seconds_bucket{{{v2},stage=\"wake\",le=\"10\"}} 2"
        ));
        has(&format!(
            "launcher_job_stage_seconds_bucket{{{v2},stage=\"wake\",le=\"+Inf\"}} 2"
        ));
        has(&format!(
            "launcher_job_stage_seconds_sum{{{v2},stage=\"wake\"}} 5.1"
        ));
        has(&format!(
            "launcher_job_stage_seconds_count{{{v2},stage=\"agent\"}} 2"
        ));
        has(&format!(
            "launcher_job_stage_seconds_bucket{{{v2},stage=\"start\",le=\"0.25\"}} 0"
        ));
        has(&format!(
            "launcher_job_stage_seconds_bucket{{{v2},stage=\"start\",le=\"0.5\"}} 2"
        ));
        // No token stage with a shared token.
        assert!(!text.contains("stage=\"token\""), "{text}");
        has(&format!(
            "launcher_job_start_seconds_bucket{{{v2},le=\"5\"}} 1"
        ));
        has(&format!("launcher_job_start_seconds_count{{{v2}}} 2"));
        // Values from the config are escaped.
        has("launcher_job_start_seconds_count{definition=\"linux\",host=\"vm\\\"host\",kind=\"cold\"} 1");
        // Buckets are cumulative and end with the count.
        let wake: Vec<u64> = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "launcher_job_stage_seconds_bucket{{{v2},stage=\"wake\""
                ))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(wake.len(), STAGE_BUCKETS.len() + 1);
        assert!(wake.windows(2).all(|w| w[0] <= w[1]), "{wake:?}");
    }

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

    #[test]
    fn warm_vms_render_per_definition_and_state() {
        let m = Metrics::default();
        m.warm_vms(BTreeMap::from([
            (("linux".to_string(), "booting"), 0),
            (("linux".to_string(), "waiting"), 2),
        ]));
        let text = m.render();
        assert!(text.contains("# TYPE launcher_warm_vms gauge\n"), "{text}");
        assert!(
            text.contains("launcher_warm_vms{definition=\"linux\",state=\"waiting\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("launcher_warm_vms{definition=\"linux\",state=\"booting\"} 0\n"),
            "{text}"
        );
    }
}

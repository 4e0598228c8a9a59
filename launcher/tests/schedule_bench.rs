//! One scheduling pass over 10,000 waiting jobs, 200 agent definitions
//! and 50 hosts: goal under 20 ms and under 50 MB peak RSS.
//!
//! `cargo test -p buildkite-agent-launcher --release --test schedule_bench -- --nocapture`

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use launcher::config;
use launcher::schedule::{DefView, HostView, Job, Plan, Power};

fn config_text(hosts: usize, defs: usize) -> String {
    let mut s = String::new();
    for h in 0..hosts {
        s += &format!(
            "[[host]]\nname = \"h{h}\"\nuri = \"qemu+ssh://root@h{h}/system\"\nmemory_limit = \"90%\"\nmax_vms = 16\nwake = {{ mac = \"52:54:00:00:00:{h:02x}\", broadcast = \"10.0.0.255\" }}\n\n"
        );
    }
    for d in 0..defs {
        // 50 queues of 4 kinds each; every kind on 10 of the 50 hosts.
        let hs: Vec<String> = (0..10)
            .map(|i| format!("\"h{}\"", (d + i * 5) % hosts))
            .collect();
        s += &format!(
            "[[agent]]\nname = \"d{d}\"\ntags = [\"queue=q{}\", \"os=os{}\", \"arch=amd64\"]\ntemplate = \"t{d}\"\nhosts = [{}]\nmax_instances = 20\n\n",
            d / 4,
            d % 4,
            hs.join(", ")
        );
    }
    s
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn one_pass_over_10000_jobs_200_definitions_50_hosts() {
    let cfg = config::parse(Path::new("bench.toml"), &config_text(50, 200), |k| {
        (k == "BUILDKITE_AGENT_TOKEN").then(|| "t".to_string())
    })
    .unwrap();
    let jobs: Vec<Job> = (0..10_000)
        .map(|i| Job {
            id: format!("00000000-0000-0000-0000-{i:012}"),
            rules: vec![
                format!("queue=q{}", i % 50),
                format!("os=os{}", (i / 50) % 5), // os4 matches nothing: skipped
                "arch=*".to_string(),
            ],
            priority: (i % 3) as i64,
            scheduled_at: format!("2026-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60),
        })
        .collect();
    let hosts: Vec<HostView> = (0..50)
        .map(|h| HostView {
            power: if h % 2 == 0 {
                Power::Awake
            } else {
                Power::Asleep
            },
            used_kib: (h as u64 % 7) << 20,
            limit_kib: 58 << 20,
            vms: (h % 5) as u32,
            max_vms: Some(16),
        })
        .collect();
    let defs: Vec<DefView> = (0..200)
        .map(|d| DefView {
            running: (d % 3) as u32,
            memory_kib: (2 + d as u64 % 4) << 20,
            broken_on: HashMap::new(),
            warm: Vec::new(),
            saved: Vec::new(),
        })
        .collect();
    let plan = Plan::new(&cfg);
    let mut times = Vec::new();
    let mut last = Vec::new();
    for _ in 0..7 {
        let (mut h, mut d) = (hosts.clone(), defs.clone());
        let t0 = Instant::now();
        last = plan.pass(&jobs, &mut h, &mut d);
        times.push(t0.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let rss = peak_rss_kib();
    let mut count: HashMap<String, usize> = HashMap::new();
    for d in &last {
        *count.entry(format!("{:?}", d.action())).or_default() += 1;
    }
    println!(
        "scheduling pass, 10000 jobs x 200 definitions x 50 hosts: median {:.2} ms of 7 (min {:.2}, max {:.2}); peak RSS {:.1} MB (whole test process); decisions {count:?}",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        rss as f64 / 1024.0
    );
    assert_eq!(last.len(), 10_000);
    assert!(count.get("Start").copied().unwrap_or(0) > 0);
    assert!(rss < 50 * 1024, "peak RSS {rss} KiB");
}

use std::path::Path;

use super::*;
use crate::config;

const CONFIG: &str = r#"
[[host]]
name = "a"
uri = "test:///default"
max_vms = 2

[[host]]
name = "b"
uri = "test:///default"

[[agent]]
name = "linux"
tags = ["queue=linux"]
template = "t"

[[agent]]
name = "big"
tags = ["queue=big"]
template = "t"
max_instances = 1
"#;

fn config() -> Config {
    config::parse(Path::new("c.toml"), CONFIG, |k| {
        (k == "BUILDKITE_AGENT_TOKEN").then(|| "t".to_string())
    })
    .unwrap()
}

fn host(power: Power, used_mib: u64, limit_mib: u64) -> HostView {
    HostView {
        power,
        used_kib: used_mib << 10,
        limit_kib: limit_mib << 10,
        vms: 0,
        max_vms: None,
    }
}

fn defs(mem_mib: u64) -> Vec<DefView> {
    (0..2)
        .map(|_| DefView {
            running: 0,
            memory_kib: mem_mib << 10,
            broken_on: HashMap::new(),
            warm: Vec::new(),
            saved: Vec::new(),
        })
        .collect()
}

fn job(id: &str, rules: &[&str]) -> Job {
    Job {
        id: id.into(),
        rules: rules.iter().map(|r| r.to_string()).collect(),
        priority: 0,
        scheduled_at: "2026-01-01T00:00:00Z".into(),
    }
}

/// Each decision's job, action and host name (hosts as in [`CONFIG`]).
fn actions(d: &[Decision]) -> Vec<(String, Action, Option<String>)> {
    let c = config();
    d.iter()
        .map(|d| {
            let host = d.host().map(|h| c.hosts[h.0].name.clone());
            (d.job.clone(), d.action(), host)
        })
        .collect()
}

fn a(job: &str, action: Action, host: Option<&str>) -> (String, Action, Option<String>) {
    (job.into(), action, host.map(str::to_string))
}

#[test]
fn an_awake_host_is_taken_before_a_sleeping_one_even_if_listed_later() {
    let c = config();
    let mut hosts = vec![host(Power::Asleep, 0, 4096), host(Power::Awake, 0, 4096)];
    let out = Plan::new(&c).pass(&[job("j1", &["queue=linux"])], &mut hosts, &mut defs(512));
    assert_eq!(actions(&out), vec![a("j1", Action::Start, Some("b"))]);
}

#[test]
fn hosts_fill_in_order_then_a_sleeping_one_is_woken_then_jobs_wait() {
    let c = config();
    let mut hosts = vec![host(Power::Awake, 0, 4096), host(Power::Asleep, 0, 1024)];
    hosts[0].max_vms = Some(2);
    let jobs: Vec<Job> = (1..=6)
        .map(|i| job(&format!("j{i}"), &["queue=linux"]))
        .collect();
    let out = Plan::new(&c).pass(&jobs, &mut hosts, &mut defs(512));
    assert_eq!(
        actions(&out),
        vec![
            a("j1", Action::Start, Some("a")),
            a("j2", Action::Start, Some("a")),
            a("j3", Action::Wake, Some("b")),
            a("j4", Action::Wake, Some("b")),
            a("j5", Action::Wait, None),
            a("j6", Action::Wait, None),
        ]
    );
    assert!(
        out[4].reason.contains("a has its 2 VMs"),
        "{}",
        out[4].reason
    );
    assert!(
        out[4].reason.contains("no host has 512 MiB free"),
        "{}",
        out[4].reason
    );
    assert!(out[3].reason.contains("b is waking"), "{}", out[3].reason);
}

#[test]
fn the_memory_limit_counts_what_is_in_use() {
    let c = config();
    let mut hosts = vec![
        host(Power::Awake, 3700, 4096),
        host(Power::Awake, 100, 4096),
    ];
    let out = Plan::new(&c).pass(&[job("j1", &["queue=linux"])], &mut hosts, &mut defs(512));
    assert_eq!(actions(&out), vec![a("j1", Action::Start, Some("b"))]);
}

#[test]
fn a_failing_host_is_passed_over_for_the_next() {
    let c = config();
    let mut hosts = vec![
        host(Power::Failing("did not wake within 300 s".into()), 0, 4096),
        host(Power::Asleep, 0, 4096),
    ];
    let out = Plan::new(&c).pass(&[job("j1", &["queue=linux"])], &mut hosts, &mut defs(512));
    assert_eq!(actions(&out), vec![a("j1", Action::Wake, Some("b"))]);
}

#[test]
fn a_vm_larger_than_every_host_finishes_the_job_with_a_reason() {
    let c = config();
    let mut hosts = vec![host(Power::Awake, 0, 1024), host(Power::Asleep, 0, 2048)];
    let out = Plan::new(&c).pass(&[job("j1", &["queue=linux"])], &mut hosts, &mut defs(8192));
    assert_eq!(actions(&out), vec![a("j1", Action::Finish, None)]);
    assert_eq!(
        out[0].reason,
        "no host can ever run it: a may use at most 1024 MiB, linux needs 8192 MiB; b may use at most 2048 MiB, linux needs 8192 MiB"
    );
}

#[test]
fn a_job_no_definition_serves_is_skipped() {
    let c = config();
    let mut hosts = vec![host(Power::Awake, 0, 4096), host(Power::Awake, 0, 4096)];
    let out = Plan::new(&c).pass(
        &[job("j1", &["queue=mac"]), job("j2", &[])],
        &mut hosts,
        &mut defs(512),
    );
    assert_eq!(
        actions(&out),
        vec![a("j1", Action::Skip, None), a("j2", Action::Skip, None)]
    );
}

#[test]
fn higher_priority_then_older_jobs_go_first() {
    let c = config();
    let mut hosts = vec![host(Power::Awake, 0, 4096), host(Power::Awake, 0, 0)];
    hosts[0].max_vms = Some(1);
    let mut old = job("old", &["queue=linux"]);
    old.scheduled_at = "2025-01-01T00:00:00Z".into();
    let mut urgent = job("urgent", &["queue=linux"]);
    urgent.priority = 5;
    let out = Plan::new(&c).pass(
        &[job("new", &["queue=linux"]), old, urgent],
        &mut hosts,
        &mut defs(512),
    );
    assert_eq!(out[0].job, "urgent");
    assert_eq!(out[0].action(), Action::Start);
    assert_eq!(out[1].job, "old");
    assert_eq!(out[1].action(), Action::Wait);
}

#[test]
fn max_instances_holds_across_hosts() {
    let c = config();
    let mut hosts = vec![host(Power::Awake, 0, 4096), host(Power::Awake, 0, 4096)];
    let out = Plan::new(&c).pass(
        &[job("j1", &["queue=big"]), job("j2", &["queue=big"])],
        &mut hosts,
        &mut defs(512),
    );
    assert_eq!(out[0].action(), Action::Start);
    assert_eq!(out[1].action(), Action::Wait);
    assert_eq!(out[1].reason, "big has its 1 VMs running");
}

#[test]
fn decisions_print_as_the_documented_json() {
    let d = Decision {
        job: "j".into(),
        verdict: Verdict::Wait { def: DefId(0) },
        reason: "r".into(),
    };
    assert_eq!(
        serde_json::to_string(&d.line(&config())).unwrap(),
        r#"{"job":"j","definition":"linux","host":null,"action":"wait","reason":"r"}"#
    );
}

#[test]
fn a_warm_vm_takes_a_job_before_any_start_even_on_a_full_host() {
    let c = config();
    let plan = Plan::new(&c);
    // Host a is full (its 2 VMs, one of them the warm one); b sleeps.
    let mut hosts = vec![host(Power::Awake, 0, 8192), host(Power::Asleep, 0, 8192)];
    hosts[0].vms = 2;
    hosts[0].max_vms = Some(2);
    let mut d = defs(1024);
    d[0].warm = vec![0];
    let jobs = [job("j1", &["queue=linux"]), job("j2", &["queue=linux"])];
    let out = plan.pass(&jobs, &mut hosts, &mut d);
    assert_eq!(
        out[0].verdict,
        Verdict::Warm {
            def: DefId(0),
            host: HostId(0)
        }
    );
    assert_eq!(out[0].action(), Action::Warm);
    assert_eq!(out[0].reason, "a warm linux VM waits on a");
    // The warm VM is used up; the next job wakes b.
    assert_eq!(
        out[1].verdict,
        Verdict::Wake {
            def: DefId(0),
            host: HostId(1)
        }
    );
    assert!(d[0].warm.is_empty());
    let line = serde_json::to_string(&out[0].line(&c)).unwrap();
    assert!(line.contains(r#""action":"warm""#), "{line}");
}

#[test]
fn a_warm_vm_on_a_failing_host_or_of_another_definition_takes_no_job() {
    let c = config();
    let plan = Plan::new(&c);
    let mut hosts = vec![
        host(Power::Failing("broken".into()), 0, 8192),
        host(Power::Awake, 0, 8192),
    ];
    let mut d = defs(1024);
    d[0].warm = vec![0];
    d[1].warm = vec![1];
    let out = plan.pass(&[job("j1", &["queue=linux"])], &mut hosts, &mut d);
    assert_eq!(
        out[0].verdict,
        Verdict::Start {
            def: DefId(0),
            host: HostId(1)
        }
    );
    assert_eq!(d[0].warm, [0]);
    assert_eq!(d[1].warm, [1]);
}

#[test]
fn a_free_saved_slot_takes_a_job_before_a_cold_start_on_an_earlier_host() {
    let c = config();
    let plan = Plan::new(&c);
    let mut hosts = vec![host(Power::Awake, 0, 8192), host(Power::Awake, 0, 8192)];
    hosts[1].max_vms = Some(1);
    let mut d = defs(1024);
    // One free slot on b; a would take a cold VM first otherwise.
    d[0].saved = vec![1];
    let jobs = [job("j1", &["queue=linux"]), job("j2", &["queue=linux"])];
    let out = plan.pass(&jobs, &mut hosts, &mut d);
    assert_eq!(
        out[0].verdict,
        Verdict::Start {
            def: DefId(0),
            host: HostId(1)
        }
    );
    assert_eq!(out[0].reason, "a saved linux slot is free on b");
    // The slot is taken, and its clone counts: the next job goes cold to a.
    assert!(d[0].saved.is_empty());
    assert_eq!((hosts[1].vms, d[0].running), (1, 2));
    assert_eq!(actions(&out[1..]), [a("j2", Action::Start, Some("a"))]);
}

#[test]
fn a_free_slot_on_a_full_failing_or_broken_host_takes_no_job() {
    let c = config();
    let plan = Plan::new(&c);
    for (power, max_vms, broken) in [
        (Power::Awake, Some(0), false),
        (Power::Failing("broken".into()), None, false),
        (Power::Awake, None, true),
    ] {
        let mut hosts = vec![host(Power::Awake, 0, 8192), host(power, 0, 8192)];
        hosts[1].max_vms = max_vms;
        let mut d = defs(1024);
        d[0].saved = vec![1];
        if broken {
            d[0].broken_on
                .insert(1, crate::hosts::TemplateError::Missing("t".into()));
        }
        let out = plan.pass(&[job("j1", &["queue=linux"])], &mut hosts, &mut d);
        assert_eq!(actions(&out), [a("j1", Action::Start, Some("a"))]);
        assert_eq!(d[0].saved, [1]);
    }
}

//! `buildkite-agent-launcher` in REST mode (`source = "rest"`, API token,
//! organisations without clusters) against the Buildkite stand-in's
//! builds listing and a real libvirtd: a listed job gets exactly one VM,
//! also across a launcher restart; jobs on three pages are all seen,
//! also when the rate-limit budget runs out between pages; a 429 and a
//! 5xx lose no job.

use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::buildkite::{BuildSpec, Config, Fault, JobSpec, JobState, RateLimit, StandIn};
use testbed::guest::POWEROFF;
use testbed::launcher::{Bed, LauncherDir};
use testbed::libvirtd::Libvirtd;
use testbed::util::wait_until;

fn rest_config(bk: &StandIn, host_uri: &str) -> String {
    format!(
        r#"[buildkite]
source = "rest"
api_endpoint = "{url}/v2"
api_token_file = "api-token"
organization = "{org}"
agent_endpoint = "{url}/v3"
agent_token_file = "token"
stack_key = "bed"
poll_interval = 1

[launcher]
boot_timeout = 60
wake_timeout = 20

[[host]]
name = "h1"
uri = "{host_uri}"
max_vms = 4

[[agent]]
name = "linux"
tags = ["queue=linux"]
template = "agent-template"
"#,
        url = bk.url(),
        org = bk.org(),
    )
}

fn dir_for(bk: &StandIn, text: &str) -> LauncherDir {
    let dir = LauncherDir::new(text, bk.agent_token()).unwrap();
    dir.write_token("api-token", bk.api_token()).unwrap();
    dir
}

/// Waits until the stand-in has answered `more` listings after the
/// `seen` so far: that many more passes of a running launcher.
fn wait_for_passes(bk: &StandIn, seen: usize, more: usize, log: impl FnOnce() -> String) {
    wait_until(
        Duration::from_secs(60),
        &format!("{more} more listings"),
        log,
        || {
            let done = listings(bk)
                .iter()
                .filter(|r| r.status == Some(200))
                .count();
            (done >= seen + more).then_some(())
        },
    );
}

fn listings(bk: &StandIn) -> Vec<testbed::buildkite::RecordedRequest> {
    bk.requests()
        .into_iter()
        .filter(|r| r.path == format!("/v2/organizations/{}/builds", bk.org()))
        .collect()
}

#[test]
fn a_rest_listed_job_gets_one_vm_also_after_a_restart_and_a_429_and_a_5xx_lose_nothing() {
    // The guest has no agent: it says which job it was given and powers off.
    // A short window, so that the 429's reset is a second or two away.
    let Bed { bk, host, d, .. } = Bed::start(
        Config {
            rest_rate_limit: RateLimit {
                limit: 200,
                window: Duration::from_secs(2),
            },
            ..Config::default()
        },
        "#!/bin/sh\necho acquire={{buildkite_job_id}} tags={{buildkite_agent_tags}}\nsleep 5\npoweroff\n",
    )
    .unwrap();
    let b = bk
        .add_build(
            "app",
            BuildSpec::new(vec![
                JobSpec::new(&["queue=linux"]),
                // Another queue's job: not ours, no VM, no decision.
                JobSpec::new(&["queue=mac"]),
            ]),
        )
        .unwrap();
    let job = &b.job_ids[0];
    // The first listing is rate limited, the next answers 502.
    bk.inject_fault(Fault::rate_limited().on_path("/builds"))
        .unwrap();
    bk.inject_fault(Fault::server_error(502).on_path("/builds"))
        .unwrap();
    let dir = dir_for(&bk, &rest_config(&bk, &d.uri()));
    let out = dir.output(None, &["run", "--once"]).unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    let inst = host.instances().unwrap();
    assert_eq!(inst.len(), 1, "{inst:?}\n{log}");
    assert_eq!(inst[0].labels["job"], *job);
    assert_eq!(inst[0].labels["queue"], "linux");
    assert!(log.contains("429"), "{log}");
    assert!(log.contains("502"), "{log}");
    let reqs = listings(&bk);
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[0].status, Some(429));
    assert_eq!(reqs[1].status, Some(502));
    assert_eq!(reqs[2].status, Some(200));
    // The listing asks for what it needs, with the API token as a Bearer token.
    let q = reqs[2].query.clone().unwrap_or_default();
    assert!(q.contains("per_page=100"), "{q}");
    assert!(q.contains("state%5B%5D=scheduled"), "{q}");
    assert!(q.contains("state%5B%5D=running"), "{q}");
    assert_eq!(
        reqs[2].authorization.as_deref(),
        Some(format!("Bearer {}", bk.api_token()).as_str())
    );
    // The 429 was waited out (its RateLimit-Reset), not hammered.
    let gap = reqs[1].at.duration_since(reqs[0].at).unwrap_or_default();
    assert!(gap >= Duration::from_millis(900), "{gap:?}");
    // REST mode registers no stack.
    assert!(bk.stacks().is_empty());
    assert!(!bk
        .requests()
        .iter()
        .any(|r| r.path.starts_with("/v3/stacks")));

    // A restarted launcher finds the VM in libvirt and starts no other,
    // although the job is still scheduled in Buildkite.
    let out = dir.output(None, &["run", "--once"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(host.instances().unwrap().len(), 1);
    // And a running launcher neither, over several passes.
    let seen = listings(&bk)
        .iter()
        .filter(|r| r.status == Some(200))
        .count();
    let mut running = dir.spawn(None, &["run"]).unwrap();
    wait_for_passes(&bk, seen, 3, || running.log_text());
    assert_eq!(host.instances().unwrap().len(), 1, "{}", running.log_text());
    assert!(running
        .stop(Duration::from_secs(20))
        .is_some_and(|s| s.success()));

    let serial = d.dir().join(format!("{}.serial.log", inst[0].name));
    let (text, _) = Libvirtd::wait_for_text(&serial, POWEROFF, Duration::from_secs(90)).unwrap();
    assert!(
        text.contains(&format!("acquire={job} tags=queue=linux")),
        "{text}"
    );
    wait_until(
        Duration::from_secs(30),
        "the VM going away",
        || format!("{:?}", host.instances()),
        || host.instances().unwrap().is_empty().then_some(()),
    );
    assert_eq!(d.domains().unwrap(), vec!["agent-template".to_string()]);
    assert_eq!(bk.job(job).unwrap().state, JobState::Scheduled);
}

#[test]
fn jobs_on_three_pages_are_all_seen_also_when_the_budget_runs_out_between_pages() {
    // Two requests per 3 s: the third page waits for the window to reset.
    let Bed { bk, d, .. } = Bed::start(
        Config {
            rest_rate_limit: RateLimit {
                limit: 2,
                window: Duration::from_secs(3),
            },
            ..Config::default()
        },
        "",
    )
    .unwrap();
    // Newest first, 100 a page: 223 builds put one linux job on each page.
    let mut linux = Vec::new();
    for n in 0..223 {
        let rules: &[&str] = if n % 111 == 0 {
            &["queue=linux"]
        } else {
            &["queue=other"]
        };
        let b = bk
            .add_build("app", BuildSpec::new(vec![JobSpec::new(rules)]))
            .unwrap();
        if n % 111 == 0 {
            linux.push(b.job_ids[0].clone());
        }
    }
    assert_eq!(linux.len(), 3);
    let dir = dir_for(&bk, &rest_config(&bk, &d.uri()));
    let t0 = Instant::now();
    let out = dir.output(None, &["run", "--once", "--dry-run"]).unwrap();
    let took = t0.elapsed();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    let ds: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for j in &linux {
        let d = ds
            .iter()
            .find(|d| d["job"] == j.as_str())
            .unwrap_or_else(|| panic!("no decision for {j}: {ds:?}\n{log}"));
        assert_eq!(d["action"], "start", "{d}");
        assert_eq!(d["host"], "h1");
    }
    // Only our queue's jobs are decided on.
    assert_eq!(ds.len(), 3, "{ds:?}");
    let reqs = listings(&bk);
    let pages: Vec<String> = reqs
        .iter()
        .map(|r| r.query.clone().unwrap_or_default())
        .collect();
    assert_eq!(reqs.len(), 3, "{pages:?}\n{log}");
    assert!(
        pages[1].contains("page=2") && pages[2].contains("page=3"),
        "{pages:?}"
    );
    // No request was refused: the launcher waited for the reset instead.
    assert!(reqs.iter().all(|r| r.status == Some(200)), "{reqs:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert_eq!(d.domains().unwrap(), vec!["agent-template".to_string()]);
}

#[test]
fn a_rest_job_cancelled_while_its_vm_boots_loses_the_vm_and_a_taken_job_keeps_it() {
    // No agent in the guest: the VMs stay up until removed.
    let Bed { bk, host, d, .. } = Bed::start(Config::default(), "#!/bin/sh\nsleep 300\n").unwrap();
    let b = bk
        .add_build(
            "app",
            BuildSpec::new(vec![
                JobSpec::new(&["queue=linux"]),
                JobSpec::new(&["queue=linux"]),
            ]),
        )
        .unwrap();
    let (cancelled, taken) = (&b.job_ids[0], &b.job_ids[1]);
    let dir = dir_for(&bk, &rest_config(&bk, &d.uri()));
    let mut l = dir.spawn(None, &["run"]).unwrap();
    wait_until(
        Duration::from_secs(60),
        "two VMs",
        || l.log_text(),
        || (host.instances().unwrap().len() >= 2).then_some(()),
    );
    // One job is cancelled before any agent took it; an agent takes the other.
    bk.set_job_state(cancelled, JobState::Canceled).unwrap();
    bk.set_job_state(taken, JobState::Accepted).unwrap();
    let vms_of = || -> Vec<String> {
        host.instances()
            .unwrap()
            .into_iter()
            .map(|i| i.labels["job"].clone())
            .collect()
    };
    wait_until(
        Duration::from_secs(30),
        "only the taken job's VM left",
        || format!("{:?}\n{}", vms_of(), l.log_text()),
        || (vms_of() == vec![taken.clone()]).then_some(()),
    );
    // A few more passes: the taken job's VM stays, nothing new starts.
    let seen = listings(&bk).len();
    wait_for_passes(&bk, seen, 3, || l.log_text());
    let left = host.instances().unwrap();
    assert_eq!(left.len(), 1, "{left:?}\n{}", l.log_text());
    assert_eq!(left[0].labels["job"], *taken);
    assert!(l.stop(Duration::from_secs(20)).is_some_and(|s| s.success()));
    for i in left {
        host.remove_instance(&i.name).unwrap();
    }
}

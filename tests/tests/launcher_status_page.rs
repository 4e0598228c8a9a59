//! The launcher's status page in a real browser: Debian's headless
//! Chromium loads `/` from the launcher's metrics listener while the
//! launcher serves jobs from the Buildkite stand-in on a real libvirtd,
//! and what it shows is checked against the launcher's state: libvirt's
//! VMs, the jobs' states, the launcher's log, its notes and `/metrics`.
//! The launcher, the stand-in and the browser share one test namespace,
//! so the browser reaches nothing else.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use kvmhost::libvirt::Host;
use testbed::browser::{dump_dom, elements, screenshot, tags, texts};
use testbed::buildkite::{BuildSpec, Config, JobSpec, JobState};
use testbed::guest::TinyGuest;
use testbed::launcher::{define_agent_template, standin_in, Breakdown, LauncherDir, STAGES};
use testbed::libvirtd::Libvirtd;
use testbed::netns::Netns;

const LISTEN: &str = "127.0.0.1:9464";

/// `GET path` from the launcher's listener, from inside `ns`.
fn get(ns: &Netns, path: &str) -> String {
    let path = path.to_string();
    ns.spawn_in(move || {
        let mut s = std::net::TcpStream::connect(LISTEN).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {LISTEN}\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
    .unwrap()
    .join()
    .unwrap()
}

/// The breakdown the launcher logged for `job` (`VM on h1 in 2.3 s: ...`).
fn logged_breakdown(log: &str, job: &str) -> Option<String> {
    let prefix = format!("job {job}: VM on ");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| format!("VM on {rest}"))
}

fn num(attrs: &BTreeMap<String, String>, key: &str) -> f64 {
    attrs[key].parse().unwrap()
}

#[test]
fn the_status_page_in_a_browser_shows_hosts_jobs_in_flight_and_each_start_to_scale() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    let host = Host::open(&d.uri()).unwrap();
    define_agent_template(
        &host,
        &g,
        "agent-template",
        d.dir(),
        "#!/bin/sh\nsleep 600\npoweroff\n",
    )
    .unwrap();
    let ns = Netns::new("status").unwrap();
    let bk = standin_in(&ns, Config::default()).unwrap();
    bk.add_pipeline("app").unwrap();
    // h1 takes two VMs, so the third job waits; h0 never answers.
    let config = format!(
        r#"[buildkite]
agent_endpoint = "{url}/v3"
agent_token_file = "token"
stack_key = "page"
poll_interval = 1

[launcher]
boot_timeout = 300
wake_timeout = 20

[metrics]
listen = "{LISTEN}"

[[host]]
name = "h1"
uri = "{uri}"
max_vms = 2
memory_limit = "1048576MiB"

[[host]]
name = "h0"
uri = "qemu+unix:///system?socket=/nonexistent/sock"

[[agent]]
name = "linux"
tags = ["queue=linux"]
template = "agent-template"
"#,
        url = bk.url(),
        uri = d.uri(),
    );
    let dir = LauncherDir::new(&config, bk.cluster_token()).unwrap();
    let launcher = dir.spawn(Some(&ns), &["run"]).unwrap();
    launcher.wait_for(Duration::from_secs(30), "the stack registration", || {
        (!bk.stacks().is_empty()).then_some(())
    });
    let build = bk
        .add_build(
            "app",
            BuildSpec::new(vec![
                JobSpec::new(&["queue=linux"]),
                JobSpec::new(&["queue=linux"]),
                JobSpec::new(&["queue=linux"]),
            ]),
        )
        .unwrap();
    let ids = build.job_ids.clone();

    // Two VMs start; the launcher knows both (its log says so).
    let with_vm: Vec<String> = launcher.wait_for(Duration::from_secs(60), "two VMs", || {
        let vms = host.instances().ok()?;
        let log = launcher.log_text();
        let jobs: Vec<String> = vms
            .iter()
            .filter_map(|i| i.labels.get("job").cloned())
            .filter(|j| log.contains(&format!("job {j}: started ")))
            .collect();
        (jobs.len() == 2).then_some(jobs)
    });
    let waiting = ids.iter().find(|j| !with_vm.contains(j)).unwrap().clone();
    let url = format!("http://{LISTEN}/");

    let dom = launcher.wait_for(Duration::from_secs(20), "the page to show both VMs", || {
        let dom = dump_dom(&ns, &url).unwrap();
        let hosts = elements(&dom, "tr", "host");
        (hosts
            .iter()
            .any(|h| h["data-host"] == "h1" && h["data-vms"] == "2"))
        .then_some(dom)
    });
    assert!(
        dom.contains("<title>buildkite-agent-launcher</title>"),
        "{dom}"
    );
    let hosts: BTreeMap<String, BTreeMap<String, String>> = elements(&dom, "tr", "host")
        .into_iter()
        .map(|h| (h["data-host"].clone(), h))
        .collect();
    assert_eq!(hosts.len(), 2, "{dom}");
    assert_eq!(hosts["h1"]["data-power"], "awake");
    assert_eq!(hosts["h0"]["data-power"], "failing");
    let host_rows = texts(&dom, "tr", "host");
    let h1: Vec<&str> = host_rows[0].split('|').collect();
    assert_eq!(h1[..3], ["h1", "awake", "2 of 2"], "{host_rows:?}");
    assert!(h1[3].ends_with(" MiB of 1048576 MiB"), "{host_rows:?}");
    assert!(
        host_rows[1].starts_with("h0|failing: does not answer and has no wake settings"),
        "{host_rows:?}"
    );
    // Every job is in flight: the two with a VM started, the third seen
    // and waiting for room.
    let jobs: BTreeMap<String, String> = elements(&dom, "tr", "job")
        .into_iter()
        .map(|j| (j["data-job"].clone(), j["data-stage"].clone()))
        .collect();
    let expected: BTreeMap<String, String> = ids
        .iter()
        .map(|j| {
            let stage = if *j == waiting { "seen" } else { "started" };
            (j.clone(), stage.to_string())
        })
        .collect();
    assert_eq!(jobs, expected, "{dom}");
    let rows = texts(&dom, "tr", "job");
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&format!("{}|linux|h1|started|", with_vm[0]))),
        "{rows:?}"
    );
    assert!(dom.contains("Last starts (0)"), "{dom}");

    // The two agents take their jobs.
    for j in &with_vm {
        bk.set_job_state(j, JobState::Running).unwrap();
    }
    let lines: Vec<String> = launcher.wait_for(Duration::from_secs(20), "two breakdowns", || {
        let log = launcher.log_text();
        with_vm
            .iter()
            .map(|j| logged_breakdown(&log, j))
            .collect::<Option<Vec<_>>>()
    });
    let dom = launcher.wait_for(
        Duration::from_secs(20),
        "the page to show two starts",
        || {
            let dom = dump_dom(&ns, &url).unwrap();
            (elements(&dom, "tr", "start").len() == 2).then_some(dom)
        },
    );
    let starts = elements(&dom, "tr", "start");
    let mut longest = 0.0f64;
    for (j, line) in with_vm.iter().zip(&lines) {
        // The last note on the job's page is the breakdown the log has.
        let notes = bk.job(j).unwrap().notifications;
        assert_eq!(notes.last(), Some(line), "{notes:?}");
        assert!(line.starts_with("VM on h1 in "), "{line}");
        let b = Breakdown::parse(line).expect("a breakdown");
        let total = b.total;
        let names: Vec<&str> = b.stages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, STAGES, "{line}");
        let row = starts.iter().find(|s| &s["data-job"] == j).expect("a row");
        assert_eq!(row["data-host"], "h1");
        assert!(
            (num(row, "data-seconds") - total).abs() <= 0.051,
            "{row:?} {line}"
        );
        longest = longest.max(num(row, "data-seconds"));
    }
    // Each start's bar: one segment per stage, in order, whose seconds
    // add up to the start's and whose widths are to one scale.
    for row in &starts {
        let j = &row["data-job"];
        let at = dom.find(&format!("data-job=\"{j}\" data-host")).unwrap();
        let rest = &dom[at..];
        let bar = &rest[rest.find("class=\"bar\"").unwrap()..rest.find("</div>").unwrap()];
        let segs = tags(bar, "span");
        let order: Vec<&str> = segs.iter().map(|s| s["data-stage"].as_str()).collect();
        assert_eq!(order, STAGES, "{bar}");
        let sum: f64 = segs.iter().map(|s| num(s, "data-seconds")).sum();
        assert!((sum - num(row, "data-seconds")).abs() < 0.01, "{bar}");
        for s in &segs {
            let width: f64 = s["style"]
                .trim_start_matches("width:")
                .trim_end_matches('%')
                .parse()
                .unwrap();
            let want = 100.0 * num(s, "data-seconds") / longest;
            assert!((width - want).abs() < 0.1, "{s:?}: {width} % for {want} %");
        }
    }
    // Only the waiting job is left in flight.
    let jobs: Vec<(String, String)> = elements(&dom, "tr", "job")
        .into_iter()
        .map(|j| (j["data-job"].clone(), j["data-stage"].clone()))
        .collect();
    assert_eq!(jobs, [(waiting.clone(), "seen".to_string())], "{dom}");

    // /metrics counts the same two starts, stage by stage.
    let metrics = get(&ns, "/metrics");
    for stage in STAGES {
        let line = format!(
            "launcher_job_stage_seconds_count{{definition=\"linux\",host=\"h1\",kind=\"cold\",stage=\"{stage}\"}} 2"
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l == "launcher_job_start_seconds_count{definition=\"linux\",host=\"h1\",kind=\"cold\"} 2"),
        "{metrics}"
    );

    // The page renders: a screenshot (to $STATUS_PAGE_PNG when set).
    let png = dir.dir.path().join("status.png");
    screenshot(&ns, &url, &png, 1200, 900).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    if let Ok(to) = std::env::var("STATUS_PAGE_PNG") {
        std::fs::copy(&png, to).unwrap();
    }
    drop(launcher);
}

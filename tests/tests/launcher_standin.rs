//! `buildkite-agent-launcher` against the Buildkite stand-in and a real
//! libvirtd: check-config errors, `--dry-run` decisions, a job that gets
//! exactly one VM even across restarts, a paused queue, and a host that
//! never answers (fall-back to the next).

use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::buildkite::{BuildSpec, Config, Fault, JobSpec, JobState, StandIn};
use testbed::guest::POWEROFF;
use testbed::launcher::{Bed, LauncherDir};
use testbed::libvirtd::Libvirtd;

fn config(bk: &StandIn, hosts: &str) -> String {
    format!(
        r#"[buildkite]
agent_endpoint = "{url}/v3"
agent_token_file = "token"
stack_key = "bed"
poll_interval = 1

[launcher]
boot_timeout = 60
wake_timeout = 20
host_retry_after = 60

{hosts}
[[agent]]
name = "linux"
tags = ["queue=linux"]
template = "agent-template"

[[agent]]
name = "windows"
tags = ["queue=windows"]
template = "agent-template"
"#,
        url = bk.url()
    )
}

fn host_block(name: &str, uri: &str) -> String {
    format!("[[host]]\nname = \"{name}\"\nuri = \"{uri}\"\nmax_vms = 4\n\n")
}

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn decision<'a>(ds: &'a [Value], job: &str) -> &'a Value {
    ds.iter()
        .find(|d| d["job"] == job)
        .unwrap_or_else(|| panic!("no decision for {job} in {ds:?}"))
}

#[test]
fn check_config_names_file_line_and_key() {
    let bk = StandIn::start(Config::default()).unwrap();
    let text =
        config(&bk, &host_block("h1", "qemu:///nowhere")).replace("max_vms = 4", "max_vms = 0");
    let dir = LauncherDir::new(&text, bk.cluster_token()).unwrap();
    let out = dir.output(None, &["check-config"]).unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "{}:15: host[0].max_vms: 0 would never start a VM there; remove the host or give at least 1",
            dir.config().display()
        )
    );
    let ok = LauncherDir::new(
        &config(&bk, &host_block("h1", "qemu:///x")),
        bk.cluster_token(),
    )
    .unwrap();
    let out = ok.output(None, &["check-config"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dry_run_prints_a_decision_per_job_and_starts_nothing() {
    let Bed { bk, d, .. } = Bed::start(Config::default(), "").unwrap();
    let b = bk
        .add_build(
            "app",
            BuildSpec::new(vec![
                JobSpec::new(&["queue=linux"]),
                JobSpec::new(&["queue=linux", "os=mac"]),
                JobSpec::new(&["queue=windows"]),
            ]),
        )
        .unwrap();
    bk.set_queue_paused("windows", true);
    // "h0" never answers and has no wake settings: passed over for "h1".
    let hosts = host_block("h0", "qemu+unix:///system?socket=/nonexistent/sock")
        + &host_block("h1", &d.uri());
    let dir = LauncherDir::new(&config(&bk, &hosts), bk.cluster_token()).unwrap();
    let out = dir.output(None, &["run", "--once", "--dry-run"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ds = lines(&out.stdout);
    let linux = decision(&ds, &b.job_ids[0]);
    assert_eq!(linux["action"], "start", "{linux}");
    assert_eq!(linux["host"], "h1");
    assert_eq!(linux["definition"], "linux");
    let mac = decision(&ds, &b.job_ids[1]);
    assert_eq!(mac["action"], "skip");
    assert!(mac["reason"].as_str().unwrap().contains("os=mac"), "{mac}");
    let windows = decision(&ds, &b.job_ids[2]);
    assert_eq!(windows["action"], "skip");
    assert_eq!(
        windows["reason"],
        "queue windows is paused (dispatch_paused)"
    );

    // Nothing was reserved or started, and the stacks are gone again.
    assert!(bk
        .requests()
        .iter()
        .all(|r| !r.path.ends_with("batch-reserve")));
    assert_eq!(d.domains().unwrap(), vec!["agent-template".to_string()]);
    assert!(bk.stacks().is_empty(), "{:?}", bk.stacks());
}

#[test]
fn a_job_gets_one_vm_which_survives_a_launcher_restart_without_a_duplicate() {
    // The guest has no agent: it says which job it was given and powers off.
    let Bed { bk, host, d, .. } = Bed::start(
        Config::default(),
        "#!/bin/sh\necho acquire={{buildkite_job_id}} tags={{buildkite_agent_tags}}\nsleep 5\npoweroff\n",
    )
    .unwrap();
    let b = bk
        .add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]))
        .unwrap();
    let job = &b.job_ids[0];
    // The first listing fails with a 502 and the next with a body that is not JSON.
    bk.inject_fault(Fault::server_error(502).on_path("/scheduled-jobs").times(1))
        .unwrap();
    bk.inject_fault(Fault::malformed().on_path("/scheduled-jobs").times(1))
        .unwrap();
    let dir = LauncherDir::new(
        &config(&bk, &host_block("h1", &d.uri())),
        bk.cluster_token(),
    )
    .unwrap();

    let t0 = Instant::now();
    let out = dir.output(None, &["run", "--once"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = t0.elapsed();
    let inst = host.instances().unwrap();
    assert_eq!(inst.len(), 1, "{inst:?}");
    assert_eq!(inst[0].labels["job"], *job);
    assert_eq!(inst[0].labels["definition"], "linux");
    assert!(inst[0].name.starts_with("linux-"), "{}", inst[0].name);
    let reserves = bk
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("batch-reserve"))
        .count();
    assert_eq!(reserves, 1);
    eprintln!("one pass with two faults, to the VM start call: {took:?}");

    // A second launcher run finds the VM in libvirt and starts no other.
    let out = dir.output(None, &["run", "--once"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(host.instances().unwrap().len(), 1);

    let log = d.dir().join(format!("{}.serial.log", inst[0].name));
    let (text, _) = Libvirtd::wait_for_text(&log, POWEROFF, Duration::from_secs(90)).unwrap();
    assert!(
        text.contains(&format!("acquire={job} tags=queue=linux")),
        "{text}"
    );
    let gone = testbed::util::poll_until(Duration::from_secs(30), || {
        host.instances().unwrap().is_empty().then_some(())
    });
    assert!(gone.is_some(), "the VM is still there");
    assert_eq!(d.domains().unwrap(), vec!["agent-template".to_string()]);
    // The stand-in still has the job scheduled: no agent ran it.
    assert_eq!(bk.job(job).unwrap().state, JobState::Scheduled);
}

#[test]
fn a_job_reserved_by_a_killed_launcher_gets_its_vm_from_the_next_one_at_once() {
    let Bed { bk, host, d, .. } = Bed::start(Config::default(), "#!/bin/sh\nsleep 120\n").unwrap();
    // The first launcher's token request gets no answer: it is killed
    // between the job's reservation and the VM's start.
    bk.inject_fault(Fault::hang().on_path("/job-acquisition-tokens").times(1))
        .unwrap();
    let text = config(&bk, &host_block("h1", &d.uri())).replace(
        "[launcher]\n",
        "[launcher]\nstate_file = \"state/launcher.json\"\n",
    );
    let dir = LauncherDir::new(&text, bk.cluster_token()).unwrap();
    std::fs::create_dir(dir.dir.path().join("state")).unwrap();
    let state = dir.dir.path().join("state/launcher.json");
    let b = bk
        .add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]))
        .unwrap();
    let job = b.job_ids[0].clone();

    let mut first = dir.spawn(None, &["run"]).unwrap();
    first.wait_for(
        Duration::from_secs(60),
        "the job kept in the state file",
        || {
            std::fs::read_to_string(&state)
                .ok()
                .filter(|t| t.contains(&job))
        },
    );
    first.wait_for(Duration::from_secs(30), "the token request", || {
        bk.requests()
            .iter()
            .any(|r| r.path.ends_with("/job-acquisition-tokens"))
            .then_some(())
    });
    first.kill();
    assert!(host.instances().unwrap().is_empty());
    // Its reservation (wake 20 s + boot 60 s + 60 s) keeps the job out of
    // every listing for 140 s: only the state file brings it back sooner.
    let t0 = Instant::now();
    let second = dir.spawn(None, &["run"]).unwrap();
    let inst = second.wait_for(Duration::from_secs(60), "a VM for the job", || {
        let i = host.instances().unwrap();
        (!i.is_empty()).then_some(i)
    });
    let took = t0.elapsed();

    assert_eq!(inst.len(), 1, "{inst:?}");
    assert_eq!(inst[0].labels["job"], job);
    let log = second.log_text();
    assert!(
        log.contains(&format!(
            "job {job}: reserved before the restart; placing it again"
        )),
        "{log}"
    );
    eprintln!("the restarted launcher started the job's VM after {took:?}");
    // A third launcher on the same state file is refused while this one runs.
    let out = dir.output(None, &["run", "--once"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("launcher.state_file: another launcher is running with"),
        "{err}"
    );
}

#[test]
fn a_vm_a_killed_launcher_started_is_watched_by_the_next_one() {
    // The guest never takes its job.
    let Bed { bk, host, d, .. } = Bed::start(Config::default(), "#!/bin/sh\nsleep 300\n").unwrap();
    let text = config(&bk, &host_block("h1", &d.uri()))
        .replace("boot_timeout = 60", "boot_timeout = 15")
        .replace(
            "[launcher]\n",
            "[launcher]\nstate_file = \"launcher-state.json\"\n",
        );
    let dir = LauncherDir::new(&text, bk.cluster_token()).unwrap();
    let b = bk
        .add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]))
        .unwrap();
    let job = b.job_ids[0].clone();

    let mut first = dir.spawn(None, &["run"]).unwrap();
    let vm = first.wait_for(Duration::from_secs(60), "a VM for the job", || {
        host.instances().unwrap().first().map(|i| i.name.clone())
    });
    // Killed once the start call has returned (and the host lock is free).
    first.wait_for(Duration::from_secs(30), "the start's answer", || {
        first
            .log_text()
            .contains(&format!("job {job}: started {vm} on h1"))
            .then_some(())
    });
    first.kill();
    let second = dir.spawn(None, &["run"]).unwrap();
    // Its boot timeout counts from the restart: then it is removed and
    // the job placed again.
    let next = second.wait_for(Duration::from_secs(90), "a second VM for the job", || {
        let i = host.instances().unwrap();
        i.iter()
            .find(|i| i.name != vm && i.labels["job"] == job)
            .map(|i| i.name.clone())
    });

    let log = second.log_text();
    assert!(
        log.contains(&format!(
            "job {job}: {vm} on h1 was started before the restart; watching it"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "job {job}: {vm} did not take the job within the boot timeout; removing it"
        )),
        "{log}"
    );
    second.wait_for(Duration::from_secs(30), "the first VM removed", || {
        (!host.instances().unwrap().iter().any(|i| i.name == vm)).then_some(())
    });
    assert_ne!(next, vm);
}

#[test]
fn two_launchers_on_the_same_queue_never_start_two_vms_for_one_job() {
    let Bed { bk, host, d, .. } = Bed::start(Config::default(), "#!/bin/sh\nsleep 120\n").unwrap();
    let text = config(&bk, &host_block("h1", &d.uri())).replace("max_vms = 4", "max_vms = 20");
    let one = LauncherDir::new(&text, bk.cluster_token()).unwrap();
    let two = LauncherDir::new(&text, bk.cluster_token()).unwrap();
    let mut a = one.spawn(None, &["run"]).unwrap();
    let mut b = two.spawn(None, &["run"]).unwrap();
    let jobs = vec![JobSpec::new(&["queue=linux"]); 6];
    let build = bk.add_build("app", BuildSpec::new(jobs)).unwrap();
    let six = testbed::util::poll_until(Duration::from_secs(90), || {
        (host.instances().unwrap().len() >= 6).then_some(())
    });
    assert!(six.is_some(), "{}\n---\n{}", a.log_text(), b.log_text());
    // A few more passes (listings of the scheduled jobs): still one VM per job.
    let listings = || {
        bk.requests()
            .iter()
            .filter(|r| r.path.ends_with("/scheduled-jobs") && r.status.is_some())
            .count()
    };
    let before = listings();
    let passes = testbed::util::poll_until(Duration::from_secs(30), || {
        (listings() >= before + 4).then_some(())
    });
    assert!(passes.is_some(), "{}\n---\n{}", a.log_text(), b.log_text());
    let mut per_job: Vec<String> = host
        .instances()
        .unwrap()
        .into_iter()
        .map(|i| i.labels["job"].clone())
        .collect();
    per_job.sort();
    let mut want = build.job_ids.clone();
    want.sort();
    assert_eq!(per_job, want, "{}\n---\n{}", a.log_text(), b.log_text());
    let started = |r: &testbed::launcher::Running| r.log_text().matches(": started ").count();
    // A launcher logs a start once its start call has returned, which on a
    // loaded machine can come after libvirt already lists the VM.
    testbed::util::poll_until(Duration::from_secs(30), || {
        (started(&a) + started(&b) >= 6).then_some(())
    });
    assert_eq!(
        started(&a) + started(&b),
        6,
        "{}\n---\n{}",
        a.log_text(),
        b.log_text()
    );
    // One leaves (deregistering the shared stack); the other carries on.
    assert!(a.stop(Duration::from_secs(20)).is_some_and(|s| s.success()));
    let late = bk
        .add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]))
        .unwrap();
    let late_vm = testbed::util::poll_until(Duration::from_secs(60), || {
        host.instances()
            .unwrap()
            .iter()
            .any(|i| i.labels["job"] == late.job_ids[0])
            .then_some(())
    });
    assert!(late_vm.is_some(), "{}", b.log_text());
    assert!(b.stop(Duration::from_secs(20)).is_some_and(|s| s.success()));
    for i in host.instances().unwrap() {
        host.remove_instance(&i.name).unwrap();
    }
}

#[test]
fn without_job_acquisition_tokens_a_job_gets_no_vm_and_agent_tokens_cluster_is_named() {
    let Bed { bk, host, d, .. } = Bed::start(
        Config {
            job_acquisition_tokens: false,
            ..Config::default()
        },
        "#!/bin/sh\nsleep 5\npoweroff\n",
    )
    .unwrap();
    let refused = bk
        .add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]))
        .unwrap()
        .job_ids[0]
        .clone();
    let text = config(&bk, &host_block("h1", &d.uri()));
    let dir = LauncherDir::new(&text, bk.cluster_token()).unwrap();
    let out = dir.output(None, &["run", "--once"]).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(host.instances().unwrap().is_empty(), "{said}");
    assert!(
        said.contains(&format!(
            "job {refused} (linux): the Stacks API refused a job acquisition token"
        )),
        "{said}"
    );
    assert!(
        said.contains("set agent_tokens = \"cluster\" on [[agent]] linux"),
        "{said}"
    );
    let notes = bk.job(&refused).unwrap().notifications;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("agent_tokens = \"cluster\"")),
        "{notes:?}"
    );
    assert!(!said.contains(bk.cluster_token()), "{said}");

    // With agent_tokens = "cluster" the VMs get the cluster token, with a
    // warning at start. (The first job stays reserved by the first run's
    // stack; a new job is placed.)
    let placed = bk
        .add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]))
        .unwrap()
        .job_ids[0]
        .clone();
    let text = text.replace(
        "template = \"agent-template\"\n\n[[agent]]\nname = \"windows\"",
        "template = \"agent-template\"\nagent_tokens = \"cluster\"\n\n[[agent]]\nname = \"windows\"",
    );
    std::fs::write(dir.config(), &text).unwrap();
    let out = dir.output(None, &["run", "--once"]).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.starts_with("warning: agent[0] (linux): agent_tokens = \"cluster\": every VM gets a long-lived agent token"),
        "{said}"
    );
    let inst = host.instances().unwrap();
    assert_eq!(inst.len(), 1, "{said}");
    assert_eq!(inst[0].labels["job"], placed);
}

//! The real `buildkite-agent` (no `--acquire-job`) gets its job from the
//! stand-in the way agents started by hand or by other autoscalers do:
//! it registers, connects and pings; the ping hands it the job its tags
//! fit, it accepts, runs and finishes it, then (`--disconnect-after-job`)
//! disconnects. The agent runs on this machine against the stand-in on
//! loopback; its job is an `echo` under `/bin/sh`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testbed::buildkite::{BuildSpec, Config, JobSpec, JobState, StandIn};
use testbed::peers::buildkite_agent;
use testbed::util::wait_until;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_real_agent_takes_a_job_handed_out_by_ping_and_runs_it() {
    let agent = buildkite_agent().unwrap();
    let bk = StandIn::start(Config::default()).unwrap();
    bk.add_pipeline("app").unwrap();
    let b = bk
        .add_build(
            "app",
            BuildSpec::new(vec![
                JobSpec::new(&["queue=elsewhere"]),
                JobSpec::new(&["queue=ping"]).command("echo \"hello from ping, $((40 + 2))\""),
            ]),
        )
        .unwrap();
    let (elsewhere, job) = (&b.job_ids[0], &b.job_ids[1]);
    let dir = tempfile::tempdir().unwrap();
    let hooks = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    // No git checkout here: a checkout hook stands in for it.
    let checkout = hooks.join("checkout");
    std::fs::write(&checkout, "#!/bin/sh\necho checkout skipped\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&checkout, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&agent)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.path())
        .env("BUILDKITE_SHELL", "/bin/sh -e -c")
        .args([
            "start",
            "--token",
            bk.agent_token(),
            "--endpoint",
            &format!("{}/v3", bk.url()),
            "--tags",
            "queue=ping",
            "--name",
            "pinger",
            "--build-path",
            &dir.path().join("builds").to_string_lossy(),
            "--hooks-path",
            &hooks.to_string_lossy(),
            "--plugins-path",
            &dir.path().join("plugins").to_string_lossy(),
            "--no-plugins",
            "--disconnect-after-job",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        bk.wait_for_job_state(
            job,
            JobState::Finished { exit_status: 0 },
            Duration::from_secs(60)
        ),
        "job is {:?}\n{}",
        bk.job(job).map(|j| j.state),
        agent_log()
    );
    let run = bk.job_run(job).unwrap();
    assert!(
        run.log_text().contains("hello from ping, 42"),
        "{}",
        run.log_text()
    );
    // The agent leaves after its one job.
    let s = wait_until(
        Duration::from_secs(30),
        "the agent exiting after its one job",
        || format!("still running\n{}", agent_log()),
        || child.0.try_wait().unwrap(),
    );
    assert!(s.success(), "{s}\n{}", agent_log());
    let agents = bk.registered_agents();
    assert_eq!(agents.len(), 1);
    assert!(agents[0].disconnected_at.is_some());
    assert!(agents[0].heartbeats >= 1, "it pinged");
    // It pinged, accepted (never acquired), started and finished.
    let calls: Vec<String> = bk
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v3/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let pos = |c: &str| {
        calls
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("no {c} in {calls:?}"))
    };
    assert!(pos("GET /v3/ping") < pos(&format!("PUT /v3/jobs/{job}/accept")));
    assert!(pos(&format!("PUT /v3/jobs/{job}/accept")) < pos(&format!("PUT /v3/jobs/{job}/start")));
    assert!(!calls.iter().any(|c| c.ends_with("/acquire")), "{calls:?}");
    // The job of another queue was not handed out.
    assert_eq!(bk.job(elsewhere).unwrap().state, JobState::Scheduled);
}

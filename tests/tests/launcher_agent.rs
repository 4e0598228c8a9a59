//! End to end with the real `buildkite-agent` 3.78.0: the stand-in
//! schedules a job on queue `linux`; the launcher (on the bed's LAN, over
//! `qemu+ssh://`) wakes a sleeping host, asks the Stacks API for a job
//! acquisition token and starts an instance from a template whose tiny
//! guest carries the agent; inside the VM `buildkite-agent start` with
//! the token as `BUILDKITE_AGENT_TOKEN` and the job as
//! `BUILDKITE_AGENT_ACQUIRE_JOB` registers with the stand-in's agent API,
//! acquires that job, runs its command, streams the log and finishes with
//! exit status 0; the VM powers off and is gone. The VM's seed holds that
//! job's token and not the cluster token, which is in no volume, domain
//! XML or log.

use std::time::{Duration, SystemTime};

use kvmhost::libvirt::Host;
use kvmhost::nocloud::Seed;
use testbed::buildkite::{BuildSpec, Config, JobSpec, JobState};
use testbed::guest::{TinyGuest, POWEROFF};
use testbed::hosts::Lab;
use testbed::launcher::{define_agent_template_sized, standin_in, LauncherDir};
use testbed::peers::buildkite_agent;

/// Seconds from `from` to `to`.
fn secs(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).unwrap_or_default().as_secs_f64()
}

/// The guest's script: the launcher fills in the placeholders (the token
/// is the job's acquisition token), started the way Buildkite documents
/// for job acquisition tokens. Busybox has no bash, so the agent's shell
/// is `/bin/sh`; there is no git either, so a `checkout` hook stands in
/// for the checkout.
const USER_DATA: &str = "#!/bin/sh\n\
export HOME=/root\n\
export BUILDKITE_AGENT_TOKEN='{{buildkite_agent_token}}'\n\
export BUILDKITE_AGENT_ACQUIRE_JOB='{{buildkite_job_id}}'\n\
export BUILDKITE_AGENT_ENDPOINT='{{buildkite_agent_endpoint}}'\n\
export BUILDKITE_BUILD_PATH=/tmp/builds\n\
export BUILDKITE_SHELL='/bin/sh -e -c'\n\
export BUILDKITE_HOOKS_PATH=/tmp/hooks\n\
mkdir -p /tmp/builds /tmp/hooks\n\
printf '#!/bin/sh\\necho checkout skipped: no git here\\n' >/tmp/hooks/checkout\n\
chmod +x /tmp/hooks/checkout\n\
buildkite-agent start --tags '{{buildkite_agent_tags}}' --no-color\n\
echo agent-exit=$?\n\
poweroff\n";

/// The user-data of instance `vm`'s seed, read back from its volume.
fn seed_user_data(pool_dir: &std::path::Path, vm: &str) -> String {
    // Named <vm>--inst-<host mark>-seed.iso.
    let prefix = format!("{vm}--inst-");
    let path = std::fs::read_dir(pool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with("-seed.iso")
        })
        .unwrap_or_else(|| panic!("no seed volume of {vm} in {}", pool_dir.display()));
    let iso = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let seed = Seed::from_iso(&iso).unwrap();
    String::from_utf8(seed.get("user-data").expect("a user-data file").to_vec()).unwrap()
}

/// The files under `dir` whose bytes contain `needle`.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let bytes = std::fs::read(&path).ok()?;
            bytes
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
                .then_some(path)
        })
        .collect()
}

fn run(host_awake: bool) {
    let agent = buildkite_agent().unwrap();
    let mut lab = Lab::new().unwrap();
    lab.add_host("vmhost", host_awake).unwrap();
    let h = &lab.hosts()[0];
    let guest = TinyGuest::ensure()
        .unwrap()
        .carrying(&[(&agent, "/usr/bin/buildkite-agent")], h.daemon().dir())
        .unwrap();
    let log_dir = h.daemon().dir().to_path_buf();
    define_agent_template_sized(
        &Host::open(&h.daemon().uri()).unwrap(),
        &guest,
        "agent-template",
        &log_dir,
        USER_DATA,
        512,
    )
    .unwrap();
    // On every address of the client's namespace: the launcher uses
    // loopback, the agents in the guests the client's LAN address.
    let bk = standin_in(
        lab.client(),
        Config {
            bind: std::net::Ipv4Addr::UNSPECIFIED.into(),
            ..Config::default()
        },
    )
    .unwrap();
    bk.add_pipeline("app").unwrap();
    let config = format!(
        r#"[buildkite]
agent_endpoint = "{url}/v3"
vm_agent_endpoint = "http://{client}:{port}/v3"
agent_token_file = "token"
stack_key = "e2e"
poll_interval = 1

[launcher]
wake_timeout = 60
boot_timeout = 180

[[host]]
name = "vmhost"
uri = "qemu+ssh://root@{ip}/system"
wake = {{ mac = "{mac}", broadcast = "{b}" }}

[[agent]]
name = "linux"
tags = ["queue=linux"]
template = "agent-template"
"#,
        url = bk.url(),
        client = lab.client_ip(),
        port = bk.port(),
        ip = h.ip,
        mac = h.mac,
        b = lab.broadcast(),
    );
    let mut dir = LauncherDir::new(&config, bk.cluster_token()).unwrap();
    dir.path_first = Some(lab.ssh_path_dir().to_path_buf());
    let launcher = dir.spawn(Some(lab.client()), &["run"]).unwrap();
    launcher.wait_for(Duration::from_secs(30), "stack registration", || {
        (!bk.stacks().is_empty()).then_some(())
    });
    assert_eq!(lab.hosts()[0].is_awake(), host_awake);

    let command = "echo \"hello from the agent, $((40 + 2))\"";
    let b = bk
        .add_build(
            "app",
            BuildSpec::new(vec![JobSpec::new(&["queue=linux"]).command(command)]),
        )
        .unwrap();
    let job = b.job_ids[0].clone();
    let scheduled = SystemTime::now();
    let libvirt = Host::open(&lab.hosts()[0].daemon().uri()).unwrap();
    let vm = launcher.wait_for(Duration::from_secs(120), "a VM for the job", || {
        libvirt
            .instances()
            .ok()?
            .into_iter()
            .find(|i| i.labels.get("job") == Some(&job))
    });
    let vm_seen = SystemTime::now();
    assert!(lab.hosts()[0].is_awake());
    // The seed carries a job acquisition token for this job, not the
    // cluster token; no volume and no domain XML holds the cluster token.
    let daemon = lab.hosts()[0].daemon();
    let user_data = seed_user_data(&daemon.pool_dir(), &vm.name);
    let jat = user_data
        .lines()
        .find_map(|l| l.strip_prefix("export BUILDKITE_AGENT_TOKEN='"))
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no agent token in the seed's user-data:\n{user_data}"))
        .to_string();
    assert!(jat.starts_with("bkjat_"), "the seed's token is not a JAT");
    assert!(user_data.contains(&format!("export BUILDKITE_AGENT_ACQUIRE_JOB='{job}'")));
    let issued = bk.job_acquisition_tokens();
    let issued = issued
        .iter()
        .find(|t| t.token == jat)
        .expect("the stand-in issued the seed's token");
    assert_eq!(issued.job_id, job, "the token was issued for another job");
    assert_eq!(
        files_holding(&daemon.pool_dir(), bk.cluster_token()),
        Vec::<std::path::PathBuf>::new(),
        "the cluster token is in a volume"
    );
    let xml = daemon.virsh(&["-r", "dumpxml", &vm.name]).unwrap();
    assert!(
        !xml.contains(bk.cluster_token()),
        "the cluster token is in the XML"
    );
    assert!(!xml.contains(&jat), "the JAT is in the XML");
    let serial = log_dir.join(format!("{}.serial.log", vm.name));
    let console = || std::fs::read_to_string(&serial).unwrap_or_default();

    let state = launcher.wait_for(Duration::from_secs(240), "the job to finish", || {
        bk.job(&job).map(|j| j.state).filter(|s| s.is_terminal())
    });
    let finished = state == JobState::Finished { exit_status: 0 };
    assert!(
        finished,
        "the job is {state}, not finished(0); log: {}\nrun: {:?}\nconsole:\n{}\nlauncher:\n{}",
        bk.job_run(&job).map(|r| r.log_text()).unwrap_or_default(),
        bk.job_run(&job),
        console(),
        launcher.log_text()
    );
    let run = bk.job_run(&job).expect("an agent ran the job");
    let agents = bk.registered_agents();
    let agent = agents
        .iter()
        .find(|a| a.id == run.agent_id)
        .expect("the agent that ran it registered");
    assert!(
        agent.tags.iter().any(|t| t == "queue=linux"),
        "{:?}",
        agent.tags
    );
    assert!(agent.version.starts_with("3.78.0"), "{}", agent.version);
    // The agent registered with the job's token, once, and may acquire
    // only that job.
    assert_eq!(agent.acquire_only.as_deref(), Some(job.as_str()));
    let issued = bk
        .job_acquisition_tokens()
        .into_iter()
        .find(|t| t.token == jat)
        .unwrap();
    assert_eq!(issued.agent_id.as_deref(), Some(run.agent_id.as_str()));
    assert_eq!(issued.refused, 0);
    let with_jat = bk
        .requests()
        .iter()
        .filter(|r| r.authorization.as_deref() == Some(&format!("Token {jat}")))
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect::<Vec<_>>();
    assert_eq!(
        with_jat,
        [("POST".to_string(), "/v3/register".to_string())],
        "the JAT is used once, to register"
    );
    assert!(agent.connected_at.is_some(), "the agent never connected");
    assert_eq!(run.exit_status.as_deref(), Some("0"));
    let log = run.log_text();
    assert!(
        log.contains("hello from the agent, 42"),
        "the command's output is not in the log:\n{log}"
    );
    eprintln!("the job's log:\n{log}");

    // The VM powers off and libvirt forgets it.
    launcher.wait_for(
        Duration::from_secs(90),
        "the VM to power off and go",
        || {
            let names: Vec<String> = libvirt
                .instances()
                .ok()?
                .into_iter()
                .map(|i| i.name)
                .collect();
            (!names.contains(&vm.name)).then_some(())
        },
    );
    let gone = SystemTime::now();
    let agent_gone = launcher.wait_for(Duration::from_secs(10), "the agent to disconnect", || {
        bk.registered_agents()
            .into_iter()
            .find(|a| a.id == run.agent_id)?
            .disconnected_at
    });
    // The agent's calls, in order, each answered with success; its
    // bootstrap asked for the build's meta-data with the job's token.
    let calls: Vec<(String, String, Option<u16>)> = bk
        .requests()
        .into_iter()
        .filter(|r| !r.path.starts_with("/v3/stacks") && !r.path.starts_with("/v3/metrics"))
        .map(|r| (r.method, r.path.replace(&job, ":id"), r.status))
        .collect();
    let order = [
        ("POST", "/v3/register"),
        ("POST", "/v3/connect"),
        ("PUT", "/v3/jobs/:id/acquire"),
        ("PUT", "/v3/jobs/:id/start"),
        ("POST", "/v3/jobs/:id/chunks"),
        ("PUT", "/v3/jobs/:id/finish"),
        ("POST", "/v3/disconnect"),
    ];
    let mut at = 0;
    for (method, path) in order {
        let found = calls[at..]
            .iter()
            .position(|(m, p, _)| m == method && p == path)
            .unwrap_or_else(|| panic!("no {method} {path} after call {at}: {calls:?}"));
        at += found;
    }
    assert!(
        calls
            .iter()
            .any(|(m, p, _)| m == "POST" && p == "/v3/jobs/:id/data/exists"),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .all(|(_, _, s)| s.is_some_and(|s| (200..300).contains(&s))),
        "a call failed: {calls:?}"
    );
    // The guest powered itself off after the agent exited 0.
    let text = console();
    let exit = text.find("agent-exit=0");
    assert!(
        exit.is_some_and(|at| text[at..].contains(POWEROFF)),
        "the agent did not exit 0, or the guest did not power off after it:\n{text}"
    );
    let log = launcher.log_text();
    assert!(!log.contains(bk.cluster_token()), "the token is in the log");
    assert!(!log.contains(&jat), "the JAT is in the log");
    // A job run to the end between two of the launcher's looks is taken,
    // not a reason to remove its VM.
    assert!(!log.contains("the VM is not needed"), "{log}");

    let acquired = run.acquired_at.unwrap();
    let started = run.started_at.unwrap();
    let done = run.finished_at.unwrap();
    eprintln!(
        "host {}: job scheduled -> VM listed by libvirt {:.1}s -> agent acquired the job {:.1}s \
         -> job running {:.1}s -> finished {:.1}s -> agent disconnected {:.1}s -> VM gone {:.1}s \
         (all from scheduling)",
        if host_awake { "awake" } else { "asleep" },
        secs(scheduled, vm_seen),
        secs(scheduled, acquired),
        secs(scheduled, started),
        secs(scheduled, done),
        secs(scheduled, agent_gone),
        secs(scheduled, gone),
    );
}

#[test]
fn the_real_agent_runs_the_job_in_a_vm_on_an_awake_host() {
    run(true);
}

#[test]
fn the_real_agent_runs_the_job_in_a_vm_on_a_host_the_launcher_wakes() {
    run(false);
}

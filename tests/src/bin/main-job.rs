//! The README's main job, on this machine, with nothing but its own
//! namespaces: builds a tiny agent image with Packer and our builder,
//! deploys it with Terraform and our provider as an agent template to two
//! VM hosts (one awake, one asleep) plus one always-on VM, runs the
//! launcher against a Buildkite stand-in holding a few jobs, and shows
//! each job get its VM, the real `buildkite-agent` run it, the VMs power
//! off and vanish, and the woken host go back to sleep. vmhost01 also
//! keeps one saved slot (an instance booted to where `kvmbe-handoff`
//! waits, its memory saved to a file on the host's disk), restored for
//! one more job scheduled once it is ready. Prints a summary table (and with
//! `--json` one JSON object per job) and exits 1 when a job did not pass.
//!
//! Usage: main-job [--keep] [--jobs N] [--json]
//!
//! `scripts/quickstart.sh` runs it after `scripts/setup.sh`. With
//! `BUILDKITE_AGENT_TOKEN` set, the launcher talks to Buildkite instead.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use kvmhost::libvirt::Host;
use testbed::buildkite::{BuildSpec, Config, JobSpec, JobState, StandIn};
use testbed::guest::TinyGuest;
use testbed::hosts::{Lab, VmHost};
use testbed::launcher::{standin_in, Breakdown, LauncherDir, Running, STAGES};
use testbed::libvirtd::{NETWORK, POOL};
use testbed::packer::{hcl_attributes, tiny_guest_source};
use testbed::peers::buildkite_agent;
use testbed::tools;
use testbed::util::{bin_dir, workspace_root, OutputWithin};

/// The image's and the template's name.
const AGENT: &str = "tiny-agent";
/// The agent definition that keeps a saved slot on vmhost01.
const SAVED: &str = "linux-slot";
/// Its slot.
const SLOT: &str = "linux-slot-saved-0";
/// How long the sleeping host's powernapd waits with no domain running
/// before it puts the host back to sleep. Its part of `terraform apply`
/// (woken, image uploaded, template defined) must fit in it: 4-6 s here.
const NAP_AFTER: Duration = Duration::from_secs(12);
/// One command (a build, a deploy) may take this long.
const COMMAND_LIMIT: Duration = Duration::from_secs(300);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Args {
    keep: bool,
    jobs: usize,
    json: bool,
}

const USAGE: &str = "usage: main-job [--keep] [--jobs N] [--json]";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        keep: false,
        jobs: 3,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--keep" => a.keep = true,
            "--json" => a.json = true,
            "--jobs" => {
                let v = it.next().context("--jobs needs a count (1 to 10)")?;
                a.jobs = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=10).contains(n))
                    .with_context(|| format!("--jobs {v:?}: give a count from 1 to 10"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    // Ctrl-C and SIGTERM end the run through its normal clean-up.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let t0 = Instant::now();
    let result = parse_args().and_then(|a| run(&a, t0));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("main-job: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn say(t0: Instant, what: &str) {
    println!(
        "\x1b[1m==> [{:5.1}s] {what}\x1b[0m",
        t0.elapsed().as_secs_f64()
    );
}

fn stopped() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}

/// Polls `f` every 100 ms until it gives a value, for at most `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        stopped()?;
        if t0.elapsed() > limit {
            bail!("{what} did not happen within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A work folder QEMU can read, removed when dropped.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let path = PathBuf::from(format!("/tmp/kvmbe-main-job-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One job as the run saw it.
struct JobSeen {
    id: String,
    label: String,
    scheduled: SystemTime,
    vm: Option<(String, String, SystemTime)>,
}

/// Seconds from `from` to `to`, to a tenth as the table prints them.
fn secs(from: SystemTime, to: Option<SystemTime>) -> Option<f64> {
    let d = to?.duration_since(from).ok()?;
    Some((d.as_secs_f64() * 10.0).round() / 10.0)
}

/// `v` in a column `width` wide, `-` for none.
fn column(v: Option<f64>, width: usize) -> String {
    match v {
        Some(v) => format!(" {v:>width$.1}"),
        None => format!(" {:>width$}", "-"),
    }
}

/// Runs `c`, failing with what it printed when it fails.
fn checked(mut c: Command, what: &str) -> Result<Output> {
    let out = c
        .output_within(COMMAND_LIMIT)
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn indent(text: &[u8]) {
    for l in String::from_utf8_lossy(text).lines() {
        println!("    {l}");
    }
}

fn run(args: &Args, t0: Instant) -> Result<bool> {
    let real_token = std::env::var("BUILDKITE_AGENT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    for b in [
        "kvmbe",
        "buildkite-agent-launcher",
        "powernapd",
        "packer-plugin-libvirt",
        "terraform-provider-libvirt",
        "bed-sleeper",
        "kvmbe-handoff",
    ] {
        if !bin_dir().join(b).is_file() {
            bail!(
                "{} is not built: run cargo build --workspace --bins (scripts/quickstart.sh does)",
                bin_dir().join(b).display()
            );
        }
    }
    let agent = buildkite_agent()?;
    say(
        t0,
        "the tiny guest (Debian kernel + busybox), built once from Debian packages",
    );
    let guest = TinyGuest::ensure()?;
    guest.check_reachable_by_others()?;
    let work = WorkDir::new()?;

    say(
        t0,
        "VM hosts: vmhost01 awake, vmhost02 asleep (wakes on a magic packet, its powernapd puts it back to sleep)",
    );
    let mut lab = Lab::new()?;
    lab.add_host("vmhost01", true)?;
    lab.add_napping_host("vmhost02", false, NAP_AFTER)?;
    let [h1, h2] = lab.hosts() else {
        bail!("the lab should have two hosts");
    };
    println!(
        "    vmhost01 {} ({}), vmhost02 {} ({}); client {} on LAN 10.77.0.0/24",
        h1.ip,
        h1.daemon().netns().name(),
        h2.ip,
        h2.daemon().netns().name(),
        lab.client_ip()
    );
    let id = std::process::id();
    println!("    run id {id}: namespaces kvmbe-*-{id}-*, folders /tmp/kvmbe-*-{id}*");

    // --- the image --------------------------------------------------------
    say(
        t0,
        "packer build (our libvirt builder) of the agent image, buildkite-agent 3.78.0 and kvmbe-handoff inside, on vmhost01",
    );
    let image_dir = work.path.join("agent-image");
    std::fs::create_dir_all(&image_dir)?;
    std::fs::write(
        image_dir.join("agent.pkr.hcl"),
        packer_template(
            h1,
            &guest,
            &gzipped(&agent, &work.path)?,
            &handoff_bundle(&work.path)?,
        ),
    )?;
    let mut c = h1
        .daemon()
        .netns()
        .cmd(&bin_dir().join("kvmbe").display().to_string());
    for (k, v) in tools::packer(&work.path)?.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.args(["build", "--quiet", "--keep", "1"]).arg(&image_dir);
    let out = checked(c, "kvmbe build")?;
    indent(&out.stdout);
    stopped()?;

    // --- the deployment ---------------------------------------------------
    let bk = if real_token.is_none() {
        let bk = standin_in(
            lab.client(),
            Config {
                bind: std::net::Ipv4Addr::UNSPECIFIED.into(),
                ..Config::default()
            },
        )?;
        bk.add_pipeline("app")?;
        Some(bk)
    } else {
        None
    };
    let token = match (&bk, &real_token) {
        (Some(bk), _) => bk.cluster_token().to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => unreachable!("a stand-in or a token"),
    };
    say(
        t0,
        "kvmbe deploy: terraform apply (our provider) of the agent template to both hosts (waking vmhost02) and an always-on VM on vmhost01",
    );
    let root = work.path.join("deploy");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("user-data.tftpl"), USER_DATA)?;
    std::fs::write(
        root.join("main.tf"),
        terraform_root(&lab, &root, &image_dir, &guest),
    )?;
    let cli = tools::mirror_config(&work.path)?;
    let mut c = lab
        .client()
        .cmd(&bin_dir().join("kvmbe").display().to_string());
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("PATH", format!("{}:{path}", lab.ssh_path_dir().display()))
        .env("TF_CLI_CONFIG_FILE", &cli)
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_INPUT", "0")
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_CLI_ARGS", "-no-color")
        .env_remove("TF_LOG")
        .args(["deploy", "-y"])
        .arg(&root);
    let deploy_started = Instant::now();
    let out = checked(c, "kvmbe deploy")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines().filter(|l| {
        l.contains("Apply complete") || l.starts_with("deployed") || l.contains(": deployed")
    }) {
        println!("    {l}");
    }
    println!(
        "    init, validate and apply took {:.1} s",
        deploy_started.elapsed().as_secs_f64()
    );
    let h1c = Host::open(&h1.daemon().uri())?;
    let h2c = Host::open(&h2.daemon().uri())?;
    for (name, h) in [("vmhost01", &h1c), ("vmhost02", &h2c)] {
        h.template(AGENT)
            .with_context(|| format!("the template {AGENT} is not on {name}"))?;
    }
    let service = wait_for(Duration::from_secs(30), "the always-on VM running", || {
        h1.daemon()
            .virsh(&["domstate", "service"])
            .ok()
            .filter(|s| s.trim() == "running")
    })?;
    println!(
        "    template {AGENT} on vmhost01 and vmhost02; always-on VM 'service' on vmhost01: {}",
        service.trim()
    );

    say(t0, "vmhost02 idles back to sleep (no domain runs there)");
    let slept = wait_sleep(h2, NAP_AFTER + Duration::from_secs(30))?;
    println!("    asleep {:.1} s after the deploy", slept.as_secs_f64());

    // --- the launcher -----------------------------------------------------
    let config = launcher_config(&lab, bk.as_ref());
    let mut dir = LauncherDir::new(&config, &token)?;
    dir.path_first = Some(lab.ssh_path_dir().to_path_buf());
    let Some(bk) = bk else {
        return real_buildkite(&lab, &dir, t0, &work);
    };
    say(
        t0,
        "buildkite-agent-launcher against the Buildkite stand-in (no account needed)",
    );
    let launcher = dir.spawn(Some(lab.client()), &["run"])?;
    wait_for(
        Duration::from_secs(30),
        "the launcher's stack registration",
        || (!bk.stacks().is_empty()).then_some(()),
    )
    .map_err(|e| anyhow::anyhow!("{e}; the launcher said:\n{}", launcher.log_text()))?;
    // The saved slot's build (an instance booting until it is saved)
    // takes its room on vmhost01 first, so that the jobs scheduled next
    // go as before: one cold on vmhost01, the rest to vmhost02.
    wait_for(
        Duration::from_secs(30),
        "the launcher building a saved slot on vmhost01",
        || {
            h1c.instances()
                .ok()?
                .iter()
                .any(|i| i.name == SLOT)
                .then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; the launcher said:\n{}", launcher.log_text()))?;
    println!("    saved slot {SLOT} being built on vmhost01 (definition {SAVED})");

    say(
        t0,
        &format!(
            "{} job{} on queue linux",
            args.jobs,
            if args.jobs == 1 { "" } else { "s" }
        ),
    );
    let spec = |n: usize| {
        JobSpec::new(&["queue=linux"])
            .step_key(&format!("job{n}"))
            .command(&format!("echo \"job {n} on $(hostname): $((40 + {n}))\""))
    };
    let build = bk.add_build("app", BuildSpec::new((1..=args.jobs).map(spec).collect()))?;
    let scheduled = SystemTime::now();
    let mut jobs: Vec<JobSeen> = build
        .job_ids
        .iter()
        .enumerate()
        .map(|(i, id)| JobSeen {
            id: id.clone(),
            label: format!("job{}", i + 1),
            scheduled,
            vm: None,
        })
        .collect();
    let hosts = [("vmhost01", &h1c), ("vmhost02", &h2c)];
    let mut woken = false;
    let mut slot_scheduled = false;
    let all_done = Instant::now();
    let failure = loop {
        if !woken && h2.is_awake() {
            woken = true;
            println!("    vmhost02 woken by the launcher");
        }
        // One more job once the slot is ready.
        let ready = format!("saved slot {SLOT} on vmhost01 is ready");
        if !slot_scheduled && launcher.log_text().contains(&ready) {
            slot_scheduled = true;
            let n = jobs.len() + 1;
            let build = bk.add_build("app", BuildSpec::new(vec![spec(n)]))?;
            println!("    saved slot {SLOT} is ready: job{n} scheduled");
            jobs.push(JobSeen {
                id: build.job_ids[0].clone(),
                label: format!("job{n}"),
                scheduled: SystemTime::now(),
                vm: None,
            });
        }
        for (name, h) in hosts {
            for i in h.instances().unwrap_or_default() {
                if let Some(j) = jobs
                    .iter_mut()
                    .find(|j| j.vm.is_none() && i.labels.get("job") == Some(&j.id))
                {
                    j.vm = Some((name.to_string(), i.name.clone(), SystemTime::now()));
                    println!("    {}: VM {} started on {name}", j.label, i.name);
                }
            }
        }
        let done = slot_scheduled
            && jobs
                .iter()
                .all(|j| bk.job(&j.id).is_some_and(|s| s.state.is_terminal()));
        if done {
            break None;
        }
        if STOP.load(Ordering::SeqCst) {
            break Some("interrupted".to_string());
        }
        if all_done.elapsed() > Duration::from_secs(240) {
            break Some("the jobs did not all finish within 240 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Some(why) = &failure {
        println!("    {why}; the launcher said:\n{}", launcher.log_text());
    }
    for j in &jobs {
        if let Some(run) = bk.job_run(&j.id) {
            let log = run.log_text();
            let said = format!("{} on ", j.label.replace("job", "job "));
            if let Some(line) = log
                .lines()
                .find(|l| l.contains(&said) && !l.contains("echo"))
            {
                // The agent prefixes lines with a timestamp escape
                // (ESC _bk;t=...BEL).
                let line = line.rsplit('\u{7}').next().unwrap_or(line).trim();
                println!("    {}: its log says \"{line}\"", j.label);
            }
        }
    }

    say(t0, "the jobs' VMs power off and vanish from libvirt");
    // The slot's clone is gone too: the slot waits on vmhost01's disk.
    let gone = wait_for(Duration::from_secs(90), "every job's VM gone", || {
        hosts
            .iter()
            .all(|(_, h)| {
                h.instances()
                    .is_ok_and(|v| v.iter().all(|i| !i.labels.contains_key("job")))
            })
            .then(SystemTime::now)
    });
    let gone_ok = match &gone {
        Ok(_) => {
            let left: Vec<String> = hosts
                .iter()
                .flat_map(|(name, h)| {
                    h.instances()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |i| format!("{} on {name}", i.name))
                })
                .collect();
            println!(
                "    no job's VM left on vmhost01 or vmhost02; others running: {}",
                if left.is_empty() {
                    "none".to_string()
                } else {
                    left.join(", ")
                }
            );
            true
        }
        Err(e) => {
            println!("    {e}");
            false
        }
    };
    let service_still = h1
        .daemon()
        .virsh(&["domstate", "service"])
        .unwrap_or_default();
    println!("    always-on VM 'service': {}", service_still.trim());

    say(t0, "vmhost02 goes back to sleep");
    let asleep = if woken || h2.is_awake() {
        match wait_sleep(h2, NAP_AFTER + Duration::from_secs(30)) {
            Ok(d) => {
                println!(
                    "    vmhost02 asleep again ({:.1} s after its last VM)",
                    d.as_secs_f64()
                );
                true
            }
            Err(e) => {
                println!("    {e}");
                false
            }
        }
    } else {
        println!("    vmhost02 was never woken: no job needed it");
        true
    };

    // --- the summary ------------------------------------------------------
    println!();
    // The kind and stage columns are the launcher's own account of each
    // start, from its last note on the job: a cold VM or a saved slot's
    // clone, and the
    // seconds from the job seen to reserved, woken, token, VM started (a
    // slot's clone: restored and handed the job), agent took the job.
    let mut header = format!(
        "{:<6} {:<10} {:>14} {:>18} {:>5}",
        "job", "host", "s to VM start", "s to agent running", "kind"
    );
    for st in STAGES {
        header.push_str(&format!(" {st:>7}"));
    }
    println!("{header}  result");
    let mut all_passed = failure.is_none() && gone_ok && asleep;
    let mut json = Vec::new();
    for j in &jobs {
        let state = bk.job(&j.id).map(|s| s.state);
        let run = bk.job_run(&j.id);
        let result = match state {
            Some(JobState::Finished { exit_status: 0 }) => "passed".to_string(),
            Some(s) => s.rest_name().to_string(),
            None => "unknown".into(),
        };
        all_passed &= result == "passed";
        let stages = bk
            .job(&j.id)
            .and_then(|job| Breakdown::of_notes(&job.notifications));
        let host = j.vm.as_ref().map(|v| v.0.as_str());
        let kind = stages.as_ref().map(|b| b.kind);
        let to_vm = secs(j.scheduled, j.vm.as_ref().map(|v| v.2));
        let to_agent = secs(j.scheduled, run.and_then(|r| r.started_at));
        let mut row = format!(
            "{:<6} {:<10}{}{} {:>5}",
            j.label,
            host.unwrap_or("-"),
            column(to_vm, 14),
            column(to_agent, 18),
            kind.unwrap_or("-"),
        );
        let mut line = serde_json::json!({
            "job": j.label,
            "host": host,
            "kind": kind,
            "seconds_to_vm": to_vm,
            "seconds_to_agent": to_agent,
            "result": result,
        });
        for st in STAGES {
            let v = stages.as_ref().and_then(|b| b.stage(st));
            row.push_str(&column(v, 7));
            line[st] = v.into();
        }
        println!("{row}  {result}");
        json.push(line);
    }
    println!();
    if args.json {
        // One object per job and line, for scripts.
        for line in &json {
            println!("{line}");
        }
        println!();
    }
    // A start that fell back to a cold VM says why.
    for line in launcher.log_text().lines() {
        if line.ends_with("starting a VM for the job") {
            println!("launcher: {line}");
        }
    }
    if !all_passed && failure.is_none() {
        println!("the launcher said:\n{}", launcher.log_text());
    }

    finish(launcher, &lab, t0, args, &work)?;
    drop(bk);
    drop(h1c);
    drop(h2c);
    drop(lab);
    say(
        t0,
        if all_passed {
            "done: every job passed"
        } else {
            "done: not every job passed"
        },
    );
    Ok(all_passed)
}

/// Waits until `h` sleeps; returns how long it took.
fn wait_sleep(h: &VmHost, limit: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    wait_for(limit, "vmhost02 going to sleep", || {
        (!h.is_awake()).then_some(())
    })?;
    Ok(t0.elapsed())
}

/// Stops the launcher; with `--keep`, first waits for Enter (or Ctrl-C).
fn finish(
    mut launcher: Running,
    lab: &Lab,
    t0: Instant,
    args: &Args,
    work: &WorkDir,
) -> Result<()> {
    if args.keep {
        keep_until_enter(lab, work, t0);
    }
    say(
        t0,
        "clean-up: launcher, stand-in, hosts' daemons and namespaces, work folder",
    );
    launcher.stop(Duration::from_secs(10));
    Ok(())
}

fn keep_until_enter(lab: &Lab, work: &WorkDir, t0: Instant) {
    say(
        t0,
        "--keep: everything runs until you press Enter (or Ctrl-C)",
    );
    for h in lab.hosts() {
        println!(
            "    {}: virsh -c '{}' list --all  (namespace {})",
            h.name,
            h.daemon().uri(),
            h.daemon().netns().name()
        );
    }
    println!(
        "    work folder (image builds, Terraform root): {}",
        work.path.display()
    );
    // Polled, so that Ctrl-C (which does not interrupt a blocking read)
    // ends the wait too.
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    while !STOP.load(Ordering::SeqCst) {
        // SAFETY: one valid pollfd for the call.
        let n = unsafe { libc::poll(&mut fd, 1, 200) };
        if n > 0 {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            break;
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
}

/// With a real agent token: the launcher serves Buildkite's queue `linux`
/// with the deployed hosts until Enter or Ctrl-C. Nothing is checked.
fn real_buildkite(lab: &Lab, dir: &LauncherDir, t0: Instant, work: &WorkDir) -> Result<bool> {
    say(
        t0,
        "BUILDKITE_AGENT_TOKEN is set: the launcher serves queue linux of your Buildkite cluster until Enter or Ctrl-C",
    );
    let mut c = dir.command(Some(lab.client()), &["run"]);
    for v in [
        "BUILDKITE_AGENT_ENDPOINT",
        "BUILDKITE_AGENT_TOKEN",
        "BUILDKITE_API_ENDPOINT",
        "BUILDKITE_API_TOKEN",
        "BUILDKITE_ORGANIZATION",
    ] {
        if let Ok(val) = std::env::var(v) {
            c.env(v, val);
        }
    }
    let mut child = c.spawn().context("starting buildkite-agent-launcher")?;
    keep_until_enter(lab, work, t0);
    testbed::util::signal(child.id() as i32, libc::SIGTERM);
    let _ = child.wait();
    Ok(true)
}

/// `file` compressed into `dir` (gzip -1): the guest's SSH under emulation
/// moves about 3 MB/s, so the agent's 46 MB upload in half the bytes and
/// unpacked in the guest is the faster build.
fn gzipped(file: &Path, dir: &Path) -> Result<PathBuf> {
    let out = dir.join("buildkite-agent.gz");
    let f = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let status = Command::new("gzip")
        .args(["-1", "-c"])
        .arg(file)
        .stdout(f)
        .status()
        .context("running gzip")?;
    if !status.success() {
        bail!("gzip -1 {} failed ({status})", file.display());
    }
    Ok(out)
}

/// `kvmbe-handoff` with the shared libraries it loads, at their paths in
/// a guest, as a gzipped tar archive in `dir` (the tiny guest's root disk
/// has busybox and no C library).
fn handoff_bundle(dir: &Path) -> Result<PathBuf> {
    let program = bin_dir().join("kvmbe-handoff");
    let root = dir.join("handoff-root");
    let mut files = vec![(program.clone(), "usr/bin/kvmbe-handoff".to_string())];
    for lib in testbed::guest::shared_libraries(&program)? {
        let at = lib.trim_start_matches('/').to_string();
        files.push((PathBuf::from(lib), at));
    }
    for (from, at) in &files {
        let to = root.join(at);
        std::fs::create_dir_all(to.parent().context("a file in a folder")?)?;
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    let out = dir.join("kvmbe-handoff.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&root)
        .args(files.iter().map(|f| f.1.as_str()))
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("tar -czf {} failed ({status})", out.display());
    }
    Ok(out)
}

/// The agent image: the tiny guest's root disk with buildkite-agent
/// (`agent`, gzipped) and `kvmbe-handoff` (`handoff`, a tar archive)
/// uploaded into it by Packer's file provisioner and unpacked there,
/// built on `host`.
fn packer_template(host: &VmHost, guest: &TinyGuest, agent: &Path, handoff: &Path) -> String {
    let mut source = tiny_guest_source(
        host.daemon(),
        guest,
        &format!("{AGENT}.qcow2"),
        Path::new("-"),
    );
    source.remove("output_directory");
    format!(
        r#"variable "output_dir" {{
  type = string
}}

source "libvirt" "agent" {{
{}  output_directory = var.output_dir
}}

build {{
  sources = ["source.libvirt.agent"]
  provisioner "file" {{
    source      = "{agent}"
    destination = "/usr/bin/buildkite-agent.gz"
  }}
  provisioner "file" {{
    source      = "{handoff}"
    destination = "/tmp/kvmbe-handoff.tar.gz"
  }}
  provisioner "shell" {{
    inline = [
      "gunzip -f /usr/bin/buildkite-agent.gz",
      "chmod 0755 /usr/bin/buildkite-agent",
      "buildkite-agent --version",
      "tar -xzf /tmp/kvmbe-handoff.tar.gz -C /",
      "rm /tmp/kvmbe-handoff.tar.gz",
      "/lib64/ld-linux-x86-64.so.2 --list /usr/bin/kvmbe-handoff",
    ]
  }}
}}
"#,
        hcl_attributes(&source),
        agent = agent.display(),
        handoff = handoff.display(),
    )
}

/// The VMs' user-data, a Terraform template given nothing: the launcher
/// fills the `{{placeholders}}`, the token with the VM's job acquisition
/// token. A slot's instance (no job in its seed) waits in `kvmbe-handoff`, which
/// takes the job and its token over the VM's channel and execs the agent
/// with them; its messages (and the agent's) go to a file, as the VMs
/// have no serial port for the console. Busybox has no bash or git: the agent's shell is `/bin/sh`
/// and a `checkout` hook stands in for the checkout. The VM powers off
/// once the agent exits.
const USER_DATA: &str = "#!/bin/sh\n\
export HOME=/root\n\
export BUILDKITE_AGENT_ENDPOINT='{{buildkite_agent_endpoint}}'\n\
export BUILDKITE_BUILD_PATH=/tmp/builds\n\
export BUILDKITE_SHELL='/bin/sh -e -c'\n\
export BUILDKITE_HOOKS_PATH=/tmp/hooks\n\
mkdir -p /tmp/builds /tmp/hooks\n\
printf '#!/bin/sh\\necho checkout skipped: no git here\\n' >/tmp/hooks/checkout\n\
chmod +x /tmp/hooks/checkout\n\
if [ -z '{{buildkite_job_id}}' ]; then\n\
  kvmbe-handoff -- --tags '{{buildkite_agent_tags}}' --no-color 2>/tmp/kvmbe-handoff.log\n\
else\n\
  export BUILDKITE_AGENT_TOKEN='{{buildkite_agent_token}}'\n\
  buildkite-agent start --acquire-job '{{buildkite_job_id}}' --tags '{{buildkite_agent_tags}}' --name '{{hostname}}' --no-color\n\
fi\n\
echo agent-exit=$?\n\
poweroff\n";

/// `path` relative to `from` (both absolute), for a module `source`.
fn relative(from: &Path, path: &Path) -> String {
    let ups = from.components().count() - 1;
    format!(
        "{}{}",
        "../".repeat(ups),
        path.display().to_string().trim_start_matches('/')
    )
}

/// The deployment: the agent template on both hosts through
/// `terraform/build-agents/agent-template` and an always-on VM. The hosts
/// are reached with `qemu+ssh://`, whose `ssh` is the lab's wrapper first
/// on PATH (the lab's key, its hosts' keys pinned): with `qemu+libssh://`
/// the provider died of a segmentation fault while defining the template
/// on vmhost01 (three runs of three).
fn terraform_root(lab: &Lab, root: &Path, image_dir: &Path, guest: &TinyGuest) -> String {
    let [h1, h2] = lab.hosts() else {
        unreachable!("two hosts")
    };
    let module = relative(
        root,
        &workspace_root().join("terraform/build-agents/agent-template"),
    );
    let template = |alias: &str| {
        format!(
            r#"module "agent_{alias}" {{
  source             = "{module}"
  providers          = {{ libvirt = libvirt.{alias} }}
  name               = "{AGENT}"
  image_dir          = "{image}"
  user_data_template = "${{path.root}}/user-data.tftpl"
  pool               = "{POOL}"
  network_name       = "{NETWORK}"
  type               = "qemu"
  cpu_mode           = null
  machine            = "q35"
  memory             = 256
  vcpu               = 1
  kernel             = "{kernel}"
  initrd             = "{initrd}"
  cmdline            = "{cmdline}"
}}
"#,
            image = image_dir.display(),
            kernel = guest.kernel.display(),
            initrd = guest.root_initrd.display(),
            cmdline = guest.root_cmdline,
        )
    };
    format!(
        r#"terraform {{
  required_providers {{
    libvirt = {{
      source = "kvmbe/libvirt"
    }}
  }}
}}

provider "libvirt" {{
  alias = "vmhost01"
  uri   = "qemu+ssh://root@{ip1}/system"
}}

# Asleep: woken before the first libvirt call.
provider "libvirt" {{
  alias = "vmhost02"
  uri   = "qemu+ssh://root@{ip2}/system"
  wake {{
    mac       = "{mac2}"
    broadcast = "{bcast}"
    timeout   = 60
  }}
}}

{t1}
{t2}
# A service VM that always runs (the tiny guest, booted from its initramfs).
resource "libvirt_domain" "service" {{
  provider  = libvirt.vmhost01
  name      = "service"
  type      = "qemu"
  memory    = 256
  vcpu      = 1
  running   = true
  autostart = true
  kernel    = "{kernel}"
  initrd    = "{initrd}"
  cmdline   = [{{ "_" = "{cmdline}" }}]

  network_interface {{
    network_name = "{NETWORK}"
  }}
}}
"#,
        ip1 = h1.ip,
        ip2 = h2.ip,
        mac2 = h2.mac,
        bcast = lab.broadcast(),
        t1 = template("vmhost01"),
        t2 = template("vmhost02"),
        kernel = guest.kernel.display(),
        initrd = guest.initrd.display(),
        cmdline = guest.cmdline,
    )
}

/// The launcher's config: both hosts and two kinds of agent on queue
/// `linux`: `linux`, started cold on either host, and `linux-slot`, which
/// keeps one saved slot on vmhost01. vmhost01 takes two VMs at a time, the
/// slot's build and one cold one, so further jobs wake vmhost02.
fn launcher_config(lab: &Lab, bk: Option<&StandIn>) -> String {
    let [h1, h2] = lab.hosts() else {
        unreachable!("two hosts")
    };
    let endpoints = match bk {
        Some(bk) => format!(
            "agent_endpoint = \"{url}/v3\"\nvm_agent_endpoint = \"http://{client}:{port}/v3\"\n",
            url = bk.url(),
            client = lab.client_ip(),
            port = bk.port(),
        ),
        None => String::new(),
    };
    format!(
        r#"[buildkite]
{endpoints}agent_token_file = "token"
stack_key = "kvmbe-main-job"
poll_interval = 1

[launcher]
wake_timeout = 60
boot_timeout = 180

[[host]]
name = "vmhost01"
uri = "qemu+ssh://root@{ip1}/system"
max_vms = 2

[[host]]
name = "vmhost02"
uri = "qemu+ssh://root@{ip2}/system"
wake = {{ mac = "{mac2}", broadcast = "{b}" }}

[[agent]]
name = "linux"
tags = ["queue=linux"]
template = "{AGENT}"

[[agent]]
name = "{SAVED}"
tags = ["queue=linux"]
template = "{AGENT}"
hosts = ["vmhost01"]
saved = 1
"#,
        ip1 = h1.ip,
        ip2 = h2.ip,
        mac2 = h2.mac,
        b = lab.broadcast(),
    )
}

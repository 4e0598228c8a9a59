//! The soak: the launcher runs a fixed number of short jobs against the
//! stand-in, a few at a time, on two hosts of the bed's LAN (one asleep
//! until the launcher wakes it), while every fault it must live through
//! is injected: 5xx, 429 with a sane and with a huge reset, garbage and
//! truncated bodies, hung requests, jobs cancelled while their VM boots,
//! the launcher SIGKILLed and started again three times, a host whose
//! libvirtd stops answering while a start is under way, and a libvirtd
//! restart. At the end it prints the figures and asserts: no job run
//! twice or lost, no VM, volume or lock domain left, no panic, and the
//! launcher's memory within a bound.
//!
//! A job is the tiny guest's own script: it prints its job and token,
//! [`GuestAgents`] takes the job through the stand-in's agent API as the
//! real agent would, and the guest powers off.
//!
//! Sized by environment (the defaults are the short run of the normal
//! suite; `scripts/soak.sh` runs the full one):
//! `KVMBE_SOAK_JOBS` (20), `KVMBE_SOAK_CONCURRENCY` (4),
//! `KVMBE_SOAK_LIMIT` seconds for the whole run (900),
//! `KVMBE_SOAK_SETTLE=1` waits for the launcher's own volume sweep at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use kvmhost::libvirt::Host;
use testbed::buildkite::{BuildSpec, Config, Fault, FaultKind, JobSpec, JobState};
use testbed::guest::TinyGuest;
use testbed::guest_agent::{GuestAgents, SHORT_JOB};
use testbed::hosts::Lab;
use testbed::launcher::{define_agent_template, standin_in, LauncherDir, Running};
use testbed::libvirtd::Libvirtd;
use testbed::util;

/// The launcher's lock domain on a host (see the launcher's README).
const LOCK_DOMAIN: &str = "buildkite-agent-launcher-lock";
/// The launcher sweeps volumes of gone VMs after this (`hosts::SWEEP_GRACE`),
/// once a minute.
const SWEEP_GRACE: Duration = Duration::from_secs(120);
/// How much the launcher's resident memory may grow over the last
/// process's run, from its first sample with a VM started to the end.
const RSS_GROWTH_BOUND_KIB: u64 = 16 * 1024;
/// The most any launcher process may ever hold resident.
const RSS_PEAK_BOUND_KIB: u64 = 128 * 1024;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: give a whole number")),
        Err(_) => default,
    }
}

/// A disturbance of the run, in the order of the schedule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ServerError,
    RateLimitSane,
    RateLimitHuge,
    Garbage,
    Truncated,
    Hung,
    CancelWhileBooting,
    LauncherKilled,
    HostStopsMidStart,
    LibvirtdRestart,
}

impl Kind {
    fn label(&self) -> &'static str {
        match self {
            Kind::ServerError => "5xx (502/503)",
            Kind::RateLimitSane => "429, RateLimit-Reset 2 s",
            Kind::RateLimitHuge => "429, RateLimit-Reset 2^64-1 s",
            Kind::Garbage => "200 with a body that is not JSON",
            Kind::Truncated => "200 with a truncated JSON body",
            Kind::Hung => "request never answered",
            Kind::CancelWhileBooting => "job cancelled while its VM boots",
            Kind::LauncherKilled => "launcher SIGKILLed, started again",
            Kind::HostStopsMidStart => "host stops answering mid-start (20 s)",
            Kind::LibvirtdRestart => "libvirtd restarted",
        }
    }

    /// The stand-in fault for an API kind, on the Stacks path it hits.
    fn fault(&self, n: u64) -> Option<Fault> {
        let paths = [
            "/scheduled-jobs",
            "/batch-reserve",
            "/get-states",
            "/job-acquisition-tokens",
        ];
        let path = paths[(n as usize) % paths.len()];
        let f = match self {
            Kind::ServerError => Fault::server_error(if n.is_multiple_of(2) { 502 } else { 503 }),
            Kind::RateLimitSane => Fault::rate_limited_for(2),
            Kind::RateLimitHuge => Fault::rate_limited_for(u64::MAX),
            Kind::Garbage => Fault::garbage(),
            Kind::Truncated => Fault::malformed(),
            Kind::Hung => Fault::hang(),
            _ => return None,
        };
        Some(f.on_path(path))
    }

    fn of_fault(kind: &FaultKind) -> Option<Kind> {
        Some(match kind {
            FaultKind::ServerError(_) => Kind::ServerError,
            FaultKind::RateLimitedFor(2) => Kind::RateLimitSane,
            FaultKind::RateLimitedFor(_) => Kind::RateLimitHuge,
            FaultKind::Garbage => Kind::Garbage,
            FaultKind::Malformed => Kind::Truncated,
            FaultKind::Hang => Kind::Hung,
            _ => return None,
        })
    }
}

/// When to disturb the run: at a share (per mille) of jobs done.
fn schedule(jobs: u64) -> Vec<(u64, Kind)> {
    // One round of API faults per 40 jobs, at least one.
    let rounds = (jobs / 40).max(1);
    let mut s = Vec::new();
    let api = [
        Kind::ServerError,
        Kind::RateLimitSane,
        Kind::Garbage,
        Kind::Truncated,
        Kind::Hung,
        Kind::CancelWhileBooting,
    ];
    for r in 0..rounds {
        for (i, k) in api.iter().enumerate() {
            let at = 50 + (r * 850 + i as u64 * 850 / api.len() as u64) / rounds;
            s.push((at, k.clone()));
        }
    }
    s.push((400, Kind::RateLimitHuge));
    for at in [150, 450, 700] {
        s.push((at, Kind::LauncherKilled));
    }
    s.push((300, Kind::HostStopsMidStart));
    s.push((600, Kind::LibvirtdRestart));
    s.sort();
    s
}

/// What one launcher process used, KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    hwm: u64,
    rss: u64,
}

fn memory(pid: i32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Memory {
        hwm: field("VmHWM:")?,
        rss: field("VmRSS:")?,
    })
}

/// Instance volumes in a host's pool folder with their age.
fn instance_volumes(d: &Libvirtd) -> Vec<(String, Duration)> {
    let Ok(entries) = std::fs::read_dir(d.pool_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            use std::os::unix::fs::MetadataExt;
            let name = e.file_name().to_string_lossy().into_owned();
            // Untouched since the newer of mtime and ctime, as the sweep
            // counts it: libvirt gives a disk back to root when its VM
            // stops (a ctime change), which can be long after the guest's
            // last write.
            let m = e.metadata().ok()?;
            let changed =
                std::time::UNIX_EPOCH + Duration::from_secs(m.mtime().max(m.ctime()).max(0) as u64);
            let age = changed.elapsed().unwrap_or_default();
            name.contains("--inst-").then_some((name, age))
        })
        .collect()
}

/// Console logs of the launcher's VMs (one per VM started) on a host.
fn consoles(d: &Libvirtd) -> usize {
    std::fs::read_dir(d.dir())
        .map(|es| {
            es.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("linux-") && n.ends_with(".serial.log")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Continues a host whose libvirtd the soak stopped, even on a failure.
struct Stopped(Option<i32>);

impl Stopped {
    fn resume(&mut self) {
        if let Some(pid) = self.0.take() {
            util::signal(pid, libc::SIGCONT);
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.resume();
    }
}

#[test]
fn soak_many_short_jobs_through_every_fault_none_run_twice_or_lost_nothing_left() {
    let jobs = env_number("KVMBE_SOAK_JOBS", 20);
    let concurrency = env_number("KVMBE_SOAK_CONCURRENCY", 4).max(2);
    let limit = Duration::from_secs(env_number("KVMBE_SOAK_LIMIT", 900));
    let settle = std::env::var("KVMBE_SOAK_SETTLE").is_ok_and(|v| v == "1");

    let g = TinyGuest::ensure().unwrap();
    let mut lab = Lab::new().unwrap();
    lab.add_host("awake", true).unwrap();
    lab.add_host("sleepy", false).unwrap();
    for h in lab.hosts() {
        let host = Host::open(&h.daemon().uri()).unwrap();
        define_agent_template(&host, &g, "agent-template", h.daemon().dir(), SHORT_JOB).unwrap();
    }
    let bk = standin_in(lab.client(), Config::default()).unwrap();
    bk.add_pipeline("app").unwrap();
    let agents = GuestAgents::start(
        lab.client(),
        bk.port(),
        lab.hosts()
            .iter()
            .map(|h| h.daemon().dir().to_path_buf())
            .collect(),
    )
    .unwrap();

    // Each host takes half: the sleeping one is woken once the awake one is full.
    let half = concurrency.div_ceil(2);
    let host_block = |i: usize, wake: bool| {
        let h = &lab.hosts()[i];
        let wake = if wake {
            format!(
                "wake = {{ mac = \"{}\", broadcast = \"{}\" }}\n",
                h.mac,
                lab.broadcast()
            )
        } else {
            String::new()
        };
        format!(
            "[[host]]\nname = \"{name}\"\nuri = \"qemu+ssh://root@{ip}/system\"\nmax_vms = {m}\n{wake}\n",
            name = h.name,
            ip = h.ip,
            m = if i == 0 { half } else { concurrency - half },
        )
    };
    let config = format!(
        r#"[buildkite]
agent_endpoint = "{url}/v3"
agent_token_file = "token"
stack_key = "soak"
poll_interval = 1

[launcher]
wake_timeout = 30
boot_timeout = 240
host_retry_after = 10
# A launcher started again places the jobs the killed one had reserved.
state_file = "state.json"

{a}{s}[[agent]]
name = "linux"
tags = ["queue=linux"]
template = "agent-template"
"#,
        url = bk.url(),
        a = host_block(0, false),
        s = host_block(1, true),
    );
    let mut dir = LauncherDir::new(&config, bk.cluster_token()).unwrap();
    dir.path_first = Some(lab.ssh_path_dir().to_path_buf());
    let start = |dir: &LauncherDir| dir.spawn(Some(lab.client()), &["run"]).unwrap();
    let mut launcher: Running = start(&dir);
    launcher.wait_for(Duration::from_secs(30), "stack registration", || {
        (!bk.stacks().is_empty()).then_some(())
    });

    let t0 = Instant::now();
    let mut added: Vec<(String, SystemTime)> = Vec::new();
    let mut cancelled: BTreeSet<String> = BTreeSet::new();
    let mut plan = schedule(jobs).into_iter().peekable();
    // Kind, when, a note.
    let mut injected: Vec<(Kind, SystemTime, String)> = Vec::new();
    let mut faults_armed: BTreeMap<Kind, u64> = BTreeMap::new();
    let mut stopped = Stopped(None);
    let mut resume_at: Option<Instant> = None;
    // A disturbance due that waits for its moment, and the request log's
    // length when it became due.
    let mut waiting: Option<(Kind, usize)> = None;
    let t0_wall = SystemTime::now();
    let mut restarts = 0;
    let mut peak_hwm = 0u64;
    let mut last_first: Option<Memory> = None;
    let mut last = Memory::default();
    let mut launched_at = Instant::now();

    let job_state = |id: &str| bk.job(id).map(|j| j.state);
    let done = |added: &[(String, SystemTime)]| {
        added
            .iter()
            .filter(|(id, _)| job_state(id).is_some_and(JobState::is_terminal))
            .count() as u64
    };

    loop {
        assert!(
            t0.elapsed() < limit,
            "the soak did not end within {limit:?}: {} of {jobs} jobs done\n{}",
            done(&added),
            launcher.log_text()
        );
        let finished = done(&added);
        if added.len() as u64 == jobs
            && finished == jobs
            && resume_at.is_none()
            && plan.peek().is_none()
            && waiting.is_none()
        {
            break;
        }
        // Keep `concurrency` jobs waiting or running.
        while (added.len() as u64) < jobs && (added.len() as u64 - done(&added)) < concurrency {
            let b = bk
                .add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]))
                .unwrap();
            added.push((b.job_ids[0].clone(), SystemTime::now()));
        }
        if let Some(m) = memory(launcher.pid()) {
            peak_hwm = peak_hwm.max(m.hwm);
            last = m;
            // The first look once this process has settled in.
            if last_first.is_none() && launched_at.elapsed() > Duration::from_secs(10) {
                last_first = Some(m);
            }
        }
        if resume_at.is_some_and(|t| Instant::now() >= t) {
            stopped.resume();
            resume_at = None;
        }
        // A disturbance that waits for its moment is tried once a turn,
        // so jobs keep coming meanwhile.
        match waiting {
            Some((Kind::CancelWhileBooting, _)) => {
                // A job whose VM is there and which no agent took yet
                // (not on a host the soak has stopped: it would not answer).
                let found = lab.hosts().iter().enumerate().find_map(|(i, h)| {
                    if i == 0 && stopped.0.is_some() {
                        return None;
                    }
                    let host = Host::open(&h.daemon().uri()).ok()?;
                    host.instances().ok()?.into_iter().find_map(|inst| {
                        let job = inst.labels.get("job")?.clone();
                        (job_state(&job) == Some(JobState::Scheduled)).then_some(job)
                    })
                });
                if let Some(job) = found {
                    bk.set_job_state(&job, JobState::Canceled).unwrap();
                    injected.push((Kind::CancelWhileBooting, SystemTime::now(), job.clone()));
                    cancelled.insert(job);
                    waiting = None;
                }
            }
            Some((Kind::HostStopsMidStart, asked)) => {
                // The launcher asks for a job's token right before the
                // start call: stop the awake host's libvirtd then.
                let now = bk.requests();
                let seen = now[asked.min(now.len())..]
                    .iter()
                    .any(|r| r.path.ends_with("/job-acquisition-tokens"));
                if seen {
                    let pid = lab.hosts()[0].daemon().pid().unwrap();
                    util::signal(pid, libc::SIGSTOP);
                    stopped.0 = Some(pid);
                    resume_at = Some(Instant::now() + Duration::from_secs(20));
                    injected.push((Kind::HostStopsMidStart, SystemTime::now(), String::new()));
                    waiting = None;
                }
            }
            _ => {}
        }
        let due = plan
            .peek()
            .is_some_and(|(at, _)| finished * 1000 >= at * jobs);
        if due && resume_at.is_none() && waiting.is_none() {
            let (_, kind) = plan.next().expect("peeked");
            match kind.clone() {
                Kind::LauncherKilled => {
                    launcher.kill();
                    restarts += 1;
                    injected.push((kind, SystemTime::now(), String::new()));
                    launcher = start(&dir);
                    launched_at = Instant::now();
                    last_first = None;
                }
                Kind::CancelWhileBooting | Kind::HostStopsMidStart => {
                    waiting = Some((kind, bk.requests().len()));
                }
                Kind::LibvirtdRestart => {
                    lab.hosts()[1].daemon().restart().unwrap();
                    injected.push((kind, SystemTime::now(), String::new()));
                }
                api => {
                    let n = faults_armed.entry(api.clone()).or_default();
                    bk.inject_fault(api.fault(*n).expect("an API fault"))
                        .unwrap();
                    *n += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let run_time = t0.elapsed();

    // Every VM goes: the jobs are done, the guests power off.
    let vms_left = |lab: &Lab| -> usize {
        lab.hosts()
            .iter()
            .map(|h| {
                Host::open(&h.daemon().uri())
                    .and_then(|host| host.instances())
                    .map(|i| i.len())
                    .unwrap_or(usize::MAX / 4)
            })
            .sum()
    };
    let _ = util::poll_until(Duration::from_secs(120), || {
        (vms_left(&lab) == 0).then_some(())
    });
    if settle {
        // The launcher sweeps once a minute what has been gone for two.
        let _ = util::poll_until(SWEEP_GRACE + Duration::from_secs(90), || {
            lab.hosts()
                .iter()
                .all(|h| instance_volumes(h.daemon()).is_empty())
                .then_some(())
        });
    }
    if let Some(m) = memory(launcher.pid()) {
        peak_hwm = peak_hwm.max(m.hwm);
        last = m;
    }
    let status = launcher.stop(Duration::from_secs(30));
    let log = launcher.log_text();

    // The figures.
    let acquisitions = bk.acquisitions();
    let mut agents_per_job: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in &acquisitions {
        agents_per_job
            .entry(a.job_id.as_str())
            .or_default()
            .insert(a.agent_id.as_str());
    }
    let taken = agents.taken();
    let mut vms_per_job: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &taken {
        *vms_per_job.entry(t.job.as_str()).or_default() += 1;
    }
    let ids: Vec<&str> = added.iter().map(|(id, _)| id.as_str()).collect();
    let finished_once = ids
        .iter()
        .filter(|id| {
            matches!(job_state(id), Some(JobState::Finished { exit_status: 0 }))
                && bk.job_run(id).is_some_and(|r| r.finished_at.is_some())
                && agents_per_job.get(*id).map_or(0, BTreeSet::len) == 1
        })
        .count();
    let twice: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| {
            agents_per_job.get(id).map_or(0, BTreeSet::len) > 1
                || vms_per_job.get(id).copied().unwrap_or(0) > 1
        })
        .collect();
    let lost: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| {
            !cancelled.contains(*id)
                && !matches!(job_state(id), Some(JobState::Finished { exit_status: 0 }))
        })
        .collect();
    let vms_started: usize = lab.hosts().iter().map(|h| consoles(h.daemon())).sum();
    let vms_end = vms_left(&lab);
    let volumes: Vec<(String, Duration)> = lab
        .hosts()
        .iter()
        .flat_map(|h| instance_volumes(h.daemon()))
        .collect();
    let stale: Vec<&(String, Duration)> = volumes
        .iter()
        .filter(|(_, age)| *age > SWEEP_GRACE + Duration::from_secs(70))
        .collect();
    let locks: usize = lab
        .hosts()
        .iter()
        .map(|h| {
            h.daemon()
                .domains()
                .unwrap_or_default()
                .iter()
                .filter(|d| *d == LOCK_DOMAIN)
                .count()
        })
        .sum();
    let panics = log.matches("panicked at").count();
    let growth = last_first.map(|f| last.rss.saturating_sub(f.rss));

    // Fault kinds as the stand-in applied them, with when.
    for r in bk.requests() {
        if let Some(kind) = r.fault.as_ref().and_then(Kind::of_fault) {
            injected.push((kind, r.at, format!("{} {}", r.method, r.path)));
        }
    }
    // Hung requests are never answered, so the log has no fault on them.
    for r in bk.requests().iter().filter(|r| r.status.is_none()) {
        injected.push((Kind::Hung, r.at, format!("{} {}", r.method, r.path)));
    }
    let delayed = |at: SystemTime| {
        added
            .iter()
            .filter(|(id, added_at)| {
                *added_at <= at
                    && bk
                        .job_run(id)
                        .and_then(|r| r.acquired_at)
                        .is_none_or(|got| got > at)
                    && !cancelled.contains(id)
            })
            .count()
    };
    let mut by_kind: BTreeMap<Kind, (usize, usize)> = BTreeMap::new();
    for (k, at, _) in &injected {
        let e = by_kind.entry(k.clone()).or_default();
        e.0 += 1;
        e.1 += delayed(*at);
    }

    let say = |s: String| eprintln!("{s}");
    say(format!(
        "soak: {jobs} jobs, {concurrency} at a time, 2 hosts (one asleep), in {:.0} s",
        run_time.as_secs_f64()
    ));
    say(format!(
        "jobs scheduled {} / run once {finished_once} / run twice {} / lost {} / cancelled while booting {}",
        added.len(),
        twice.len(),
        lost.len(),
        cancelled.len()
    ));
    say(format!(
        "VMs started {vms_started} / VMs left {vms_end} / volumes left {} (older than the sweep's grace: {}) / lock domains left {locks}",
        volumes.len(),
        stale.len()
    ));
    say(format!(
        "launcher panics {panics} / restarts {restarts} / peak RSS {} KiB / RSS at the end {} KiB (growth over the last process {} KiB, bound {} KiB)",
        peak_hwm,
        last.rss,
        growth.map_or("?".to_string(), |g| g.to_string()),
        RSS_GROWTH_BOUND_KIB
    ));
    injected.sort_by_key(|(_, at, _)| *at);
    for (k, at, what) in &injected {
        let secs = at.duration_since(t0_wall).unwrap_or_default().as_secs();
        eprintln!("  at {secs:>4} s: {} {what}", k.label());
    }
    let mut waits: Vec<u64> = added
        .iter()
        .filter_map(|(id, at)| {
            let got = bk.job_run(id)?.acquired_at?;
            Some(got.duration_since(*at).unwrap_or_default().as_secs())
        })
        .collect();
    waits.sort();
    if !waits.is_empty() {
        say(format!(
            "job scheduled to taken by its agent: median {} s, max {} s",
            waits[waits.len() / 2],
            waits[waits.len() - 1]
        ));
    }
    for (k, (n, d)) in &by_kind {
        say(format!(
            "  {:<40} injected {n:>3}, jobs waiting for a VM when it hit {d:>4}",
            k.label()
        ));
    }

    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    let twice_taken: Vec<_> = taken
        .iter()
        .filter(|t| twice.contains(&t.job.as_str()))
        .collect();
    assert!(
        twice.is_empty(),
        "jobs run twice: {twice:?}\n{twice_taken:?}\n{log}"
    );
    assert!(lost.is_empty(), "jobs lost: {lost:?}\n{taken:?}\n{log}");
    assert_eq!(finished_once as u64 + cancelled.len() as u64, jobs);
    assert_eq!(vms_end, 0, "VMs left\n{log}");
    assert!(stale.is_empty(), "volumes not swept: {stale:?}\n{log}");
    if settle {
        assert!(volumes.is_empty(), "volumes left: {volumes:?}\n{log}");
    }
    assert_eq!(locks, 0, "lock domains left\n{log}");
    assert_eq!(panics, 0, "{log}");
    assert_eq!(restarts, 3);
    assert!(peak_hwm <= RSS_PEAK_BOUND_KIB, "peak RSS {peak_hwm} KiB");
    if let Some(g) = growth {
        assert!(g <= RSS_GROWTH_BOUND_KIB, "RSS grew {g} KiB\n{log}");
    }
    for k in [
        Kind::ServerError,
        Kind::RateLimitSane,
        Kind::RateLimitHuge,
        Kind::Garbage,
        Kind::Truncated,
        Kind::Hung,
        Kind::CancelWhileBooting,
        Kind::LauncherKilled,
        Kind::HostStopsMidStart,
        Kind::LibvirtdRestart,
    ] {
        assert!(
            by_kind.get(&k).is_some_and(|(n, _)| *n > 0),
            "{} was never injected (the run ended before it fired?)",
            k.label()
        );
    }
}

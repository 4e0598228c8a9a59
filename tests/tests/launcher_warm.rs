//! Warm VMs end to end: the launcher (on the bed's LAN, over
//! `qemu+ssh://`) keeps one VM of definition `linux` (`warm = 1`) booted
//! from a template whose tiny guest carries the real `buildkite-agent`
//! 3.78.0 and `kvmbe-handoff`. While no job waits, the stand-in sees no
//! agent register. Once a job is scheduled, the launcher reserves it, gets
//! its job acquisition token and hands both to the warm VM through the
//! `org.kvmbe.handoff` channel; the agent in that VM registers with the
//! token, acquires the job with `--acquire-job`, runs and finishes it, and
//! a new warm VM takes the used one's place. A hand-off the guest refuses,
//! or one to a frozen VM that never answers, removes that VM and starts a
//! VM for the job at once; the job runs once.
//!
//! With `saved = 1` instead, the launcher builds a saved slot (booted
//! until it waits, synced, its memory saved next to its disk; no agent,
//! no VM left running); each job runs in a clone restored from it onto a
//! fresh overlay and handed the job, one clone at a time, and a slot
//! whose state file is gone sends its job to a cold VM at once and is
//! built again. A restarted launcher finds its slot without rebuilding it,
//! and so does a launcher whose host slept and is woken for a job. A slot
//! built from a template changed since gives no clone: it is built again.
//!
//! Needs `cargo build -p buildkite-agent-launcher -p kvmbe-handoff` and
//! the real agent (`scripts/setup.sh --test`).

use std::time::{Duration, Instant, SystemTime};

use kvmhost::libvirt::instance::InstanceInfo;
use kvmhost::libvirt::Host;
use testbed::buildkite::{
    BuildSpec, Config, Fault, JobSpec, JobState, StandIn, WebhookAuth, WebhookConfig,
};
use testbed::guest::TinyGuest;
use testbed::hosts::Lab;
use testbed::launcher::{define_agent_template_sized, standin_in, Breakdown, LauncherDir, Running};
use testbed::libvirtd::{Libvirtd, POOL};
use testbed::peers::buildkite_agent;
use testbed::util::bin_dir;

/// The template's script, for warm and cold VMs alike: a warm VM (no job
/// in its seed) waits in `kvmbe-handoff`, which sets the host name, runs
/// RENEW when asked and execs the agent with `--acquire-job` and the
/// job's token; a cold one runs the agent with the token from its seed.
/// Busybox has no bash or git: `/bin/sh` and a `checkout` hook.
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
  kvmbe-handoff --renew-dhcp 'RENEW' -- --tags '{{buildkite_agent_tags}}' --no-color\n\
else\n\
  export BUILDKITE_AGENT_TOKEN='{{buildkite_agent_token}}'\n\
  export BUILDKITE_AGENT_ACQUIRE_JOB='{{buildkite_job_id}}'\n\
  buildkite-agent start --tags '{{buildkite_agent_tags}}' --no-color\n\
fi\n\
echo agent-exit=$?\n\
poweroff\n";

// Fields drop in order: the launcher first, the VMs' hosts last.
struct Bed {
    launcher: Running,
    _dir: LauncherDir,
    bk: StandIn,
    libvirt: Host,
    lab: Lab,
    /// The guest the template boots (to define the template again).
    guest: TinyGuest,
}

/// Where the launcher serves `/metrics`, in the lab's client namespace.
const METRICS: &str = "127.0.0.1:9464";

/// Definition `linux` (queue `linux`) with one warm VM.
const WARM_LINUX: &str = "[[agent]]\nname = \"linux\"\ntags = [\"queue=linux\"]\n\
template = \"agent-template\"\nwarm = 1\n";

/// A lab host with the template, the stand-in and the launcher running
/// with the `[[agent]]`s `agents`; `renew` is the guest's DHCP renewal
/// command.
fn start(renew: &str, agents: &str) -> Bed {
    start_with(renew, agents, 3, |_| {})
}

/// [`start`] with the host's `max_vms`, and `before` called with the
/// stand-in before the launcher starts.
fn start_with(renew: &str, agents: &str, max_vms: u32, before: impl FnOnce(&StandIn)) -> Bed {
    start_bed(renew, agents, max_vms, false, None, before)
}

/// The port the launcher's webhook receiver listens on in the lab's
/// client namespace (a namespace of the test's own: nothing else there).
const WEBHOOK_PORT: u16 = 8479;

/// The webhook's signing secret.
const WEBHOOK_SECRET: &str = "warm-hook-secret";

/// [`start_with`], and with `webhook` the stand-in posts signed job
/// webhooks to the launcher's `[webhook]` receiver; with `nap`, on a
/// host that naps once no domain has run for that long (held awake until
/// the test lets it nap) and that the launcher wakes with a magic packet
/// (`None`: a host always awake).
fn start_bed(
    renew: &str,
    agents: &str,
    max_vms: u32,
    webhook: bool,
    nap: Option<Duration>,
    before: impl FnOnce(&StandIn),
) -> Bed {
    let handoff = bin_dir().join("kvmbe-handoff");
    assert!(
        handoff.is_file(),
        "{} is missing: cargo build -p kvmbe-handoff",
        handoff.display()
    );
    let agent = buildkite_agent().unwrap();
    let mut lab = Lab::new().unwrap();
    match nap {
        None => lab.add_host("vmhost", true).unwrap(),
        Some(idle) => lab.add_napping_host("vmhost", true, idle).unwrap(),
    };
    let h = &lab.hosts()[0];
    let wake = match nap {
        None => String::new(),
        Some(_) => format!(
            "wake = {{ mac = \"{}\", broadcast = \"{}\" }}\n",
            h.mac,
            lab.broadcast()
        ),
    };
    let guest = TinyGuest::ensure()
        .unwrap()
        .carrying_host_program(
            &handoff,
            "/usr/bin/kvmbe-handoff",
            &[(&agent, "/usr/bin/buildkite-agent")],
            h.daemon().dir(),
        )
        .unwrap();
    let libvirt = Host::open(&h.daemon().uri()).unwrap();
    define_agent_template_sized(
        &libvirt,
        &guest,
        "agent-template",
        h.daemon().dir(),
        &USER_DATA.replace("RENEW", renew),
        512,
    )
    .unwrap();
    let bk = standin_in(
        lab.client(),
        Config {
            bind: std::net::Ipv4Addr::UNSPECIFIED.into(),
            webhook: webhook.then(|| WebhookConfig {
                url: format!("http://127.0.0.1:{WEBHOOK_PORT}/buildkite"),
                auth: WebhookAuth::Secret(WEBHOOK_SECRET.into()),
            }),
            ..Config::default()
        },
    )
    .unwrap();
    bk.add_pipeline("app").unwrap();
    before(&bk);
    let mut config = format!(
        r#"[buildkite]
agent_endpoint = "{url}/v3"
vm_agent_endpoint = "http://{client}:{port}/v3"
agent_token_file = "token"
stack_key = "warm"
poll_interval = 1

[launcher]
boot_timeout = 240
state_file = "launcher-state.json"
wake_timeout = 60

[metrics]
listen = "{METRICS}"

[[host]]
name = "vmhost"
uri = "qemu+ssh://root@{ip}/system"
max_vms = {max_vms}
{wake}
{agents}"#,
        url = bk.url(),
        client = lab.client_ip(),
        port = bk.port(),
        ip = h.ip,
    );
    if webhook {
        config +=
            &format!("\n[webhook]\nlisten = \"127.0.0.1:{WEBHOOK_PORT}\"\ntoken_file = \"hook\"\n");
    }
    let mut dir = LauncherDir::new(&config, bk.cluster_token()).unwrap();
    if webhook {
        dir.write_token("hook", WEBHOOK_SECRET).unwrap();
    }
    dir.path_first = Some(lab.ssh_path_dir().to_path_buf());
    let launcher = dir.spawn(Some(lab.client()), &["run"]).unwrap();
    Bed {
        launcher,
        _dir: dir,
        bk,
        libvirt,
        lab,
        guest,
    }
}

impl Bed {
    /// A sample of the launcher's `/metrics` (none while it does not
    /// answer).
    fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .lab
            .client()
            .spawn_in(|| {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect(METRICS).ok()?;
                write!(s, "GET /metrics HTTP/1.0\r\nHost: {METRICS}\r\n\r\n").ok()?;
                let mut text = String::new();
                s.read_to_string(&mut text).ok()?;
                Some(text)
            })
            .ok()?
            .join()
            .ok()??;
        text.lines().find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok())?
        })
    }

    fn warm_vms(&self) -> Vec<InstanceInfo> {
        self.libvirt
            .instances()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.labels.contains_key("warm") && !i.labels.contains_key("job"))
            .collect()
    }

    /// Waits until the launcher says a warm VM waits for a job; its name.
    fn wait_warm_ready(&self, not: &[&str]) -> String {
        self.launcher.wait_for(
            Duration::from_secs(300),
            "a warm VM waiting for a job",
            || {
                self.launcher.log_text().lines().find_map(|l| {
                    let vm = l
                        .strip_prefix("warm ")?
                        .strip_suffix(" on vmhost waits for a job")?;
                    (!not.contains(&vm)).then(|| vm.to_string())
                })
            },
        )
    }

    fn console(&self, vm: &str) -> String {
        std::fs::read_to_string(self.lab.hosts()[0].daemon().serial_log(vm)).unwrap_or_default()
    }

    fn schedule(&self) -> String {
        self.schedule_on("linux")
    }

    fn schedule_on(&self, queue: &str) -> String {
        schedule(&self.bk, queue)
    }

    fn wait_finished(&self, job: &str, vm_console: &str) {
        let state = self
            .launcher
            .wait_for(Duration::from_secs(300), "the job to finish", || {
                self.bk
                    .job(job)
                    .map(|j| j.state)
                    .filter(|s| s.is_terminal())
            });
        assert_eq!(
            state,
            JobState::Finished { exit_status: 0 },
            "console:\n{}\nlauncher:\n{}",
            self.console(vm_console),
            self.launcher.log_text()
        );
    }
}

#[test]
fn a_warm_vm_runs_a_job_handed_through_the_channel_and_is_replaced() {
    let bed = start("true", WARM_LINUX);
    let bk = &bed.bk;
    let warm = bed.wait_warm_ready(&[]);
    // Waiting, it registered no agent, and nothing secret is in it. The
    // sleep is the window in which no agent may register: there is
    // nothing to wait for.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        bk.registered_agents().is_empty(),
        "{:?}",
        bk.registered_agents()
    );
    let daemon = bed.lab.hosts()[0].daemon();
    let xml = daemon.virsh(&["-r", "dumpxml", &warm]).unwrap();
    assert!(xml.contains("name='org.kvmbe.handoff'"), "{xml}");
    assert!(!xml.contains("bkjat_") && !xml.contains(bk.cluster_token()));
    assert_eq!(bed.warm_vms().len(), 1, "{:?}", bed.warm_vms());
    assert!(
        !bed.console(&warm).contains("acquire"),
        "{}",
        bed.console(&warm)
    );

    let scheduled = SystemTime::now();
    let t0 = Instant::now();
    let job = bed.schedule();
    // Handed over, the VM is labelled with its job: a restarted launcher
    // counts it as the job's VM.
    let labels = bed.launcher.wait_for(
        Duration::from_secs(60),
        "the warm VM labelled with its job",
        || {
            let i = bed
                .libvirt
                .instances()
                .ok()?
                .into_iter()
                .find(|i| i.name == warm)?;
            i.labels.contains_key("job").then_some(i.labels)
        },
    );
    assert_eq!(labels.get("job"), Some(&job));
    bed.wait_finished(&job, &warm);
    let run = bk.job_run(&job).expect("an agent ran the job");
    let agents = bk.registered_agents();
    assert_eq!(agents.len(), 1, "{agents:?}");
    let agent = &agents[0];
    assert_eq!(agent.id, run.agent_id);
    // It registered with the job's acquisition token, for that job only,
    // under the host name the launcher gave the VM.
    assert_eq!(agent.acquire_only.as_deref(), Some(job.as_str()));
    let short: String = job
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    assert!(
        agent.name.starts_with(&format!("linux-{short}-")),
        "{}",
        agent.name
    );
    assert!(
        run.log_text().contains(&format!("ran on {}", agent.name)),
        "{}",
        run.log_text()
    );
    let issued = bk.job_acquisition_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].job_id, job);
    assert_eq!(issued[0].agent_id.as_deref(), Some(agent.id.as_str()));
    // The warm VM took it, and the launcher said so.
    let log = bed.launcher.log_text();
    assert!(
        log.contains(&format!("job {job}: handed to warm {warm} on vmhost")),
        "{log}"
    );
    assert!(!log.contains("handing it to warm"), "{log}");
    assert!(!log.contains("labelling"), "{log}");
    assert!(!log.contains(&issued[0].token), "the JAT is in the log");
    let notes = bk.job(&job).unwrap().notifications;
    let b = Breakdown::of_notes(&notes).unwrap_or_else(|| panic!("{notes:?}"));
    assert_eq!(b.kind, "warm", "{notes:?}");
    // The job is finished before its agent has disconnected and exited.
    let (console, _) = Libvirtd::wait_for_text(
        &daemon.serial_log(&warm),
        "agent-exit=0",
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(
        !console.contains(&issued[0].token),
        "the JAT is on the console"
    );

    // Replaced: another warm VM waits, and the used one powered off.
    let next = bed.wait_warm_ready(&[&warm]);
    assert_ne!(next, warm);
    bed.wait_gone(&warm, Duration::from_secs(60), "the used VM to go");
    let secs = |t: SystemTime| {
        t.duration_since(scheduled)
            .unwrap_or_default()
            .as_secs_f64()
    };
    eprintln!(
        "warm: job scheduled -> agent acquired {:.1}s -> running {:.1}s -> finished {:.1}s; {}; \
         replacement waiting after {:.1}s",
        secs(run.acquired_at.unwrap()),
        secs(run.started_at.unwrap()),
        secs(run.finished_at.unwrap()),
        notes.last().unwrap(),
        t0.elapsed().as_secs_f64()
    );
}

/// Schedules a job whose hand-off to `warm` fails saying `why`; checks
/// that a cold VM runs it, once, and that `warm` is gone. Returns the
/// job's last note.
fn falls_back(bed: &Bed, warm: &str, why: &str) -> String {
    let bk = &bed.bk;
    let job = bed.schedule();
    let cold = bed
        .launcher
        .wait_for(Duration::from_secs(120), "a cold VM for the job", || {
            bed.libvirt
                .instances()
                .ok()?
                .into_iter()
                .find(|i| i.labels.get("job") == Some(&job) && !i.labels.contains_key("warm"))
        });
    bed.wait_finished(&job, &cold.name);
    let log = bed.launcher.log_text();
    assert!(
        log.contains(&format!("job {job}: handing it to warm {warm} failed: "))
            && log.contains(why),
        "{log}"
    );
    assert!(
        log.contains(&format!("job {job}: started {} on vmhost", cold.name)),
        "{log}"
    );
    // Once: one agent registered and acquired it, in the cold VM.
    let agents = bk.registered_agents();
    assert_eq!(agents.len(), 1, "{agents:?}");
    let acquired: Vec<_> = bk
        .acquisitions()
        .into_iter()
        .filter(|a| a.job_id == job)
        .collect();
    assert_eq!(acquired.len(), 1, "{acquired:?}");
    assert!(acquired[0].granted);
    // The launcher notes the start's breakdown once it sees the job
    // taken, at its next look at the job's state after the acquire.
    let b = bed.launcher.wait_for(
        Duration::from_secs(30),
        "the start's breakdown note",
        || Breakdown::of_notes(&bk.job(&job).unwrap().notifications),
    );
    let notes = bk.job(&job).unwrap().notifications;
    assert_eq!(b.kind, "cold", "{notes:?}");
    // The warm VM that failed is gone.
    let names = bed.instance_names().unwrap();
    assert!(!names.iter().any(|n| n == warm), "{names:?}");
    notes.last().cloned().unwrap_or_default()
}

#[test]
fn a_handoff_the_guest_refuses_falls_back_to_a_cold_start_and_the_job_runs_once() {
    // The guest cannot renew its lease: it answers `error …`.
    let bed = start("false", WARM_LINUX);
    let warm = bed.wait_warm_ready(&[]);
    let note = falls_back(
        &bed,
        &warm,
        "the guest refused the job: renewing the DHCP lease: `false` failed",
    );
    // It refused and started no agent (and was destroyed, maybe before
    // its script said how the program ended).
    let console = bed.console(&warm);
    assert!(console.contains("kvmbe-handoff: job"), "{console}");
    assert!(console.contains("`false` failed"), "{console}");
    assert!(!console.contains("buildkite-agent v"), "{console}");
    eprintln!("refused: {note}");
}

#[test]
fn a_handoff_to_a_frozen_vm_times_out_and_falls_back_to_a_cold_start() {
    let bed = start("true", WARM_LINUX);
    let warm = bed.wait_warm_ready(&[]);
    // Paused: its channel still connects, nobody answers.
    let daemon = bed.lab.hosts()[0].daemon();
    daemon.virsh(&["suspend", &warm]).unwrap();
    let t0 = Instant::now();
    let note = falls_back(&bed, &warm, "no answer in time");
    assert!(!bed.console(&warm).contains("kvmbe-handoff: job"));
    eprintln!(
        "frozen: {note} (job finished {:.1} s after scheduling)",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_warm_vm_labelled_with_its_job_by_a_killed_launcher_but_never_handed_it_is_removed_and_the_job_placed_again(
) {
    let mut bed = start("true", WARM_LINUX);
    let warm = bed.wait_warm_ready(&[]);
    // Frozen, it keeps the launcher in the hand-off: the VM is labelled
    // with the job first, then its `ready` is awaited (5 s).
    let daemon = bed.lab.hosts()[0].daemon();
    daemon.virsh(&["suspend", &warm]).unwrap();
    let job = bed.schedule();
    bed.launcher.wait_for(
        Duration::from_secs(60),
        "the warm VM labelled with the job",
        || {
            bed.libvirt
                .instances()
                .ok()?
                .into_iter()
                .find(|i| i.name == warm && i.labels.get("job") == Some(&job))
        },
    );
    // Killed in the hand-off; the guest, thawed, still waits for a job.
    bed.launcher.kill();
    let first = bed.launcher.log_text();
    assert!(
        !first.contains(&format!("handing it to warm {warm} failed")),
        "the hand-off ended before the kill:\n{first}"
    );
    daemon.virsh(&["resume", &warm]).unwrap();
    bed.launcher = bed._dir.spawn(Some(bed.lab.client()), &["run"]).unwrap();
    bed.wait_finished(&job, "");
    let log = bed.launcher.log_text();
    assert!(
        log.contains(&format!(
            "job {job}: {warm} on vmhost was never handed the job before the restart; removing it and placing the job again"
        )),
        "{log}"
    );
    // Once, by one agent; the VM that never got it is gone.
    let acquired: Vec<_> = bed
        .bk
        .acquisitions()
        .into_iter()
        .filter(|a| a.job_id == job && a.granted)
        .collect();
    assert_eq!(acquired.len(), 1, "{acquired:?}");
    assert_eq!(bed.bk.registered_agents().len(), 1);
    let names = bed.instance_names().unwrap();
    assert!(!names.iter().any(|n| n == &warm), "{names:?}");
}

#[test]
fn a_job_cancelled_before_its_token_comes_is_never_handed_to_the_warm_vm() {
    let bed = start("true", WARM_LINUX);
    let warm = bed.wait_warm_ready(&[]);
    // The token is asked for only once the job is reserved and its host
    // awake, right before the hand-off: held back 3 s here, in which
    // the job is cancelled.
    bed.bk
        .inject_fault(
            Fault::delay(Duration::from_secs(3))
                .on_path("/job-acquisition-tokens")
                .times(1),
        )
        .unwrap();
    let job = bed.schedule();
    bed.launcher
        .wait_for(Duration::from_secs(60), "the token request", || {
            bed.bk
                .requests()
                .into_iter()
                .find(|r| r.path.ends_with("/job-acquisition-tokens"))
        });
    bed.bk.set_job_state(&job, JobState::Canceled).unwrap();
    let said = format!("job {job} (linux): ");
    bed.launcher.wait_for(
        Duration::from_secs(30),
        "the launcher to get no token",
        || bed.launcher.log_text().contains(&said).then_some(()),
    );
    // No token, no hand-off: the guest never heard of the job and no
    // agent registered.
    assert!(
        bed.bk.job_acquisition_tokens().is_empty(),
        "{:?}",
        bed.bk.job_acquisition_tokens()
    );
    assert!(!bed.console(&warm).contains("kvmbe-handoff: job"));
    assert!(bed.bk.registered_agents().is_empty());
    // The warm VM still waits, and takes the next job.
    let next = bed.schedule();
    bed.wait_finished(&next, &warm);
    let log = bed.launcher.log_text();
    assert!(
        log.contains(&format!("job {next}: handed to warm {warm} on vmhost")),
        "{log}"
    );
    assert!(!log.contains(&format!("job {job}: handed")), "{log}");
}

#[test]
fn warm_vms_are_kept_only_in_their_warm_hours() {
    // Daily, from an hour ago to three minutes from now, in the local
    // time the launcher reads too.
    let out = std::process::Command::new("date")
        .arg("+%H %M")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut f = text.split_whitespace().map(|v| v.parse::<u32>().unwrap());
    let now = f.next().unwrap() * 60 + f.next().unwrap();
    let hhmm = |m: u32| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let spec = format!("daily {}-{}", hhmm(now + 1440 - 60), hhmm(now + 3));
    let agents = format!(
        "[[agent]]\nname = \"office\"\ntags = [\"queue=office\"]\n\
         template = \"agent-template\"\nwarm = 1\nwarm_hours = \"{spec}\"\n"
    );
    let bed = start("true", &agents);
    let warm = bed.wait_warm_ready(&[]);
    // When the hours end, the launcher lets it go and starts no other.
    let gone = format!("warm {warm} on vmhost: outside warm_hours ({spec}); removing it");
    bed.launcher.wait_for(
        Duration::from_secs(300),
        "the warm VM let go at the end of its hours",
        || bed.launcher.log_text().contains(&gone).then_some(()),
    );
    bed.wait_gone(&warm, Duration::from_secs(60), "the warm VM to go");
    bed.wait_passes_after_now();
    let left: Vec<String> = bed
        .libvirt
        .instances()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let log = bed.launcher.log_text();
    assert_eq!(log.matches(": started on vmhost").count(), 1, "{log}");
}

/// Definition `fresh` (queue `fresh`) with one warm VM.
const WARM_FRESH: &str = "[[agent]]\nname = \"fresh\"\ntags = [\"queue=fresh\"]\n\
template = \"agent-template\"\nwarm = 1\n";

#[test]
fn a_warm_vm_from_an_older_template_is_never_handed_a_job_and_is_replaced() {
    let bed = start_bed("true", WARM_FRESH, 3, false, None, |_| {});
    let bk = &bed.bk;
    let old = bed.wait_warm_ready(&[]);
    // The template's script now exports a mark: every VM from it says so.
    bed.mark_template_v2();
    // The waiting VM is from the older template: the job does not run
    // in it (refused at the hand-off, or removed before by the minute's
    // check), but in a VM of the new one.
    let first = schedule_mark(bk, "fresh");
    bed.wait_finished(&first, "");
    assert_eq!(mark(bk, &first), "v2");
    let log = bed.launcher.log_text();
    assert!(
        !log.contains(&format!("job {first}: handed to warm {old} on vmhost")),
        "{log}"
    );
    let refused = format!("job {first}: handing it to warm {old} failed: ");
    let removed = format!("warm {old} on vmhost: {old} was started from an older template");
    assert!(
        log.lines()
            .any(|l| (l.contains(&refused) || l.contains(&removed))
                && l.contains("was started from an older template (version ")),
        "{log}"
    );
    // Its replacement is of the new template and takes the next job
    // (the first job's VM, if one took it, is that job's).
    let took = log.lines().find_map(|l| {
        l.strip_prefix(&format!("job {first}: handed to warm "))?
            .strip_suffix(" on vmhost")
    });
    let new = bed.wait_warm_ready(&[old.as_str(), took.unwrap_or_default()]);
    let second = schedule_mark(bk, "fresh");
    bed.wait_finished(&second, &new);
    assert_eq!(mark(bk, &second), "v2");
    let log = bed.launcher.log_text();
    assert!(
        log.contains(&format!("job {second}: handed to warm {new} on vmhost")),
        "{log}"
    );
    let names = bed.instance_names().unwrap();
    assert!(!names.iter().any(|n| n == &old), "{names:?}");
}

/// Definition `linux` (queue `linux`) with one saved slot.
const SAVED_LINUX: &str = "[[agent]]\nname = \"linux\"\ntags = [\"queue=linux\"]\n\
template = \"agent-template\"\nsaved = 1\n";

/// The slot of [`SAVED_LINUX`].
const SLOT: &str = "linux-saved-0";

/// Listings [`Bed::wait_passes_after_now`] waits for: the first may come
/// from a pass that read the host before then, and one more leaves room
/// for a host read that was still running from an earlier pass.
const PASSES: usize = 3;

impl Bed {
    /// The names of the instances on the host now (none when it cannot
    /// be listed).
    fn instance_names(&self) -> Option<Vec<String>> {
        let list = self.libvirt.instances().ok()?;
        Some(list.into_iter().map(|i| i.name).collect())
    }

    /// Waits up to `limit` until the host lists no instance named `name`.
    fn wait_gone(&self, name: &str, limit: Duration, what: &str) {
        self.launcher.wait_for(limit, what, || {
            (!self.instance_names()?.iter().any(|n| n == name)).then_some(())
        });
    }

    /// Waits until the launcher has said `n` times that slot `name` is ready.
    fn wait_slot_ready(&self, name: &str, n: usize) {
        let line = format!("saved slot {name} on vmhost is ready");
        self.launcher.wait_for(
            Duration::from_secs(300),
            "the saved slot to be ready",
            || (self.launcher.log_text().matches(&line).count() >= n).then_some(()),
        );
    }

    /// Waits until passes begun after now have read the host: the
    /// launcher has listed the scheduled jobs [`PASSES`] more times. A
    /// pass reads the host before it lists, so every pass after the first
    /// of those read the host after now.
    fn wait_passes_after_now(&self) {
        let listings = || {
            self.bk
                .requests()
                .iter()
                .filter(|r| r.path.ends_with("/scheduled-jobs") && r.status.is_some())
                .count()
        };
        let before = listings();
        self.launcher.wait_for(
            Duration::from_secs(60),
            "passes that read the host after the VM went",
            || (listings() >= before + PASSES).then_some(()),
        );
    }

    /// Waits until no VM runs on the host.
    fn wait_no_vm(&self) {
        self.launcher
            .wait_for(Duration::from_secs(120), "no VM to run", || {
                self.libvirt.instances().ok()?.is_empty().then_some(())
            });
    }

    /// Schedules a job and waits for it to finish; the job.
    fn run_job(&self, console_of: &str) -> String {
        let job = self.schedule();
        self.wait_finished(&job, console_of);
        job
    }
}

/// Schedules a job on `queue`; its id.
fn schedule(bk: &StandIn, queue: &str) -> String {
    let spec = JobSpec::new(&[&format!("queue={queue}")]).command("echo \"ran on $(hostname)\"");
    let b = bk.add_build("app", BuildSpec::new(vec![spec])).unwrap();
    b.job_ids[0].clone()
}

/// Definition `roomy` (queue `linux`) with one saved slot: its own names,
/// as libvirtd's channel lock files (`/var/lock/LCK..…<domain>…`) are
/// the machine's, shared by the test beds' daemons running at once.
const SAVED_ROOMY: &str = "[[agent]]\nname = \"roomy\"\ntags = [\"queue=linux\"]\n\
template = \"agent-template\"\nsaved = 1\n";

/// A saved slot's build boots an instance like any VM: on a host that
/// takes one VM at a time, with a job waiting when the launcher starts,
/// the job's VM takes the room and the slot is built only once it is
/// gone; the host never runs two.
#[test]
fn a_slot_is_built_only_where_a_vm_has_room() {
    let mut job = String::new();
    let bed = start_with("true", SAVED_ROOMY, 1, |bk| job = schedule(bk, "linux"));
    const SLOT: &str = "roomy-saved-0";
    let host = Host::open(&bed.lab.hosts()[0].daemon().uri()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut most: Vec<String> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let names: Vec<String> = host
                    .instances()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.name)
                    .collect();
                if names.len() > most.len() {
                    most = names;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            most
        })
    };
    bed.wait_finished(&job, SLOT);
    bed.wait_slot_ready(SLOT, 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().unwrap();
    assert!(
        most.len() <= 1,
        "two VMs ran at once on a host that takes one: {most:?}\nlauncher:\n{}",
        bed.launcher.log_text()
    );
    // The job went cold: the slot was not there yet.
    let log = bed.launcher.log_text();
    assert!(!log.contains("restored on vmhost"), "{log}");
}

impl Bed {
    /// How many times the launcher has said it built slot `name`.
    fn built(&self, name: &str) -> usize {
        let line = format!("saved slot {name} on vmhost is ready (built now)");
        self.launcher.log_text().matches(&line).count()
    }

    /// Waits for the breakdown the launcher notes on `job` once its agent
    /// took it; the breakdown and all the job's notes.
    fn breakdown(&self, job: &str) -> (Breakdown, Vec<String>) {
        let b = self.launcher.wait_for(
            Duration::from_secs(30),
            "the start's breakdown note",
            || Breakdown::of_notes(&self.bk.job(job)?.notifications),
        );
        (b, self.bk.job(job).unwrap().notifications)
    }
}

/// Definition `drowsy` (queue `drowsy`) with one saved slot: its own
/// names (see [`SAVED_ROOMY`]).
const SAVED_DROWSY: &str = "[[agent]]\nname = \"drowsy\"\ntags = [\"queue=drowsy\"]\n\
template = \"agent-template\"\nsaved = 1\n";

/// How long the napping host waits with no domain running before it
/// sleeps: room for the launcher to wake it, connect, get the job's
/// token and restore the clone before it would nap again.
const NAP: Duration = Duration::from_secs(15);

/// Slots live on the host's disk: a host that sleeps with its slot built
/// and is woken for a job restores the job's clone from that slot (no
/// cold start, no rebuild) as soon as libvirt answers; twice, the host
/// going back to sleep once the first clone is gone.
#[test]
fn a_slot_survives_its_hosts_sleep_and_the_woken_host_restores_it_for_the_job() {
    const SLOT: &str = "drowsy-saved-0";
    let bed = start_bed("true", SAVED_DROWSY, 3, false, Some(NAP), |_| {});
    bed.wait_slot_ready(SLOT, 1);
    let state_file = bed.libvirt.slot(POOL, SLOT).unwrap().state_file;
    bed.wait_no_vm();
    let host = &bed.lab.hosts()[0];
    host.let_nap();
    for round in 1..=2 {
        // Asleep, and the launcher has seen it so: a job must not be
        // placed on the connection of a host that has gone.
        let slept = host.wait_asleep(NAP + Duration::from_secs(60)).unwrap();
        bed.launcher.wait_for(
            Duration::from_secs(90),
            "the launcher to count the host asleep",
            || (bed.metric("launcher_hosts_asleep")? == 1.0).then_some(()),
        );
        assert!(!host.is_awake());
        assert!(state_file.is_file(), "the slot's state file is gone");

        let job = bed.schedule_on("drowsy");
        bed.wait_finished(&job, SLOT);
        let log = bed.launcher.log_text();
        assert!(
            log.contains(&format!("job {job}: handed to {SLOT} restored on vmhost")),
            "round {round}: {log}\nnotes: {:?}\nagents: {:?}",
            bed.bk.job(&job).map(|j| j.notifications),
            bed.bk.registered_agents()
        );
        assert!(!log.contains("restoring saved slot"), "{log}");
        assert!(!log.contains(&format!("job {job}: started ")), "{log}");
        // The slot was found again, not built again.
        assert_eq!(bed.built(SLOT), 1, "{log}");
        assert_eq!(
            log.matches(&format!("restored {SLOT} in")).count(),
            round,
            "{log}"
        );
        let (b, notes) = bed.breakdown(&job);
        assert_eq!(notes[0], "waking vmhost", "{notes:?}");
        assert!(
            notes.iter().any(|n| n == "saved slot on vmhost"),
            "{notes:?}"
        );
        assert_eq!(b.kind, "saved", "{notes:?}");
        assert!(b.stage("wake").is_some(), "{notes:?}");
        let run = bed.bk.job_run(&job).expect("an agent ran the job");
        assert!(
            run.log_text().contains("ran on drowsy-"),
            "{}",
            run.log_text()
        );
        eprintln!(
            "slot after sleep, round {round}: host asleep {:.1} s after it could nap; {}",
            slept.as_secs_f64(),
            notes.last().unwrap()
        );
    }
}

/// Definition `renewed` (queue `renewed`) with one saved slot: its own
/// names (see [`SAVED_ROOMY`]).
const SAVED_RENEWED: &str = "[[agent]]\nname = \"renewed\"\ntags = [\"queue=renewed\"]\n\
template = \"agent-template\"\nsaved = 1\n";

/// What the guest's script exported as `SLOT_MARK`, as job `job`
/// printed it ([`schedule_mark`]).
fn mark(bk: &StandIn, job: &str) -> String {
    let log = bk.job_run(job).expect("an agent ran the job").log_text();
    // The command's own line names the variable; its output does not.
    log.lines()
        .filter(|l| !l.contains("$SLOT_MARK"))
        .find_map(|l| Some(l.split_once("mark=[")?.1.split_once(']')?.0.to_string()))
        .unwrap_or_else(|| panic!("no mark in the job's log:\n{log}"))
}

impl Bed {
    /// Redefines the template with a script that exports
    /// `SLOT_MARK=v2`: every VM made from it from now on says so.
    fn mark_template_v2(&self) {
        let h = &self.lab.hosts()[0];
        let changed = USER_DATA.replace("RENEW", "true").replace(
            "export HOME=/root\n",
            "export HOME=/root\nexport SLOT_MARK=v2\n",
        );
        define_agent_template_sized(
            &self.libvirt,
            &self.guest,
            "agent-template",
            h.daemon().dir(),
            &changed,
            512,
        )
        .unwrap();
    }
}

/// A job that prints what the guest's script exported as `SLOT_MARK`.
fn schedule_mark(bk: &StandIn, queue: &str) -> String {
    let spec = JobSpec::new(&[&format!("queue={queue}")]).command("echo \"mark=[$SLOT_MARK]\"");
    let b = bk.add_build("app", BuildSpec::new(vec![spec])).unwrap();
    b.job_ids[0].clone()
}

/// A template changed under a running launcher: the slot built from the
/// old one gives no clone (the next job starts cold, from the new
/// template), the slot is built again from the new one in the background
/// and the job after runs in a clone of the rebuilt slot.
#[test]
fn a_template_changed_under_a_running_launcher_gets_its_slot_rebuilt_before_a_clone_is_used() {
    const SLOT: &str = "renewed-saved-0";
    let bed = start_bed("true", SAVED_RENEWED, 3, false, None, |_| {});
    let bk = &bed.bk;
    bed.wait_slot_ready(SLOT, 1);
    bed.wait_no_vm();
    let first = schedule_mark(bk, "renewed");
    bed.wait_finished(&first, SLOT);
    let log = bed.launcher.log_text();
    assert!(
        log.contains(&format!("job {first}: handed to {SLOT} restored on vmhost")),
        "{log}"
    );
    assert_eq!(mark(bk, &first), "");
    // Its clone gone, the slot is free again.
    bed.wait_no_vm();
    bed.wait_passes_after_now();

    // The template's script now exports a mark: every VM from it says so.
    bed.mark_template_v2();
    let second = schedule_mark(bk, "renewed");
    bed.wait_finished(&second, "");
    let (b, notes) = bed.breakdown(&second);
    assert_eq!(b.kind, "cold", "{notes:?}");
    assert_eq!(mark(bk, &second), "v2");
    let log = bed.launcher.log_text();
    assert!(!log.contains(&format!("job {second}: handed to")), "{log}");
    assert_eq!(
        log.matches(&format!("restored {SLOT} in")).count(),
        1,
        "{log}"
    );
    // Placed on the slot before the launcher's own check saw the change,
    // the restore refused the stale slot.
    let refused = format!("job {second}: restoring saved slot {SLOT} failed: ");
    if let Some(l) = log.lines().find(|l| l.contains(&refused)) {
        assert!(l.contains("was built from an older template"), "{l}");
        let errors = bed.metric("launcher_errors_total{kind=\"restore\"}");
        assert_eq!(errors, Some(1.0), "{log}");
    }

    // Built again in the background, from the new template.
    bed.launcher.wait_for(
        Duration::from_secs(300),
        "the slot to be built again",
        || (bed.built(SLOT) >= 2).then_some(()),
    );
    bed.wait_passes_after_now();
    let third = schedule_mark(bk, "renewed");
    bed.wait_finished(&third, SLOT);
    let log = bed.launcher.log_text();
    assert!(
        log.contains(&format!("job {third}: handed to {SLOT} restored on vmhost")),
        "{log}"
    );
    assert_eq!(mark(bk, &third), "v2");
    let (b, notes) = bed.breakdown(&third);
    assert_eq!(b.kind, "saved", "{notes:?}");
    assert_eq!(bed.built(SLOT), 2, "{log}");
    eprintln!(
        "template change: stale slot {}; rebuilt slot's job: {}",
        if log.contains(&refused) {
            "refused at the restore"
        } else {
            "found by the launcher's check"
        },
        notes.last().unwrap()
    );
}

#[test]
fn saved_slot_jobs_run_from_clones_one_at_a_time_and_a_broken_slot_falls_back_to_cold() {
    let mut bed = start("true", SAVED_LINUX);
    let bk = &bed.bk;
    bed.wait_slot_ready(SLOT, 1);
    // Built: a state file next to its disk, no agent, no VM running.
    let slot = bed.libvirt.slot(POOL, SLOT).unwrap();
    let size = std::fs::metadata(&slot.state_file).unwrap().len();
    assert!(size > 1 << 20, "{size}");
    bed.wait_no_vm();
    // The window in which no agent may register: nothing to wait for.
    std::thread::sleep(Duration::from_secs(2));
    assert!(bk.registered_agents().is_empty());

    let mut jobs = Vec::new();
    for round in 0..2 {
        let job = bed.run_job(SLOT);
        let log = bed.launcher.log_text();
        assert!(
            log.contains(&format!("job {job}: handed to {SLOT} restored on vmhost")),
            "{log}"
        );
        let run = bk.job_run(&job).expect("an agent ran the job");
        let agent = bk
            .registered_agents()
            .into_iter()
            .find(|a| a.id == run.agent_id)
            .unwrap();
        // Registered with the job's acquisition token, for it only.
        assert_eq!(agent.acquire_only.as_deref(), Some(job.as_str()));
        let notes = bk.job(&job).unwrap().notifications;
        assert!(
            notes.iter().any(|n| n == "saved slot on vmhost"),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("saved slot VM on vmhost in ")),
            "{notes:?}"
        );
        // The clone powers off after its job: the slot is free again
        // once a pass has read the host without it.
        bed.wait_no_vm();
        bed.wait_passes_after_now();
        assert_eq!(
            log.matches("restored linux-saved-0 in").count(),
            round + 1,
            "{log}"
        );
        jobs.push(job);
    }

    // A restarted launcher finds its slot again: ready, not rebuilt.
    bed.launcher
        .stop(Duration::from_secs(30))
        .expect("the launcher stops");
    bed.launcher = bed._dir.spawn(Some(bed.lab.client()), &["run"]).unwrap();
    bed.wait_slot_ready(SLOT, 2);
    let built = format!("saved slot {SLOT} on vmhost is ready (built now)");
    assert_eq!(
        bed.launcher.log_text().matches(&built).count(),
        1,
        "{}",
        bed.launcher.log_text()
    );

    // A broken slot: the job goes to a cold VM at once and runs once.
    std::fs::remove_file(&slot.state_file).unwrap();
    let t0 = Instant::now();
    let job = bed.schedule();
    let cold = bed
        .launcher
        .wait_for(Duration::from_secs(120), "a cold VM for the job", || {
            bed.libvirt
                .instances()
                .ok()?
                .into_iter()
                .find(|i| i.labels.get("job") == Some(&job) && i.name != SLOT)
        });
    let to_cold = t0.elapsed();
    bed.wait_finished(&job, &cold.name);
    let log = bed.launcher.log_text();
    assert!(
        log.contains(&format!("job {job}: restoring saved slot {SLOT} failed: ")),
        "{log}"
    );
    assert!(
        log.contains(&format!("job {job}: started {} on vmhost", cold.name)),
        "{log}"
    );
    let acquired: Vec<_> = bk
        .acquisitions()
        .into_iter()
        .filter(|a| a.job_id == job)
        .collect();
    assert_eq!(acquired.len(), 1, "{acquired:?}");
    // And the slot is built again in the background.
    bed.wait_slot_ready(SLOT, 3);
    assert_eq!(bed.launcher.log_text().matches(&built).count(), 2);
    assert!(bed.libvirt.slot(POOL, SLOT).unwrap().state_file.is_file());
    eprintln!(
        "saved: state file {:.1} MiB; jobs {jobs:?}; broken slot to cold VM in {:.1} s",
        size as f64 / (1 << 20) as f64,
        to_cold.as_secs_f64()
    );
}

/// The `q`-quantile of `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Job scheduled to its agent running it, for `n` jobs one after another
/// on definition `cold` (no warm VM), `n` on `warm` (`warm = 1`, each
/// job scheduled once the replacement warm VM waits) and `n` on `saved`
/// (`saved = 1`, each scheduled once the slot is free again), in one run
/// on one host; prints p50 and p95 of each and their ratios, where the
/// time went (token issued, agent registered, job acquired, started), the
/// restore calls' own times and the slot's state file size. Jobs reach
/// the launcher by webhook (`WARM_BENCH_POLL=1`: by Stacks polling).
///
/// `WARM_BENCH_JOBS=20 cargo test -p kvmbe-tests --test launcher_warm bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_cold_versus_warm_scheduled_to_agent_running() {
    let n: usize = std::env::var("WARM_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let agents = "[[agent]]\nname = \"cold\"\ntags = [\"queue=cold\"]\ntemplate = \"agent-template\"\n\n\
                  [[agent]]\nname = \"warm\"\ntags = [\"queue=warm\"]\ntemplate = \"agent-template\"\nwarm = 1\n\n\
                  [[agent]]\nname = \"saved\"\ntags = [\"queue=saved\"]\ntemplate = \"agent-template\"\nsaved = 1\n";
    // With a `[webhook]` (as a user who wants the fastest starts has it)
    // the launcher sees a job when it is scheduled; WARM_BENCH_POLL=1
    // measures Stacks polling (every second) instead.
    let webhook = std::env::var("WARM_BENCH_POLL").map_or(true, |v| v != "1");
    let bed = start_bed("true", agents, 3, webhook, None, |_| {});
    let to_running = |job: &str, scheduled: SystemTime| {
        let run = bed.bk.job_run(job).expect("an agent ran the job");
        run.started_at
            .unwrap()
            .duration_since(scheduled)
            .unwrap_or_default()
            .as_secs_f64()
    };
    // Where each job's time went, seconds from scheduled: token issued
    // (seen, reserved, asked), the agent's registration with it, the
    // job acquired, the job started.
    let stages = |job: &str, scheduled: SystemTime| -> [f64; 4] {
        let since = |t: SystemTime| {
            t.duration_since(scheduled)
                .unwrap_or_default()
                .as_secs_f64()
        };
        let jat = bed
            .bk
            .job_acquisition_tokens()
            .into_iter()
            .find(|t| t.job_id == job)
            .expect("a token for the job");
        let auth = format!("Token {}", jat.token);
        let registered = bed
            .bk
            .requests()
            .into_iter()
            .find(|r| r.path == "/v3/register" && r.authorization.as_deref() == Some(&auth))
            .expect("the agent registered with the job's token")
            .at;
        let run = bed.bk.job_run(job).expect("an agent ran the job");
        [
            since(jat.issued_at),
            since(registered),
            since(run.acquired_at.expect("acquired")),
            since(run.started_at.expect("started")),
        ]
    };
    let mut split: [Vec<[f64; 4]>; 3] = Default::default();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut saved = Vec::new();
    let slot = "saved-saved-0";
    bed.wait_slot_ready(slot, 1);
    let mut used: Vec<String> = Vec::new();
    let mut ids: [Vec<String>; 3] = Default::default();
    for _ in 0..n {
        let scheduled = SystemTime::now();
        let job = bed.schedule_on("cold");
        bed.wait_finished(&job, "");
        cold.push(to_running(&job, scheduled));
        split[0].push(stages(&job, scheduled));

        let refs: Vec<&str> = used.iter().map(String::as_str).collect();
        let vm = bed.wait_warm_ready(&refs);
        used.push(vm.clone());
        let scheduled = SystemTime::now();
        let job = bed.schedule_on("warm");
        bed.wait_finished(&job, &vm);
        warm.push(to_running(&job, scheduled));
        split[1].push(stages(&job, scheduled));
        ids[1].push(job);

        // The slot is free once its last clone is gone (and a pass saw it).
        bed.wait_gone(slot, Duration::from_secs(120), "the slot's clone to go");
        bed.wait_passes_after_now();
        let scheduled = SystemTime::now();
        let job = bed.schedule_on("saved");
        bed.wait_finished(&job, slot);
        saved.push(to_running(&job, scheduled));
        split[2].push(stages(&job, scheduled));
        ids[2].push(job.clone());
        let log = bed.launcher.log_text();
        assert!(
            log.contains(&format!("job {job}: handed to {slot} restored on vmhost")),
            "{log}"
        );
    }
    let log = bed.launcher.log_text();
    let restores: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(&format!(": restored {slot} in "))?.1;
            rest.strip_suffix(" s")?.parse().ok()
        })
        .collect();
    let size = std::fs::metadata(bed.libvirt.slot(POOL, slot).unwrap().state_file)
        .unwrap()
        .len();
    assert!(
        !log.contains("handing it to warm") && !log.contains("restoring saved slot"),
        "a hand-off failed:\n{log}"
    );
    let (c50, c95, w50, w95) = (
        quantile(&cold, 0.5),
        quantile(&cold, 0.95),
        quantile(&warm, 0.5),
        quantile(&warm, 0.95),
    );
    let (s50, s95) = (quantile(&saved, 0.5), quantile(&saved, 0.95));
    eprintln!(
        "job scheduled -> agent running, {n} jobs each (seconds), jobs seen by {}:",
        if webhook {
            "webhook"
        } else {
            "Stacks polling every 1 s"
        }
    );
    eprintln!("  cold: p50 {c50:.2}  p95 {c95:.2}  all {cold:.2?}");
    eprintln!("  warm: p50 {w50:.2}  p95 {w95:.2}  all {warm:.2?}");
    eprintln!("  saved: p50 {s50:.2}  p95 {s95:.2}  all {saved:.2?}");
    eprintln!("  cold/warm: p50 {:.1}x  p95 {:.1}x", c50 / w50, c95 / w95);
    eprintln!("  cold/saved: p50 {:.1}x  p95 {:.1}x", c50 / s50, c95 / s95);
    eprintln!(
        "  restore calls (s): p50 {:.2}  p95 {:.2}  all {restores:.2?}; state file {:.1} MiB",
        quantile(&restores, 0.5),
        quantile(&restores, 0.95),
        size as f64 / (1 << 20) as f64
    );
    eprintln!(
        "  p50 seconds from scheduled to: token issued / agent registered / job acquired / started"
    );
    for (kind, rows) in ["cold", "warm", "saved"].iter().zip(&split) {
        let col = |i: usize| quantile(&rows.iter().map(|r| r[i]).collect::<Vec<_>>(), 0.5);
        eprintln!(
            "    {kind}: {:.2} / {:.2} / {:.2} / {:.2}",
            col(0),
            col(1),
            col(2),
            col(3)
        );
    }
    // The launcher's own "start" stage: token to the VM started (warm:
    // the hand-off; saved: the restore and the hand-off).
    let start_stage = |ids: &[String]| -> Vec<f64> {
        ids.iter()
            .filter_map(|id| {
                let line = log
                    .lines()
                    .find(|l| l.starts_with(&format!("job {id}: ")) && l.contains(" s, start "))?;
                let rest = line.split(" s, start ").nth(1)?;
                rest.split(" s").next()?.parse().ok()
            })
            .collect()
    };
    let (ws, ss) = (start_stage(&ids[1]), start_stage(&ids[2]));
    eprintln!(
        "  the launcher's start stage (token to VM handed the job), p50: warm {:.2} s, saved {:.2} s; all warm {ws:.2?}, saved {ss:.2?}",
        quantile(&ws, 0.5),
        quantile(&ss, 0.5)
    );
    assert!(w50 < c50, "warm is not faster: {warm:?} vs {cold:?}");
    assert!(s50 < c50, "saved is not faster: {saved:?} vs {cold:?}");
    assert_eq!(restores.len(), n, "{log}");
}

/// Definition `pair` (queue `pair`) with two saved slots; its own names
/// (see [`SAVED_ROOMY`]).
const SAVED_PAIR: &str = "[[agent]]\nname = \"pair\"\ntags = [\"queue=pair\"]\n\
template = \"agent-template\"\nsaved = 2\n";

/// The slots of [`SAVED_PAIR`].
const PAIR_SLOTS: [&str; 2] = ["pair-saved-0", "pair-saved-1"];

/// A `pair` job: says where it runs and the guest's own IPv4 addresses,
/// then keeps its clone running for a while, so that two clones started
/// at once run side by side for long enough to be seen together.
const PAIR_COMMAND: &str = "echo \"ran on $(hostname)\"; ip -4 addr show; sleep 8";

/// The guest's own addresses as [`PAIR_COMMAND`] printed them (loopback
/// left out); the agent puts a timestamp before each line.
fn guest_addresses(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once(" inet ")?.1.split('/').next())
        .filter(|a| !a.starts_with("127."))
        .map(str::to_string)
        .collect()
}

/// What was seen of one clone while both ran.
#[derive(Debug)]
struct PairClone {
    slot: String,
    job: String,
    disk: String,
    macs: Vec<String>,
    leases: Vec<String>,
}

/// One round of [`two_saved_slots_give_two_jobs_their_clones_at_once`]:
/// two `pair` jobs scheduled at once (one build with both), each run
/// once, by a clone of its own slot, the two clones side by side on their
/// own overlays, MACs and addresses. `round` counts from 1. Returns a
/// line of timings.
fn pair_round(bed: &Bed, round: usize) -> String {
    let bk = &bed.bk;
    let daemon = bed.lab.hosts()[0].daemon();
    let bases: Vec<String> = PAIR_SLOTS
        .iter()
        .map(|s| bed.libvirt.slot(POOL, s).unwrap().base.path)
        .collect();
    let spec = || JobSpec::new(&["queue=pair"]).command(PAIR_COMMAND);
    let scheduled = SystemTime::now();
    let t0 = Instant::now();
    let jobs = bk
        .add_build("app", BuildSpec::new(vec![spec(), spec()]))
        .unwrap()
        .job_ids;
    assert_eq!(jobs.len(), 2, "{jobs:?}");

    // Both clones listed at once, each labelled with one of the jobs.
    let live = bed.launcher.wait_for(
        Duration::from_secs(120),
        "both slots' clones running at once",
        || {
            let list = bed.libvirt.instances().ok()?;
            let both = PAIR_SLOTS.iter().all(|s| {
                list.iter()
                    .any(|i| i.name == *s && i.labels.get("job").is_some_and(|j| jobs.contains(j)))
            });
            both.then_some(list)
        },
    );
    let together = t0.elapsed();
    // Every live instance: its disk, its MACs and its leases, read while
    // both clones still run (each job sleeps after its agent started it).
    let mut clones = Vec::new();
    for i in &live {
        let xml = daemon.virsh(&["-r", "dumpxml", &i.name]).unwrap();
        let def = kvmhost::libvirt::domain_xml::DomainDef::from_xml(&xml).unwrap();
        let disks: Vec<String> = def
            .disks
            .iter()
            .filter(|d| d.device == kvmhost::libvirt::domain_xml::DiskDevice::Disk)
            .filter_map(|d| match &d.source {
                kvmhost::libvirt::domain_xml::DiskSource::File(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(disks.len(), 1, "{xml}");
        let macs: Vec<String> = def
            .interfaces
            .iter()
            .filter_map(|n| n.mac.clone())
            .map(|m| m.to_lowercase())
            .collect();
        assert!(!macs.is_empty(), "{xml}");
        let leases =
            bed.launcher
                .wait_for(Duration::from_secs(30), "the clone's DHCP lease", || {
                    let found = bed
                        .libvirt
                        .domain_addresses(&i.name, kvmhost::libvirt::domain::AddressSource::Lease)
                        .ok()?;
                    let v: Vec<String> = found
                        .into_iter()
                        .filter(|g| macs.contains(&g.mac.to_lowercase()))
                        .flat_map(|g| g.addresses)
                        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
                        .collect();
                    (!v.is_empty()).then_some(v)
                });
        // Its own overlay, on its own slot's base, never a base itself.
        let own = PAIR_SLOTS.iter().position(|s| *s == i.name);
        assert!(
            !bases.contains(&disks[0]),
            "{} runs on a base:\n{xml}",
            i.name
        );
        if let Some(k) = own {
            assert!(xml.contains("<backingStore"), "{xml}");
            assert!(xml.contains(&format!("'{}'", bases[k])), "{xml}");
            assert!(!xml.contains(&format!("'{}'", bases[1 - k])), "{xml}");
        }
        clones.push(PairClone {
            slot: i.name.clone(),
            job: i.labels.get("job").cloned().unwrap_or_default(),
            disk: disks[0].clone(),
            macs,
            leases,
        });
    }
    assert_eq!(clones.len(), 2, "only the two clones run: {clones:?}");
    let mut jobs_seen: Vec<&str> = clones.iter().map(|c| c.job.as_str()).collect();
    jobs_seen.sort();
    let mut want: Vec<&str> = jobs.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(jobs_seen, want, "each clone has one job: {clones:?}");
    assert_ne!(clones[0].disk, clones[1].disk, "{clones:?}");
    let mut macs: Vec<&String> = clones.iter().flat_map(|c| &c.macs).collect();
    let n = macs.len();
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), n, "two live instances share a MAC: {clones:?}");
    let mut ips: Vec<&String> = clones.iter().flat_map(|c| &c.leases).collect();
    let n = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!(
        ips.len(),
        n,
        "two live instances share an address: {clones:?}"
    );

    for c in &clones {
        bed.wait_finished(&c.job, &c.slot);
    }
    let log = bed.launcher.log_text();
    let mut runs = Vec::new();
    for c in &clones {
        let job = &c.job;
        // Handed to the clone of the slot it was seen in, once; no cold VM.
        assert_eq!(
            log.matches(&format!("job {job}: handed to ")).count(),
            1,
            "{log}"
        );
        assert!(
            log.contains(&format!(
                "job {job}: handed to {} restored on vmhost",
                c.slot
            )),
            "{log}"
        );
        assert!(!log.contains(&format!("job {job}: started ")), "{log}");
        assert!(
            !log.contains(&format!("job {job}: restoring saved slot")),
            "{log}"
        );
        // Once: one grant, by one agent registered for it only.
        let acquired: Vec<_> = bk
            .acquisitions()
            .into_iter()
            .filter(|a| a.job_id == *job)
            .collect();
        assert_eq!(acquired.len(), 1, "{acquired:?}");
        assert!(acquired[0].granted, "{acquired:?}");
        let run = bk.job_run(job).expect("an agent ran the job");
        let agents: Vec<_> = bk
            .registered_agents()
            .into_iter()
            .filter(|a| a.acquire_only.as_deref() == Some(job.as_str()))
            .collect();
        assert_eq!(agents.len(), 1, "{agents:?}");
        assert_eq!(agents[0].id, run.agent_id);
        assert_eq!(acquired[0].agent_id, run.agent_id);
        // The guest's own address is the lease of its clone's MAC.
        let text = run.log_text();
        assert!(
            text.contains(&format!("ran on {}", agents[0].name)),
            "{text}"
        );
        let own = guest_addresses(&text);
        assert!(!own.is_empty(), "{text}");
        assert!(own.iter().all(|a| c.leases.contains(a)), "{own:?} vs {c:?}");
        let b = bed.launcher.wait_for(
            Duration::from_secs(30),
            "the start's breakdown note",
            || Breakdown::of_notes(&bk.job(job).unwrap().notifications),
        );
        assert_eq!(b.kind, "saved", "{:?}", bk.job(job).unwrap().notifications);
        runs.push((run, own));
    }
    // The agents of the two runs differ, and the runs overlap.
    assert_ne!(runs[0].0.agent_id, runs[1].0.agent_id);
    let (a, b) = (&runs[0].0, &runs[1].0);
    assert!(
        a.started_at.unwrap() < b.finished_at.unwrap()
            && b.started_at.unwrap() < a.finished_at.unwrap(),
        "the jobs did not run at the same time: {a:?} {b:?}"
    );
    let mut guest_ips: Vec<&String> = runs.iter().flat_map(|r| &r.1).collect();
    let n = guest_ips.len();
    guest_ips.sort();
    guest_ips.dedup();
    assert_eq!(guest_ips.len(), n, "two guests share an address: {runs:?}");
    // Each slot restored once per round.
    let log = bed.launcher.log_text();
    for s in PAIR_SLOTS {
        assert_eq!(
            log.matches(&format!(": restored {s} in ")).count(),
            round,
            "{log}"
        );
    }

    let secs = |t: SystemTime| {
        t.duration_since(scheduled)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let mut line = format!("both clones listed {:.1}s", together.as_secs_f64());
    for (c, (run, own)) in clones.iter().zip(&runs) {
        line += &format!(
            "; {} ({}, {}, {:?}): acquired {:.1}s, started {:.1}s, finished {:.1}s, notes {:?}",
            c.slot,
            c.macs.join(","),
            c.disk.rsplit('/').next().unwrap_or_default(),
            own,
            secs(run.acquired_at.unwrap()),
            secs(run.started_at.unwrap()),
            secs(run.finished_at.unwrap()),
            bk.job(&c.job).unwrap().notifications
        );
    }
    line
}

/// With `saved = 2` on a host with room for both clones, two jobs
/// scheduled at once each get a clone of a different slot, restored onto
/// its own overlay, running side by side with its own MAC and address;
/// once both are gone the slots are free again (a second pair of jobs
/// gets them again), and nothing but the slots is left on the host.
#[test]
fn two_saved_slots_give_two_jobs_their_clones_at_once() {
    let t0 = Instant::now();
    // Room for both clones: two VMs; the bed sets no memory limit, and
    // the host has memory for both.
    let bed = start_with("true", SAVED_PAIR, 2, |_| {});
    let vm_kib = bed
        .libvirt
        .template("agent-template")
        .unwrap()
        .domain
        .memory_mib
        << 10;
    let mem = bed.libvirt.memory_use().unwrap();
    assert!(mem.total_kib >= 4 * vm_kib, "{mem:?}");
    for s in PAIR_SLOTS {
        bed.wait_slot_ready(s, 1);
    }
    let built = t0.elapsed();
    bed.wait_no_vm();
    assert!(bed.bk.registered_agents().is_empty());

    let first = pair_round(&bed, 1);
    // Both clones power off after their jobs; the slots are free again
    // once a pass has read the host without them.
    bed.wait_no_vm();
    bed.wait_passes_after_now();
    let second = pair_round(&bed, 2);
    bed.wait_no_vm();

    // Nothing but the slots is left: no instance, and every instance
    // volume is a slot's (its base, seed, state file, or the overlay its
    // last clone left for the sweep); neither slot was built again.
    let names = bed.instance_names().unwrap();
    assert!(names.is_empty(), "{names:?}");
    let vols = bed.lab.hosts()[0].daemon().volumes(POOL).unwrap();
    for v in vols.iter().filter(|v| v.contains("--inst-")) {
        assert!(
            PAIR_SLOTS
                .iter()
                .any(|s| v.starts_with(&format!("{s}--inst-"))),
            "{v} is left: {vols:?}"
        );
    }
    let log = bed.launcher.log_text();
    for s in PAIR_SLOTS {
        assert!(bed.libvirt.slot(POOL, s).unwrap().state_file.is_file());
        let built = format!("saved slot {s} on vmhost is ready (built now)");
        assert_eq!(log.matches(&built).count(), 1, "{log}");
    }
    assert_eq!(bed.bk.registered_agents().len(), 4);
    eprintln!(
        "pair: slots ready {:.1}s after start; round 1: {first}; round 2: {second}; total {:.1}s",
        built.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

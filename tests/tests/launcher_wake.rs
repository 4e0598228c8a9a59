//! The launcher on the bed's LAN: hosts asleep until a wake packet, over
//! `qemu+ssh://` with pinned host keys. A host that never wakes is
//! passed over for the next one, which is woken and gets the VM; a job
//! cancelled while its VM boots loses the VM; SIGTERM leaves running VMs
//! alone and deregisters the stacks.

use std::time::{Duration, Instant};

use kvmhost::libvirt::Host;
use testbed::buildkite::{BuildSpec, Config, JobSpec, JobState};
use testbed::guest::TinyGuest;
use testbed::hosts::Lab;
use testbed::launcher::{define_agent_template, standin_in, LauncherDir};

#[test]
fn a_sleeping_host_is_woken_after_one_that_never_wakes_and_cancelled_jobs_lose_their_vm() {
    let g = TinyGuest::ensure().unwrap();
    let mut lab = Lab::new().unwrap();
    lab.add_host("gone", false).unwrap();
    lab.add_host("sleepy", false).unwrap();
    // Templates are defined through each daemon's own socket: no wake.
    for h in lab.hosts() {
        let host = Host::open(&h.daemon().uri()).unwrap();
        define_agent_template(
            &host,
            &g,
            "agent-template",
            h.daemon().dir(),
            "#!/bin/sh\necho acquire={{buildkite_job_id}}\nsleep 120\npoweroff\n",
        )
        .unwrap();
    }
    let bk = standin_in(lab.client(), Config::default()).unwrap();
    bk.add_pipeline("app").unwrap();
    let host_block = |name: &str, mac: &str| {
        let h = lab.hosts().iter().find(|h| h.name == name).unwrap();
        // OpenSSH (the lab's `ssh` pins its keys); libvirt's libssh
        // transport hung in virDomainGetXMLDesc under the launcher.
        format!(
            "[[host]]\nname = \"{name}\"\nuri = \"qemu+ssh://root@{ip}/system\"\nwake = {{ mac = \"{mac}\", broadcast = \"{b}\" }}\n\n",
            ip = h.ip,
            b = lab.broadcast()
        )
    };
    let sleepy_mac = lab.hosts()[1].mac.clone();
    let config = format!(
        r#"[buildkite]
agent_endpoint = "{url}/v3"
agent_token_file = "token"
stack_key = "lan"
poll_interval = 1

[launcher]
wake_timeout = 8
boot_timeout = 120
host_retry_after = 300

{gone}{sleepy}[[agent]]
name = "linux"
tags = ["queue=linux"]
template = "agent-template"
"#,
        url = bk.url(),
        // Nobody listens for this MAC: "gone" stays asleep.
        gone = host_block("gone", "52:54:00:de:ad:02"),
        sleepy = host_block("sleepy", &sleepy_mac),
    );
    let mut dir = LauncherDir::new(&config, bk.cluster_token()).unwrap();
    dir.path_first = Some(lab.ssh_path_dir().to_path_buf());
    let mut launcher = dir.spawn(Some(lab.client()), &["run"]).unwrap();
    launcher.wait_for(Duration::from_secs(20), "stack registration", || {
        (!bk.stacks().is_empty()).then_some(())
    });

    let b = bk
        .add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]))
        .unwrap();
    let job = b.job_ids[0].clone();
    let sleepy = Host::open(&lab.hosts()[1].daemon().uri()).unwrap();
    let t0 = Instant::now();
    let first = launcher.wait_for(Duration::from_secs(120), "a VM on sleepy", || {
        sleepy
            .instances()
            .ok()?
            .into_iter()
            .find(|i| i.labels.get("job") == Some(&job))
    });
    eprintln!(
        "job to VM on the second host, after the first never woke: {:?}",
        t0.elapsed()
    );
    assert!(lab.hosts()[1].is_awake());
    assert!(!lab.hosts()[0].is_awake());
    // The notes on the job's page say what happened, in order.
    let notes = launcher.wait_for(Duration::from_secs(10), "the booting note", || {
        let n = bk.job(&job)?.notifications;
        (n.len() >= 3).then_some(n)
    });
    assert_eq!(
        notes[..2],
        ["waking gone", "waking sleepy"],
        "{}",
        launcher.log_text()
    );
    assert_eq!(notes[2], format!("booting {} on sleepy", first.name));
    let log = launcher.log_text();
    assert!(log.contains("gone"), "{log}");
    assert!(!log.contains(bk.cluster_token()), "the token is in the log");

    // A job cancelled while its VM boots loses the VM.
    let b2 = bk
        .add_build("app", BuildSpec::new(vec![JobSpec::new(&["queue=linux"])]))
        .unwrap();
    let job2 = b2.job_ids[0].clone();
    let second = launcher.wait_for(Duration::from_secs(60), "a VM for the second job", || {
        sleepy
            .instances()
            .ok()?
            .into_iter()
            .find(|i| i.labels.get("job") == Some(&job2))
    });
    bk.set_job_state(&job2, JobState::Canceled).unwrap();
    launcher.wait_for(
        Duration::from_secs(30),
        "the cancelled job's VM to go",
        || {
            let names: Vec<String> = sleepy
                .instances()
                .ok()?
                .into_iter()
                .map(|i| i.name)
                .collect();
            (!names.contains(&second.name)).then_some(())
        },
    );

    // SIGTERM: the launcher leaves, its first VM stays, its stacks are gone.
    let status = launcher
        .stop(Duration::from_secs(20))
        .expect("the launcher stops");
    assert!(status.success(), "{status:?}\n{}", launcher.log_text());
    let names: Vec<String> = sleepy
        .instances()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec![first.name.clone()]);
    assert!(bk.stacks().is_empty());
    sleepy.remove_instance(&first.name).unwrap();
}

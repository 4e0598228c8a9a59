//! What the daemon does with a job whose VM gets no job acquisition
//! token, and with a VM whose token expires before it takes its job.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::fake_api::FakeApi;
use crate::retry::Policy;
use crate::stacks::jat::JatError;

const JOB: &str = "0190a6d4-1b2c-7def-8123-456789abcdef";

/// A daemon for one definition on queue `linux`, talking to `api`; its
/// host (libvirt's test driver) is never contacted here.
fn daemon(api: &FakeApi) -> Daemon {
    let text = format!(
        "[buildkite]\nagent_endpoint = \"{}\"\nstack_key = \"kvm\"\n\n\
         [launcher]\nboot_timeout = 600\n\n\
         [[host]]\nname = \"h1\"\nuri = \"test:///default\"\n\n\
         [[agent]]\nname = \"debian\"\ntags = [\"queue=linux\"]\ntemplate = \"debian-agent\"\n",
        api.base
    );
    let env = |k: &str| (k == "BUILDKITE_AGENT_TOKEN").then(|| "bkct_cluster".to_string());
    let cfg = crate::config::parse(Path::new("/etc/launcher.toml"), &text, env).unwrap();
    let mut d = Daemon::new(cfg, Options::default()).unwrap();
    d.source = JobSource::Stacks(
        Client::new(&api.base, Secret::new("bkct_cluster")).with_policy(Policy {
            attempts: 2,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        }),
    );
    d
}

fn in_flight(phase: Phase, token_expires: Option<SystemTime>) -> InFlight {
    InFlight {
        job: Job {
            id: JOB.into(),
            rules: vec!["queue=linux".into()],
            priority: 0,
            scheduled_at: "2026-12-01T11:12:45Z".into(),
        },
        queue: "linux".into(),
        def: 0,
        host: 0,
        phase,
        since: Instant::now(),
        reserved_until: Instant::now() + Duration::from_secs(600),
        token_expires,
    }
}

/// The notes the daemon posted, as `(job, detail)`.
fn notes(api: &FakeApi) -> Vec<(String, String)> {
    api.seen()
        .iter()
        .filter(|r| r.path.ends_with("/notifications"))
        .flat_map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["notifications"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    (
                        n["job_uuid"].as_str().unwrap().to_string(),
                        n["detail"].as_str().unwrap().to_string(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn ok_api() -> FakeApi {
    FakeApi::start(|r| {
        let body = if r.path.ends_with("/get-states") {
            format!(r#"{{"states":{{"{JOB}":"reserved"}}}}"#)
        } else if r.path.ends_with("/batch-reserve") {
            format!(r#"{{"reserved":["{JOB}"],"not_reserved":[]}}"#)
        } else {
            r#"{"errors":[]}"#.to_string()
        };
        (200, body)
    })
    .await
}

#[tokio::test]
async fn a_job_whose_token_was_not_issued_gets_a_note_and_is_not_placed_again() {
    let api = ok_api().await;
    let mut d = daemon(&api);
    d.jobs.follow(JOB, in_flight(Phase::Starting, None));
    d.on_event(Event::NoToken {
        job: JOB.into(),
        error: JatError::NotIssued,
    })
    .await;
    assert!(d.jobs.coming(JOB).is_none());
    assert!(!d.jobs.is_retry(JOB), "placed again");
    let notes = notes(&api);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, JOB);
    assert!(
        notes[0]
            .1
            .starts_with("no VM: no job acquisition token was issued"),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_refused_token_request_names_the_agent_tokens_setting_on_the_jobs_page() {
    let api = ok_api().await;
    let mut d = daemon(&api);
    d.jobs.follow(JOB, in_flight(Phase::Starting, None));
    d.on_event(Event::NoToken {
        job: JOB.into(),
        error: JatError::Refused {
            status: 403,
            message: "HTTP 403 Forbidden: not enabled".into(),
            definition: "debian".into(),
        },
    })
    .await;
    assert!(!d.jobs.is_retry(JOB), "placed again");
    let notes = notes(&api);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0]
            .1
            .contains("set agent_tokens = \"cluster\" on the launcher's [[agent]] debian"),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_token_request_buildkite_did_not_answer_places_the_job_again() {
    let api = ok_api().await;
    let mut d = daemon(&api);
    d.jobs.follow(JOB, in_flight(Phase::Starting, None));
    d.on_event(Event::NoToken {
        job: JOB.into(),
        error: JatError::Unavailable("HTTP 502 Bad Gateway".into()),
    })
    .await;
    assert!(d.jobs.coming(JOB).is_none());
    assert!(d.jobs.is_retry(JOB), "the job is lost");
    assert!(notes(&api).is_empty());
}

#[tokio::test]
async fn a_vm_whose_token_expired_before_it_took_the_job_is_removed_and_the_job_placed_again() {
    let api = ok_api().await;
    let mut d = daemon(&api);
    // Booting for a moment only: the boot timeout (600 s) is far away.
    let expired = SystemTime::now() - TOKEN_GRACE - Duration::from_secs(1);
    d.jobs.follow(
        JOB,
        in_flight(Phase::Booting("debian-0190a6d4-1a2b".into()), Some(expired)),
    );
    d.watch_inflight(None).await;
    assert!(d.jobs.coming(JOB).is_none(), "still waiting for the VM");
    // Placed again once the VM is gone.
    assert!(!d.jobs.is_retry(JOB), "placed before its VM was removed");
    let ev = tokio::time::timeout(Duration::from_secs(10), d.rx.recv())
        .await
        .expect("the removal's event")
        .expect("the channel is open");
    d.on_event(ev).await;
    assert!(d.jobs.is_retry(JOB), "the job is lost");
}

#[tokio::test]
async fn a_vm_whose_token_is_still_good_keeps_its_job() {
    let api = ok_api().await;
    let mut d = daemon(&api);
    // Expired, but an agent that registered just in time may still be
    // acquiring: within the grace the VM is left alone.
    let just_expired = SystemTime::now() - Duration::from_secs(1);
    d.jobs.follow(
        JOB,
        in_flight(
            Phase::Booting("debian-0190a6d4-1a2b".into()),
            Some(just_expired),
        ),
    );
    d.watch_inflight(None).await;
    assert!(d.jobs.coming(JOB).is_some());
    assert!(!d.jobs.is_retry(JOB));
}

#[test]
fn the_vms_seed_carries_the_token_it_is_given_and_not_the_cluster_token() {
    let text = "[buildkite]\nstack_key = \"kvm\"\n\n\
         [[host]]\nname = \"h1\"\nuri = \"test:///default\"\n\n\
         [[agent]]\nname = \"debian\"\ntags = [\"queue=linux\"]\ntemplate = \"debian-agent\"\n";
    let env = |k: &str| (k == "BUILDKITE_AGENT_TOKEN").then(|| "bkct_cluster".to_string());
    let cfg = crate::config::parse(Path::new("/etc/launcher.toml"), text, env).unwrap();
    let job = in_flight(Phase::Starting, None).job;
    let spec = instance_spec(&cfg, 0, &job, "linux", &Secret::new("bkjat_for_this_job"));
    assert_eq!(spec.vars["buildkite_agent_token"], "bkjat_for_this_job");
    assert_eq!(spec.vars["buildkite_job_id"], JOB);
    let script = spec.default_user_data.unwrap();
    assert!(
        script.contains("export BUILDKITE_AGENT_TOKEN='bkjat_for_this_job'\n"),
        "{script}"
    );
    assert!(
        script.contains(&format!("buildkite-agent start --acquire-job '{JOB}'")),
        "{script}"
    );
    let everything = format!("{:?} {script}", spec.vars);
    assert!(!everything.contains("bkct_cluster"), "{everything}");
}

#[tokio::test]
async fn a_start_whose_answer_was_lost_with_the_connection_keeps_the_job_on_that_vm() {
    let api = ok_api().await;
    let mut d = daemon(&api);
    d.jobs.follow(JOB, in_flight(Phase::Starting, None));
    d.on_event(Event::StartUnknown {
        job: JOB.into(),
        host: 0,
        vm: "debian-0190a6d4-1a2b".into(),
        why: "End of file while reading data".into(),
        token_expires: None,
    })
    .await;
    // Not placed again (a second VM beside one that may boot), but
    // followed as booting, so the boot timeout still frees it.
    assert!(!d.jobs.is_retry(JOB), "placed again");
    let f = d.jobs.coming(JOB).expect("the job is no longer followed");
    assert!(matches!(&f.phase, Phase::Booting(vm) if vm == "debian-0190a6d4-1a2b"));
}

#[tokio::test]
async fn a_booting_vm_its_host_no_longer_lists_frees_its_job_at_once() {
    let api = ok_api().await;
    let mut d = daemon(&api);
    let mut f = in_flight(Phase::Booting("debian-0190a6d4-1a2b".into()), None);
    f.since = Instant::now() - Duration::from_secs(5);
    d.jobs.follow(JOB, f);
    // The host, read after the start, runs no such VM (boot timeout 600 s).
    d.hosts[0].set_probed(Vec::new()).await;
    d.watch_inflight(None).await;
    assert!(
        d.jobs.coming(JOB).is_none(),
        "still waiting for a VM that is not there"
    );
    assert!(d.jobs.is_retry(JOB), "the job is lost");
}

#[tokio::test]
async fn a_booting_vm_its_host_lists_keeps_its_job() {
    let api = ok_api().await;
    let mut d = daemon(&api);
    let mut f = in_flight(Phase::Booting("debian-0190a6d4-1a2b".into()), None);
    f.since = Instant::now() - Duration::from_secs(5);
    d.jobs.follow(JOB, f);
    let vm = kvmhost::libvirt::instance::InstanceInfo {
        uuid: "0190a6d4-0000-4000-8000-000000000001".into(),
        name: "debian-0190a6d4-1a2b".into(),
        template: "debian-agent".into(),
        labels: Default::default(),
        memory_kib: 1 << 20,
    };
    d.hosts[0].set_probed(vec![vm]).await;
    d.watch_inflight(None).await;
    assert!(d.jobs.coming(JOB).is_some());
    assert!(!d.jobs.is_retry(JOB));
}

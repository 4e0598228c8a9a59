use std::collections::BTreeMap;
use std::path::Path;

use kvmhost::libvirt::instance::InstanceInfo;

use super::*;

/// Monday, 12:00.
const NOON: LocalTime = LocalTime {
    weekday: 0,
    minute: 12 * 60,
};

fn config(extra: &str) -> Config {
    let text = format!(
        "[buildkite]\nstack_key = \"kvm\"\nvm_agent_endpoint = \"http://10.0.0.1/v3\"\n\n\
         [[host]]\nname = \"h1\"\nuri = \"test:///default\"\n\n\
         [[host]]\nname = \"h2\"\nuri = \"test:///default\"\n\n\
         [[agent]]\nname = \"debian\"\ntags = [\"queue=linux\"]\ntemplate = \"debian-agent\"\nwarm = 2\n{extra}"
    );
    let env = |k: &str| (k == "BUILDKITE_AGENT_TOKEN").then(|| "bkct_cluster".to_string());
    crate::config::parse(Path::new("/etc/launcher.toml"), &text, env).unwrap()
}

fn instance(name: &str, labels: &[(&str, &str)]) -> InstanceInfo {
    InstanceInfo {
        uuid: String::new(),
        name: name.into(),
        template: "debian-agent".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        memory_kib: 1 << 20,
    }
}

#[test]
fn a_warm_vm_holds_no_secret_and_has_the_channel() {
    let cfg = config("");
    let spec = warm_instance_spec(&cfg, 0, "debian-warm-0a1b2c3d");
    assert_eq!(spec.name, "debian-warm-0a1b2c3d");
    assert_eq!(spec.channels, ["org.kvmbe.handoff"]);
    assert_eq!(spec.vars["buildkite_agent_token"], "");
    assert_eq!(spec.vars["buildkite_job_id"], "");
    assert_eq!(spec.labels["warm"], "1");
    assert!(!spec.labels.contains_key("job"));
    let script = spec.default_user_data.unwrap();
    assert!(
        script.contains("kvmbe-handoff -- --tags 'queue=linux'\npoweroff\n"),
        "{script}"
    );
    assert!(script.contains("export BUILDKITE_AGENT_ENDPOINT='http://10.0.0.1/v3'"));
    let everything = format!("{:?} {script}", spec.vars);
    assert!(!everything.contains("bkct_cluster"), "{everything}");
    assert!(!script.contains("BUILDKITE_AGENT_TOKEN"), "{script}");
    assert!(warm_name(&cfg, 0).starts_with("debian-warm-"));
}

#[test]
fn a_warm_vm_is_handed_a_job_only_once_it_said_ready() {
    let cfg = config("");
    let mut pool = WarmPool::default();
    pool.starting("w1", 0, 1);
    pool.starting("w2", 0, 0);
    assert_eq!(pool.kept(0), 2);
    assert!(pool.ready_hosts(&cfg, 0).is_empty());
    assert!(
        pool.to_probe().is_empty(),
        "probed before its start returned"
    );
    pool.started("w1");
    pool.started("w2");
    let mut asked = pool.to_probe();
    asked.sort();
    assert_eq!(asked, [("w1".to_string(), 1), ("w2".to_string(), 0)]);
    assert!(pool.to_probe().is_empty(), "asked twice at once");
    assert!(!pool.probed("w2", false));
    assert!(pool.probed("w1", true));
    assert_eq!(pool.ready_hosts(&cfg, 0), [1]);
    assert_eq!(pool.claim(0, 0), None, "w2 has not said ready");
    let counts = pool.counts(&cfg);
    assert_eq!(counts[&("debian".to_string(), "waiting")], 1);
    assert_eq!(counts[&("debian".to_string(), "booting")], 1);
    assert_eq!(pool.claim(0, 1).as_deref(), Some("w1"));
    assert_eq!(pool.counts(&cfg)[&("debian".to_string(), "waiting")], 0);
    assert_eq!(pool.claim(0, 1), None, "claimed twice");
    assert!(pool.ready_hosts(&cfg, 0).is_empty());
    // A claimed VM no longer counts as kept warm: another is started.
    assert_eq!(pool.kept(0), 1);
    // w2 is asked again next time.
    assert_eq!(pool.to_probe(), [("w2".to_string(), 0)]);
}

#[tokio::test]
async fn the_pool_adopts_warm_vms_found_running_and_forgets_gone_or_taken_ones() {
    let cfg = config("");
    let hosts: Vec<Arc<HostRt>> = cfg
        .hosts
        .iter()
        .map(|h| HostRt::new(h.clone(), Duration::from_secs(1), "ab12cd"))
        .collect();
    let warm = [("launcher", "kvm"), ("definition", "debian"), ("warm", "1")];
    let mut pool = WarmPool::default();
    pool.starting("coming", 0, 0);
    pool.starting("gone", 0, 0);
    pool.started("gone");
    pool.starting("taken", 0, 0);
    pool.started("taken");
    hosts[0]
        .set_probed(vec![
            instance("found", &warm),
            instance("taken", &[warm[0], warm[1], warm[2], ("job", "j1")]),
            instance(
                "stranger",
                &[
                    ("launcher", "other"),
                    ("warm", "1"),
                    ("definition", "debian"),
                ],
            ),
            instance(
                "cold",
                &[("launcher", "kvm"), ("definition", "debian"), ("job", "j2")],
            ),
        ])
        .await;
    let late = pool.sync(&cfg, &hosts, Duration::from_secs(600));
    assert!(late.is_empty());
    let mut names: Vec<&String> = pool.vms().keys().collect();
    names.sort();
    assert_eq!(names, ["coming", "found"]);
    assert_eq!(pool.vms()["found"].state, WarmState::Booting);
    // One that never says ready is given up after the boot timeout.
    std::thread::sleep(Duration::from_millis(20));
    let late = pool.sync(&cfg, &hosts, Duration::from_millis(10));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].vm, "found");
    assert!(
        late[0].why.contains("within the boot timeout"),
        "{}",
        late[0].why
    );
}

#[test]
fn warm_vms_beyond_the_setting_are_removed_booting_ones_first_then_waiting_ones() {
    let cfg = config("");
    let mut pool = WarmPool::default();
    for vm in ["a", "b", "c", "d"] {
        pool.starting(vm, 0, 0);
        pool.started(vm);
    }
    // A start still under way is never removed.
    pool.starting("e", 0, 0);
    for (vm, _) in pool.to_probe() {
        pool.probed(&vm, vm != "d");
    }
    // Ones being asked whether they wait ("d" again, "f") count as booting.
    pool.starting("f", 0, 0);
    pool.started("f");
    assert_eq!(pool.to_probe().len(), 2);
    let gone = pool.surplus(&cfg, NOON);
    assert_eq!(gone.len(), 4, "{gone:?}");
    assert!(gone[..2].iter().any(|r| r.vm == "f"), "{gone:?}");
    assert!(!pool.probed("f", true));
    // The ones still booting go first; "e" stays.
    assert!(gone[..2].iter().any(|r| r.vm == "d"), "{gone:?}");
    assert!(gone.iter().all(|r| r.vm != "e"), "{gone:?}");
    assert_eq!(gone[0].why, "more warm debian VMs than warm = 2");
    assert_eq!(pool.kept(0), 2);
    assert!(pool.vms().contains_key("e"));
    assert!(pool.surplus(&cfg, NOON).is_empty());
}

#[test]
fn outside_warm_hours_every_warm_vm_not_handed_a_job_goes() {
    let cfg = config("warm_hours = \"Mon-Fri 08:00-20:00\"\n");
    let mut pool = WarmPool::default();
    for vm in ["a", "b", "c"] {
        pool.starting(vm, 0, 0);
        pool.started(vm);
    }
    for (vm, _) in pool.to_probe() {
        pool.probed(&vm, true);
    }
    assert_eq!(pool.claim(0, 0).as_deref().map(|v| v.len()), Some(1));
    // In its hours: two kept, as warm = 2 asks.
    assert_eq!(pool.surplus(&cfg, NOON).len(), 0);
    let saturday = LocalTime {
        weekday: 5,
        minute: 12 * 60,
    };
    let gone = pool.surplus(&cfg, saturday);
    // The claimed one is a job's VM now; the other two go.
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert_eq!(gone[0].why, "outside warm_hours (Mon-Fri 08:00-20:00)");
    assert_eq!(pool.kept(0), 0);
}

#[test]
fn waiting_vms_are_checked_once_a_minute_and_only_waiting_ones_taken() {
    let mut pool = WarmPool::default();
    for vm in ["a", "b"] {
        pool.starting(vm, 0, 1);
        pool.started(vm);
    }
    for (vm, _) in pool.to_probe() {
        pool.probed(&vm, vm == "a");
    }
    let t0 = Instant::now();
    // Only the waiting one is checked, then nothing until a minute later.
    assert_eq!(pool.due_for_version_check(t0), [("a".to_string(), 0, 1)]);
    assert!(pool
        .due_for_version_check(t0 + Duration::from_secs(59))
        .is_empty());
    assert_eq!(
        pool.due_for_version_check(t0 + VERSION_CHECK_EVERY).len(),
        1
    );
    // A booting one is not taken; a claimed one neither.
    assert!(!pool.take_waiting("b"));
    assert_eq!(pool.claim(0, 1).as_deref(), Some("a"));
    assert!(!pool.take_waiting("a"));
    pool.release("a");
    assert!(pool.take_waiting("a"));
    assert!(!pool.vms().contains_key("a"));
}

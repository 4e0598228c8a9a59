//! Templates and instances on a real libvirtd, as the launcher uses them:
//! the template's cloud-init files (the agent token) are not readable by
//! local users through libvirt; an instance is a transient domain with an
//! overlay and its own seed, listed with its labels, gone from libvirt
//! when its guest powers off, its volumes swept afterwards, and only
//! its: an operator's volume and another host's instance volumes in the
//! same pool stay.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use kvmhost::libvirt::instance::{instance_volume_name, InstanceSpec};
use kvmhost::libvirt::volume::{VolumeFormat, VolumeSpec};
use kvmhost::libvirt::Host;
use testbed::guest::{TinyGuest, POWEROFF, READY};
use testbed::launcher::define_agent_template;
use testbed::libvirtd::{Libvirtd, POOL};
use testbed::util::wait_until;

const TOKEN: &str = "agent-token-5ecret-7f3a";

/// The key of the base volume the test template's instances are made
/// from, and that volume's name: the one volume left once the template and
/// every instance volume are gone.
fn base(host: &Host) -> (String, String) {
    let key = host.template("agent-template").unwrap().base_volume_key;
    let name = host.volume_by_key(&key).unwrap().name;
    (key, name)
}

#[test]
fn a_templates_token_is_not_in_the_xml_any_local_user_can_read() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    let host = Host::open(&d.uri()).unwrap();
    let user = format!("#cloud-config\nbuildkite_token: {TOKEN}\nhostname: {{{{hostname}}}}\n");
    define_agent_template(&host, &g, "agent-template", d.dir(), &user).unwrap();
    let (_, base_name) = base(&host);

    // What `virsh -r dumpxml` shows any local user.
    let xml = d.virsh(&["dumpxml", "agent-template"]).unwrap();
    assert!(
        !xml.contains(TOKEN),
        "the token is in the template's XML:\n{xml}"
    );
    let inactive = d
        .virsh(&["dumpxml", "--inactive", "agent-template"])
        .unwrap();
    assert!(!inactive.contains(TOKEN));
    // The files sit in a volume only root can read, and read back whole.
    let files = d
        .volumes(POOL)
        .unwrap()
        .into_iter()
        .find(|v| v.starts_with("agent-template"))
        .expect("a volume holds the template's files");
    let mode = std::fs::metadata(d.pool_dir().join(&files))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{files}");
    assert_eq!(host.template("agent-template").unwrap().user_data, user);

    host.delete_template("agent-template").unwrap();
    assert_eq!(d.volumes(POOL).unwrap(), vec![base_name.clone()]);
}

#[test]
fn an_instance_is_transient_labelled_and_gone_after_power_off() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    let host = Host::open(&d.uri()).unwrap();
    // The tiny guest runs a user-data that starts with #! after READY.
    let user = "#!/bin/sh\necho job={{job}} host={{hostname}}\nsleep 1\npoweroff\n";
    define_agent_template(&host, &g, "agent-template", d.dir(), user).unwrap();
    let (key, base_name) = base(&host);

    let spec = InstanceSpec {
        template: "agent-template".into(),
        name: "agent-7f3a".into(),
        vars: BTreeMap::from([("job".to_string(), "J-1".to_string())]),
        default_user_data: None,
        labels: BTreeMap::from([("job".to_string(), "J-1".to_string())]),
        channels: Vec::new(),
    };
    let inst = host.launch_instance(&spec).unwrap();
    let found = host.instances().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "agent-7f3a");
    assert_eq!(found[0].template, "agent-template");
    assert_eq!(found[0].labels.get("job").map(String::as_str), Some("J-1"));
    assert_eq!(found[0].memory_kib, 256 << 10);
    // Transient: libvirt has no persistent definition to leave behind.
    let persistent = d.virsh(&["dominfo", "agent-7f3a"]).unwrap();
    assert!(
        persistent
            .lines()
            .any(|l| l.starts_with("Persistent:") && l.ends_with("no")),
        "{persistent}"
    );
    for k in inst.overlay_keys.iter().chain([&inst.seed_key]) {
        let mode = std::fs::metadata(k).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{k}");
    }
    assert_eq!(
        host.volume_by_key(&inst.overlay_key).unwrap().backing_path,
        Some(host.volume_by_key(&key).unwrap().path)
    );

    let log = d.dir().join("agent-7f3a.serial.log");
    let (text, _) = Libvirtd::wait_for_text(&log, POWEROFF, Duration::from_secs(90)).unwrap();
    assert!(text.contains(READY));
    assert!(text.contains("job=J-1 host=agent-7f3a"), "{text}");
    wait_until(
        Duration::from_secs(30),
        "agent-7f3a leaving libvirt after its guest powered off",
        || format!("the instance is still there; domains: {:?}", d.domains()),
        || (!d.domains().unwrap().contains(&"agent-7f3a".to_string())).then_some(()),
    );
    assert!(host.instances().unwrap().is_empty());

    // The pool also holds an operator's volume whose name has the
    // instance infix, and the volumes of an instance another host sharing
    // the pool made (not running here): the sweep leaves them.
    let mark = host.volume_mark().unwrap();
    let other = if mark == "0badc0de" {
        "1badc0de"
    } else {
        "0badc0de"
    };
    let strangers = [
        "db--inst-data.qcow2".to_string(),
        instance_volume_name("agent-9e2b", other, "disk0.qcow2"),
        instance_volume_name("agent-9e2b", other, "seed.iso"),
    ];
    for n in &strangers {
        host.create_volume(POOL, &VolumeSpec::new(n, 1 << 20, VolumeFormat::Raw))
            .unwrap();
    }

    // Its volumes stay until swept; a fresh one within the grace is kept.
    assert_eq!(
        host.sweep_instance_volumes(POOL, Duration::from_secs(3600))
            .unwrap(),
        Vec::<String>::new()
    );
    let mut swept = host.sweep_instance_volumes(POOL, Duration::ZERO).unwrap();
    swept.sort();
    assert_eq!(
        swept,
        vec![
            instance_volume_name("agent-7f3a", &mark, "disk0.qcow2"),
            instance_volume_name("agent-7f3a", &mark, "seed.iso")
        ]
    );
    let left = d.volumes(POOL).unwrap();
    for n in &strangers {
        assert!(left.contains(n), "{n} was swept: {left:?}");
    }
    for n in &strangers {
        host.delete_volume(&host.volume(POOL, n).unwrap().key)
            .unwrap();
    }
    host.delete_template("agent-template").unwrap();
    assert_eq!(d.volumes(POOL).unwrap(), vec![base_name.clone()]);
}

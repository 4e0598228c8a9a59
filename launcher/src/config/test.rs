use std::path::Path;

use super::*;

const GOOD: &str = r#"
[buildkite]
agent_endpoint = "http://127.0.0.1:9000/v3/"
stack_key = "kvm"

[[host]]
name = "vmhost01"
uri = "qemu:///system"
memory_limit = "90%"
max_vms = 4

[[host]]
name = "vmhost02"
uri = "qemu+ssh://root@vmhost02/system"
priority = -1
wake = { mac = "52:54:00:12:34:56", broadcast = "10.0.0.255" }

[[agent]]
name = "debian"
tags = ["queue=linux", "os=debian"]
template = "debian-agent"

[[agent]]
name = "windows"
tags = ["queue=windows"]
template = "windows-agent"
hosts = ["vmhost01"]
max_instances = 2
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn token_env(k: &str) -> Option<String> {
    (k == "BUILDKITE_AGENT_TOKEN").then(|| "cluster-token".to_string())
}

/// Writes a token file as the README says to: `chmod 600`.
fn write_token(path: &Path, token: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, token).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn check(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("/etc/launcher.toml"), text, token_env)
}

fn error(text: &str) -> String {
    check(text).unwrap_err().to_string()
}

#[test]
fn a_full_config_reads_into_typed_settings() {
    let c = check(GOOD).unwrap();
    assert_eq!(c.buildkite.source, Source::Stacks);
    assert_eq!(c.buildkite.agent_endpoint, "http://127.0.0.1:9000/v3");
    assert_eq!(c.buildkite.vm_agent_endpoint, "http://127.0.0.1:9000/v3");
    assert_eq!(c.hosts[0].memory_limit, Some(MemoryLimit::Percent(90)));
    assert_eq!(c.hosts[1].wake.as_ref().unwrap().port, 7);
    // vmhost02 has the lower priority number, so it is tried first.
    assert_eq!(c.agents[0].hosts, vec![1, 0]);
    assert_eq!(c.agents[1].hosts, vec![0]);
    assert_eq!(c.queues(), vec!["linux".to_string(), "windows".to_string()]);
    assert_eq!(c.agents[0].tokens, AgentTokens::Jat);
}

#[test]
fn tokens_never_show_in_debug_output() {
    let c = check(GOOD).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("cluster-token"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn an_unknown_key_names_file_line_and_key() {
    let text = GOOD.replace("max_vms = 4", "max_vm = 4");
    let e = error(&text);
    assert!(
        e.starts_with("/etc/launcher.toml:10: host[0].max_vm: unknown field `max_vm`"),
        "{e}"
    );
}

#[test]
fn a_wrong_type_names_file_line_and_key() {
    let text = GOOD.replace("max_instances = 2", "max_instances = \"two\"");
    let e = error(&text);
    assert!(
        e.starts_with("/etc/launcher.toml:28: agent[1].max_instances:"),
        "{e}"
    );
}

#[test]
fn a_bad_value_names_file_line_and_key() {
    let e = error(&GOOD.replace("\"90%\"", "\"lots\""));
    assert!(
        e.starts_with("/etc/launcher.toml:9: host[0].memory_limit: \"lots\" is not a size"),
        "{e}"
    );
    let e = error(&GOOD.replace("52:54:00:12:34:56", "52:54:00"));
    assert!(
        e.starts_with("/etc/launcher.toml:16: host[1].wake.mac:"),
        "{e}"
    );
    let e = error(&GOOD.replace("hosts = [\"vmhost01\"]", "hosts = [\"vmhost09\"]"));
    assert!(
        e.starts_with(
            "/etc/launcher.toml:27: agent[1].hosts[0]: no [[host]] is named \"vmhost09\""
        ),
        "{e}"
    );
    let e = error(&GOOD.replace("qemu+ssh://root@vmhost02/system", "vmhost02"));
    assert!(
        e.starts_with(
            "/etc/launcher.toml:14: host[1].uri: 'vmhost02' is not a libvirt URI; write e.g. qemu:///system"
        ),
        "{e}"
    );
    let e = error(&GOOD.replace(
        "qemu+ssh://root@vmhost02/system",
        "qemu+ssh://vmhost02:ssh/system",
    ));
    assert!(
        e.contains(
            "host[1].uri: 'qemu+ssh://vmhost02:ssh/system' is not a libvirt URI (port 'ssh'"
        ),
        "{e}"
    );
    let e = error(&GOOD.replace("\"os=debian\"", "\"debian\""));
    assert!(
        e.starts_with("/etc/launcher.toml:20: agent[0].tags[1]:"),
        "{e}"
    );
}

#[test]
fn a_missing_key_names_its_table() {
    let text = GOOD.replace("template = \"windows-agent\"\n", "");
    let e = error(&text);
    assert!(e.contains("agent[1]"), "{e}");
    assert!(e.contains("missing field `template`"), "{e}");
}

#[test]
fn broken_toml_names_the_line() {
    let e = error("[buildkite\n");
    assert!(e.starts_with("/etc/launcher.toml:1: "), "{e}");
}

#[test]
fn the_environment_overrides_the_file() {
    let env = |k: &str| match k {
        "BUILDKITE_AGENT_ENDPOINT" => Some("http://10.0.0.1:1/v3".to_string()),
        "BUILDKITE_AGENT_TOKEN" => Some("from-env".to_string()),
        "BUILDKITE_API_ENDPOINT" => Some("http://10.0.0.1:1/v2".to_string()),
        "BUILDKITE_API_TOKEN" => Some("api-env".to_string()),
        "BUILDKITE_ORGANIZATION" => Some("acme".to_string()),
        _ => None,
    };
    let c = parse(Path::new("c.toml"), GOOD, env).unwrap();
    assert_eq!(c.buildkite.agent_endpoint, "http://10.0.0.1:1/v3");
    assert_eq!(c.buildkite.agent_token.unwrap().expose(), "from-env");
    assert_eq!(c.buildkite.api_endpoint, "http://10.0.0.1:1/v2");
    assert_eq!(c.buildkite.api_token.unwrap().expose(), "api-env");
    assert_eq!(c.buildkite.organization.as_deref(), Some("acme"));
    // A bad override is named as such.
    let bad = |k: &str| (k == "BUILDKITE_AGENT_ENDPOINT").then(|| "ftp://x".to_string());
    let e = parse(Path::new("c.toml"), GOOD, bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("c.toml: environment BUILDKITE_AGENT_ENDPOINT:"),
        "{e}"
    );
}

#[test]
fn without_any_token_the_error_says_what_to_set() {
    let e = parse(Path::new("c.toml"), GOOD, no_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("BUILDKITE_AGENT_TOKEN"), "{e}");
}

#[test]
fn token_files_are_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    write_token(&dir.path().join("token"), "secret-one\n");
    let text = GOOD.replace(
        "stack_key = \"kvm\"",
        "stack_key = \"kvm\"\nagent_token_file = \"token\"",
    );
    let c = parse(&dir.path().join("l.toml"), &text, no_env).unwrap();
    assert_eq!(c.buildkite.agent_token.unwrap().expose(), "secret-one");
    let text = text.replace("\"token\"", "\"missing\"");
    let e = parse(&dir.path().join("l.toml"), &text, no_env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":5: buildkite.agent_token_file: cannot read"),
        "{e}"
    );
}

#[test]
fn a_token_file_group_or_others_can_read_or_write_is_refused_naming_the_setting_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_token(&token, "secret-one\n");
    let text = GOOD.replace(
        "stack_key = \"kvm\"",
        "stack_key = \"kvm\"\nagent_token_file = \"token\"\n\n[webhook]\nlisten = \"127.0.0.1:8089\"\ntoken_file = \"token\"",
    );
    let load = || parse(&dir.path().join("l.toml"), &text, no_env);
    assert!(load().is_ok());
    for mode in [0o640, 0o604, 0o620, 0o602] {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();

        let e = load().unwrap_err().to_string();

        assert_eq!(
            e,
            format!(
                "{dir}/l.toml:5: buildkite.agent_token_file: {dir}/token can be read or \
                 written by group or others (mode {mode:04o}); a token file must be its \
                 owner's alone: run `chmod 600 {dir}/token`",
                dir = dir.path().display()
            )
        );
    }
    // Every token setting is held to it: here the webhook's, the agent
    // token coming from the environment.
    let e = parse(&dir.path().join("l.toml"), &text, token_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains(":9: webhook.token_file: "), "{e}");
    assert!(e.contains("chmod 600"), "{e}");
}

#[test]
fn polling_slower_than_the_disconnect_timeout_is_refused() {
    let text = GOOD.replace("stack_key = \"kvm\"", "poll_interval = 45");
    let e = error(&text);
    assert!(
        e.starts_with("/etc/launcher.toml:4: buildkite.poll_interval: 45 s"),
        "{e}"
    );
}

#[test]
fn memory_limits_read_as_virt_launch_counts_them() {
    assert_eq!(MemoryLimit::parse("28GiB"), Ok(MemoryLimit::Kib(28 << 20)));
    assert_eq!(MemoryLimit::parse("512M"), Ok(MemoryLimit::Kib(512 << 10)));
    assert_eq!(MemoryLimit::parse("90%").unwrap().kib(1000), 900);
    assert!(MemoryLimit::parse("150%").is_err());
    assert!(MemoryLimit::parse("12 parsecs").is_err());
}

#[test]
fn the_example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cluster-token", "webhook-token"] {
        write_token(&dir.path().join(f), "x\n");
    }
    let example = include_str!("../../../examples/launcher/launcher.toml").replace(
        "/etc/buildkite-agent-launcher/",
        &format!("{}/", dir.path().display()),
    );
    let c = parse(&dir.path().join("launcher.toml"), &example, no_env).unwrap();
    assert_eq!(c.hosts.len(), 2);
    assert_eq!(c.queues(), vec!["linux".to_string(), "windows".to_string()]);
    assert_eq!((c.agents[0].warm, c.agents[0].saved), (2, 1));
}

#[test]
fn the_rest_example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["api-token", "agent-token", "webhook-token"] {
        write_token(&dir.path().join(f), "x\n");
    }
    let example = include_str!("../../../examples/launcher/launcher-rest.toml").replace(
        "/etc/buildkite-agent-launcher/",
        &format!("{}/", dir.path().display()),
    );
    let c = parse(&dir.path().join("launcher-rest.toml"), &example, no_env).unwrap();
    assert_eq!(c.buildkite.source, Source::Rest);
    assert_eq!(c.buildkite.organization.as_deref(), Some("acme"));
    assert_eq!(c.buildkite.api_endpoint, "https://api.buildkite.com/v2");
    assert_eq!(c.queues(), vec!["linux".to_string()]);
}

#[test]
fn stacks_mode_polls_every_second_by_default() {
    let c = check(GOOD).unwrap();
    assert_eq!(c.buildkite.poll_interval, std::time::Duration::from_secs(1));
}

#[test]
fn in_stacks_mode_the_vms_get_job_acquisition_tokens_unless_told_cluster() {
    let c = check(GOOD).unwrap();
    assert!(c.agents.iter().all(|a| a.tokens == AgentTokens::Jat));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());

    let text = GOOD.replace(
        "template = \"windows-agent\"",
        "template = \"windows-agent\"\nagent_tokens = \"cluster\"",
    );
    let c = check(&text).unwrap();
    assert_eq!(c.agents[0].tokens, AgentTokens::Jat);
    assert_eq!(
        c.agents[1].tokens,
        AgentTokens::Shared(Secret::new("cluster-token"))
    );
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("agent[1] (windows): agent_tokens = \"cluster\": every VM gets a long-lived agent token"),
        "{}",
        w[0]
    );
    assert!(!w[0].contains("cluster-token"), "{}", w[0]);
}

#[test]
fn a_definition_with_its_own_token_file_needs_agent_tokens_cluster() {
    let dir = tempfile::tempdir().unwrap();
    write_token(&dir.path().join("win-token"), "windows-token\n");
    let own = GOOD.replace(
        "template = \"windows-agent\"",
        "template = \"windows-agent\"\nagent_token_file = \"win-token\"",
    );
    let e = parse(&dir.path().join("l.toml"), &own, token_env)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with(
            ":27: agent[1].agent_token_file: the VMs get a job acquisition token each (agent_tokens = \"jat\", the default), so no token file is read: remove agent_token_file, or set agent_tokens = \"cluster\" to give every VM this file's token"
        ),
        "{e}"
    );
    let cluster = own.replace(
        "agent_token_file = \"win-token\"",
        "agent_token_file = \"win-token\"\nagent_tokens = \"cluster\"",
    );
    let c = parse(&dir.path().join("l.toml"), &cluster, token_env).unwrap();
    assert_eq!(
        c.agents[1].tokens,
        AgentTokens::Shared(Secret::new("windows-token"))
    );
}

#[test]
fn an_unknown_kind_of_agent_token_is_refused_with_the_choices() {
    let text = GOOD.replace(
        "template = \"debian-agent\"",
        "template = \"debian-agent\"\nagent_tokens = \"session\"",
    );
    let e = error(&text);
    assert!(
        e.starts_with(
            "/etc/launcher.toml:22: agent[0].agent_tokens: \"session\" is not a kind of agent token; use \"jat\""
        ),
        "{e}"
    );
}

/// The REST example config, its token files in a folder of their own.
fn rest_example() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for f in ["api-token", "agent-token", "webhook-token"] {
        write_token(&dir.path().join(f), &format!("{f}-value\n"));
    }
    let example = include_str!("../../../examples/launcher/launcher-rest.toml").replace(
        "/etc/buildkite-agent-launcher/",
        &format!("{}/", dir.path().display()),
    );
    (dir, example)
}

#[test]
fn rest_mode_keeps_the_agent_token_and_refuses_job_acquisition_tokens() {
    let (dir, example) = rest_example();
    let c = parse(&dir.path().join("l.toml"), &example, no_env).unwrap();
    assert_eq!(
        c.agents[0].tokens,
        AgentTokens::Shared(Secret::new("agent-token-value"))
    );
    // REST mode has no choice, so nothing to warn about.
    assert!(c.warnings().is_empty());
    let jat = example.replace(
        "template = \"debian-agent\"",
        "template = \"debian-agent\"\nagent_tokens = \"jat\"",
    );
    assert_ne!(jat, example);
    let e = parse(&dir.path().join("l.toml"), &jat, no_env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("agent[0].agent_tokens: REST mode reserves no jobs, so Buildkite issues no job acquisition tokens"),
        "{e}"
    );
}

/// A config with a `[webhook]` whose TLS lines are `tls`, in a folder
/// holding a token, a certificate for localhost (`cert.pem`, `key.pem`)
/// and the key of another certificate (`other-key.pem`).
fn with_webhook_tls(tls: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    write_token(&dir.path().join("hook"), "hook-token\n");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    // Owner-only, as a key file must be (the certificate too: a test
    // gives it as the key).
    write_token(&dir.path().join("cert.pem"), &cert.cert.pem());
    write_token(&dir.path().join("key.pem"), &cert.key_pair.serialize_pem());
    write_token(
        &dir.path().join("other-key.pem"),
        &other.key_pair.serialize_pem(),
    );
    let text =
        format!("{GOOD}\n[webhook]\nlisten = \"127.0.0.1:8089\"\ntoken_file = \"hook\"\n{tls}\n");
    let c = parse(&dir.path().join("l.toml"), &text, token_env);
    (dir, c)
}

fn tls_error(tls: &str) -> (String, String) {
    let (dir, c) = with_webhook_tls(tls);
    (c.unwrap_err().to_string(), dir.path().display().to_string())
}

#[test]
fn a_webhook_with_a_certificate_and_its_key_serves_tls() {
    let (_dir, c) = with_webhook_tls("tls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"");
    let w = c.unwrap().webhook.unwrap();
    assert!(w.tls.is_some());
    assert_eq!(w.read_timeout, std::time::Duration::from_secs(10));
    assert_eq!(w.max_connections, 32);
}

#[test]
fn a_certificate_without_a_key_or_a_key_without_a_certificate_is_refused() {
    let (e, d) = tls_error("tls_cert_file = \"cert.pem\"");
    assert_eq!(
        e,
        format!(
            "{d}/l.toml:33: webhook.tls_cert_file: set tls_key_file too (the certificate's \
             private key), or neither to serve plain HTTP behind a reverse proxy"
        )
    );
    let (e, _) = tls_error("tls_key_file = \"key.pem\"");
    assert!(
        e.contains(":33: webhook.tls_key_file: set tls_cert_file too"),
        "{e}"
    );
}

#[test]
fn unreadable_or_wrong_tls_files_name_the_setting() {
    let (e, d) = tls_error("tls_cert_file = \"missing.pem\"\ntls_key_file = \"key.pem\"");
    assert!(
        e.starts_with(&format!(
            "{d}/l.toml:33: webhook.tls_cert_file: cannot read {d}/missing.pem: "
        )),
        "{e}"
    );
    let (e, d) = tls_error("tls_cert_file = \"key.pem\"\ntls_key_file = \"key.pem\"");
    assert!(
        e.contains(&format!(
            "webhook.tls_cert_file: {d}/key.pem holds no certificate (-----BEGIN CERTIFICATE-----)"
        )),
        "{e}"
    );
    let (e, d) = tls_error("tls_cert_file = \"cert.pem\"\ntls_key_file = \"cert.pem\"");
    assert!(
        e.contains(&format!(
            ":34: webhook.tls_key_file: {d}/cert.pem holds no private key"
        )),
        "{e}"
    );
    let (e, d) = tls_error("tls_cert_file = \"cert.pem\"\ntls_key_file = \"other-key.pem\"");
    assert!(
        e.contains(&format!(
            ":34: webhook.tls_key_file: {d}/other-key.pem does not go with the certificate in {d}/cert.pem"
        )),
        "{e}"
    );
}

#[test]
fn a_tls_key_others_can_read_or_write_is_refused_naming_the_setting() {
    use std::os::unix::fs::PermissionsExt;
    let tls = "tls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"";
    for mode in [0o640, 0o604, 0o620, 0o602] {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let (made, c) = with_webhook_tls(tls);
        assert!(c.is_ok());
        for f in ["cert.pem", "key.pem", "hook"] {
            std::fs::copy(made.path().join(f), dir.path().join(f)).unwrap();
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let text = format!(
            "{GOOD}\n[webhook]\nlisten = \"127.0.0.1:8089\"\ntoken_file = \"hook\"\n{tls}\n"
        );

        let e = parse(&dir.path().join("l.toml"), &text, token_env)
            .unwrap_err()
            .to_string();

        assert_eq!(
            e,
            format!(
                "{d}/l.toml:34: webhook.tls_key_file: {d}/key.pem can be read or written by \
                 group or others (mode {mode:04o}); a private key file must be its owner's \
                 alone: run `chmod 600 {d}/key.pem`",
                d = dir.path().display()
            )
        );
    }
}

#[test]
fn webhook_timeouts_and_connection_caps_out_of_range_are_refused() {
    let (e, _) = tls_error("read_timeout = 0");
    assert!(
        e.contains(":33: webhook.read_timeout: 0 s: give 1 to 300 seconds"),
        "{e}"
    );
    let (e, _) = tls_error("max_connections = 0");
    assert!(
        e.contains(":33: webhook.max_connections: 0: give 1 to 10000 connections"),
        "{e}"
    );
}

#[test]
fn the_state_file_is_given_or_in_systemds_state_directory_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let cfg = |text: &str, env: &dyn Fn(&str) -> Option<String>| {
        parse(&dir.path().join("l.toml"), text, |k: &str| {
            token_env(k).or_else(|| env(k))
        })
    };
    let none = |_: &str| None;
    let systemd = |k: &str| (k == "STATE_DIRECTORY").then(|| format!("{d}:/elsewhere"));

    assert_eq!(cfg(GOOD, &none).unwrap().launcher.state_file, None);
    assert_eq!(
        cfg(GOOD, &systemd).unwrap().launcher.state_file,
        Some(dir.path().join("state.json"))
    );
    // Given, relative to the config's folder, it wins.
    let given = format!("{GOOD}\n[launcher]\nstate_file = \"kept.json\"\n");
    assert_eq!(
        cfg(&given, &systemd).unwrap().launcher.state_file,
        Some(dir.path().join("kept.json"))
    );

    let missing = format!("{GOOD}\n[launcher]\nstate_file = \"no/such/state.json\"\n");
    assert_eq!(
        cfg(&missing, &none).unwrap_err().to_string(),
        format!(
            "{d}/l.toml:31: launcher.state_file: {d}/no/such/state.json: its folder does not \
             exist; create it or give a path in a folder the launcher may write"
        )
    );
}

#[test]
fn rest_mode_keeps_no_state_and_refuses_a_state_file() {
    let (dir, example) = rest_example();
    let systemd = |k: &str| (k == "STATE_DIRECTORY").then(|| "/var/lib/x".to_string());
    let c = parse(&dir.path().join("l.toml"), &example, systemd).unwrap();
    assert_eq!(c.launcher.state_file, None);

    let given = example.replace("[launcher]\n", "[launcher]\nstate_file = \"s.json\"\n");
    assert_ne!(given, example);
    let e = parse(&dir.path().join("l.toml"), &given, no_env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "launcher.state_file: REST mode reserves no jobs, so there is no state to keep; \
             remove it"
        ),
        "{e}"
    );
}

#[test]
fn warm_defaults_to_none_and_is_read() {
    let c = check(GOOD).unwrap();
    assert_eq!(c.agents[0].warm, 0);
    let c = check(&GOOD.replace("max_instances = 2", "max_instances = 2\nwarm = 2")).unwrap();
    assert_eq!(c.agents[1].warm, 2);
}

#[test]
fn warm_hours_are_read_and_bad_ones_named_with_what_to_do() {
    use crate::hours::LocalTime;
    assert!(check(GOOD).unwrap().agents[0].warm_hours.is_none());
    let c = check(&GOOD.replace(
        "max_instances = 2",
        "max_instances = 2\nwarm = 2\nwarm_hours = \"Mon-Fri 08:00-20:00\"",
    ))
    .unwrap();
    let a = &c.agents[1];
    let monday_noon = LocalTime {
        weekday: 0,
        minute: 12 * 60,
    };
    let saturday_noon = LocalTime {
        weekday: 5,
        minute: 12 * 60,
    };
    assert_eq!((a.warm_at(monday_noon), a.warm_at(saturday_noon)), (2, 0));
    assert_eq!(c.agents[0].warm_at(saturday_noon), 0);
    let e = error(&GOOD.replace(
        "max_instances = 2",
        "max_instances = 2\nwarm = 2\nwarm_hours = \"Mon-Fri 8-20\"",
    ));
    assert!(
        e.starts_with(
            "/etc/launcher.toml:30: agent[1].warm_hours: \"8\" is no time of day; write HH:MM"
        ),
        "{e}"
    );
    let e = error(&GOOD.replace(
        "max_instances = 2",
        "max_instances = 2\nwarm_hours = \"daily 08:00-20:00\"",
    ));
    assert!(
        e.starts_with(
            "/etc/launcher.toml:29: agent[1].warm_hours: without warm there are no warm VMs"
        ),
        "{e}"
    );
}

#[test]
fn saved_defaults_to_none_and_is_read_and_checked_like_warm() {
    assert_eq!(check(GOOD).unwrap().agents[0].saved, 0);
    let c = check(&GOOD.replace("max_instances = 2", "max_instances = 2\nsaved = 2")).unwrap();
    assert_eq!(c.agents[1].saved, 2);
    let e = error(&GOOD.replace("max_instances = 2", "max_instances = 2\nsaved = 3"));
    assert!(
        e.starts_with("/etc/launcher.toml:29: agent[1].saved: 3 saved slots do not fit in max_instances = 2; give at most 2"),
        "{e}"
    );
    let e = error(&GOOD.replace("max_instances = 2", "saved = 101"));
    assert!(
        e.starts_with("/etc/launcher.toml:28: agent[1].saved: 101 saved slots is more than"),
        "{e}"
    );
    let e = error(&GOOD.replace("max_instances = 2", "saved = -1"));
    assert!(
        e.starts_with("/etc/launcher.toml:28: agent[1].saved:"),
        "{e}"
    );
}

#[test]
fn a_bad_warm_count_is_named_with_what_to_do() {
    let e = error(&GOOD.replace("max_instances = 2", "max_instances = 2\nwarm = 3"));
    assert!(
        e.starts_with("/etc/launcher.toml:29: agent[1].warm: 3 warm VMs do not fit in max_instances = 2; give at most 2"),
        "{e}"
    );
    let e = error(&GOOD.replace("max_instances = 2", "warm = 101"));
    assert!(
        e.starts_with("/etc/launcher.toml:28: agent[1].warm: 101 warm VMs is more than"),
        "{e}"
    );
    let e = error(&GOOD.replace("max_instances = 2", "warm = -1"));
    assert!(
        e.starts_with("/etc/launcher.toml:28: agent[1].warm:"),
        "{e}"
    );
}

//! The file as written, and the checks that turn it into [`Config`].

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{
    read_secret_file, tls, AgentDef, AgentTokens, Buildkite, Config, ConfigError, HostDef,
    Launcher, MemoryLimit, Secret, Seg, Source, WakeDef, Webhook,
};
use crate::key_path;
use crate::rules::AgentTags;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    #[serde(default)]
    buildkite: RawBuildkite,
    #[serde(default)]
    launcher: RawLauncher,
    webhook: Option<RawWebhook>,
    metrics: Option<RawMetrics>,
    #[serde(default)]
    host: Vec<RawHost>,
    #[serde(default)]
    agent: Vec<RawAgent>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBuildkite {
    source: Option<String>,
    agent_endpoint: Option<String>,
    agent_token_file: Option<PathBuf>,
    api_endpoint: Option<String>,
    api_token_file: Option<PathBuf>,
    organization: Option<String>,
    stack_key: Option<String>,
    poll_interval: Option<u64>,
    vm_agent_endpoint: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLauncher {
    wake_timeout: Option<u64>,
    boot_timeout: Option<u64>,
    host_retry_after: Option<u64>,
    state_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    listen: String,
    token_file: PathBuf,
    max_age: Option<u64>,
    read_timeout: Option<u64>,
    max_connections: Option<usize>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    uri: String,
    wake: Option<RawWake>,
    memory_limit: Option<String>,
    max_vms: Option<u32>,
    #[serde(default)]
    priority: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWake {
    mac: String,
    broadcast: String,
    port: Option<u16>,
    powerwake_port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    tags: Vec<String>,
    template: String,
    hosts: Option<Vec<String>>,
    max_instances: Option<u32>,
    warm: Option<u32>,
    warm_hours: Option<String>,
    saved: Option<u32>,
    agent_token_file: Option<PathBuf>,
    agent_tokens: Option<String>,
}

/// Most warm VMs one definition may ask for: a bound that keeps a typo
/// (`warm = 1000`) from filling every host.
const MAX_WARM: u32 = 100;

const AGENT_ENDPOINT: &str = "https://agent.buildkite.com/v3";
const API_ENDPOINT: &str = "https://api.buildkite.com/v2";

/// An endpoint that is not an http(s) URL, as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an http(s) URL; write e.g. {AGENT_ENDPOINT}")]
struct NotUrl(String);

fn url(s: &str) -> Result<String, NotUrl> {
    let t = s.trim_end_matches('/');
    if (t.starts_with("http://") || t.starts_with("https://")) && t.len() > "https://".len() {
        Ok(t.to_string())
    } else {
        Err(NotUrl(s.to_string()))
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks `raw`; `err` turns a key path and message into an error with its line.
/// Sections are checked in file order, so the first mistake is reported.
pub fn check(
    path: &Path,
    raw: Raw,
    env: &impl Fn(&str) -> Option<String>,
    err: &impl Fn(Vec<Seg>, String) -> ConfigError,
) -> Result<Config, ConfigError> {
    let c = Checker { path, env, err };
    let buildkite = c.buildkite(&raw.buildkite)?;
    let launcher = c.launcher(&raw.launcher, buildkite.source)?;
    let webhook = match &raw.webhook {
        None => None,
        Some(w) => Some(c.webhook(w)?),
    };
    let metrics_listen = match &raw.metrics {
        None => None,
        Some(m) => Some(c.addr(&m.listen, key_path!["metrics", "listen"])?),
    };
    let (hosts, host_index) = c.hosts(&raw.host)?;
    let agents = c.agents(&raw.agent, &hosts, &host_index, &buildkite)?;
    Ok(Config {
        path: path.to_path_buf(),
        buildkite,
        launcher,
        webhook,
        metrics_listen,
        hosts,
        agents,
    })
}

/// What every section's check needs: where the file is (relative paths
/// are resolved from its folder), the environment, and how an error is
/// made.
struct Checker<'a, E, F> {
    path: &'a Path,
    env: &'a E,
    err: &'a F,
}

impl<E, F> Checker<'_, E, F>
where
    E: Fn(&str) -> Option<String>,
    F: Fn(Vec<Seg>, String) -> ConfigError,
{
    fn err(&self, at: Vec<Seg>, message: String) -> ConfigError {
        (self.err)(at, message)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_relative() {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p.to_path_buf()
        }
    }

    fn secret(&self, p: &Option<PathBuf>, at: Vec<Seg>) -> Result<Option<Secret>, ConfigError> {
        match p {
            None => Ok(None),
            Some(p) => read_secret_file(&self.resolve(p))
                .map(Some)
                .map_err(|e| self.err(at, e.to_string())),
        }
    }

    fn env_err(&self, var: &str, m: String) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            line: None,
            key: format!("environment {var}"),
            message: m,
        }
    }

    fn secs(&self, v: Option<u64>, def: u64, at: Vec<Seg>) -> Result<Duration, ConfigError> {
        match v.unwrap_or(def) {
            0 => Err(self.err(at, "must be at least 1 (seconds)".into())),
            n if n > 3600 => Err(self.err(at, format!("{n} s: at most 3600 seconds"))),
            n => Ok(Duration::from_secs(n)),
        }
    }

    fn addr(&self, s: &str, at: Vec<Seg>) -> Result<SocketAddr, ConfigError> {
        s.parse().map_err(|_| {
            self.err(
                at,
                format!("{s:?} is not an address:port; write e.g. \"127.0.0.1:8080\""),
            )
        })
    }

    /// `[buildkite]`: endpoints, tokens, the job source and polling.
    fn buildkite(&self, b: &RawBuildkite) -> Result<Buildkite, ConfigError> {
        let (env, err) = (self.env, |at, m| self.err(at, m));
        let agent_endpoint = match env("BUILDKITE_AGENT_ENDPOINT") {
            Some(v) => {
                url(&v).map_err(|e| self.env_err("BUILDKITE_AGENT_ENDPOINT", e.to_string()))?
            }
            None => url(b.agent_endpoint.as_deref().unwrap_or(AGENT_ENDPOINT))
                .map_err(|e| err(key_path!["buildkite", "agent_endpoint"], e.to_string()))?,
        };
        let api_endpoint = match env("BUILDKITE_API_ENDPOINT") {
            Some(v) => {
                url(&v).map_err(|e| self.env_err("BUILDKITE_API_ENDPOINT", e.to_string()))?
            }
            None => url(b.api_endpoint.as_deref().unwrap_or(API_ENDPOINT))
                .map_err(|e| err(key_path!["buildkite", "api_endpoint"], e.to_string()))?,
        };
        let agent_token = match env("BUILDKITE_AGENT_TOKEN") {
            Some(v) => Some(Secret::new(v)),
            None => self.secret(
                &b.agent_token_file,
                key_path!["buildkite", "agent_token_file"],
            )?,
        };
        let api_token = match env("BUILDKITE_API_TOKEN") {
            Some(v) => Some(Secret::new(v)),
            None => self.secret(&b.api_token_file, key_path!["buildkite", "api_token_file"])?,
        };
        let organization = env("BUILDKITE_ORGANIZATION").or(b.organization.clone());
        let source = match b.source.as_deref() {
        Some("stacks") => Source::Stacks,
        Some("rest") => Source::Rest,
        None if agent_token.is_some() => Source::Stacks,
        None if api_token.is_some() => Source::Rest,
        None => {
            return Err(err(
                key_path!["buildkite", "agent_token_file"],
                "no Buildkite token: set agent_token_file (cluster agent token, Stacks API) or BUILDKITE_AGENT_TOKEN, or api_token_file and organization for the REST listing".into(),
            ))
        }
        Some(other) => {
            return Err(err(
                key_path!["buildkite", "source"],
                format!("{other:?} is not a job source; use \"stacks\" or \"rest\""),
            ))
        }
    };
        match source {
        Source::Stacks if agent_token.is_none() => {
            return Err(err(
                key_path!["buildkite", "agent_token_file"],
                "the Stacks API needs the cluster agent token: set agent_token_file or BUILDKITE_AGENT_TOKEN".into(),
            ))
        }
        Source::Rest if api_token.is_none() => {
            return Err(err(
                key_path!["buildkite", "api_token_file"],
                "the REST listing needs an API token: set api_token_file or BUILDKITE_API_TOKEN".into(),
            ))
        }
        Source::Rest if organization.is_none() => {
            return Err(err(
                key_path!["buildkite", "organization"],
                "the REST listing needs the organisation slug: set organization or BUILDKITE_ORGANIZATION".into(),
            ))
        }
        _ => {}
    }
        let stack_key = b.stack_key.clone().unwrap_or_else(|| "kvm-launcher".into());
        if !name_ok(&stack_key) {
            return Err(err(
                key_path!["buildkite", "stack_key"],
                format!("{stack_key:?}: use 1-40 letters, digits, '-' or '_'"),
            ));
        }
        // Stacks: a second, so a polled job waits half a second on average
        // (one small request per queue a second; a 429 slows the launcher
        // down as Buildkite asks). REST spends its per-organisation budget a
        // page at a time, so it polls less often.
        let poll = b
            .poll_interval
            .unwrap_or(if source == Source::Stacks { 1 } else { 5 });
        let poll_max = if source == Source::Stacks { 30 } else { 3600 };
        if poll == 0 || poll > poll_max {
            return Err(err(
                key_path!["buildkite", "poll_interval"],
                format!(
                    "{poll} s: give 1 to {poll_max} seconds{}",
                    if source == Source::Stacks {
                        " (Buildkite marks a queue disconnected when it is not polled for about 30 s)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let vm_agent_endpoint = match &b.vm_agent_endpoint {
            Some(v) => url(v)
                .map_err(|e| err(key_path!["buildkite", "vm_agent_endpoint"], e.to_string()))?,
            None => agent_endpoint.clone(),
        };
        Ok(Buildkite {
            source,
            agent_endpoint,
            agent_token,
            api_endpoint,
            api_token,
            organization,
            stack_key,
            poll_interval: Duration::from_secs(poll),
            vm_agent_endpoint,
        })
    }

    /// `[launcher]`: how long hosts and VMs may take, and where its state
    /// is kept.
    fn launcher(&self, l: &RawLauncher, source: Source) -> Result<Launcher, ConfigError> {
        Ok(Launcher {
            state_file: self.state_file(l.state_file.as_deref(), source)?,
            wake_timeout: self.secs(l.wake_timeout, 300, key_path!["launcher", "wake_timeout"])?,
            boot_timeout: self.secs(l.boot_timeout, 120, key_path!["launcher", "boot_timeout"])?,
            host_retry_after: self.secs(
                l.host_retry_after,
                60,
                key_path!["launcher", "host_retry_after"],
            )?,
        })
    }

    /// `launcher.state_file`, else `state.json` in systemd's
    /// `$STATE_DIRECTORY` (set by `StateDirectory=`); none in REST mode,
    /// which reserves nothing.
    fn state_file(
        &self,
        given: Option<&Path>,
        source: Source,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let at = || key_path!["launcher", "state_file"];
        let path = match (given, source) {
            (Some(_), Source::Rest) => {
                return Err(self.err(
                    at(),
                    "REST mode reserves no jobs, so there is no state to keep; remove it".into(),
                ))
            }
            (Some(p), Source::Stacks) => self.resolve(p),
            (None, Source::Rest) => return Ok(None),
            (None, Source::Stacks) => match (self.env)("STATE_DIRECTORY") {
                // systemd separates several folders with ':'; the first is ours.
                Some(d) if !d.is_empty() => {
                    Path::new(d.split(':').next().unwrap_or(&d)).join("state.json")
                }
                _ => return Ok(None),
            },
        };
        match path.parent() {
            Some(dir) if dir.is_dir() => Ok(Some(path)),
            _ => Err(self.err(
                at(),
                format!(
                    "{}: its folder does not exist; create it or give a path in a folder \
                     the launcher may write",
                    path.display()
                ),
            )),
        }
    }

    /// `[webhook]`: where it listens, its secret, its limits and TLS.
    fn webhook(&self, w: &RawWebhook) -> Result<Webhook, ConfigError> {
        let err = |at, m| self.err(at, m);
        Ok(Webhook {
            listen: self.addr(&w.listen, key_path!["webhook", "listen"])?,
            token: self.secret(
                &Some(w.token_file.clone()),
                key_path!["webhook", "token_file"],
            )?
            .unwrap_or_default(),
            max_age: self.secs(w.max_age, 300, key_path!["webhook", "max_age"])?,
            read_timeout: match w.read_timeout.unwrap_or(10) {
                n @ 1..=300 => Duration::from_secs(n),
                n => {
                    return Err(err(
                        key_path!["webhook", "read_timeout"],
                        format!("{n} s: give 1 to 300 seconds (Buildkite sends a delivery in well under one)"),
                    ))
                }
            },
            max_connections: match w.max_connections.unwrap_or(32) {
                n @ 1..=10_000 => n,
                n => {
                    return Err(err(
                        key_path!["webhook", "max_connections"],
                        format!("{n}: give 1 to 10000 connections"),
                    ))
                }
            },
            tls: match (&w.tls_cert_file, &w.tls_key_file) {
                (None, None) => None,
                (Some(_), None) => {
                    return Err(err(
                        key_path!["webhook", "tls_cert_file"],
                        "set tls_key_file too (the certificate's private key), or neither to \
                         serve plain HTTP behind a reverse proxy"
                            .into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(err(
                        key_path!["webhook", "tls_key_file"],
                        "set tls_cert_file too (the certificate chain), or neither to serve \
                         plain HTTP behind a reverse proxy"
                            .into(),
                    ))
                }
                (Some(c), Some(k)) => Some(tls::load(&self.resolve(c), &self.resolve(k)).map_err(
                    |(setting, m)| {
                        let key = match setting {
                            tls::Setting::Cert => "tls_cert_file",
                            tls::Setting::Key => "tls_key_file",
                        };
                        err(key_path!["webhook", key], m)
                    },
                )?),
            },
        })
    }

    /// `[[host]]`: each host, and the index of each name.
    fn hosts(
        &self,
        raw: &[RawHost],
    ) -> Result<(Vec<HostDef>, BTreeMap<String, usize>), ConfigError> {
        let err = |at, m| self.err(at, m);
        let mut hosts = Vec::new();
        let mut host_index = BTreeMap::new();
        for (i, h) in raw.iter().enumerate() {
            if !name_ok(&h.name) {
                return Err(err(
                    key_path!["host", i, "name"],
                    format!("{:?}: use 1-40 letters, digits, '-' or '_'", h.name),
                ));
            }
            if host_index.insert(h.name.clone(), i).is_some() {
                return Err(err(
                    key_path!["host", i, "name"],
                    format!("a host named {:?} is already defined above", h.name),
                ));
            }
            let uri = kvmhost::libvirt::Uri::parse(&h.uri)
                .map_err(|e| err(key_path!["host", i, "uri"], e.to_string()))?;
            let wake = match &h.wake {
            None => None,
            Some(w) => Some(WakeDef {
                mac: w.mac.parse().map_err(|e| {
                    err(
                        key_path!["host", i, "wake", "mac"],
                        format!("{:?}: {e}; write it like 52:54:00:12:34:56", w.mac),
                    )
                })?,
                broadcast: w.broadcast.parse::<Ipv4Addr>().map_err(|_| {
                    err(
                        key_path!["host", i, "wake", "broadcast"],
                        format!(
                            "{:?} is not an IPv4 address; give the broadcast address of the host's subnet, e.g. 10.0.0.255",
                            w.broadcast
                        ),
                    )
                })?,
                port: w.port.unwrap_or(kvmhost::wake::DEFAULT_PORT),
                powerwake_port: w.powerwake_port.unwrap_or(kvmhost::wake::WAIT_PORT),
            }),
        };
            let memory_limit = match &h.memory_limit {
                None => None,
                Some(m) => Some(
                    MemoryLimit::parse(m)
                        .map_err(|e| err(key_path!["host", i, "memory_limit"], e.to_string()))?,
                ),
            };
            if h.max_vms == Some(0) {
                return Err(err(
                    key_path!["host", i, "max_vms"],
                    "0 would never start a VM there; remove the host or give at least 1".into(),
                ));
            }
            hosts.push(HostDef {
                name: h.name.clone(),
                uri,
                wake,
                memory_limit,
                max_vms: h.max_vms,
                priority: h.priority,
            });
        }
        if hosts.is_empty() {
            return Err(err(
                key_path!["host"],
                "no [[host]] is defined; add at least one with name and uri".into(),
            ));
        }
        Ok((hosts, host_index))
    }

    /// `[[agent]]`: each definition, its hosts in the order they are tried.
    fn agents(
        &self,
        raw: &[RawAgent],
        hosts: &[HostDef],
        host_index: &BTreeMap<String, usize>,
        buildkite: &Buildkite,
    ) -> Result<Vec<AgentDef>, ConfigError> {
        let err = |at, m| self.err(at, m);
        let secret = |p: &Option<PathBuf>, at| self.secret(p, at);
        // Hosts are tried by priority, then in file order.
        let mut order: Vec<usize> = (0..hosts.len()).collect();
        order.sort_by_key(|&i| (hosts[i].priority, i));

        let mut agents = Vec::new();
        let mut agent_names = BTreeMap::new();
        for (i, a) in raw.iter().enumerate() {
            if !name_ok(&a.name) {
                return Err(err(
                    key_path!["agent", i, "name"],
                    format!("{:?}: use 1-40 letters, digits, '-' or '_'", a.name),
                ));
            }
            if agent_names.insert(a.name.clone(), i).is_some() {
                return Err(err(
                    key_path!["agent", i, "name"],
                    format!("an agent named {:?} is already defined above", a.name),
                ));
            }
            for (j, t) in a.tags.iter().enumerate() {
                AgentTags::parse([t.as_str()]).map_err(|e| {
                    err(
                        key_path!["agent", i, "tags", j],
                        format!("{e}; write tags like \"queue=linux\""),
                    )
                })?;
            }
            let tags = AgentTags::parse(a.tags.iter().map(String::as_str))
                .map_err(|e| err(key_path!["agent", i, "tags"], e.to_string()))?;
            if a.template.is_empty() {
                return Err(err(
                    key_path!["agent", i, "template"],
                    "give the name of the template domain on the hosts".into(),
                ));
            }
            let allowed: Vec<usize> = match &a.hosts {
                None => order.clone(),
                Some(names) => {
                    let mut picked = Vec::new();
                    for (j, n) in names.iter().enumerate() {
                        match host_index.get(n) {
                            Some(&h) => picked.push(h),
                            None => {
                                return Err(err(
                                    key_path!["agent", i, "hosts", j],
                                    format!(
                                        "no [[host]] is named {n:?}; known hosts: {}",
                                        hosts
                                            .iter()
                                            .map(|h| h.name.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ),
                                ))
                            }
                        }
                    }
                    order
                        .iter()
                        .copied()
                        .filter(|h| picked.contains(h))
                        .collect()
                }
            };
            if allowed.is_empty() {
                return Err(err(
                    key_path!["agent", i, "hosts"],
                    "an empty list would never start a VM; name at least one host".into(),
                ));
            }
            if a.max_instances == Some(0) {
                return Err(err(
                    key_path!["agent", i, "max_instances"],
                    "0 would never start a VM; remove the agent or give at least 1".into(),
                ));
            }
            let count = |field: &'static str, n: Option<u32>, what: &str| {
                let n = n.unwrap_or(0);
                if n > MAX_WARM {
                    return Err(err(
                        key_path!["agent", i, field],
                        format!("{n} {what} is more than this launcher keeps ({MAX_WARM}); give 0-{MAX_WARM}"),
                    ));
                }
                if let Some(max) = a.max_instances.filter(|&m| n > m) {
                    return Err(err(
                        key_path!["agent", i, field],
                        format!(
                            "{n} {what} do not fit in max_instances = {max}; give at most {max}, or raise max_instances"
                        ),
                    ));
                }
                Ok(n)
            };
            let warm = count("warm", a.warm, "warm VMs")?;
            let warm_hours = match &a.warm_hours {
                None => None,
                Some(_) if warm == 0 => {
                    return Err(err(
                        key_path!["agent", i, "warm_hours"],
                        "without warm there are no warm VMs to keep in these hours; set warm = N, or remove warm_hours".into(),
                    ))
                }
                Some(spec) => Some(
                    spec.parse::<crate::hours::Hours>()
                        .map_err(|e| err(key_path!["agent", i, "warm_hours"], e.to_string()))?,
                ),
            };
            let saved = count("saved", a.saved, "saved slots")?;
            let tokens = agent_tokens(
                i,
                a,
                buildkite.source,
                buildkite.agent_token.as_ref(),
                &secret,
                &err,
            )?;
            agents.push(AgentDef {
                name: a.name.clone(),
                tags,
                template: a.template.clone(),
                hosts: allowed,
                max_instances: a.max_instances,
                warm,
                warm_hours,
                saved,
                tokens,
            });
        }
        if agents.is_empty() {
            return Err(err(
                key_path!["agent"],
                "no [[agent]] is defined; add at least one with name, tags and template".into(),
            ));
        }
        Ok(agents)
    }
}

/// What `agent[i]`'s VMs register with: a job acquisition token each
/// (Stacks mode, unless `agent_tokens = "cluster"`), else its own token
/// file or the `[buildkite]` agent token.
fn agent_tokens(
    i: usize,
    a: &RawAgent,
    source: Source,
    agent_token: Option<&Secret>,
    secret: &impl Fn(&Option<PathBuf>, Vec<Seg>) -> Result<Option<Secret>, ConfigError>,
    err: &impl Fn(Vec<Seg>, String) -> ConfigError,
) -> Result<AgentTokens, ConfigError> {
    let jat = match (a.agent_tokens.as_deref(), source) {
        (None | Some("jat"), Source::Stacks) => true,
        (None | Some("cluster"), Source::Rest) | (Some("cluster"), Source::Stacks) => false,
        (Some("jat"), Source::Rest) => {
            return Err(err(
                key_path!["agent", i, "agent_tokens"],
                "REST mode reserves no jobs, so Buildkite issues no job acquisition tokens for them: remove agent_tokens (the VMs get the agent_token_file token) or use the Stacks API (source = \"stacks\")".into(),
            ))
        }
        (Some(other), _) => {
            return Err(err(
                key_path!["agent", i, "agent_tokens"],
                format!("{other:?} is not a kind of agent token; use \"jat\" (a job acquisition token per VM, the default) or \"cluster\" (the cluster agent token, for organisations without job acquisition tokens)"),
            ))
        }
    };
    if jat {
        if a.agent_token_file.is_some() {
            return Err(err(
                key_path!["agent", i, "agent_token_file"],
                "the VMs get a job acquisition token each (agent_tokens = \"jat\", the default), so no token file is read: remove agent_token_file, or set agent_tokens = \"cluster\" to give every VM this file's token".into(),
            ));
        }
        return Ok(AgentTokens::Jat);
    }
    let own = secret(
        &a.agent_token_file,
        key_path!["agent", i, "agent_token_file"],
    )?;
    match own.or_else(|| agent_token.cloned()) {
        Some(t) => Ok(AgentTokens::Shared(t)),
        None => Err(err(
            key_path!["agent", i, "agent_token_file"],
            "the VMs need an agent token: set agent_token_file here or buildkite.agent_token_file"
                .into(),
        )),
    }
}

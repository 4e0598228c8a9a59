//! The launcher's configuration: a TOML file, checked once at start into
//! typed settings, with the Buildkite agent's environment variables on top.
//!
//! Every error names the file, the line and the key, e.g.
//! `/etc/launcher.toml:12: host[1].memory_limit: "lots" is not ...`.

mod locate;
mod raw;
pub mod tls;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kvmhost::wake::Mac;
pub use locate::Seg;
use toml_edit::ImDocument;

use crate::rules::AgentTags;

/// A value that must never be printed (tokens).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the launcher learns about waiting jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Buildkite's Stacks API (cluster agent token).
    Stacks,
    /// The REST builds listing (API token), for organisations without clusters.
    Rest,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Buildkite endpoints, tokens and polling.
    pub buildkite: Buildkite,
    /// Timing of wakes and boots.
    pub launcher: Launcher,
    /// Webhook receiver, when configured.
    pub webhook: Option<Webhook>,
    /// Prometheus `/metrics` listener, when configured.
    pub metrics_listen: Option<SocketAddr>,
    /// VM hosts, in the order they are tried.
    pub hosts: Vec<HostDef>,
    /// Agent VM definitions, in the order they are tried.
    pub agents: Vec<AgentDef>,
}

/// The `[buildkite]` table after environment overrides.
#[derive(Debug, Clone)]
pub struct Buildkite {
    /// Stacks or REST.
    pub source: Source,
    /// `/v3` base of the Stacks and metrics APIs.
    pub agent_endpoint: String,
    /// Cluster agent token (Stacks API), or in REST mode the VMs' agent token.
    pub agent_token: Option<Secret>,
    /// `/v2` base of the REST API.
    pub api_endpoint: String,
    /// REST API token.
    pub api_token: Option<Secret>,
    /// Organisation slug (REST mode).
    pub organization: Option<String>,
    /// Stacks are registered as `<stack_key>-<queue>`.
    pub stack_key: String,
    /// Time between looks at Buildkite (at most 30 s in Stacks mode).
    pub poll_interval: Duration,
    /// Endpoint the agents inside the VMs use; default `agent_endpoint`.
    pub vm_agent_endpoint: String,
}

/// The `[launcher]` table.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// How long a host may take to wake.
    pub wake_timeout: Duration,
    /// How long from the VM start call until its agent has taken the job.
    pub boot_timeout: Duration,
    /// How long a host that failed to wake or start is passed over.
    pub host_retry_after: Duration,
    /// Where the jobs reserved and not yet taken are kept across restarts
    /// (Stacks mode; see [`crate::persist`]).
    pub state_file: Option<PathBuf>,
}

/// The `[webhook]` table.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The webhook's token (plain token or HMAC secret).
    pub token: Secret,
    /// Signatures older than this are refused.
    pub max_age: Duration,
    /// How long a client may take to send a request's head, and then its
    /// body, before its connection is closed.
    pub read_timeout: Duration,
    /// Connections served at once; more are closed as they come.
    pub max_connections: usize,
    /// HTTPS instead of plain HTTP (`tls_cert_file`, `tls_key_file`).
    pub tls: Option<tls::Tls>,
}

/// How a host's memory is limited for new VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// At most this many KiB in use, VMs included.
    Kib(u64),
    /// At most this percentage of the host's memory.
    Percent(u32),
}

impl MemoryLimit {
    /// The limit in KiB on a host with `total_kib` of memory.
    pub fn kib(self, total_kib: u64) -> u64 {
        match self {
            MemoryLimit::Kib(k) => k,
            MemoryLimit::Percent(p) => total_kib / 100 * u64::from(p),
        }
    }

    /// Parses `28GiB`, `512MiB`, `1048576KiB` (also `G`, `M`, `K`) or `90%`.
    pub fn parse(s: &str) -> Result<Self, MemoryLimitError> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            return match p.trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(MemoryLimit::Percent(p)),
                _ => Err(MemoryLimitError::Percent(s.to_string())),
            };
        }
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| MemoryLimitError::NoUnit(s.to_string()))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| MemoryLimitError::NotSize(s.to_string()))?;
        let mult = match unit.trim() {
            "K" | "KiB" | "k" => 1,
            "M" | "MiB" => 1024,
            "G" | "GiB" => 1024 * 1024,
            "T" | "TiB" => 1024 * 1024 * 1024,
            _ => {
                return Err(MemoryLimitError::Unit {
                    text: s.to_string(),
                    unit: unit.to_string(),
                })
            }
        };
        Ok(MemoryLimit::Kib(n.saturating_mul(mult)))
    }
}

/// How to write a memory limit, closing each [`MemoryLimitError`].
const MEMORY_LIMIT_HINT: &str =
    "write a size such as \"28GiB\", \"4096MiB\" or a share such as \"90%\"";

/// Why a `memory_limit` does not parse; each holds the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryLimitError {
    /// A share out of 1..=100, or not a number.
    #[error("{0:?} is not a percentage from 1 to 100; {hint}", hint = MEMORY_LIMIT_HINT)]
    Percent(String),
    /// Digits only.
    #[error("{0:?} has no unit; {hint}", hint = MEMORY_LIMIT_HINT)]
    NoUnit(String),
    /// No digits before the unit, or too many.
    #[error("{0:?} is not a size; {hint}", hint = MEMORY_LIMIT_HINT)]
    NotSize(String),
    /// A unit other than K, M, G or T.
    #[error("{text:?}: unknown unit {unit:?}; {hint}", hint = MEMORY_LIMIT_HINT)]
    Unit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
    },
}

/// How to wake a sleeping host (as the provider's `wake {}`).
#[derive(Debug, Clone)]
pub struct WakeDef {
    /// NIC to wake.
    pub mac: Mac,
    /// Broadcast address of the host's subnet.
    pub broadcast: std::net::Ipv4Addr,
    /// Port of plain magic packets.
    pub port: u16,
    /// Port of powerwake requests.
    pub powerwake_port: u16,
}

/// One `[[host]]`.
#[derive(Debug, Clone)]
pub struct HostDef {
    /// Short name used in logs, metrics and agent definitions.
    pub name: String,
    /// libvirt URI, parsed.
    pub uri: kvmhost::libvirt::Uri,
    /// How to wake it; a host without is never woken.
    pub wake: Option<WakeDef>,
    /// Memory cap for new VMs; none = no cap.
    pub memory_limit: Option<MemoryLimit>,
    /// Most VMs the launcher runs there at once; none = no cap.
    pub max_vms: Option<u32>,
    /// Lower is tried first; ties keep file order.
    pub priority: i32,
}

/// What the agent in a definition's VMs registers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTokens {
    /// A job acquisition token per VM, issued by the Stacks API right
    /// before the VM starts, good for its one job only (the default in
    /// Stacks mode: the cluster token never leaves the launcher).
    Jat,
    /// One long-lived token every VM gets: the definition's own token
    /// file, else the cluster agent token (`agent_tokens = "cluster"`, and
    /// always in REST mode, which has no reservation to issue tokens for).
    Shared(Secret),
}

/// One `[[agent]]`: a kind of agent VM.
#[derive(Debug, Clone)]
pub struct AgentDef {
    /// Name (also the prefix of its VMs' names).
    pub name: String,
    /// Tags its agents register with.
    pub tags: AgentTags,
    /// Template domain on each host.
    pub template: String,
    /// Indexes into [`Config::hosts`] where it may run, in host order.
    pub hosts: Vec<usize>,
    /// Most VMs of this kind at once; none = no cap.
    pub max_instances: Option<u32>,
    /// How many VMs of this kind to keep booted and waiting for a job
    /// (handed one through the `org.kvmbe.handoff` channel); 0: none.
    pub warm: u32,
    /// When the warm VMs are kept (`warm_hours`); none: always. Outside
    /// these hours none are kept, so their hosts may sleep.
    pub warm_hours: Option<crate::hours::Hours>,
    /// How many saved slots of this kind to keep on each awake host it
    /// may use (a VM booted until it waits for a job, its memory saved;
    /// a job's VM is restored from one); 0: none.
    pub saved: u32,
    /// What the VM's agent registers with.
    pub tokens: AgentTokens,
}

impl AgentDef {
    /// How many warm VMs to keep at `now`: `warm`, or none outside
    /// `warm_hours`.
    pub fn warm_at(&self, now: crate::hours::LocalTime) -> u32 {
        match &self.warm_hours {
            Some(h) if !h.contains(now) => 0,
            _ => self.warm,
        }
    }

    /// The Buildkite queue key it serves (`__default__` for the default queue).
    pub fn queue_key(&self) -> String {
        match self.tags.get("queue") {
            Some("default") | None => "__default__".to_string(),
            Some(q) => q.to_string(),
        }
    }
}

impl Config {
    /// The queues the agent definitions serve, by Buildkite queue key
    /// (`__default__` for the default queue).
    pub fn queues(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.agents.iter().map(AgentDef::queue_key).collect();
        set.into_iter().collect()
    }

    /// What an operator should know at start: definitions whose VMs get
    /// a long-lived token although the Stacks API could issue job
    /// acquisition tokens.
    pub fn warnings(&self) -> Vec<String> {
        if self.buildkite.source != Source::Stacks {
            return Vec::new();
        }
        self.agents
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a.tokens, AgentTokens::Shared(_)))
            .map(|(i, a)| {
                format!(
                    "agent[{i}] ({}): agent_tokens = \"cluster\": every VM gets a long-lived agent \
                     token that its job can read and use to register agents on the cluster; \
                     remove the setting to give each VM a job acquisition token for its one job \
                     once the organisation has them",
                    a.name
                )
            })
            .collect()
    }
}

/// A configuration error, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the error has a place in the file.
    pub line: Option<usize>,
    /// The key path, e.g. `host[0].uri`; empty for the whole file.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Environment variables the agent itself reads, which override the file.
pub const ENV_OVERRIDES: [&str; 5] = [
    "BUILDKITE_AGENT_ENDPOINT",
    "BUILDKITE_AGENT_TOKEN",
    "BUILDKITE_API_ENDPOINT",
    "BUILDKITE_API_TOKEN",
    "BUILDKITE_ORGANIZATION",
];

/// Reads and checks a config file, with the process environment on top.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Reads and checks a config file; `env` answers environment lookups.
pub fn load_with_env(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: String::new(),
        message: format!("cannot read the file: {e}"),
    })?;
    parse(path, &text, env)
}

/// Checks config `text` as if read from `path`.
pub fn parse(
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let doc = ImDocument::parse(text.to_string()).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: e.span().map(|s| locate::line_of_offset(text, s.start)),
        key: String::new(),
        message: e.message().trim().to_string(),
    })?;
    let raw: raw::Raw = toml_edit::de::from_str(text).map_err(|e| {
        let (line, key) = match e.span() {
            Some(s) => (
                Some(locate::line_of_offset(text, s.start)),
                locate::display(&locate::path_at(&doc, s.start)),
            ),
            None => (None, String::new()),
        };
        ConfigError {
            file: path.to_path_buf(),
            line,
            key,
            message: e.message().trim().to_string(),
        }
    })?;
    let err = |p: Vec<Seg>, message: String| ConfigError {
        file: path.to_path_buf(),
        line: locate::offset_of(&doc, &p).map(|o| locate::line_of_offset(text, o)),
        key: locate::display(&p),
        message,
    };
    raw::check(path, raw, &env, &err)
}

/// Builds a key path: `path!["host", 1, "uri"]`.
#[macro_export]
#[doc(hidden)]
macro_rules! key_path {
    ($($seg:expr),* $(,)?) => {
        vec![$($crate::config::Seg::from($seg)),*]
    };
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Opens a file only its owner may read or write (`what` names the kind
/// for the message, e.g. "a token file"; `hint` follows a read error and
/// says what the file should hold): one others can read is theirs too; one
/// others can write points the launcher elsewhere. The mode is read from
/// the open file, so the text read is the one whose mode was checked.
pub(crate) fn read_private(
    path: &Path,
    what: &'static str,
    hint: &str,
) -> Result<Vec<u8>, PrivateFileError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let cannot_read = |source: std::io::Error| PrivateFileError::Read {
        path: path.to_path_buf(),
        hint: hint.to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(cannot_read)?;
    let mode = file.metadata().map_err(cannot_read)?.mode() & 0o7777;
    if mode & 0o066 != 0 {
        return Err(PrivateFileError::Shared {
            path: path.to_path_buf(),
            mode,
            what,
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(cannot_read)?;
    Ok(bytes)
}

/// Why `read_private` gave no bytes.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    /// Opening or reading failed; `hint` says what the file should hold.
    #[error("cannot read {}: {source}; {hint}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file should hold.
        hint: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// Group or others may read or write it.
    #[error(
        "{p} can be read or written by group or others (mode {mode:04o}); \
         {what} must be its owner's alone: run `chmod 600 {p}`",
        p = path.display()
    )]
    Shared {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The kind of file, e.g. "a token file".
        what: &'static str,
    },
}

/// What a token file holds, said after a problem with its text.
const TOKEN_FILE_HOLDS: &str = "the file holds the token on its first line";

/// Reads a token file: the first line, trimmed; it must not be empty,
/// and only its owner may read or write it (`read_private`).
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    let bytes = read_private(path, "a token file", TOKEN_FILE_HOLDS)?;
    let text =
        String::from_utf8(bytes).map_err(|_| SecretFileError::NotText(path.to_path_buf()))?;
    let first = text.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return Err(SecretFileError::Empty(path.to_path_buf()));
    }
    Ok(Secret::new(first))
}

/// Why [`read_secret_file`] gave no token; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Unreadable, or not its owner's alone.
    #[error(transparent)]
    Private(#[from] PrivateFileError),
    /// Not UTF-8.
    #[error("{} is not UTF-8 text; {hint}", .0.display(), hint = TOKEN_FILE_HOLDS)]
    NotText(PathBuf),
    /// No text on the first line.
    #[error("{} is empty; put the token on its first line", .0.display())]
    Empty(PathBuf),
}

#[cfg(test)]
mod test;

//! `powernapd.conf`: the seed's line-oriented format, parsed into typed
//! settings; every error names the file, the line and what to write instead.

use kvmhost::duration::parse_duration;
use regex::Regex;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon reads its settings unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/powernap/powernapd.conf";

/// The port `monitor powerwake` listens on without `port N`.
pub const POWERWAKE_PORT: u16 = kvmhost::wake::WAIT_PORT;

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How often the monitors are asked.
    pub interval: Duration,
    /// Log debug messages too.
    pub debug: bool,
    /// Where log messages go besides standard error.
    pub log: Option<LogTarget>,
    /// What counts as activity.
    pub monitors: Vec<MonitorSpec>,
    /// What to do when idle.
    pub actions: Vec<ActionSpec>,
}

/// A `log` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// `log syslog`.
    Syslog,
    /// `log /path/to/file`.
    File(PathBuf),
}

/// A `monitor` directive.
#[derive(Debug, Clone)]
pub enum MonitorSpec {
    /// A process whose command line matches the regex is running.
    Process(Regex),
    /// A user is logged in (and, with `max-idle`, typed something lately).
    Users {
        /// Sessions idle longer than this do not count.
        max_idle: Option<Duration>,
    },
    /// A powerwake request for one of our MACs arrived (and is answered).
    Powerwake {
        /// UDP port to listen on.
        port: u16,
    },
    /// A magic packet for one of our MACs arrived.
    Wol {
        /// UDP port to listen on.
        port: u16,
    },
    /// Any datagram arrived on the UDP port.
    Udp {
        /// UDP port to listen on.
        port: u16,
    },
    /// A TCP connection to or from the port is established.
    Tcp {
        /// The port.
        port: u16,
    },
    /// The 1-minute load average is above the threshold.
    Load {
        /// `None` means the number of CPUs.
        threshold: Option<f64>,
    },
    /// A libvirt domain is running.
    Libvirt {
        /// The connection URI (`qemu:///system` unless given).
        uri: String,
    },
}

impl PartialEq for MonitorSpec {
    fn eq(&self, other: &Self) -> bool {
        use MonitorSpec::*;
        match (self, other) {
            (Process(a), Process(b)) => a.as_str() == b.as_str(),
            (Users { max_idle: a }, Users { max_idle: b }) => a == b,
            (Powerwake { port: a }, Powerwake { port: b })
            | (Wol { port: a }, Wol { port: b })
            | (Udp { port: a }, Udp { port: b })
            | (Tcp { port: a }, Tcp { port: b }) => a == b,
            (Load { threshold: a }, Load { threshold: b }) => a == b,
            (Libvirt { uri: a }, Libvirt { uri: b }) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for MonitorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonitorSpec::Process(r) => write!(f, "process {r}"),
            MonitorSpec::Users { max_idle: None } => write!(f, "users"),
            MonitorSpec::Users { max_idle: Some(d) } => write!(f, "users max-idle {d:?}"),
            MonitorSpec::Powerwake { port } => write!(f, "powerwake port {port}"),
            MonitorSpec::Wol { port } => write!(f, "wol port {port}"),
            MonitorSpec::Udp { port } => write!(f, "udp port {port}"),
            MonitorSpec::Tcp { port } => write!(f, "tcp port {port}"),
            MonitorSpec::Load { threshold: None } => write!(f, "load n"),
            MonitorSpec::Load { threshold: Some(t) } => write!(f, "load {t}"),
            MonitorSpec::Libvirt { uri } => write!(f, "libvirt {uri}"),
        }
    }
}

/// An `action` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// A script name under the actions folder (run with `true`, and `false`
    /// on recovery, as the seed does) or a shell command line.
    pub command: String,
    /// Idle time before the action runs.
    pub after: Duration,
    /// How long before the action to warn logged-in users.
    pub warn: Option<Duration>,
    /// A shell command run when activity returns after the action ran.
    pub recover: Option<String>,
}

/// A config error: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: line {line}: {problem}", path.display())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number (0 when the file as a whole is wrong).
    pub line: usize,
    /// What is wrong and what to write instead.
    pub problem: Problem,
}

/// What is wrong with the config file or one of its lines.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Others may write the file, or it is not root's.
    #[error("{0}")]
    Trust(#[from] crate::trust::TrustError),
    /// The file could not be read.
    #[error("cannot read the config file: {0}")]
    Read(std::io::Error),
    /// A duration that is not one.
    #[error("after '{after}': {message}")]
    Duration {
        /// The word it follows.
        after: String,
        /// What the duration parser said.
        message: String,
    },
    /// `interval 0`.
    #[error("'interval' must be more than 0 seconds")]
    ZeroInterval,
    /// Words after a complete directive.
    #[error("unexpected '{extra}' after '{after}'")]
    Unexpected {
        /// The words too many.
        extra: String,
        /// What they follow.
        after: String,
    },
    /// `log` with nothing after it.
    #[error("expected a file name or 'syslog' after 'log'")]
    NoLogTarget,
    /// A second `log` line.
    #[error("'log' can only be given once")]
    LogTwice,
    /// A line that starts with no known directive.
    #[error("unknown directive '{0}' (expected monitor, action, interval, debug or log)")]
    UnknownDirective(String),
    /// `monitor process` with no pattern.
    #[error("expected a regular expression after 'monitor process'")]
    NoPattern,
    /// `monitor process` with a pattern that does not compile.
    #[error("invalid regular expression after 'monitor process': {0}")]
    Pattern(regex::Error),
    /// `max-idle` with no duration.
    #[error("expected a duration (e.g. 10m) after 'max-idle'")]
    NoMaxIdle,
    /// Something else than `max-idle` after `monitor users`.
    #[error("unexpected '{0}' after 'monitor users' (expected nothing or 'max-idle <duration>')")]
    UsersOption(String),
    /// A load threshold that is no number from 0 up.
    #[error("expected a load threshold (e.g. 1.5) or 'n' (the number of CPUs) after 'monitor load', not '{0}'")]
    LoadThreshold(String),
    /// A monitor of the seed's powernapd that this one does not have.
    #[error("'monitor {0}' is not supported by this powernapd; remove the line (supported: process, users, powerwake, wol, udp, tcp, load, libvirt)")]
    UnsupportedMonitor(String),
    /// `monitor` with nothing after it.
    #[error("expected a monitor type after 'monitor'")]
    NoMonitorType,
    /// A monitor type nobody has.
    #[error("unknown monitor type '{0}' (expected process, users, powerwake, wol, udp, tcp, load or libvirt)")]
    UnknownMonitor(String),
    /// A port monitor without `port N` or with more.
    #[error("expected 'port <number>' after 'monitor {0}'")]
    PortUsage(String),
    /// A port that is not 1 to 65535.
    #[error("invalid port number '{port}' after 'monitor {kind} port' (1 to 65535)")]
    Port {
        /// The monitor type.
        kind: String,
        /// What stood there.
        port: String,
    },
    /// `action` with nothing after it.
    #[error("expected an action after 'action' (a script name or a quoted command line)")]
    NoAction,
    /// An action option without its value.
    #[error("expected {what} after '{option}' in action '{command}'")]
    NoValue {
        /// What value it takes.
        what: &'static str,
        /// The option.
        option: String,
        /// The action.
        command: String,
    },
    /// An action option given twice.
    #[error("'{option}' given twice for action '{command}'")]
    Twice {
        /// The option.
        option: String,
        /// The action.
        command: String,
    },
    /// An option actions do not have.
    #[error("unknown option '{option}' for action '{command}' (expected after, warn or recover; quote a command line that has spaces)")]
    UnknownOption {
        /// The option.
        option: String,
        /// The action.
        command: String,
    },
    /// An action with no `after`.
    #[error("action '{0}' has no 'after <duration>': say how long the system must be idle")]
    NoAfter(String),
    /// A warning earlier than the idleness that runs the action.
    #[error("action '{command}' warns {warn:?} before but runs after only {after:?} of idleness")]
    WarnTooEarly {
        /// The action.
        command: String,
        /// Its `warn`.
        warn: Duration,
        /// Its `after`.
        after: Duration,
    },
    /// A quote that is not closed.
    #[error("unterminated {0} quote")]
    Unterminated(char),
    /// A closing quote with more right after it.
    #[error("expected a space after the closing {0} quote")]
    NoSpaceAfterQuote(char),
}

/// `map_err` for a duration after `after`.
fn duration_after(after: &str) -> impl FnOnce(kvmhost::duration::NotADuration) -> Problem + '_ {
    move |e| Problem::Duration {
        after: after.to_string(),
        message: e.to_string(),
    }
}

/// [`Problem::Unexpected`].
fn unexpected(extra: &str, after: String) -> Problem {
    Problem::Unexpected {
        extra: extra.to_string(),
        after,
    }
}

impl Config {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // The config names commands to run as root: only root may write it.
        let whole = |problem| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            problem,
        };
        let mut file = crate::trust::open_trusted(path).map_err(|e| whole(e.into()))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(|e| whole(Problem::Read(e)))?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg = Config {
            interval: Duration::from_secs(1),
            debug: false,
            log: None,
            monitors: Vec::new(),
            actions: Vec::new(),
        };
        for (i, raw) in text.lines().enumerate() {
            let at = |problem: Problem| ConfigError {
                path: path.to_path_buf(),
                line: i + 1,
                problem,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (directive, rest) = shift_word(line);
            match directive {
                "monitor" => cfg.monitors.push(parse_monitor(rest).map_err(at)?),
                "action" => cfg.actions.push(parse_action(rest).map_err(at)?),
                "interval" => {
                    let d = parse_duration(rest).map_err(|e| at(duration_after("interval")(e)))?;
                    if d.is_zero() {
                        return Err(at(Problem::ZeroInterval));
                    }
                    cfg.interval = d;
                }
                "debug" => {
                    if !rest.is_empty() {
                        return Err(at(unexpected(rest, "debug".into())));
                    }
                    cfg.debug = true;
                }
                "log" => {
                    if rest.is_empty() {
                        return Err(at(Problem::NoLogTarget));
                    }
                    if cfg.log.is_some() {
                        return Err(at(Problem::LogTwice));
                    }
                    cfg.log = Some(if rest == "syslog" {
                        LogTarget::Syslog
                    } else {
                        LogTarget::File(rest.into())
                    });
                }
                other => return Err(at(Problem::UnknownDirective(other.to_string()))),
            }
        }
        Ok(cfg)
    }
}

/// The first word and the rest, both trimmed.
fn shift_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

fn parse_monitor(params: &str) -> Result<MonitorSpec, Problem> {
    let (kind, rest) = shift_word(params);
    match kind {
        "process" => {
            if rest.is_empty() {
                return Err(Problem::NoPattern);
            }
            Regex::new(rest)
                .map(MonitorSpec::Process)
                .map_err(Problem::Pattern)
        }
        "users" => {
            let (w, rest) = shift_word(rest);
            match w {
                "" => Ok(MonitorSpec::Users { max_idle: None }),
                "max-idle" => {
                    let (d, extra) = shift_word(rest);
                    if d.is_empty() {
                        return Err(Problem::NoMaxIdle);
                    }
                    if !extra.is_empty() {
                        return Err(unexpected(extra, format!("max-idle {d}")));
                    }
                    let d = parse_duration(d).map_err(duration_after("max-idle"))?;
                    Ok(MonitorSpec::Users { max_idle: Some(d) })
                }
                _ => Err(Problem::UsersOption(w.to_string())),
            }
        }
        "powerwake" => {
            let port = parse_port(kind, rest, Some(POWERWAKE_PORT))?;
            Ok(MonitorSpec::Powerwake { port })
        }
        "wol" => Ok(MonitorSpec::Wol {
            port: parse_port(kind, rest, None)?,
        }),
        "udp" => Ok(MonitorSpec::Udp {
            port: parse_port(kind, rest, None)?,
        }),
        "tcp" => Ok(MonitorSpec::Tcp {
            port: parse_port(kind, rest, None)?,
        }),
        "load" => {
            let threshold = match rest {
                "" | "n" => None,
                t => {
                    let v: f64 = t
                        .parse()
                        .ok()
                        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                        .ok_or_else(|| Problem::LoadThreshold(t.to_string()))?;
                    Some(v)
                }
            };
            Ok(MonitorSpec::Load { threshold })
        }
        "libvirt" => {
            let (uri, extra) = shift_word(rest);
            if !extra.is_empty() {
                return Err(unexpected(extra, format!("monitor libvirt {uri}")));
            }
            Ok(MonitorSpec::Libvirt {
                uri: if uri.is_empty() {
                    "qemu:///system".into()
                } else {
                    uri.into()
                },
            })
        }
        "console" | "disk" | "keyboard" | "mouse" | "process-io" => {
            Err(Problem::UnsupportedMonitor(kind.to_string()))
        }
        "" => Err(Problem::NoMonitorType),
        other => Err(Problem::UnknownMonitor(other.to_string())),
    }
}

fn parse_port(kind: &str, rest: &str, default: Option<u16>) -> Result<u16, Problem> {
    let usage = || Problem::PortUsage(kind.to_string());
    if rest.is_empty() {
        return default.ok_or_else(usage);
    }
    let (w, n) = shift_word(rest);
    if w != "port" || n.is_empty() || n.contains(char::is_whitespace) {
        return Err(usage());
    }
    match n.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Problem::Port {
            kind: kind.to_string(),
            port: n.to_string(),
        }),
    }
}

fn parse_action(params: &str) -> Result<ActionSpec, Problem> {
    let words = split_words(params)?;
    let mut it = words.into_iter();
    let command = it
        .next()
        .filter(|c| !c.is_empty())
        .ok_or(Problem::NoAction)?;
    let mut after = None;
    let mut warn = None;
    let mut recover = None;
    while let Some(opt) = it.next() {
        let mut value = |what: &'static str| {
            it.next().ok_or_else(|| Problem::NoValue {
                what,
                option: opt.clone(),
                command: command.clone(),
            })
        };
        match opt.as_str() {
            "after" | "warn" => {
                let v = value("a duration (e.g. 5m)")?;
                let d = parse_duration(&v).map_err(duration_after(&opt))?;
                let slot = if opt == "after" {
                    &mut after
                } else {
                    &mut warn
                };
                if slot.replace(d).is_some() {
                    return Err(Problem::Twice {
                        option: opt,
                        command,
                    });
                }
            }
            "recover" => {
                let v = value("a command line")?;
                if recover.replace(v).is_some() {
                    return Err(Problem::Twice {
                        option: opt,
                        command,
                    });
                }
            }
            _ => {
                return Err(Problem::UnknownOption {
                    option: opt,
                    command,
                })
            }
        }
    }
    let Some(after) = after else {
        return Err(Problem::NoAfter(command));
    };
    if let Some(w) = warn {
        if w > after {
            return Err(Problem::WarnTooEarly {
                command,
                warn: w,
                after,
            });
        }
    }
    Ok(ActionSpec {
        command,
        after,
        warn,
        recover,
    })
}

/// Splits on whitespace, keeping `"..."` and `'...'` together (a backslash
/// escapes the next character inside double quotes).
fn split_words(s: &str) -> Result<Vec<String>, Problem> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut w = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(Problem::Unterminated(first)),
                    Some(c) if c == first => break,
                    Some('\\') if first == '"' => match chars.next() {
                        Some(c) => w.push(c),
                        None => return Err(Problem::Unterminated(first)),
                    },
                    Some(c) => w.push(c),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(Problem::NoSpaceAfterQuote(first));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
        }
        words.push(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/powernap/powernapd.conf"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_config_file_others_may_write_or_someone_else_owns_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("powernapd.conf");
        std::fs::write(&path, "interval 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Config::load(&path).is_ok());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("writable by others") && e.contains("chmod go-w"),
            "{e}"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(
                e.contains("owned by uid 4242") && e.contains("chown root"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_config_file_in_a_folder_others_may_write_is_refused_naming_the_folder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let path = shared.join("powernapd.conf");
        std::fs::write(&path, "interval 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();

        let e = Config::load(&path).unwrap_err().to_string();

        let d = shared.canonicalize().unwrap();
        assert_eq!(
            e,
            format!(
                "{p}: line 0: {p}: the folder {d} is writable by others (mode 0777), so they \
                 could replace the file and make powernapd run any command; run `chmod go-w {d}`",
                p = path.display(),
                d = d.display()
            )
        );
    }

    /// Another thread of ours keeps renaming a config others may write
    /// over the trusted one and back: what powernapd reads must be what
    /// it checked, never the untrusted text.
    #[test]
    fn a_config_file_swapped_during_the_check_is_never_read_as_trusted() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("powernapd.conf");
        let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swapper = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mode = std::fs::Permissions::from_mode;
                while !stop.load(Ordering::Relaxed) {
                    std::fs::write(&good, "interval 1\n").unwrap();
                    std::fs::set_permissions(&good, mode(0o644)).unwrap();
                    std::fs::write(&bad, "interval 7\n").unwrap();
                    std::fs::set_permissions(&bad, mode(0o666)).unwrap();
                    std::fs::rename(&good, &path).unwrap();
                    std::fs::rename(&bad, &path).unwrap();
                }
            })
        };
        let (mut trusted, mut untrusted) = (0, 0);
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            match Config::load(&path) {
                Ok(c) if c.interval == Duration::from_secs(1) => trusted += 1,
                Ok(_) => untrusted += 1,
                Err(_) => {}
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert_eq!(
            untrusted, 0,
            "read the untrusted file ({trusted} trusted reads)"
        );
        assert!(trusted > 0, "never read the trusted file");
    }

    #[test]
    fn seed_style_config_parses() {
        let cfg = parse(
            "# powernapd.conf\n\
             interval 2\n\
             debug\n\
             log /var/log/powernap.log\n\
             action poweroff after 5m warn 30s\n\
             monitor powerwake\n\
             monitor powerwake port 1234\n\
             monitor wol port 9\n\
             monitor users\n\
             monitor users max-idle 10m\n\
             monitor process ^(\\S*\\/)?qemu-system-\n\
             monitor udp port 5000\n\
             monitor tcp port 22\n\
             monitor load 1.5\n\
             monitor load\n\
             monitor libvirt\n\
             monitor libvirt qemu+ssh://host/system\n",
        )
        .unwrap();
        assert_eq!(cfg.interval, Duration::from_secs(2));
        assert!(cfg.debug);
        assert_eq!(
            cfg.log,
            Some(LogTarget::File("/var/log/powernap.log".into()))
        );
        assert_eq!(
            cfg.actions,
            vec![ActionSpec {
                command: "poweroff".into(),
                after: Duration::from_secs(300),
                warn: Some(Duration::from_secs(30)),
                recover: None,
            }]
        );
        assert_eq!(
            cfg.monitors,
            vec![
                MonitorSpec::Powerwake { port: 57748 },
                MonitorSpec::Powerwake { port: 1234 },
                MonitorSpec::Wol { port: 9 },
                MonitorSpec::Users { max_idle: None },
                MonitorSpec::Users {
                    max_idle: Some(Duration::from_secs(600))
                },
                MonitorSpec::Process(Regex::new(r"^(\S*\/)?qemu-system-").unwrap()),
                MonitorSpec::Udp { port: 5000 },
                MonitorSpec::Tcp { port: 22 },
                MonitorSpec::Load {
                    threshold: Some(1.5)
                },
                MonitorSpec::Load { threshold: None },
                MonitorSpec::Libvirt {
                    uri: "qemu:///system".into()
                },
                MonitorSpec::Libvirt {
                    uri: "qemu+ssh://host/system".into()
                },
            ]
        );
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let cfg = parse(include_str!("../powernapd.conf")).unwrap();
        assert_eq!(cfg.actions[0].command, "poweroff");
        assert_eq!(cfg.actions[0].warn, Some(Duration::from_secs(30)));
        assert_eq!(
            cfg.monitors,
            vec![
                MonitorSpec::Powerwake { port: 57748 },
                MonitorSpec::Users { max_idle: None }
            ]
        );
        // Every commented-out monitor is valid too.
        let uncommented: String = include_str!("../powernapd.conf")
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| r.starts_with("monitor "))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all = parse(&uncommented).unwrap();
        assert_eq!(all.monitors.len(), 12, "{:?}", all.monitors);
    }

    #[test]
    fn a_config_without_actions_only_answers_powerwake() {
        let cfg = parse("monitor powerwake\n").unwrap();
        assert!(cfg.actions.is_empty());
    }

    #[test]
    fn quoted_command_lines_and_recovery() {
        let cfg = parse(
            "action \"touch '/tmp/x y/slept'\" after 3s recover 'rm -f \"/tmp/x y/slept\"' warn 1s\n",
        )
        .unwrap();
        assert_eq!(
            cfg.actions[0],
            ActionSpec {
                command: "touch '/tmp/x y/slept'".into(),
                after: Duration::from_secs(3),
                warn: Some(Duration::from_secs(1)),
                recover: Some("rm -f \"/tmp/x y/slept\"".into()),
            }
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_fix() {
        let cases = [
            (
                "action poweroff after 5m\nmonitor bogus\n",
                "line 2: unknown monitor type 'bogus'",
            ),
            (
                "action poweroff after 5m\n\n# c\nmonitr users\n",
                "line 4: unknown directive 'monitr'",
            ),
            (
                "monitor process (unclosed\naction x after 1s\n",
                "line 1: invalid regular expression",
            ),
            (
                "action poweroff\n",
                "line 1: action 'poweroff' has no 'after <duration>'",
            ),
            (
                "action poweroff after soon\n",
                "line 1: after 'after': 'soon' is not a duration",
            ),
            (
                "action poweroff after 5m warn 1h\n",
                "line 1: action 'poweroff' warns",
            ),
            (
                "action poweroff after 5m after 6m\n",
                "line 1: 'after' given twice",
            ),
            (
                "action poweroff after 5m sometimes\n",
                "line 1: unknown option 'sometimes'",
            ),
            (
                "action \"touch x after 5m\n",
                "line 1: unterminated \" quote",
            ),
            (
                "action x after 1s\nmonitor udp\n",
                "line 2: expected 'port <number>' after 'monitor udp'",
            ),
            (
                "action x after 1s\nmonitor tcp port 70000\n",
                "line 2: invalid port number '70000'",
            ),
            (
                "action x after 1s\nmonitor keyboard\n",
                "line 2: 'monitor keyboard' is not supported",
            ),
            (
                "action x after 1s\nmonitor load high\n",
                "line 2: expected a load threshold",
            ),
            (
                "action x after 1s\ninterval 0\n",
                "line 2: 'interval' must be more than 0",
            ),
            (
                "action x after 1s\ndebug please\n",
                "line 2: unexpected 'please' after 'debug'",
            ),
            (
                "action x after 1s\nlog a\nlog b\n",
                "line 3: 'log' can only be given once",
            ),
            (
                "action x after 1s\nmonitor users max-idle\n",
                "line 2: expected a duration",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(
                e.starts_with("/etc/powernap/powernapd.conf: ") && e.contains(want),
                "{text:?}: got {e:?}, want {want:?}"
            );
        }
    }
}

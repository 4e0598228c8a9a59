//! `buildkite-agent-launcher`: the daemon and its command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use launcher::config;
use launcher::daemon::{self, Daemon, Options};
use launcher::{http, sdnotify};

const USAGE: &str = "usage:
  buildkite-agent-launcher run --config FILE [--once] [--dry-run]
  buildkite-agent-launcher check-config --config FILE

run           poll Buildkite and start an agent VM per waiting job
check-config  read FILE and report the first error (file, line, key)
--once        one pass, then exit
--dry-run     decide, start nothing; print one JSON object per decision
The environment overrides the file: BUILDKITE_AGENT_ENDPOINT,
BUILDKITE_AGENT_TOKEN, BUILDKITE_API_ENDPOINT, BUILDKITE_API_TOKEN,
BUILDKITE_ORGANIZATION.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = None;
    let mut path: Option<PathBuf> = None;
    let mut opts = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "run" | "check-config" if cmd.is_none() => cmd = Some(a.clone()),
            "--config" | "-c" => path = it.next().map(PathBuf::from),
            s if s.starts_with("--config=") => path = Some(PathBuf::from(&s[9..])),
            "--once" => opts.once = true,
            "--dry-run" => opts.dry_run = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("buildkite-agent-launcher {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(64);
            }
        }
    }
    let (Some(cmd), Some(path)) = (cmd, path) else {
        eprintln!("{USAGE}");
        return ExitCode::from(64);
    };
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(78);
        }
    };
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    if cmd == "check-config" {
        println!(
            "{}: ok ({} hosts, {} agent definitions, queues {})",
            path.display(),
            cfg.hosts.len(),
            cfg.agents.len(),
            cfg.queues().join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Why `run` ended in failure.
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// The daemon could not start or register, or a pass failed.
    #[error(transparent)]
    Daemon(#[from] daemon::Error),
    /// The webhook or metrics listener could not be opened.
    #[error(transparent)]
    Listen(#[from] http::ListenError),
}

async fn run(cfg: config::Config, opts: Options) -> Result<(), RunError> {
    let poll = cfg.buildkite.poll_interval;
    let webhook = cfg.webhook.clone();
    let metrics_listen = cfg.metrics_listen;
    let mut daemon = Daemon::new(cfg, opts)?;
    if let Some(w) = webhook {
        let guard = http::Guard {
            read_timeout: w.read_timeout,
            max_connections: w.max_connections,
            tls: w.tls.map(|t| t.0),
            ..http::Guard::plain("webhook")
        };
        let router = http::webhook_router(
            w.token,
            w.max_age,
            daemon.kick.clone(),
            daemon.metrics.clone(),
            &guard,
        );
        http::serve(w.listen, router, guard).await?;
    }
    if let Some(addr) = metrics_listen {
        let router = http::metrics_router(daemon.metrics.clone(), daemon.status());
        http::serve(addr, router, http::Guard::plain("metrics")).await?;
    }
    daemon.register().await?;
    sdnotify::notify("READY=1\nSTATUS=polling Buildkite");

    // The watchdog is fed only while passes keep completing.
    let heartbeat = Arc::new(AtomicU64::new(now_secs()));
    daemon.heartbeat = Some(heartbeat.clone());
    if let Some(every) = sdnotify::watchdog_interval() {
        let stale = poll * 3 + Duration::from_secs(60);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let age = now_secs().saturating_sub(heartbeat.load(Ordering::Relaxed));
                if age <= stale.as_secs() {
                    sdnotify::notify("WATCHDOG=1");
                }
            }
        });
    }

    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("stopping: no new jobs are taken; running VMs are left alone");
    };
    let mut out = std::io::stdout();
    let result = daemon.run(&mut out, stop).await;
    sdnotify::notify("STOPPING=1");
    daemon.deregister().await;
    result.map_err(RunError::from)
}

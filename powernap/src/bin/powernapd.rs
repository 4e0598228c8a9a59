//! powernapd: runs an action (e.g. poweroff) when nothing monitored has
//! been active for long enough, and answers powerwake requests.

use clap::Parser;
use powernap::action::{Action, ActionError, SystemExecutor, DEFAULT_ACTIONS_DIR};
use powernap::config::{Config, DEFAULT_PATH};
use powernap::daemon::{Daemon, SystemClock};
use powernap::idle::Timing;
use powernap::{log, monitor};
use std::path::PathBuf;
use std::process::ExitCode;

// sysexits.h
const EX_CONFIG: u8 = 78;
const EX_OSERR: u8 = 71;

/// Power the machine off (or run any action) when it has been idle long
/// enough; answer powerwake requests for this machine's MACs.
#[derive(Parser, Debug)]
#[command(name = "powernapd", version)]
struct Args {
    /// The config file
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Where action scripts named by a single word are looked for
    #[arg(long, value_name = "DIR", default_value = DEFAULT_ACTIONS_DIR)]
    actions_dir: PathBuf,
    /// Log what would be done instead of doing it
    #[arg(long)]
    dry_run: bool,
    /// Log debug messages
    #[arg(short = 'D', long)]
    debug: bool,
    /// Check the config file and exit
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("powernapd: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Err(e) = log::init(cfg.debug || args.debug, cfg.log.as_ref()) {
        eprintln!("powernapd: {}: {e}", args.config.display());
        return ExitCode::from(EX_CONFIG);
    }
    let actions: Result<Vec<(Action, Timing)>, ActionError> = cfg
        .actions
        .iter()
        .map(|a| {
            Ok((
                Action::resolve(a, &args.actions_dir)?,
                Timing {
                    after: a.after,
                    warn: a.warn,
                },
            ))
        })
        .collect();
    let actions = match actions {
        Ok(a) => a,
        Err(e) => {
            eprintln!("powernapd: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if args.check {
        for m in &cfg.monitors {
            println!("monitor {m}");
        }
        for (a, t) in &actions {
            println!(
                "action {:?} after {:?} warn {:?}",
                a.runner, t.after, t.warn
            );
        }
        return ExitCode::SUCCESS;
    }
    let mut monitors = Vec::new();
    for spec in &cfg.monitors {
        match monitor::start(spec) {
            Ok(m) => monitors.push(m),
            Err(e) => {
                log::error(&e.to_string());
                return ExitCode::from(EX_OSERR);
            }
        }
    }
    if actions.is_empty() {
        log::warn("no action configured: only answering powerwake requests");
    }
    if monitors.is_empty() {
        log::warn("no monitors configured: the machine counts as idle all the time");
    }
    log::info(&format!(
        "started{}: {} monitors, checking every {:?}",
        if args.dry_run { " (dry run)" } else { "" },
        monitors.len(),
        cfg.interval
    ));
    let exec = SystemExecutor {
        dry_run: args.dry_run,
    };
    Daemon::new(SystemClock, exec, cfg.interval, monitors, actions).run()
}

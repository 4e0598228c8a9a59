//! powerwake: wake hosts by Wake-on-LAN and, with `-w`, wait until their
//! powernapd answers.

use clap::Parser;
use kvmhost::wake::{local_broadcast_for, send_wake, wake_and_wait, WakeError, WakeTarget};
use powernap::hosts::{system_resolve, Lookup};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

// sysexits.h, as the seed's powerwake returns them.
const EX_USAGE: u8 = 64;
const EX_NOHOST: u8 = 68;
const EX_UNAVAILABLE: u8 = 69;
const EX_TEMPFAIL: u8 = 75;

/// Wake hosts with Wake-on-LAN (a powerwake packet, which any WoL NIC
/// accepts); with -w, wait until each host's powernapd answers.
#[derive(Parser, Debug)]
#[command(name = "powerwake", version)]
struct Args {
    /// Wait until the host has booted (its powernapd answers); sends to port 57748
    #[arg(short, long)]
    wait: bool,
    /// How long to wait with -w, in seconds
    #[arg(short, long, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,
    /// Address (or name) to send the packet to, e.g. the subnet's broadcast address
    #[arg(short, long, value_name = "ADDRESS")]
    broadcast: Option<String>,
    /// UDP port to send to (default 7, or 57748 with -w)
    #[arg(short, long)]
    port: Option<u16>,
    /// IPMI wake (not supported by this powerwake)
    #[arg(short = 'I', long, hide = true)]
    ipmi: bool,
    /// Hosts to wake: names from powerwake.hosts or /etc/ethers, or MACs
    #[arg(value_name = "HOST|MAC", required = true)]
    targets: Vec<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if args.ipmi {
        eprintln!("powerwake: -I/--ipmi: IPMI wake is not supported; wake by MAC instead");
        return ExitCode::from(EX_USAGE);
    }
    let cli_addr = match args.broadcast.as_deref().map(resolve_any) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            eprintln!("powerwake: -b {}: {e}", args.broadcast.unwrap_or_default());
            return ExitCode::from(EX_NOHOST);
        }
    };

    let lookup = Lookup::from_env();
    let mut wake = Vec::new();
    for name in &args.targets {
        let mut warnings = Vec::new();
        let found = lookup.find(name, &system_resolve, &mut warnings);
        for w in warnings {
            eprintln!("powerwake: warning: {w}");
        }
        match found {
            Ok(Some(t)) => {
                let to = t.destination(cli_addr, args.port, args.wait, local_broadcast_for);
                wake.push((name.clone(), WakeTarget::new(t.mac, to)));
            }
            Ok(None) => {
                eprintln!("powerwake: could not determine the MAC address of {name} (add it to ~/.config/powerwake.hosts, /etc/powernap/powerwake.hosts or /etc/ethers, or give the MAC)");
                return ExitCode::from(EX_NOHOST);
            }
            Err(e) => {
                eprintln!("powerwake: {e}");
                return ExitCode::from(EX_NOHOST);
            }
        }
    }

    let timeout = Duration::from_secs(args.timeout);
    let wait = args.wait;
    // Hosts boot in parallel, so their waits run side by side.
    let handles: Vec<_> = wake
        .into_iter()
        .map(|(name, target)| {
            std::thread::spawn(move || {
                if wait {
                    wake_and_wait(&target, timeout).map(|r| {
                        println!(
                            "Received reply from {} - {name} is up ({:.2} ms)",
                            r.from,
                            r.elapsed.as_secs_f64() * 1000.0
                        );
                    })
                } else {
                    send_wake(&target).map(|_| ())
                }
            })
        })
        .collect();
    let mut code = 0u8;
    for h in handles {
        let result = h.join().unwrap_or_else(|_| {
            Err(WakeError::Socket(std::io::Error::other(
                "wake thread panicked",
            )))
        });
        if let Err(e) = result {
            eprintln!("powerwake: {e}");
            let c = match e {
                WakeError::Timeout { .. } => EX_TEMPFAIL,
                _ => EX_UNAVAILABLE,
            };
            code = code.max(c);
        }
    }
    ExitCode::from(code)
}

/// A `-b` name that resolves to no IPv4 address.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve '{0}' to an IPv4 address")]
struct Unresolved(String);

fn resolve_any(s: &str) -> Result<IpAddr, Unresolved> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip);
    }
    system_resolve(s)
        .map(IpAddr::V4)
        .ok_or_else(|| Unresolved(s.to_string()))
}

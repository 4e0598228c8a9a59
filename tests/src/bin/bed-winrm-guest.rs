//! The WinRM stand-in (`testbed::winrm`) as a guest's service, so that a
//! build talks to a machine that really boots, gets its address by DHCP
//! and powers off: HTTPS with a certificate made at start, Basic
//! authentication, the `C:` drive in a folder of the guest.
//!
//! Usage: bed-winrm-guest --user NAME (--password PW | --password-file FILE)
//!        --drive DIR [--bind ADDR] [--hostname NAME]
//!        [--reboot-grace SECONDS] [--reboot-down SECONDS]
//!
//! Listens on `0.0.0.0:5986` unless `--bind` says otherwise and prints
//! `KVMBE-WINRM-LISTENING ADDR`. A `shutdown /s [/t N]` powers the
//! machine off as Windows would: N seconds later (at least one, so its
//! answer goes out) the record is printed as a `testbed::winrm::Report`
//! block on stdout (the guest's serial console), the output is drained,
//! and `poweroff` runs.

use std::io::Write;
use std::process::{exit, Command};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use testbed::winrm::{CommandHook, Config, Report, StandIn};

fn usage(why: &str) -> ! {
    eprintln!("bed-winrm-guest: {why}");
    eprintln!(
        "usage: bed-winrm-guest --user NAME (--password PW | --password-file FILE) --drive DIR \
         [--bind ADDR] [--hostname NAME] [--reboot-grace SECONDS] [--reboot-down SECONDS]"
    );
    exit(2)
}

fn main() {
    let mut config = Config {
        tls: true,
        bind: "0.0.0.0:5986".parse().expect("an address"),
        ..Config::default()
    };
    let mut password = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let seconds = |v: &str| {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .unwrap_or_else(|_| usage(&format!("{flag} {v}: not a number of seconds")))
        };
        match flag.as_str() {
            "--user" => config.username = value,
            "--password" => password = Some(value),
            "--password-file" => {
                let text = std::fs::read_to_string(&value)
                    .unwrap_or_else(|e| usage(&format!("reading {value}: {e}")));
                password = Some(text.trim_end_matches(['\r', '\n']).to_string());
            }
            "--drive" => config.drive = Some(value.into()),
            "--bind" => {
                config.bind = value
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("--bind {value}: not ADDR:PORT")))
            }
            "--hostname" => config.hostname = value,
            "--reboot-grace" => config.reboot.grace = seconds(&value),
            "--reboot-down" => config.reboot.down = seconds(&value),
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    config.password = password.unwrap_or_else(|| usage("no --password or --password-file"));
    if config.drive.is_none() {
        usage("no --drive");
    }

    // The hook runs on the server's threads: it only says when to go.
    let (tx, rx) = mpsc::channel::<Duration>();
    let tx = Mutex::new(tx);
    let hook: CommandHook = Arc::new(move |line: &str| {
        if let Some(delay) = power_off_delay(line) {
            let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(delay);
        }
    });
    config.on_command = Some(hook);
    let standin = StandIn::start(config).unwrap_or_else(|e| {
        eprintln!("bed-winrm-guest: {e:#}");
        exit(1)
    });
    println!("KVMBE-WINRM-LISTENING {}", standin.addr());
    let _ = std::io::stdout().flush();

    let Ok(delay) = rx.recv() else { exit(1) };
    std::thread::sleep(delay.max(Duration::from_secs(1)));
    let report = Report::of(&standin).unwrap_or_else(|e| {
        eprintln!("bed-winrm-guest: reading the record: {e:#}");
        exit(1)
    });
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(report.framed().as_bytes());
    let _ = out.flush();
    // Every byte out of the serial port before the machine goes.
    // SAFETY: tcdrain only waits on the descriptor; a stdout that is not
    // a terminal makes it fail, which is harmless.
    unsafe { libc::tcdrain(1) };
    drop(out);
    match Command::new("poweroff").status() {
        Ok(s) if s.success() => exit(0),
        Ok(s) => eprintln!("bed-winrm-guest: poweroff: {s}"),
        Err(e) => eprintln!("bed-winrm-guest: poweroff: {e}"),
    }
    exit(1)
}

/// For a `shutdown` that powers off (`/s` or `/p`), how long Windows
/// waits first (`/t N`, 30 s without it, none for `/p`).
fn power_off_delay(line: &str) -> Option<Duration> {
    let words: Vec<String> = line
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    if words.first().map(String::as_str) != Some("shutdown") || !(has("/s") || has("/p")) {
        return None;
    }
    if has("/p") {
        return Some(Duration::ZERO);
    }
    let t = words
        .iter()
        .position(|w| w == "/t")
        .and_then(|i| words.get(i + 1)?.parse().ok())
        .unwrap_or(30);
    Some(Duration::from_secs(t))
}

#[cfg(test)]
mod tests {
    use super::power_off_delay;
    use std::time::Duration;

    #[test]
    fn only_a_power_off_shutdown_powers_off_after_its_delay() {
        let seed = r#"shutdown /s /t 5 /f /d p:4:1 /c "Packer Shutdown""#;
        assert_eq!(power_off_delay(seed), Some(Duration::from_secs(5)));
        assert_eq!(
            power_off_delay("SHUTDOWN /S"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(power_off_delay("shutdown /p /f"), Some(Duration::ZERO));
        assert_eq!(
            power_off_delay(r#"shutdown /r /f /t 0 /c "packer restart""#),
            None
        );
        assert_eq!(power_off_delay("shutdown /a"), None);
        assert_eq!(power_off_delay("echo shutdown /s"), None);
    }
}

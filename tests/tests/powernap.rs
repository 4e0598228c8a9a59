//! powernapd and powerwake on a LAN of network namespaces: wake requests
//! are answered (ours and the seed's packet format), and the idle action
//! runs only when nothing monitored is running.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testbed::netns::{Lan, LanPort, Netns};
use testbed::util;

fn bin(name: &str) -> PathBuf {
    let p = util::bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run cargo build -p powernap",
        p.display()
    );
    p
}

/// powernapd running in a namespace, killed (by PID) on drop.
struct Napd {
    child: Child,
    log: PathBuf,
}

impl Napd {
    fn start(ns: &Netns, dir: &Path, config: &str, extra: &[&str]) -> Self {
        let conf = dir.join("powernapd.conf");
        std::fs::write(&conf, config).unwrap();
        let log = dir.join("powernapd.log");
        let child = ns
            .cmd(bin("powernapd").to_str().unwrap())
            .arg("-c")
            .arg(&conf)
            .arg("--actions-dir")
            .arg(dir.join("actions"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the (debug) log holds `count` checks that logged `text`.
    fn wait_checks(&self, text: &str, count: usize, limit: Duration) {
        let seen = util::poll_until(limit, || {
            (self.log().matches(text).count() >= count).then_some(())
        });
        assert!(
            seen.is_some(),
            "fewer than {count} '{text}' checks after {limit:?}:\n{}",
            self.log()
        );
    }

    /// Waits for `text` in the log (startup, warnings, actions).
    fn wait_log(&mut self, text: &str, limit: Duration) -> Duration {
        let t = Instant::now();
        let seen = util::poll_until(limit, || {
            if self.log().contains(text) {
                return Some(());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("powernapd exited ({status}):\n{}", self.log());
            }
            None
        });
        assert!(
            seen.is_some(),
            "no '{text}' in powernapd's log after {limit:?}:\n{}",
            self.log()
        );
        t.elapsed()
    }
}

impl Drop for Napd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `f` on a thread inside namespace `ns`, so the sockets it opens are
/// that namespace's.
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = File::open(format!("/var/run/netns/{}", ns.name())).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns(2) on a valid namespace fd changes only this thread.
        let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// The seed's powerwake request, laid out by hand: "PWERWAKE", the nonce
/// little endian, FF x6, then 96 bytes of identity (the MAC x16).
fn seed_request(nonce: u32, identity: &[u8; 96]) -> Vec<u8> {
    let mut p = b"PWERWAKE".to_vec();
    p.extend_from_slice(&nonce.to_le_bytes());
    p.extend_from_slice(&[0xff; 6]);
    p.extend_from_slice(identity);
    assert_eq!(p.len(), 114);
    p
}

fn mac_x16(mac: &str) -> [u8; 96] {
    let octets: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let mut id = [0u8; 96];
    for chunk in id.chunks_mut(6) {
        chunk.copy_from_slice(&octets);
    }
    id
}

/// Sends a seed-format request from inside `ns` and returns the reply
/// bytes and who sent them, or None after `wait`.
fn seed_client(
    ns: &Netns,
    to: SocketAddr,
    request: Vec<u8>,
    wait: Duration,
) -> Option<(Vec<u8>, SocketAddr)> {
    in_netns(ns, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        sock.set_broadcast(true).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            sock.send_to(&request, to).unwrap();
            let mut buf = [0u8; 64];
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                return Some((buf[..n].to_vec(), from));
            }
        }
        None
    })
}

/// Runs our powerwake in `client`'s namespace with `config_home` as its
/// `XDG_CONFIG_HOME`; returns its exit code, output and run time.
fn powerwake_with(client: &LanPort, config_home: &Path, args: &[&str]) -> (i32, String, Duration) {
    let t = Instant::now();
    let out = client
        .ns
        .cmd(bin("powerwake").to_str().unwrap())
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text, t.elapsed())
}

fn powerwake(client: &LanPort, args: &[&str]) -> (i32, String, Duration) {
    powerwake_with(client, Path::new("/nonexistent"), args)
}

#[test]
fn powernapd_answers_our_powerwake_and_the_seed_packet_format_for_its_own_mac_only() {
    let mut lan = Lan::new().unwrap();
    let host = lan.attach("nap", true).unwrap();
    let client = lan.attach("wake", true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut napd = Napd::start(
        &host.ns,
        dir.path(),
        "interval 1\nmonitor powerwake\naction \"true\" after 1h\n",
        &["--debug"],
    );
    napd.wait_log("started", Duration::from_secs(10));
    let bcast = lan.broadcast().to_string();

    let (code, out, took) = powerwake(&client, &["-w", "-t", "10", "-b", &bcast, &host.mac]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("Received reply from {}:57748", host.ip)),
        "{out}"
    );
    eprintln!(
        "powerwake -w: {} (process start to exit: {took:?})",
        out.trim()
    );

    let nonce = 0x1234_5678;
    let (reply, from) = seed_client(
        &client.ns,
        (lan.broadcast(), 57748).into(),
        seed_request(nonce, &mac_x16(&host.mac)),
        Duration::from_secs(5),
    )
    .expect("no reply to a seed-format request");
    assert_eq!(reply, b"PWERWAKFxV4\x12");
    assert_eq!(from, SocketAddr::from((host.ip, 57748)));

    // The seed's request for "whoever is there" (sent after waking a host
    // by IPMI) is answered whatever the MAC.
    let mut not_wol = [0u8; 96];
    for chunk in not_wol.chunks_mut(24) {
        chunk.copy_from_slice(b"Not really a WoL packet.");
    }
    let (reply, _) = seed_client(
        &client.ns,
        (host.ip, 57748).into(),
        seed_request(7, &not_wol),
        Duration::from_secs(5),
    )
    .expect("no reply to the seed's not-WoL request");
    assert_eq!(reply, b"PWERWAKF\x07\0\0\0");

    // A MAC that is not the host's gets no answer.
    let other = "52:54:00:99:99:99";
    assert!(seed_client(
        &client.ns,
        (lan.broadcast(), 57748).into(),
        seed_request(9, &mac_x16(other)),
        Duration::from_secs(2),
    )
    .is_none());
    let (code, out, _) = powerwake(&client, &["-w", "-t", "2", "-b", &bcast, other]);
    assert_eq!(code, 75, "{out}");

    // By name, from the user's powerwake.hosts: MAC and broadcast address
    // come from the file.
    let hosts = dir.path().join("powerwake.hosts");
    std::fs::write(
        &hosts,
        format!(
            "[napper]\nwol.mac = {}\nwol.host = {bcast}\n",
            host.mac.to_uppercase()
        ),
    )
    .unwrap();
    let (code, out, _) = powerwake_with(&client, dir.path(), &["-w", "-t", "10", "napper"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = powerwake_with(&client, dir.path(), &["-w", "-t", "10", "nobody"]);
    assert_eq!(code, 68, "{out}");
    assert!(
        out.contains("could not determine the MAC address of nobody"),
        "{out}"
    );
}

fn wait_for(path: &Path, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    util::poll_until(limit, || path.exists().then(|| t.elapsed()))
}

/// A `sleep 30` whose command line is `tag 30`, so only this test's
/// monitor matches it.
fn busy_process(tag: &str) -> Child {
    Command::new("bash")
        .args(["-c", &format!("exec -a {tag} sleep 30")])
        .spawn()
        .unwrap()
}

#[test]
fn powernapd_acts_after_the_idle_time_only_when_no_monitored_process_runs() {
    let ns = Netns::new("napidle").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let tag = format!("pnbusy{}x{nanos}", std::process::id());
    let slept = dir.path().join("slept");
    let woke = dir.path().join("woke");
    let mut busy = busy_process(&tag);
    let config = format!(
        "interval 1\n\
         monitor process ^{tag} 30$\n\
         action \"touch {}\" after 3s warn 1s recover \"touch {}\"\n",
        slept.display(),
        woke.display()
    );
    let mut napd = Napd::start(&ns, dir.path(), &config, &["--debug"]);
    napd.wait_log("started", Duration::from_secs(10));

    // Busy: three idle times (nine checks) pass without the action.
    napd.wait_checks("active: process", 9, Duration::from_secs(30));
    assert!(!slept.exists(), "acted while busy:\n{}", napd.log());
    assert!(!napd.log().contains("will perform"), "{}", napd.log());

    busy.kill().unwrap();
    busy.wait().unwrap();
    let killed = Instant::now();
    let took = wait_for(&slept, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no action after going idle:\n{}", napd.log()));
    eprintln!(
        "idle action ran {:?} after the monitored process exited (after 3s, interval 1s)",
        killed.elapsed()
    );
    // Idleness counts from the last check that saw the process, up to one
    // interval before it was killed.
    assert!(
        took >= Duration::from_millis(1500),
        "acted too early: {took:?}"
    );
    let log = napd.log();
    let warned = log.find("will perform the touch").expect("no warning");
    let acted = log.find("running action").expect("no action log");
    assert!(warned < acted, "{log}");
    assert!(!woke.exists());

    // Activity returns: the recovery runs.
    let mut busy = busy_process(&tag);
    let took = wait_for(&woke, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no recovery when busy again:\n{}", napd.log()));
    eprintln!("recovery ran {took:?} after the monitored process started");
    busy.kill().unwrap();
    busy.wait().unwrap();
}

#[test]
fn powernapd_dry_run_logs_the_action_instead_of_running_it() {
    let ns = Netns::new("napdry").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let slept = dir.path().join("slept");
    let config = format!(
        "interval 1\naction \"touch {}\" after 2s\n",
        slept.display()
    );
    let mut napd = Napd::start(&ns, dir.path(), &config, &["--dry-run"]);
    napd.wait_log("dry run: would run action", Duration::from_secs(8));
    assert!(!slept.exists());
}

#[test]
fn powernapd_refuses_a_bad_config_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("powernapd.conf");
    std::fs::write(
        &conf,
        "interval 1\naction poweroff after 5m\nmonitor proces x\n",
    )
    .unwrap();
    let out = Command::new(bin("powernapd"))
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: line 3: unknown monitor type 'proces'",
            conf.display()
        )),
        "{err}"
    );
}

#[test]
fn powernapd_on_a_vm_host_acts_only_when_no_domain_runs() {
    let d = testbed::libvirtd::Libvirtd::start().unwrap();
    // No disk and no kernel: SeaBIOS finds nothing to boot and idles, which
    // is a running domain all the same.
    let xml = d.dir().join("pn-busy.xml");
    std::fs::write(
        &xml,
        "<domain type='qemu'><name>pn-busy</name><memory unit='MiB'>32</memory>\
         <vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os>\
         <devices/></domain>",
    )
    .unwrap();
    d.virsh(&["create", &xml.to_string_lossy()]).unwrap();

    let ns = Netns::new("napvirt").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let slept = dir.path().join("slept");
    let config = format!(
        "interval 1\nmonitor libvirt {}\naction \"touch {}\" after 2s\n",
        d.uri(),
        slept.display()
    );
    let mut napd = Napd::start(&ns, dir.path(), &config, &["--debug"]);
    napd.wait_log("active: libvirt", Duration::from_secs(10));
    // More than two idle times' worth of checks that see the domain.
    napd.wait_checks("active: libvirt", 5, Duration::from_secs(30));
    assert!(!slept.exists(), "acted while a domain ran:\n{}", napd.log());

    let destroyed = Instant::now();
    d.virsh(&["destroy", "pn-busy"]).unwrap();
    eprintln!("virsh destroy took {:?}", destroyed.elapsed());
    wait_for(&slept, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no action once no domain ran:\n{}", napd.log()));
    eprintln!(
        "host idle action ran {:?} after destroying the last domain began (after 2s, interval 1s)",
        destroyed.elapsed()
    );
    assert!(
        !napd.log().contains("counting it as activity"),
        "{}",
        napd.log()
    );
}

/// powernapd built the way an agent image ships it: without libvirt, so it
/// needs only libc and libgcc_s. Built into a target folder of its own,
/// since the workspace's is locked by the running `cargo test`.
fn guest_powernapd() -> PathBuf {
    let target = util::cache_dir().join("target-guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "powernap", "--no-default-features"])
        .args(["--bin", "powernapd", "--target-dir"])
        .arg(&target)
        .current_dir(util::workspace_root())
        .status()
        .unwrap();
    assert!(status.success(), "building powernapd for the guest failed");
    target.join("debug/powernapd")
}

#[test]
fn an_agent_vm_powers_off_once_its_agent_exits_and_libvirt_forgets_it() {
    use kvmhost::nocloud::Seed;
    use testbed::guest::{TinyGuest, POWEROFF, READY, SCRIPT_BEGIN};
    use testbed::libvirtd::Libvirtd;

    let napd = std::fs::read(guest_powernapd()).unwrap();
    let libgcc = std::fs::read("/lib/x86_64-linux-gnu/libgcc_s.so.1").unwrap();
    let guest = TinyGuest::ensure().unwrap();
    guest.check_reachable_by_others().unwrap();
    let d = Libvirtd::start().unwrap();

    // The guest prints its user-data on the console: markers are split
    // with quotes there so only running the script prints them whole.
    // The stand-in agent exits 3 s after powernapd has seen it (as
    // buildkite-agent exits after its idle timeout); powernapd then powers
    // the VM off 2 s later.
    let user_data = "#!/bin/sh\n\
        set -e\n\
        mkdir -p /opt/pn\n\
        cp /run/kvmbe/seed/powernapd /run/kvmbe/seed/libgcc_s.so.1 /run/kvmbe/seed/powernapd.conf /opt/pn/\n\
        chmod 755 /opt/pn/powernapd\n\
        cat > /opt/pn/buildkite-agent <<'EOF'\n\
        #!/bin/sh\n\
        echo AGENT-''START\n\
        until grep -q 'active: ''process' /tmp/napd.log 2>/dev/null; do sleep 0.2; done\n\
        sleep 3\n\
        echo AGENT-''EXIT\n\
        EOF\n\
        chmod 755 /opt/pn/buildkite-agent\n\
        /opt/pn/buildkite-agent &\n\
        LD_LIBRARY_PATH=/opt/pn /opt/pn/powernapd -c /opt/pn/powernapd.conf --debug 2>&1 | tee /tmp/napd.log &\n\
        wait\n";
    let config = "interval 1\n\
        monitor process (^|/)buildkite-agent( |$)\n\
        action poweroff after 2s\n";
    let iso = Seed::nocloud(user_data, "instance-id: nap-1\nlocal-hostname: nap\n", None)
        .file("powernapd", napd)
        .file("libgcc_s.so.1", libgcc)
        .file("powernapd.conf", config)
        .to_iso()
        .unwrap();
    let seed = d.pool_dir().join("nap-seed.iso");
    std::fs::write(&seed, iso).unwrap();
    let xml = d.dir().join("nap.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'>\
               <name>nap</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
               <os><type arch='x86_64' machine='q35'>hvm</type>\
                 <kernel>{k}</kernel><initrd>{i}</initrd><cmdline>{c}</cmdline></os>\
               <features><acpi/></features>\
               <on_poweroff>destroy</on_poweroff>\
               <devices>\
                 <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
                   <source file='{s}'/><target dev='sda' bus='sata'/><readonly/></disk>\
                 {serial}\
               </devices></domain>",
            k = guest.kernel.display(),
            i = guest.initrd.display(),
            c = guest.cmdline,
            s = seed.display(),
            serial = d.serial_xml("nap"),
        ),
    )
    .unwrap();

    d.virsh(&["create", &xml.to_string_lossy()]).unwrap();
    let log = d.serial_log("nap");
    // Generous limits: TCG on a busy machine can be slow.
    Libvirtd::wait_for_text(&log, READY, Duration::from_secs(180)).unwrap();
    Libvirtd::wait_for_text(&log, SCRIPT_BEGIN, Duration::from_secs(30)).unwrap();
    let (console, _) =
        Libvirtd::wait_for_text(&log, "AGENT-EXIT", Duration::from_secs(120)).unwrap();
    let exited = Instant::now();
    assert!(
        !console.contains(POWEROFF),
        "powered off while the agent ran:\n{console}"
    );
    assert!(console.contains("active: process"), "{console}");
    util::wait_until(
        Duration::from_secs(60),
        "the VM powering off after its agent exited",
        || std::fs::read_to_string(&log).unwrap_or_default(),
        || (!d.domains().unwrap().contains(&"nap".to_string())).then_some(()),
    );
    eprintln!(
        "agent VM gone from libvirt {:?} after its agent exited (after 2s, interval 1s)",
        exited.elapsed()
    );
    let console = std::fs::read_to_string(&log).unwrap();
    let acted = console.find("running action poweroff").expect(&console);
    assert!(console.find("AGENT-EXIT").unwrap() < acted, "{console}");
    assert!(console[acted..].contains(POWEROFF), "{console}");
}

#[test]
fn our_powerwake_is_answered_by_a_responder_speaking_the_seed_format() {
    let mut lan = Lan::new().unwrap();
    let host = lan.attach("seedd", true).unwrap();
    let client = lan.attach("wake", true).unwrap();
    let mac: Vec<u8> = host
        .mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    // The seed daemon's checks, by hand: at least 114 bytes, "PWERWAKE",
    // FF x6 at 12..18, our MAC at 18..24; the reply is "PWERWAKF" and the
    // request's 4 nonce bytes.
    let sock = in_netns(&host.ns, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 57748)).unwrap()
    });
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        let p = &buf[..n];
        assert!(n >= 114, "{n} bytes");
        assert_eq!(&p[..8], b"PWERWAKE");
        assert_eq!(&p[12..18], &[0xff; 6]);
        for i in 0..16 {
            assert_eq!(&p[18 + i * 6..24 + i * 6], &mac[..]);
        }
        let mut reply = b"PWERWAKF".to_vec();
        reply.extend_from_slice(&p[8..12]);
        sock.send_to(&reply, from).unwrap();
        from
    });
    let bcast = lan.broadcast().to_string();
    let (code, out, _) = powerwake(&client, &["-w", "-t", "10", "-b", &bcast, &host.mac]);
    let from = responder.join().unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(from.ip(), std::net::IpAddr::V4(client.ip));
    assert!(
        out.contains(&format!("Received reply from {}:57748", host.ip)),
        "{out}"
    );
}

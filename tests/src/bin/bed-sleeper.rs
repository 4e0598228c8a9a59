//! A VM host of the test bed that sleeps: waits on a link that has no
//! address for a Wake-on-LAN magic packet (or a powerwake packet, which
//! carries one) for its MAC, then gives the link its address and starts
//! the host's services, as a machine's firmware and boot would.
//!
//! It stays to be put back to sleep: on SIGUSR1 (what the host's
//! powernapd runs as its idle action) it stops the processes named by
//! each `--stop` pid file, with their children (the sshd and its
//! sessions, powernapd), takes the address away and waits for the next
//! magic packet. A request while asleep is ignored.
//!
//! Usage: bed-sleeper --dev IFACE --mac MAC --ip CIDR [--awake]
//!        [--pidfile FILE] [--stop PIDFILE]... -- COMMAND [ARGS...]

use kvmhost::wake::{contains_magic_packet, Mac};
use std::process::{exit, Command};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let opts = &args[..end];
    let opt = |name: &str| {
        opts.iter()
            .position(|a| a == name)
            .and_then(|i| opts.get(i + 1))
            .cloned()
    };
    let need = |name: &str| opt(name).unwrap_or_else(|| usage(&format!("missing {name}")));
    let dev = need("--dev");
    let mac: Mac = need("--mac")
        .parse()
        .unwrap_or_else(|_| usage("--mac is not a MAC address"));
    let cidr = need("--ip");
    let start_awake = opts.iter().any(|a| a == "--awake");
    let stops: Vec<String> = opts
        .windows(2)
        .filter(|w| w[0] == "--stop")
        .map(|w| w[1].clone())
        .collect();
    let cmd: Vec<String> = match args.get(end + 1..) {
        Some(rest) if !rest.is_empty() => rest.to_vec(),
        _ => usage("missing -- COMMAND"),
    };
    if let Some(p) = opt("--pidfile") {
        if let Err(e) = std::fs::write(&p, format!("{}\n", std::process::id())) {
            eprintln!("bed-sleeper: writing {p}: {e}");
            exit(1);
        }
    }
    // SIGUSR1 is taken with sigwait while awake; blocked, it stays pending
    // (and is dropped on waking) while asleep.
    let usr1 = block_usr1();

    let fd = open_packet_socket(&dev).unwrap_or_else(|e| {
        eprintln!("bed-sleeper: {dev}: {e}");
        exit(1)
    });
    let mut awake = start_awake;
    loop {
        if !awake {
            eprintln!("bed-sleeper: {dev} asleep, waiting for a magic packet");
            wait_for_magic(fd, mac);
        }
        let t0 = Instant::now();
        let ok = Command::new("ip")
            .args(["addr", "add", &cidr, "brd", "+", "dev", &dev])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("bed-sleeper: could not give {dev} its address {cidr}");
            exit(1);
        }
        let status = Command::new(&cmd[0]).args(&cmd[1..]).status();
        match status {
            Ok(s) if s.success() => {
                eprintln!("bed-sleeper: awake in {:?}", t0.elapsed());
            }
            other => {
                eprintln!("bed-sleeper: {cmd:?} failed: {other:?}");
                exit(1);
            }
        }
        drain_usr1(&usr1);
        wait_usr1(&usr1);
        eprintln!("bed-sleeper: going to sleep");
        for f in &stops {
            if let Some(pid) = std::fs::read_to_string(f)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                stop_tree(pid);
            }
            let _ = std::fs::remove_file(f);
        }
        let _ = Command::new("ip")
            .args(["addr", "del", &cidr, "dev", &dev])
            .status();
        // Frames that arrived while awake are not wake-ups.
        flush(fd);
        awake = false;
    }
}

/// Blocks on `fd` until a frame holding the magic packet for `mac` arrives
/// (a powerwake request carries one too).
fn wait_for_magic(fd: i32, mac: Mac) {
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buf is valid for buf.len() bytes for the whole call.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("bed-sleeper: recv: {e}");
            exit(1);
        }
        let frame = &buf[..n as usize];
        if contains_magic_packet(frame, mac) {
            return;
        }
    }
}

/// Reads and drops every frame waiting on `fd`.
fn flush(fd: i32) {
    let mut buf = vec![0u8; 65536];
    // SAFETY: buf is valid for buf.len() bytes for each call.
    while unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } > 0 {}
}

fn block_usr1() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; the mask
    // is changed for this (only) thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Drops a SIGUSR1 that arrived while asleep.
fn drain_usr1(set: &libc::sigset_t) {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid set and timespec; no siginfo wanted.
    while unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &zero) } == libc::SIGUSR1 {}
}

fn wait_usr1(set: &libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: valid set and output pointer.
    while unsafe { libc::sigwait(set, &mut sig) } != 0 || sig != libc::SIGUSR1 {}
}

/// SIGTERM to `pid` and every process descending from it.
fn stop_tree(pid: i32) {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
                });
            if let Some(ppid) = ppid {
                parents.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    for p in tree {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(p, libc::SIGTERM);
        }
    }
}

fn usage(why: &str) -> ! {
    eprintln!("bed-sleeper: {why}\nusage: bed-sleeper --dev IFACE --mac MAC --ip CIDR [--awake] [--pidfile FILE] [--stop PIDFILE]... -- COMMAND [ARGS...]");
    exit(64)
}

/// An AF_PACKET socket that sees every frame arriving on `dev`.
fn open_packet_socket(dev: &str) -> std::io::Result<i32> {
    let all = (libc::ETH_P_ALL as u16).to_be() as i32;
    let name = std::ffi::CString::new(dev).map_err(std::io::Error::other)?;
    // SAFETY: plain socket calls; every pointer passed is valid for its size.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all as u16;
        addr.sll_ifindex = index as i32;
        let r = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

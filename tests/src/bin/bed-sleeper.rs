//! A sleeping VM host of the test bed: waits on a link that has no address
//! for a Wake-on-LAN magic packet (or a powerwake packet, which carries
//! one) for its MAC, then gives the link its address and starts the
//! host's services, as a machine's firmware and boot would.
//!
//! Usage: bed-sleeper --dev IFACE --mac MAC --ip CIDR -- COMMAND [ARGS...]

use std::process::{exit, Command};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| usage(&format!("missing {name}")))
    };
    let dev = opt("--dev");
    let mac = parse_mac(&opt("--mac")).unwrap_or_else(|| usage("--mac is not a MAC address"));
    let cidr = opt("--ip");
    let cmd: Vec<String> = match args.iter().position(|a| a == "--") {
        Some(i) if i + 1 < args.len() => args[i + 1..].to_vec(),
        _ => usage("missing -- COMMAND"),
    };

    let fd = open_packet_socket(&dev).unwrap_or_else(|e| {
        eprintln!("bed-sleeper: {dev}: {e}");
        exit(1)
    });
    let mut pattern = vec![0xffu8; 6];
    for _ in 0..16 {
        pattern.extend_from_slice(&mac);
    }
    eprintln!("bed-sleeper: {dev} asleep, waiting for a magic packet");
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
        if frame.windows(pattern.len()).any(|w| w == pattern) {
            break;
        }
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
}

fn usage(why: &str) -> ! {
    eprintln!("bed-sleeper: {why}\nusage: bed-sleeper --dev IFACE --mac MAC --ip CIDR -- COMMAND [ARGS...]");
    exit(64)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split([':', '-'])
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
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

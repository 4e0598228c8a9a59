//! Starts a private libvirtd of the test bed (its own network namespace,
//! pool `bed`, NAT network `bed`), prints its URI, and tears everything
//! down when its standard input closes.

use std::io::{Read, Write};
use testbed::libvirtd::Libvirtd;

fn main() {
    let daemon = match Libvirtd::start() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bed-libvirtd: {e:#}");
            std::process::exit(1);
        }
    };
    println!("{}", daemon.uri());
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(daemon);
}

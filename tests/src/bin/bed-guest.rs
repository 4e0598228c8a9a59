//! Builds (once, cached) the test bed's tiny guest and prints where it is,
//! as shell assignments: `kernel=... initrd=... cmdline=...`.

use testbed::guest::TinyGuest;

fn main() {
    match TinyGuest::ensure() {
        Ok(g) => {
            let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
            println!("kernel={}", q(&g.kernel.to_string_lossy()));
            println!("initrd={}", q(&g.initrd.to_string_lossy()));
            println!("cmdline={}", q(&g.cmdline));
            println!("root_disk={}", q(&g.root_disk.to_string_lossy()));
            println!("root_initrd={}", q(&g.root_initrd.to_string_lossy()));
            println!("root_cmdline={}", q(&g.root_cmdline));
        }
        Err(e) => {
            eprintln!("bed-guest: {e:#}");
            std::process::exit(1);
        }
    }
}

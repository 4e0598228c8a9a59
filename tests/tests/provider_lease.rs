//! `wait_for_lease` holds the create until the guest has a DHCP lease,
//! and the interface's `addresses` show it (from the lease, or from the
//! guest agent with `qemu_agent`).

use std::process::Output;

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK};
use testbed::tools::{dev_overrides_config, terraforms, PROVIDER_SOURCE};

#[test]
fn wait_for_lease_fills_the_interface_addresses() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cli = dev_overrides_config(work.path()).unwrap();
    let tf = terraforms()
        .unwrap()
        .into_iter()
        .find(|t| t.version == "1.11")
        .unwrap();
    std::fs::write(
        work.path().join("main.tf"),
        format!(
            r##"terraform {{
  required_providers {{
    libvirt = {{
      source = "{PROVIDER_SOURCE}"
    }}
  }}
}}

provider "libvirt" {{
  uri = "{uri}"
}}

resource "libvirt_domain" "vm" {{
  name       = "leased"
  type       = "qemu"
  memory     = 256
  kernel     = "{kernel}"
  initrd     = "{initrd}"
  cmdline    = [{{ "_" = "{cmdline}" }}]
  qemu_agent = true

  network_interface {{
    network_name   = "{NETWORK}"
    wait_for_lease = true
  }}
}}

output "addresses" {{
  value = libvirt_domain.vm.network_interface[0].addresses
}}
"##,
            uri = d.uri(),
            kernel = g.kernel.display(),
            initrd = g.initrd.display(),
            cmdline = g.cmdline,
        ),
    )
    .unwrap();
    let run = |args: &[&str]| -> Output {
        let out = tf.cmd(work.path(), &cli).args(args).output().unwrap();
        eprintln!(
            "== terraform {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    assert!(run(&["apply", "-auto-approve", "-no-color"])
        .status
        .success());
    let out = run(&["output", "-json", "addresses"]);
    let addrs: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(addrs.iter().any(|a| a.starts_with("10.78.0.")), "{addrs:?}");
    assert_eq!(
        run(&["plan", "-detailed-exitcode", "-no-color"])
            .status
            .code(),
        Some(0)
    );
    assert!(run(&["destroy", "-auto-approve", "-no-color"])
        .status
        .success());
}

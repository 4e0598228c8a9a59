//! `wait_for_lease` holds the create until the guest has a DHCP lease,
//! and the interface's `addresses` show it (from the lease, or from the
//! guest agent with `qemu_agent`).

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK};
use testbed::terraform::{header, TfProject};

#[test]
fn wait_for_lease_fills_the_interface_addresses() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&format!(
        r##"{header}resource "libvirt_domain" "vm" {{
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
        header = header(&d.uri()),
        kernel = g.kernel.display(),
        initrd = g.initrd.display(),
        cmdline = g.cmdline,
    ));
    tf.apply();
    let out = tf.run(&["output", "-json", "addresses"]);
    let addrs: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(addrs.iter().any(|a| a.starts_with("10.78.0.")), "{addrs:?}");
    assert_eq!(tf.plan_code().0, 0);
    tf.destroy();
}

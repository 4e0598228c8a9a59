//! What a plan shows: cloud-init files may carry secrets (Wi-Fi or VPN
//! keys in netplan, tokens in meta-data), so Terraform must print none of
//! them.

use testbed::terraform::{header, TfProject};

#[test]
fn a_plan_shows_no_cloud_init_content_of_seeds_or_templates() {
    let secrets = [
        "psk-meta-5f1c",
        "psk-net-77aa",
        "psk-tmeta-31b0",
        "psk-tnet-9e02",
    ];
    let hcl = format!(
        "{}resource \"libvirt_cloudinit_disk\" \"seed\" {{\n  name           = \"seed.iso\"\n  user_data      = \"#cloud-config\\n\"\n  meta_data      = \"instance-id: {}\\n\"\n  network_config = \"wifis: {{ wlan0: {{ password: {} }} }}\\n\"\n}}\n\n\
         resource \"libvirt_domain_template\" \"t\" {{\n  name           = \"t\"\n  base_volume_id = \"/var/lib/libvirt/images/base.qcow2\"\n  user_data      = \"#cloud-config\\n\"\n  meta_data      = \"token: {}\\n\"\n  network_config = \"wifis: {{ wlan0: {{ password: {} }} }}\\n\"\n}}\n",
        header("test:///default"),
        secrets[0],
        secrets[1],
        secrets[2],
        secrets[3]
    );
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&hcl);
    let plan = tf.run(&["plan", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    for s in secrets {
        assert!(!text.contains(s), "the plan shows {s}:\n{text}");
    }
    assert!(text.matches("(sensitive value)").count() >= 6, "{text}");
}

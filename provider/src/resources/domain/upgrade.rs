//! Stored state of schema version 0 to the current version, including
//! state written by dmacvicar/libvirt 0.8.

use tfplugin::value::RawValue;
use tfplugin::Diagnostics;

use super::schema::VERSION;
use super::DomainState;
use crate::connection::Shared;
use crate::state::{state_from_json, state_v0_json, Maybe};

/// Attributes only dmacvicar/libvirt 0.8's `libvirt_domain` stores: their
/// presence tells its state from ours.
const DMACVICAR_ONLY: [&str; 4] = ["emulator", "fw_cfg_name", "coreos_ignition", "filesystem"];

/// Whether version-0 domain state was written by dmacvicar/libvirt 0.8.
fn is_dmacvicar_v0(v0: &serde_json::Value) -> bool {
    v0.as_object()
        .is_some_and(|o| DMACVICAR_ONLY.iter().any(|k| o.contains_key(*k)))
}

/// Version-0 state to version 1. Ours is unchanged. dmacvicar/libvirt
/// 0.8's is brought to what our read gives for the same configuration:
/// its empty strings for unset optional attributes become null, its
/// `false` for unset `scsi` and `wait_for_lease` null, its MAC addresses
/// lower case, and its `cpu { mode = "custom" }` (written whatever the
/// configuration said) the mode of the domain's persistent definition,
/// `live_cpu_mode` (None: no `cpu` block).
pub(super) fn upgrade_v0(
    mut v0: serde_json::Value,
    live_cpu_mode: Option<&str>,
) -> serde_json::Value {
    use serde_json::Value as J;
    if !is_dmacvicar_v0(&v0) {
        return v0;
    }
    fn empty_to_null(o: &mut serde_json::Map<String, J>, keys: &[&str]) {
        for k in keys {
            if o.get(*k).is_some_and(|v| v.as_str() == Some("")) {
                o.insert((*k).to_string(), J::Null);
            }
        }
    }
    fn false_to_null(o: &mut serde_json::Map<String, J>, k: &str) {
        if o.get(k) == Some(&J::Bool(false)) {
            o.insert(k.to_string(), J::Null);
        }
    }
    let Some(o) = v0.as_object_mut() else {
        return v0;
    };
    empty_to_null(
        o,
        &[
            "kernel",
            "initrd",
            "firmware",
            "machine",
            "arch",
            "cloudinit",
        ],
    );
    if let Some(J::Array(disks)) = o.get_mut("disk") {
        for d in disks.iter_mut().filter_map(J::as_object_mut) {
            empty_to_null(d, &["volume_id", "file", "block_device", "wwn"]);
            false_to_null(d, "scsi");
        }
    }
    if let Some(J::Array(nics)) = o.get_mut("network_interface") {
        for n in nics.iter_mut().filter_map(J::as_object_mut) {
            empty_to_null(
                n,
                &[
                    "network_name",
                    "network_id",
                    "bridge",
                    "macvtap",
                    "hostname",
                    "mac",
                ],
            );
            false_to_null(n, "wait_for_lease");
            if let Some(J::String(m)) = n.get_mut("mac") {
                *m = m.to_lowercase();
            }
        }
    }
    if let Some(J::Array(nvram)) = o.get_mut("nvram") {
        for n in nvram.iter_mut().filter_map(J::as_object_mut) {
            empty_to_null(n, &["template"]);
        }
    }
    let custom = o
        .get("cpu")
        .and_then(|c| c.pointer("/0/mode"))
        .and_then(J::as_str)
        .is_some_and(|m| m == "custom" || m.is_empty());
    if custom {
        let cpu = match live_cpu_mode.filter(|m| *m != "custom") {
            Some(m) => serde_json::json!([{ "mode": m }]),
            None => J::Array(vec![]),
        };
        o.insert("cpu".into(), cpu);
    }
    v0
}

/// Stored state of schema `version` as the current state. dmacvicar's
/// state does not say which CPU mode was configured: the domain's
/// persistent definition, read from the host, does.
pub(super) async fn upgrade_state(
    shared: &Shared,
    diags: &mut Diagnostics,
    version: i64,
    prior_state: RawValue,
) -> Option<Maybe<DomainState>> {
    let v0 = state_v0_json(diags, "libvirt_domain", VERSION, version, prior_state)?;
    let mut live_mode = None;
    if is_dmacvicar_v0(&v0) {
        if let Some(id) = v0.get("id").and_then(|i| i.as_str()).map(str::to_string) {
            live_mode = shared
                .read_back(diags, "Cannot read the domain", move |h| {
                    h.domain_def(&id).map(|d| d.cpu_mode)
                })
                .await?
                .flatten();
        }
    }
    state_from_json(diags, upgrade_v0(v0, live_mode.as_deref()))
}

#[cfg(test)]
mod tests {
    use tfplugin::value::Value;

    use super::*;
    use crate::resources::domain::{list, s};

    // Attributes of a domain as dmacvicar/libvirt 0.8.3 stored them
    // (taken from a state file its binary wrote in the test bed).
    fn dmacvicar_agent() -> serde_json::Value {
        serde_json::json!({
            "arch": "x86_64", "autostart": false, "boot_device": [],
            "cloudinit": "/p/agent-seed.iso;aa9604e5-619b-4f69-9c0f-8273e6f9ebec",
            "cmdline": null, "console": [], "coreos_ignition": null,
            "cpu": [{"mode": "custom"}], "description": "",
            "disk": [{"block_device": "", "file": "", "scsi": false, "url": "",
                      "volume_id": "/p/agent-root.qcow2", "wwn": ""}],
            "emulator": "/usr/bin/qemu-system-x86_64", "filesystem": [],
            "firmware": null, "fw_cfg_name": "opt/com.coreos/config",
            "graphics": [], "id": "d397a5f8-98bb-46cb-924b-b70e3cdf9a6c",
            "initrd": "", "kernel": "", "machine": "pc", "memory": 256,
            "metadata": null, "name": "agent",
            "network_interface": [{"addresses": [], "bridge": "br0", "hostname": "",
                "mac": "52:54:00:7A:00:01", "macvtap": "", "network_id": "",
                "network_name": "", "passthrough": "", "vepa": "", "wait_for_lease": false}],
            "nvram": null, "qemu_agent": false, "running": false, "timeouts": null,
            "tpm": [], "type": "qemu", "vcpu": 2, "video": [], "xml": []
        })
    }

    fn upgraded(v0: serde_json::Value, mode: Option<&str>) -> DomainState {
        let mut d = Diagnostics::default();
        let v1 = serde_json::to_vec(&upgrade_v0(v0, mode)).unwrap();
        RawValue::Json(v1).deserialize(&mut d).unwrap()
    }

    #[test]
    fn dmacvicar_state_reads_as_ours_would_write_it() {
        let st = upgraded(dmacvicar_agent(), Some("host-model"));
        assert_eq!(st.kernel, Value::Null);
        assert_eq!(st.cpu.as_ref_option().unwrap().mode, s("host-model"));
        let disk = &list(&st.disk)[0];
        assert_eq!(disk.volume_id, s("/p/agent-root.qcow2"));
        assert_eq!(
            (&disk.file, &disk.scsi, &disk.wwn),
            (&Value::Null, &Value::Null, &Value::Null)
        );
        let nic = &list(&st.network_interface)[0];
        assert_eq!(nic.mac, s("52:54:00:7a:00:01"));
        assert_eq!(nic.bridge, s("br0"));
        assert_eq!(
            (&nic.hostname, &nic.network_name),
            (&Value::Null, &Value::Null)
        );
        assert_eq!(nic.wait_for_lease, Value::Null);
        assert_eq!(
            st.cloudinit,
            s("/p/agent-seed.iso;aa9604e5-619b-4f69-9c0f-8273e6f9ebec")
        );
        // No cpu element in the definition (or a custom one): no block.
        assert!(upgraded(dmacvicar_agent(), None).cpu.is_null());
        assert!(upgraded(dmacvicar_agent(), Some("custom")).cpu.is_null());
    }

    #[test]
    fn our_version_0_state_is_unchanged() {
        let ours = serde_json::json!({
            "id": "u", "name": "vm", "cpu": [{"mode": "custom"}], "kernel": "",
            "network_interface": [{"bridge": "br0", "mac": "52:54:00:7A:00:01", "wait_for_lease": false}]
        });
        assert_eq!(upgrade_v0(ours.clone(), None), ours);
    }
}

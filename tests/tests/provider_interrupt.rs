//! Ctrl-C during `terraform apply` (SIGINT to Terraform's whole process
//! group, as a terminal sends it) leaves nothing on the host that the
//! state does not know about: the provider finishes what it started.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use testbed::libvirtd::{Libvirtd, POOL};
use testbed::terraform::{header, TfProject};
use testbed::util::wait_until;

#[test]
fn ctrl_c_during_apply_leaves_only_what_the_state_knows() {
    let d = Libvirtd::start().unwrap();
    // 384 MiB of data: its checksum and upload take a while.
    let image = d.dir().join("big.raw");
    let mut f = std::fs::File::create(&image).unwrap();
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let block: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for i in 0..384u32 {
        let mut b = block.clone();
        b[..4].copy_from_slice(&i.to_le_bytes());
        f.write_all(&b).unwrap();
    }
    drop(f);

    let mut hcl = header(&d.uri());
    for i in 0..3 {
        hcl += &format!(
            "\nresource \"libvirt_volume\" \"v{i}\" {{\n  name   = \"big{i}.raw\"\n  pool   = \"{POOL}\"\n  source = \"{}\"\n}}\n",
            image.display()
        );
    }
    let tf = TfProject::with_version("1.11").unwrap();
    tf.write_main(&hcl);

    let mut cmd = tf.cmd();
    cmd.args(["apply", "-auto-approve", "-no-color", "-parallelism=1"]);
    // A group of its own, like a terminal's foreground job.
    cmd.process_group(0);
    let mut child = cmd.spawn().unwrap();
    let pgid = child.id() as i32;
    // Interrupt once the first upload is under way.
    wait_until(
        Duration::from_secs(60),
        "the first upload starting",
        || format!("no upload started; volumes: {:?}", d.volumes(POOL)),
        || {
            d.volumes(POOL)
                .unwrap()
                .iter()
                .any(|v| v.starts_with("big"))
                .then_some(())
        },
    );
    // SAFETY: signalling the process group we just made.
    unsafe { libc::kill(-pgid, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(!status.success(), "the interrupted apply reports failure");

    let state = tf.ok(&["state", "list"]);
    let on_host: Vec<String> = d
        .volumes(POOL)
        .unwrap()
        .into_iter()
        .filter(|v| v.starts_with("big"))
        .collect();
    assert!(!on_host.is_empty());
    for v in &on_host {
        let i = v.trim_start_matches("big").trim_end_matches(".raw");
        assert!(
            state.contains(&format!("libvirt_volume.v{i}")),
            "{v} is on the host but not in the state:\n{state}"
        );
    }
    tf.destroy();
}

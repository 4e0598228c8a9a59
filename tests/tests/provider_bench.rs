//! Benchmarks of the provider, each printing its numbers and ratio:
//! `cargo test -p kvmbe-tests --test provider_bench -- --ignored --nocapture`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::tools::{dev_overrides_config, terraforms, PROVIDER_SOURCE};
use testbed::util::bin_dir;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark"]
fn bench_provider_start_to_handshake() {
    let bin = bin_dir().join("terraform-provider-libvirt");
    let mut times = Vec::new();
    for _ in 0..21 {
        let t0 = Instant::now();
        let mut child = Command::new(&bin)
            .env("PLUGIN_MIN_PORT", "20000")
            .env("PLUGIN_MAX_PORT", "29999")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        times.push(t0.elapsed());
        assert!(line.starts_with("1|6|tcp|127.0.0.1:"), "{line}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    println!(
        "provider start to handshake: median {:?} (min {:?}, max {:?}, 21 starts)",
        median(times.clone()),
        times.iter().min().unwrap(),
        times.iter().max().unwrap()
    );
}

const N: usize = 20;

#[test]
#[ignore = "benchmark"]
fn bench_apply_20_vms_against_a_virsh_script() {
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();
    let work = tempfile::tempdir().unwrap();

    // The same work done by a shell script with virsh.
    let iso = kvmhost::nocloud::Seed::nocloud("#cloud-config\n", "instance-id: x\n", None)
        .to_iso()
        .unwrap();
    let iso_path = d.dir().join("seed.iso");
    std::fs::write(&iso_path, &iso).unwrap();
    let mut script = String::from("set -e\n");
    for i in 0..N {
        let xml = d.dir().join(format!("sh{i}.xml"));
        std::fs::write(
            &xml,
            format!(
                "<domain type='qemu'><name>sh{i}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
                 <os><type>hvm</type><kernel>{k}</kernel><initrd>{r}</initrd><cmdline>{c}</cmdline></os>\
                 <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{p}/sh{i}.qcow2'/><target dev='vda' bus='virtio'/></disk>\
                 <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='{p}/sh{i}-seed.iso'/><target dev='sda' bus='sata'/><readonly/></disk>\
                 <interface type='network'><source network='{NETWORK}'/><model type='virtio'/></interface></devices></domain>",
                k = g.kernel.display(),
                r = g.initrd.display(),
                c = g.cmdline,
                p = d.pool_dir().display(),
            ),
        )
        .unwrap();
        let v = format!("virsh -q -c '{}'", d.uri());
        script += &format!(
            "{v} vol-create-as {POOL} sh{i}.qcow2 16M --format qcow2 >/dev/null\n\
             {v} vol-create-as {POOL} sh{i}-seed.iso {len} --format raw >/dev/null\n\
             {v} vol-upload --pool {POOL} sh{i}-seed.iso {iso} >/dev/null\n\
             {v} define {xml} >/dev/null\n{v} start sh{i} >/dev/null\n",
            len = iso.len(),
            iso = iso_path.display(),
            xml = xml.display(),
        );
    }
    std::fs::write(work.path().join("script.sh"), &script).unwrap();
    let t0 = Instant::now();
    let st = Command::new("bash")
        .arg(work.path().join("script.sh"))
        .status()
        .unwrap();
    let shell = t0.elapsed();
    assert!(st.success());
    for i in 0..N {
        let _ = d.virsh(&["destroy", &format!("sh{i}")]);
        let _ = d.virsh(&["undefine", &format!("sh{i}")]);
        let _ = d.virsh(&["vol-delete", "--pool", POOL, &format!("sh{i}.qcow2")]);
        let _ = d.virsh(&["vol-delete", "--pool", POOL, &format!("sh{i}-seed.iso")]);
    }

    let tf = terraforms()
        .unwrap()
        .into_iter()
        .find(|t| t.version == "1.11")
        .unwrap();
    let cli = dev_overrides_config(work.path()).unwrap();
    let hcl = format!(
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

resource "libvirt_volume" "disk" {{
  count = {N}
  name  = "tf${{count.index}}.qcow2"
  pool  = "{POOL}"
  size  = 16777216
}}

resource "libvirt_cloudinit_disk" "seed" {{
  count     = {N}
  name      = "tf${{count.index}}-seed.iso"
  pool      = "{POOL}"
  user_data = "#cloud-config\n"
  meta_data = "instance-id: x\n"
}}

resource "libvirt_domain" "vm" {{
  count     = {N}
  name      = "tf${{count.index}}"
  type      = "qemu"
  memory    = 256
  kernel    = "{k}"
  initrd    = "{r}"
  cmdline   = [{{ "_" = "{c}" }}]
  cloudinit = libvirt_cloudinit_disk.seed[count.index].id

  disk {{
    volume_id = libvirt_volume.disk[count.index].id
  }}

  network_interface {{
    network_name = "{NETWORK}"
  }}
}}
"##,
        uri = d.uri(),
        k = g.kernel.display(),
        r = g.initrd.display(),
        c = g.cmdline,
    );
    std::fs::write(work.path().join("main.tf"), hcl).unwrap();
    let t0 = Instant::now();
    let out = tf
        .cmd(work.path(), &cli)
        .args(["apply", "-auto-approve", "-no-color"])
        .output()
        .unwrap();
    let apply = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.domains().unwrap().len(), N);
    let t0 = Instant::now();
    let out = tf
        .cmd(work.path(), &cli)
        .args(["destroy", "-auto-approve", "-no-color"])
        .output()
        .unwrap();
    let destroy = t0.elapsed();
    assert!(out.status.success());
    println!(
        "{N} domains + {N} volumes + {N} seeds: terraform apply {apply:?}, virsh script {shell:?}, ratio {:.2} (goal <= 1.3); destroy {destroy:?}",
        apply.as_secs_f64() / shell.as_secs_f64()
    );
}

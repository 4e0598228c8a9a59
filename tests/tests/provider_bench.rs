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

fn tx_bytes(lab: &testbed::hosts::Lab) -> u64 {
    lab.client()
        .run(&["cat", "/sys/class/net/eth0/statistics/tx_bytes"])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "benchmark"]
fn bench_sparse_upload_over_ssh_against_virsh() {
    use std::io::{Seek, SeekFrom, Write};
    let mut lab = testbed::hosts::Lab::new().unwrap();
    lab.add_host("up", true).unwrap();
    let host = &lab.hosts()[0];
    let uri = lab.ssh_uri(host);
    // 1 GiB image holding 64 MiB of (incompressible) data in four places.
    let image =
        std::path::PathBuf::from(format!("/tmp/kvmbe-bench-image-{}.raw", std::process::id()));
    let mut f = std::fs::File::create(&image).unwrap();
    f.set_len(1 << 30).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for part in 0..4u64 {
        f.seek(SeekFrom::Start(part * (256 << 20))).unwrap();
        let block: Vec<u8> = (0..16 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        f.write_all(&block).unwrap();
    }
    drop(f);

    let virsh = |args: &[&str]| {
        let mut argv = vec!["virsh", "-q", "-c", uri.as_str()];
        argv.extend_from_slice(args);
        lab.client().run(&argv).unwrap()
    };
    virsh(&[
        "vol-create-as",
        POOL,
        "virsh.raw",
        "1G",
        "--format",
        "raw",
        "--allocation",
        "0",
    ]);
    let b0 = tx_bytes(&lab);
    let t0 = Instant::now();
    virsh(&[
        "vol-upload",
        "--sparse",
        "--pool",
        POOL,
        "virsh.raw",
        &image.display().to_string(),
    ]);
    let virsh_time = t0.elapsed();
    let virsh_bytes = tx_bytes(&lab) - b0;

    let work = tempfile::tempdir().unwrap();
    let cli = dev_overrides_config(work.path()).unwrap();
    std::fs::write(
        work.path().join("main.tf"),
        format!(
            "terraform {{\n  required_providers {{\n    libvirt = {{\n      source = \"{PROVIDER_SOURCE}\"\n    }}\n  }}\n}}\n\n\
             provider \"libvirt\" {{\n  uri = \"{uri}\"\n}}\n\n\
             resource \"libvirt_volume\" \"image\" {{\n  name   = \"ours.raw\"\n  pool   = \"{POOL}\"\n  source = \"{}\"\n}}\n",
            image.display()
        ),
    )
    .unwrap();
    let tf = terraforms()
        .unwrap()
        .into_iter()
        .find(|t| t.version == "1.11")
        .unwrap();
    let apply = |args: &[&str]| {
        let out = lab
            .client()
            .cmd(&tf.program.display().to_string())
            .args(args)
            .current_dir(work.path())
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_CLI_CONFIG_FILE", &cli)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Terraform's own start-up is measured apart and taken off.
    let b0 = tx_bytes(&lab);
    let t0 = Instant::now();
    apply(&["apply", "-auto-approve", "-no-color"]);
    let ours_time = t0.elapsed();
    let ours_bytes = tx_bytes(&lab) - b0;
    let pool = host.daemon().pool_dir();
    let same = std::fs::read(pool.join("ours.raw")).unwrap() == std::fs::read(&image).unwrap();
    assert!(same, "the uploaded volume differs from the image");
    apply(&["destroy", "-auto-approve", "-no-color"]);
    // The same apply without a source: Terraform's and the RPCs' share.
    let tf_file = work.path().join("main.tf");
    let text = std::fs::read_to_string(&tf_file).unwrap();
    let empty = text.replace(
        &format!("source = \"{}\"", image.display()),
        "size   = 1073741824",
    );
    std::fs::write(&tf_file, empty).unwrap();
    let t0 = Instant::now();
    apply(&["apply", "-auto-approve", "-no-color"]);
    let overhead = t0.elapsed();
    apply(&["destroy", "-auto-approve", "-no-color"]);
    let _ = std::fs::remove_file(&image);
    let upload_only = ours_time.saturating_sub(overhead);
    println!(
        "upload part of the apply (apply minus the same apply without source, {overhead:?}): {upload_only:?}, throughput ratio {:.2}",
        virsh_time.as_secs_f64() / upload_only.as_secs_f64()
    );
    println!(
        "sparse upload of 1 GiB with 64 MiB data over qemu+libssh: virsh vol-upload --sparse {virsh_time:?} / {virsh_bytes} bytes sent; \
         terraform apply (incl. sha256 of the source and Terraform itself) {ours_time:?} / {ours_bytes} bytes sent; \
         throughput ratio {:.2} (goal >= 0.9), bytes ratio {:.2} (goal <= 1.0)",
        virsh_time.as_secs_f64() / ours_time.as_secs_f64(),
        ours_bytes as f64 / virsh_bytes as f64
    );
}

//! Benchmarks of the provider, each printing its numbers and ratio:
//! `cargo test -p kvmbe-tests --test provider_bench -- --ignored --nocapture`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::tools::{dev_overrides_config, terraforms, PROVIDER_SOURCE};
use testbed::util::bin_dir;
use tfplugin::client::Handshake;
use tfplugin::tls::Identity;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Starts `bin` as Terraform does; returns it and its handshake line.
fn start_as_terraform(bin: &std::path::Path, client: &Identity) -> (std::process::Child, String) {
    let mut child = Command::new(bin)
        .env(tfplugin::MAGIC_COOKIE_KEY, tfplugin::MAGIC_COOKIE_VALUE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .env("PLUGIN_CLIENT_CERT", client.cert_pem())
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
    (child, line)
}

#[test]
#[ignore = "benchmark"]
fn bench_provider_start_to_handshake() {
    let bin = bin_dir().join("terraform-provider-libvirt");
    let client = Identity::generate().unwrap();
    let mut times = Vec::new();
    for _ in 0..21 {
        let t0 = Instant::now();
        let (mut child, line) = start_as_terraform(&bin, &client);
        times.push(t0.elapsed());
        assert!(line.starts_with("1|6|unix|"), "{line}");
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

/// Start to handshake line to `GetProviderSchema` answered, over the
/// handshake's socket and TLS, as Terraform does it. With
/// `KVMBE_PROVIDER_BASELINE=<older terraform-provider-libvirt>` the same
/// for that build (the tf-provider one serves TCP and does not require the
/// client certificate: it is then not presented).
#[test]
#[ignore = "benchmark"]
fn bench_provider_handshake_to_schema() {
    let mut bins = vec![(
        "this build",
        bin_dir().join("terraform-provider-libvirt"),
        true,
    )];
    if let Some(b) = std::env::var_os("KVMBE_PROVIDER_BASELINE") {
        bins.push(("baseline", b.into(), false));
    }
    let client = Identity::generate().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (label, bin, present_cert) in bins {
        let (mut to_line, mut to_schema) = (Vec::new(), Vec::new());
        for _ in 0..21 {
            let t0 = Instant::now();
            let (mut child, line) = start_as_terraform(&bin, &client);
            let t_line = t0.elapsed();
            let hs = Handshake::parse(&line).unwrap();
            let me = present_cert.then_some(&client);
            let schema = rt.block_on(async {
                let mut c = hs.provider(me).await.unwrap();
                c.get_provider_schema(tfplugin::proto::Empty {})
                    .await
                    .unwrap()
                    .into_inner()
            });
            let t_schema = t0.elapsed();
            assert!(schema.resource_schemas.contains_key("libvirt_domain"));
            to_line.push(t_line);
            to_schema.push(t_schema - t_line);
            child.kill().unwrap();
            child.wait().unwrap();
        }
        println!(
            "{label}: start to handshake median {:?}; handshake to schema median {:?} (min {:?}, max {:?}, 21 starts)",
            median(to_line),
            median(to_schema.clone()),
            to_schema.iter().min().unwrap(),
            to_schema.iter().max().unwrap()
        );
    }
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
    // One script per VM (its volume, seed, define, start in order), run
    // ten at a time like Terraform's default -parallelism=10.
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
        let script = format!(
            "set -e\n{v} vol-create-as {POOL} sh{i}.qcow2 16M --format qcow2 >/dev/null\n\
             {v} vol-create-as {POOL} sh{i}-seed.iso {len} --format raw >/dev/null\n\
             {v} vol-upload --pool {POOL} sh{i}-seed.iso {iso} >/dev/null\n\
             {v} define {xml} >/dev/null\n{v} start sh{i} >/dev/null\n",
            len = iso.len(),
            iso = iso_path.display(),
            xml = xml.display(),
        );
        std::fs::write(work.path().join(format!("vm{i}.sh")), &script).unwrap();
    }
    let t0 = Instant::now();
    let st = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; for i in $(seq 0 {last}); do echo vm$i.sh; done | xargs -P 10 -n 1 bash",
            last = N - 1
        ))
        .current_dir(work.path())
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
        "{N} domains + {N} volumes + {N} seeds: terraform apply {apply:?}, virsh scripts 10 at a time {shell:?}, ratio {:.2} (goal <= 1.3); destroy {destroy:?}",
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

/// Virtual size of the sparse upload benchmark's image.
const IMAGE_SIZE: u64 = 4 << 30;
/// Its data: EXTENTS extents of EXTENT bytes, spread over the image.
const EXTENTS: u64 = 64;
const EXTENT: u64 = 8 << 20;
/// Size of the fully allocated image whose 64 KiB blocks alternate
/// between data and written zeros (no holes for SEEK_HOLE to find).
const DENSE_SIZE: u64 = 512 << 20;
/// Each upload is timed this many times, alternating, and the median kept.
const ROUNDS: usize = 5;

/// Incompressible bytes.
fn noise(x: &mut u64, buf: &mut [u8]) {
    for w in buf.chunks_exact_mut(8) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        w.copy_from_slice(&x.to_ne_bytes());
    }
}

/// A raw image of IMAGE_SIZE bytes holding EXTENTS extents of
/// incompressible data at uneven offsets, the rest holes.
fn sparse_image(path: &std::path::Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(IMAGE_SIZE).unwrap();
    let stride = IMAGE_SIZE / EXTENTS;
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut block = vec![0u8; EXTENT as usize];
    for part in 0..EXTENTS {
        // Extents start at varying 64 KiB-aligned places inside their stride.
        let at = part * stride + (part * 7 % 32) * (64 << 10);
        noise(&mut x, &mut block);
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
}

/// A raw image of DENSE_SIZE bytes, all written: 64 KiB of data, 64 KiB
/// of zeros, and so on, as a filesystem image copied without holes is.
fn dense_image(path: &std::path::Path) {
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let mut content = vec![0u8; DENSE_SIZE as usize];
    for block in content.chunks_exact_mut(128 << 10) {
        noise(&mut x, &mut block[..64 << 10]);
    }
    std::fs::write(path, content).unwrap();
}

/// One timed transfer: wall time, bytes the client sent, and the CPU
/// time of the client processes (less noisy than wall time on a busy
/// machine).
#[derive(Debug, Clone, Copy)]
struct Run {
    time: Duration,
    bytes: u64,
    cpu: Duration,
}

/// User and system time of every child process waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is always valid.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn median_run(runs: &[Run]) -> Run {
    let mut v = runs.to_vec();
    v.sort_by_key(|r| r.time);
    v[v.len() / 2]
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn secs(runs: &[Run]) -> String {
    let v: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.2}", r.time.as_secs_f64()))
        .collect();
    v.join(" ")
}

/// Prints one measured line against virsh's median `v`.
fn report(what: &str, runs: &[Run], r: Run, v: Run) {
    let mut cpu: Vec<Duration> = runs.iter().map(|r| r.cpu).collect();
    cpu.sort();
    println!(
        "  {what:<44} {:>7.3} s {:>8.2} MB sent  throughput ours/virsh {:.2}  bytes ours/virsh {:.3}  client CPU {:.2} s  (runs: {} s)",
        r.time.as_secs_f64(),
        mb(r.bytes),
        v.time.as_secs_f64() / r.time.as_secs_f64(),
        r.bytes as f64 / v.bytes as f64,
        cpu[cpu.len() / 2].as_secs_f64(),
        secs(runs),
    );
}

#[test]
#[ignore = "benchmark"]
fn bench_sparse_upload_over_ssh_against_virsh() {
    let mut lab = testbed::hosts::Lab::new().unwrap();
    lab.add_host("up", true).unwrap();
    let host = &lab.hosts()[0];
    let uri = lab.ssh_uri(host);
    let pool_dir = host.daemon().pool_dir();
    let image =
        std::path::PathBuf::from(format!("/tmp/kvmbe-bench-image-{}.raw", std::process::id()));
    sparse_image(&image);
    let image_s = image.display().to_string();
    let dense =
        std::path::PathBuf::from(format!("/tmp/kvmbe-bench-dense-{}.raw", std::process::id()));
    dense_image(&dense);
    let dense_s = dense.display().to_string();

    let virsh = |args: &[&str]| {
        let mut argv = vec!["virsh", "-q", "-c", uri.as_str()];
        argv.extend_from_slice(args);
        lab.client().run(&argv).unwrap()
    };
    let new_volume = |name: &str, size: u64| {
        virsh(&[
            "vol-create-as",
            POOL,
            name,
            &size.to_string(),
            "--format",
            "raw",
            "--allocation",
            "0",
        ]);
        virsh(&["vol-path", "--pool", POOL, name])
            .trim()
            .to_string()
    };
    let same_as = |source: &str, name: &str| {
        let out = Command::new("cmp")
            .arg(source)
            .arg(pool_dir.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "volume {name} differs from {source}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    let timed = |f: &mut dyn FnMut()| {
        let b0 = tx_bytes(&lab);
        let c0 = children_cpu();
        let t0 = Instant::now();
        f();
        let time = t0.elapsed();
        let cpu = children_cpu() - c0;
        Run {
            time,
            bytes: tx_bytes(&lab) - b0,
            cpu,
        }
    };
    // `virsh vol-upload --sparse`, process start and connection included.
    let by_virsh = |source: &str, size: u64, check: bool| {
        new_volume("virsh.raw", size);
        let run = timed(&mut || {
            virsh(&[
                "vol-upload",
                "--sparse",
                "--pool",
                POOL,
                "virsh.raw",
                source,
            ]);
        });
        if check {
            same_as(source, "virsh.raw");
        }
        virsh(&["vol-delete", "--pool", POOL, "virsh.raw"]);
        run
    };
    // kvmhost's upload in a process of its own, like virsh's; returns the
    // upload's own time too (connection excluded).
    let bed_upload = bin_dir().join("bed-upload").display().to_string();
    let by_kvmhost = |source: &str, size: u64, data: u64, check: bool| {
        let key = new_volume("ours.raw", size);
        let mut line = String::new();
        let run = timed(&mut || {
            line = lab
                .client()
                .run(&[&bed_upload, &uri, &key, source])
                .unwrap();
        });
        let field = |name: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {name} in bed-upload's output: {line}"))
                .parse()
                .unwrap()
        };
        assert_eq!(field("data_bytes") as u64, data, "{line}");
        if check {
            same_as(source, "ours.raw");
        }
        virsh(&["vol-delete", "--pool", POOL, "ours.raw"]);
        (run, Duration::from_secs_f64(field("upload_s")))
    };

    let tf = terraforms()
        .unwrap()
        .into_iter()
        .find(|t| t.version == "1.11")
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let cli = dev_overrides_config(work.path()).unwrap();
    let main_tf = |content: &str| {
        std::fs::write(
            work.path().join("main.tf"),
            format!(
                "terraform {{\n  required_providers {{\n    libvirt = {{\n      source = \"{PROVIDER_SOURCE}\"\n    }}\n  }}\n}}\n\n\
                 provider \"libvirt\" {{\n  uri = \"{uri}\"\n}}\n\n\
                 resource \"libvirt_volume\" \"image\" {{\n  name   = \"tf.raw\"\n  pool   = \"{POOL}\"\n  {content}\n}}\n"
            ),
        )
        .unwrap();
    };
    let terraform = |args: &[&str]| {
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

    let (mut virsh_runs, mut ours_runs, mut tf_runs, mut empty_runs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut dense_virsh, mut dense_ours) = (Vec::new(), Vec::new());
    let mut ours_inner = Vec::new();
    for round in 0..ROUNDS {
        let check = round == 0;
        // Who goes first alternates, so neither always meets a cold host.
        for virsh_now in [round % 2 == 0, round % 2 == 1] {
            if virsh_now {
                virsh_runs.push(by_virsh(&image_s, IMAGE_SIZE, check));
                dense_virsh.push(by_virsh(&dense_s, DENSE_SIZE, check));
            } else {
                let (run, inner) = by_kvmhost(&image_s, IMAGE_SIZE, EXTENTS * EXTENT, check);
                ours_runs.push(run);
                ours_inner.push(inner);
                // Half the dense image is zero blocks, which are not sent.
                dense_ours.push(by_kvmhost(&dense_s, DENSE_SIZE, DENSE_SIZE / 2, check).0);
            }
        }
        // The whole apply, then the same apply with no source: the
        // difference is the upload plus reading the source for its checksum.
        main_tf(&format!("source = \"{image_s}\""));
        tf_runs.push(timed(&mut || {
            terraform(&["apply", "-auto-approve", "-no-color"])
        }));
        if check {
            same_as(&image_s, "tf.raw");
        }
        terraform(&["destroy", "-auto-approve", "-no-color"]);
        main_tf(&format!("size   = {IMAGE_SIZE}"));
        empty_runs.push(timed(&mut || {
            terraform(&["apply", "-auto-approve", "-no-color"])
        }));
        terraform(&["destroy", "-auto-approve", "-no-color"]);
    }
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_file(&dense);

    let v = median_run(&virsh_runs);
    println!(
        "sparse upload over qemu+libssh, median of {ROUNDS} (client namespace's eth0 tx bytes; goal: throughput >= 0.9, bytes <= 1.0)"
    );
    println!(
        "a {} GiB raw image holding {} MiB of data in {EXTENTS} extents, the rest holes:",
        IMAGE_SIZE >> 30,
        (EXTENTS * EXTENT) >> 20
    );
    report("virsh vol-upload --sparse (process)", &virsh_runs, v, v);
    report(
        "kvmhost upload_file (bed-upload process)",
        &ours_runs,
        median_run(&ours_runs),
        v,
    );
    println!(
        "  {:<44} {:>7.3} s (connection excluded)",
        "kvmhost upload_file (inside bed-upload)",
        median(ours_inner).as_secs_f64()
    );
    // Each round's apply minus that round's sourceless apply.
    let diffs: Vec<Run> = tf_runs
        .iter()
        .zip(&empty_runs)
        .map(|(t, e)| Run {
            time: t.time.saturating_sub(e.time),
            bytes: t.bytes.saturating_sub(e.bytes),
            cpu: t.cpu.saturating_sub(e.cpu),
        })
        .collect();
    report(
        "terraform apply minus apply without source",
        &diffs,
        median_run(&diffs),
        v,
    );
    println!(
        "  (terraform apply with source: {} s; without: {} s)",
        secs(&tf_runs),
        secs(&empty_runs)
    );
    println!(
        "a fully written {} MiB raw image, 64 KiB blocks alternating data and zeros:",
        DENSE_SIZE >> 20
    );
    let dv = median_run(&dense_virsh);
    report("virsh vol-upload --sparse (process)", &dense_virsh, dv, dv);
    report(
        "kvmhost upload_file (bed-upload process)",
        &dense_ours,
        median_run(&dense_ours),
        dv,
    );
}

/// The bench's HCL for provider `source`: `N` volumes, seeds and domains
/// named `<prefix><i>`; valid for ours and for dmacvicar/libvirt 0.8.3.
/// The kernel command line is one map per word: 0.8.3 reads it back so
/// and would otherwise plan to replace every domain.
fn side_by_side_hcl(source: &str, uri: &str, g: &TinyGuest, prefix: &str) -> String {
    let cmdline = g
        .cmdline
        .split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => format!("{{ \"{k}\" = \"{v}\" }}"),
            None => format!("{{ \"_\" = \"{w}\" }}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r##"terraform {{
  required_providers {{
    libvirt = {{
      source = "{source}"
    }}
  }}
}}

provider "libvirt" {{
  uri = "{uri}"
}}

resource "libvirt_volume" "disk" {{
  count  = {N}
  name   = "{prefix}${{count.index}}.qcow2"
  pool   = "{POOL}"
  size   = 16777216
  format = "qcow2"
}}

resource "libvirt_cloudinit_disk" "seed" {{
  count     = {N}
  name      = "{prefix}${{count.index}}-seed.iso"
  pool      = "{POOL}"
  user_data = "#cloud-config\n"
  meta_data = "instance-id: {prefix}${{count.index}}\n"
}}

resource "libvirt_domain" "vm" {{
  count     = {N}
  name      = "{prefix}${{count.index}}"
  type      = "qemu"
  memory    = 256
  vcpu      = 1
  kernel    = "{k}"
  initrd    = "{r}"
  cmdline   = [{cmdline}]
  cloudinit = libvirt_cloudinit_disk.seed[count.index].id

  disk {{
    volume_id = libvirt_volume.disk[count.index].id
  }}

  network_interface {{
    network_name = "{NETWORK}"
  }}
}}
"##,
        k = g.kernel.display(),
        r = g.initrd.display(),
    )
}

/// Apply, empty plan and destroy of the side-by-side HCL through `tf`.
fn timed_cycle(tf: &testbed::terraform::TfProject, d: &Libvirtd, prefix: &str) -> [Duration; 3] {
    let t0 = Instant::now();
    tf.apply();
    let apply = t0.elapsed();
    let ours = d
        .domains()
        .unwrap()
        .iter()
        .filter(|n| n.starts_with(prefix))
        .count();
    assert_eq!(ours, N, "{prefix}: {N} domains");
    let t0 = Instant::now();
    let (code, plan) = tf.plan_code();
    let plan_time = t0.elapsed();
    assert_eq!(code, 0, "{prefix}: the plan after apply is empty:\n{plan}");
    let t0 = Instant::now();
    tf.destroy();
    let destroy = t0.elapsed();
    assert!(!d.domains().unwrap().iter().any(|n| n.starts_with(prefix)));
    [apply, plan_time, destroy]
}

#[test]
#[ignore = "benchmark"]
fn bench_side_by_side_against_dmacvicar_0_8_3() {
    use testbed::peers::{dmacvicar_mirror_config, DMACVICAR_SOURCE, DMACVICAR_VERSION};
    use testbed::terraform::{terraform, TfProject};
    let g = TinyGuest::ensure().unwrap();
    let d = Libvirtd::start().unwrap();

    // Theirs first, then ours, on the same daemon, Terraform 1.11 both.
    let theirs = TfProject::new(terraform("1.11").unwrap()).unwrap();
    let cli = dmacvicar_mirror_config(theirs.dir(), DMACVICAR_VERSION).unwrap();
    let theirs = theirs.with_cli_config(cli);
    theirs.write_main(&side_by_side_hcl(DMACVICAR_SOURCE, &d.uri(), &g, "dm"));
    theirs.ok(&["init", "-no-color"]);
    let dm = timed_cycle(&theirs, &d, "dm");

    let ours = TfProject::new(terraform("1.11").unwrap()).unwrap();
    ours.write_main(&side_by_side_hcl(PROVIDER_SOURCE, &d.uri(), &g, "kv"));
    let kv = timed_cycle(&ours, &d, "kv");

    println!("{N} domains + {N} volumes + {N} seeds, Terraform 1.11, -parallelism=10:");
    for (i, what) in ["apply", "empty plan", "destroy"].iter().enumerate() {
        println!(
            "  {what:<11} ours {:>8.2} s  dmacvicar {DMACVICAR_VERSION} {:>8.2} s  ratio ours/theirs {:.2} (goal <= 0.5)",
            kv[i].as_secs_f64(),
            dm[i].as_secs_f64(),
            kv[i].as_secs_f64() / dm[i].as_secs_f64()
        );
    }
}

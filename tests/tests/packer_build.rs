//! The real Packer 1.6.6 loads our `libvirt` builder and builds an image
//! from the tiny root-disk guest on the namespaced libvirtd, with a JSON
//! and an HCL2 template: `file` provisioners upload a file and a folder and
//! download a file, a `shell` provisioner writes a marker, `shell-local`
//! runs on the host; the artifact boots and the marker is there.
//! A failing provisioner fails the build; cancelling leaves nothing behind;
//! an ISO source is checksummed, attached as a CD, and the boot command typed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testbed::util::{poll_until, wait_until, OutputWithin, COMMAND_LIMIT};

use kvmhost::libvirt::address::{AddressWait, Family};
use kvmhost::libvirt::domain::AddressSource;
use kvmhost::libvirt::Host;
use testbed::guest::TinyGuest;
use testbed::libvirtd::{Libvirtd, NETWORK, POOL};
use testbed::packer::{
    hcl_attributes, packer_in, show, spawn_interruptible, tiny_guest_source, workdir,
};

const MARKER: &str = "built-by-packer-libvirt";

/// Appends a word to the kernel command line of the build domain.
const XSLT: &str = r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy></xsl:template>
  <xsl:template match="/domain/os/cmdline/text()"><xsl:value-of select="concat(., ' kvmbe.xslt=1')"/></xsl:template>
</xsl:stylesheet>
"#;

/// `packer ARGS` inside the daemon's namespace (guests are reachable only
/// there).
fn packer(bed: &Libvirtd, dir: &Path, args: &[&str]) -> Command {
    packer_in(bed.netns(), dir, args).unwrap()
}

struct Template {
    vm_name: String,
    output: PathBuf,
}

fn vars(
    bed: &Libvirtd,
    guest: &TinyGuest,
    dir: &Path,
    name: &str,
) -> (Template, serde_json::Value) {
    let vm_name = format!("pk-{name}-{}", std::process::id());
    let output = dir.join("output");
    let upload = dir.join("upload.txt");
    std::fs::write(&upload, "uploaded by the file provisioner\n").unwrap();
    std::fs::create_dir_all(dir.join("tree/sub")).unwrap();
    std::fs::write(dir.join("tree/a.txt"), "tree a\n").unwrap();
    std::fs::write(dir.join("tree/sub/b.txt"), "tree b\n").unwrap();
    let v = serde_json::Value::Object(tiny_guest_source(bed, guest, &vm_name, &output));
    (Template { vm_name, output }, v)
}

fn json_template(builder: &serde_json::Value, dir: &Path, shell: &str) -> PathBuf {
    let t = serde_json::json!({
        "builders": [ { "type": "libvirt" } ],
        "provisioners": [
            { "type": "file", "source": dir.join("upload.txt").display().to_string(), "destination": "/root/upload.txt" },
            { "type": "file", "source": format!("{}/", dir.join("tree").display()), "destination": "/root/tree" },
            { "type": "shell", "inline": [shell] },
            { "type": "file", "direction": "download", "source": "/root/marker", "destination": dir.join("downloaded-marker").display().to_string() },
            { "type": "shell-local", "inline": [format!("echo local > {}", dir.join("local.txt").display())] }
        ]
    });
    let mut t = t;
    for (k, v) in builder.as_object().unwrap() {
        t["builders"][0][k] = v.clone();
    }
    let path = dir.join("template.json");
    std::fs::write(&path, serde_json::to_string_pretty(&t).unwrap()).unwrap();
    path
}

fn hcl_template(builder: &serde_json::Value, dir: &Path, shell: &str) -> PathBuf {
    let body = hcl_attributes(builder.as_object().unwrap());
    let t = format!(
        "source \"libvirt\" \"tiny\" {{\n{body}}}\n\nbuild {{\n  sources = [\"source.libvirt.tiny\"]\n  provisioner \"file\" {{\n    source = \"{}\"\n    destination = \"/root/upload.txt\"\n  }}\n  provisioner \"shell\" {{\n    inline = [{}]\n  }}\n  provisioner \"shell-local\" {{\n    inline = [\"echo build-host=${{build.Host}} id=${{build.ID}}\"]\n  }}\n}}\n",
        dir.join("upload.txt").display(),
        serde_json::Value::from(shell)
    );
    let path = dir.join("template.pkr.hcl");
    std::fs::write(&path, t).unwrap();
    path
}

/// Boots the built image under libvirt and reads the marker over SSH.
fn boot_and_read_marker(bed: &Libvirtd, guest: &TinyGuest, image: &Path, name: &str) -> String {
    let disk = bed.pool_dir().join(format!("{name}-check.qcow2"));
    std::fs::copy(image, &disk).unwrap();
    let _ = bed.virsh(&["pool-refresh", POOL]);
    let xml = format!(
        "<domain type='qemu'><name>{name}-check</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type><kernel>{}</kernel><initrd>{}</initrd><cmdline>{}</cmdline></os>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>\
         <interface type='network'><source network='{NETWORK}'/><mac address='52:54:00:aa:bb:01'/><model type='virtio'/></interface>\
         <serial type='pty'/></devices></domain>",
        guest.kernel.display(),
        guest.root_initrd.display(),
        guest.root_cmdline,
        disk.display()
    );
    let xml_path = bed.dir().join(format!("{name}-check.xml"));
    std::fs::write(&xml_path, xml).unwrap();
    bed.virsh(&["create", &xml_path.to_string_lossy()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let host = Host::open(&bed.uri()).unwrap();
    let ip = host
        .wait_for_addresses(&AddressWait {
            domain: format!("{name}-check"),
            macs: vec!["52:54:00:aa:bb:01".into()],
            source: AddressSource::Lease,
            family: Family::Ipv4,
            deadline,
        })
        .expect("the built image got no address")
        .remove(0);
    // The last refusal, for the failure if none succeeds.
    let mut refused = Vec::new();
    let read = poll_until(deadline.saturating_duration_since(Instant::now()), || {
        let out = bed
            .netns()
            .cmd("ssh")
            .args(["-i", &guest.ssh_key.to_string_lossy()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=3",
                "-o",
                "BatchMode=yes",
            ])
            .arg(format!("root@{ip}"))
            .arg("cat /root/marker /root/upload.txt && { cat /root/tree/a.txt /root/tree/sub/b.txt 2>/dev/null; true; }")
            .stdin(Stdio::null())
            .output_within(COMMAND_LIMIT)
            .unwrap();
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        refused = out.stderr;
        None
    })
    .unwrap_or_else(|| {
        panic!(
            "no SSH to the built image: {}",
            String::from_utf8_lossy(&refused)
        )
    });
    let _ = bed.virsh(&["destroy", &format!("{name}-check")]);
    let _ = std::fs::remove_file(&disk);
    read
}

/// True when libvirt says domain `name` runs.
fn running(bed: &Libvirtd, name: &str) -> bool {
    bed.virsh(&["domstate", name])
        .unwrap_or_default()
        .contains("running")
}

fn assert_nothing_left(bed: &Libvirtd, vm_name: &str) {
    let domains = bed.domains().unwrap();
    assert!(
        !domains.iter().any(|d| d.starts_with(vm_name)),
        "domains left: {domains:?}"
    );
    let vols = bed.volumes(POOL).unwrap();
    assert!(
        !vols.iter().any(|v| v.starts_with(vm_name)),
        "volumes left: {vols:?}"
    );
}

fn build_and_check(kind: &str) {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir(kind).unwrap();
    let (t, v) = vars(&bed, &guest, &dir, kind);
    let shell = format!("echo {MARKER} > /root/marker && test -s /root/upload.txt");
    let template = if kind == "json" {
        // The seed CD: the guest takes its hostname from meta-data, here
        // made by the template engine from a user variable and a function.
        let mut v = v.clone();
        v["cd_content"] = serde_json::json!({
            "meta-data": "local-hostname: {{user `host_prefix`}}-{{ build_type | lower }}\n",
            "user-data": "#cloud-config\n"
        });
        // Options given through variables, as JSON templates do.
        let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(&guest.root_disk).unwrap(),
        ));
        let variables = serde_json::json!({
            "vm_name": t.vm_name, "memory": "256", "image_sha256": sum, "host_prefix": "PK-Seeded"
        });
        v["vm_name"] = serde_json::json!("{{user `vm_name`}}");
        v["memory"] = serde_json::json!("{{user `memory`}}");
        v["iso_checksum"] = serde_json::json!("sha256:{{user `image_sha256`}}");
        let shell = format!("{shell} && hostname >> /root/marker");
        let path = json_template(&v, &dir, &shell);
        let mut t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        t["variables"] = variables;
        std::fs::write(&path, serde_json::to_string_pretty(&t).unwrap()).unwrap();

        // A template the engine cannot read is refused, naming the option.
        let mut broken = t.clone();
        broken["builders"][0]["memory"] = serde_json::json!("{{user `memory`");
        let broken_path = dir.join("broken.json");
        std::fs::write(&broken_path, serde_json::to_string_pretty(&broken).unwrap()).unwrap();
        let out = packer(&bed, &dir, &["validate", &broken_path.to_string_lossy()])
            .output_within(COMMAND_LIMIT)
            .unwrap();
        let text = show("packer validate (broken template)", &out);
        assert!(!out.status.success());
        assert!(text.contains("memory: template: unclosed action"), "{text}");
        let out = packer(&bed, &dir, &["validate", &path.to_string_lossy()])
            .output_within(COMMAND_LIMIT)
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            show("packer validate (json)", &out)
        );
        path
    } else {
        // domain_xslt: the stylesheet's change reaches the guest.
        let mut v = v.clone();
        v["domain_xslt"] = serde_json::json!(XSLT);
        // The address from the guest agent, the power-off by ACPI button.
        v["address_source"] = serde_json::json!("agent");
        v.as_object_mut().unwrap().remove("shutdown_command");
        let shell = format!("{shell} && grep -q kvmbe.xslt=1 /proc/cmdline");
        hcl_template(&v, &dir, &shell)
    };
    let t0 = Instant::now();
    let out = packer(&bed, &dir, &["build", &template.to_string_lossy()])
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show(&format!("packer build ({kind})"), &out);
    eprintln!(
        "packer build ({kind}) took {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "packer build failed");
    assert!(text.contains("Connected to SSH!"), "{text}");
    if kind == "hcl" {
        // Provisioners see the build's generated variables.
        assert!(text.contains("build-host=10.78.0."), "{text}");
        assert!(text.contains(&format!("id={}", t.vm_name)), "{text}");
    }
    let image = t.output.join(format!("{}.qcow2", t.vm_name));
    let sums = std::fs::read_to_string(t.output.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("{}.qcow2", t.vm_name)), "{sums}");
    assert_nothing_left(&bed, &t.vm_name);
    let read = boot_and_read_marker(&bed, &guest, &image, &t.vm_name);
    assert!(read.contains(MARKER), "marker missing: {read}");
    assert!(read.contains("uploaded by the file provisioner"), "{read}");
    if kind == "json" {
        // The guest read the seed CD.
        assert!(read.contains("PK-Seeded-libvirt"), "{read}");
        // UploadDir, Download and shell-local ran too.
        assert!(read.contains("tree a") && read.contains("tree b"), "{read}");
        let downloaded = std::fs::read_to_string(dir.join("downloaded-marker")).unwrap();
        assert!(downloaded.starts_with(MARKER), "{downloaded}");
        assert!(dir.join("local.txt").is_file(), "shell-local did not run");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_json_template_builds_an_image_that_boots_with_the_provisioned_marker() {
    build_and_check("json");
}

#[test]
fn an_hcl2_template_builds_an_image_that_boots_with_the_provisioned_marker() {
    build_and_check("hcl");
}

#[test]
fn a_failing_shell_provisioner_fails_the_build_and_leaves_nothing() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("fail").unwrap();
    let (t, v) = vars(&bed, &guest, &dir, "fail");
    let template = json_template(&v, &dir, "echo about to fail; exit 7");
    let out = packer(&bed, &dir, &["build", &template.to_string_lossy()])
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build (failing shell)", &out);
    assert!(!out.status.success());
    assert!(
        text.contains("exit status 7") || text.contains("non-zero exit status: 7"),
        "{text}"
    );
    assert!(!t.output.exists(), "no output on failure");
    assert_nothing_left(&bed, &t.vm_name);

    // -on-error=abort keeps the domain and its disk for inspection.
    let out = packer(
        &bed,
        &dir,
        &["build", "-on-error=abort", &template.to_string_lossy()],
    )
    .output_within(COMMAND_LIMIT)
    .unwrap();
    let text = show("packer build -on-error=abort (failing shell)", &out);
    assert!(!out.status.success());
    assert!(text.contains("keeps domain"), "{text}");
    assert!(bed.domains().unwrap().contains(&t.vm_name));
    assert!(bed
        .volumes(POOL)
        .unwrap()
        .iter()
        .any(|v| v.starts_with(&t.vm_name)));

    // -on-error=ask with no terminal to ask on cleans up.
    let mut v = v.clone();
    let asked = format!("{}-ask", t.vm_name);
    v["vm_name"] = serde_json::json!(asked);
    let template = json_template(&v, &dir, "exit 7");
    let out = packer(
        &bed,
        &dir,
        &["build", "-on-error=ask", &template.to_string_lossy()],
    )
    .stdin(Stdio::null())
    .output_within(COMMAND_LIMIT)
    .unwrap();
    let text = show("packer build -on-error=ask (no terminal)", &out);
    assert!(!out.status.success());
    assert!(text.contains("exit status: 7"), "{text}");
    assert_nothing_left(&bed, &asked);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cancelling_during_the_build_leaves_no_domain_or_volume() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("cancel").unwrap();
    let (t, v) = vars(&bed, &guest, &dir, "cancel");
    // A provisioner that would keep the build going for minutes.
    let template = json_template(&v, &dir, "sleep 120");
    let cmd = packer(&bed, &dir, &["build", &template.to_string_lossy()]);
    let child = spawn_interruptible(cmd).unwrap();
    // Interrupted once its VM runs, the build is under way and has a
    // running domain and its volumes for the cleanup to remove.
    wait_until(
        Duration::from_secs(120),
        "the build domain running",
        || format!("the build domain never ran; domains: {:?}", bed.domains()),
        || running(&bed, &t.vm_name).then_some(()),
    );
    testbed::util::signal(-(child.id() as i32), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let text = show("packer build (cancelled)", &out);
    assert!(!out.status.success());
    assert!(
        text.to_lowercase().contains("cancel") || text.contains("interrupt"),
        "{text}"
    );
    assert_nothing_left(&bed, &t.vm_name);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_iso_source_is_verified_attached_as_a_cd_and_the_boot_command_is_typed() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("iso").unwrap();
    // The "installer": a CD whose script powers the guest off, which only
    // happens if the guest found the CD the builder attached.
    let iso = kvmhost::nocloud::Seed::nocloud(
        "#!/bin/sh\necho installed\npoweroff\n",
        "instance-id: iso\n",
        None,
    )
    .to_iso()
    .unwrap();
    let iso_path = dir.join("install.iso");
    std::fs::write(&iso_path, &iso).unwrap();
    let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&iso));
    let vm_name = format!("pk-iso-{}", std::process::id());
    let t = serde_json::json!({
        "builders": [{
            "type": "libvirt",
            "libvirt_uri": bed.uri(),
            "pool": POOL,
            "network": NETWORK,
            "vm_name": vm_name,
            "iso_url": iso_path.display().to_string(),
            "iso_checksum": format!("sha256:{sum}"),
            "disk_size": "32M",
            "accelerator": "qemu",
            "memory": 256,
            "kernel": guest.kernel.display().to_string(),
            "initrd": guest.initrd.display().to_string(),
            "kernel_args": guest.cmdline,
            "boot_wait": "1s",
            "boot_command": ["<enter><wait>echo typed<enter>"],
            "communicator": "none",
            "shutdown_timeout": "90s",
            "output_directory": dir.join("out").display().to_string()
        }]
    });
    let path = dir.join("iso.json");
    std::fs::write(&path, serde_json::to_string_pretty(&t).unwrap()).unwrap();
    let out = packer(&bed, &dir, &["build", &path.to_string_lossy()])
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build (iso)", &out);
    assert!(out.status.success(), "iso build failed");
    assert!(text.contains("Typing the boot command"), "{text}");
    assert!(dir.join(format!("out/{vm_name}.qcow2")).is_file());
    assert_nothing_left(&bed, &vm_name);

    // The output folder exists now: a second build stops at once...
    let out = packer(&bed, &dir, &["build", &path.to_string_lossy()])
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build (iso, output exists)", &out);
    assert!(!out.status.success());
    assert!(
        text.contains("output_directory:") && text.contains("-force"),
        "{text}"
    );
    // ...unless forced, which replaces it.
    let out = packer(&bed, &dir, &["build", "-force", &path.to_string_lossy()])
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build -force (iso)", &out);
    assert!(out.status.success(), "{text}");
    assert!(dir.join(format!("out/{vm_name}.qcow2")).is_file());

    // A wrong checksum stops the build before anything is made.
    let mut bad = t.clone();
    bad["builders"][0]["iso_checksum"] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    bad["builders"][0]["output_directory"] =
        serde_json::json!(dir.join("out2").display().to_string());
    std::fs::write(&path, serde_json::to_string_pretty(&bad).unwrap()).unwrap();
    let out = packer(&bed, &dir, &["build", &path.to_string_lossy()])
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build (bad checksum)", &out);
    assert!(!out.status.success());
    assert!(
        text.contains("iso_checksum:") && text.contains(&sum),
        "{text}"
    );
    assert_nothing_left(&bed, &vm_name);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tiny guest's kernel boots only from BIOS-style direct boot, so this
/// checks what UEFI changes on the host side: libvirt accepts and starts
/// the domain with OVMF and a per-build variables file, and the builder
/// removes both when the build ends (here by the shutdown timeout).
#[test]
fn an_efi_domain_is_accepted_started_under_ovmf_and_removed() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("efi").unwrap();
    let vm_name = format!("pk-efi-{}", std::process::id());
    let t = serde_json::json!({
        "builders": [{
            "type": "libvirt",
            "libvirt_uri": bed.uri(),
            "pool": POOL,
            "network": NETWORK,
            "vm_name": vm_name,
            "efi_boot": true,
            "machine_type": "q35",
            "disk_size": "32M",
            "accelerator": "qemu",
            "memory": 256,
            "kernel": guest.kernel.display().to_string(),
            "initrd": guest.initrd.display().to_string(),
            "kernel_args": guest.cmdline,
            "communicator": "none",
            "shutdown_timeout": "3s",
            "output_directory": dir.join("out").display().to_string()
        }]
    });
    let path = dir.join("efi.json");
    std::fs::write(&path, serde_json::to_string_pretty(&t).unwrap()).unwrap();
    let child = packer(&bed, &dir, &["build", &path.to_string_lossy()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let xml = wait_until(
        Duration::from_secs(60),
        "the EFI domain running",
        || format!("the EFI domain never ran; domains: {:?}", bed.domains()),
        || {
            let x = bed.virsh(&["dumpxml", &vm_name]).ok()?;
            (x.contains("state='running'") || running(&bed, &vm_name)).then_some(x)
        },
    );
    assert!(
        xml.contains("OVMF_CODE.fd") && xml.contains(&format!("{vm_name}_VARS.fd")),
        "{xml}"
    );
    let out = child.wait_with_output().unwrap();
    let text = show("packer build (efi)", &out);
    assert!(text.contains("shutdown_timeout:"), "{text}");
    assert_nothing_left(&bed, &vm_name);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The real Packer 1.6.6 validates every `examples/packer-*` template with
//! our plugin, and reports bad configurations the way users see them:
//! HCL2 type errors from Packer itself (through our `ConfigSpec`), and our
//! own errors, all at once, each naming its option.

use std::path::{Path, PathBuf};
use std::process::Output;

use testbed::packer::show;
use testbed::tools;

fn packer(dir: &Path, args: &[&str]) -> Output {
    let out = tools::packer(dir).unwrap().args(args).output().unwrap();
    show(&format!("packer {}", args.join(" ")), &out);
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn example_templates() -> Vec<PathBuf> {
    let root = testbed::util::workspace_root().join("examples");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("packer-") {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let n = f.to_string_lossy();
            if n.ends_with(".pkr.hcl") || n.ends_with(".json") {
                found.push(f);
            }
        }
    }
    found
}

#[test]
fn every_packer_example_validates_with_our_plugin() {
    let templates = example_templates();
    assert!(!templates.is_empty(), "no examples/packer-* templates");
    let work = tempfile::tempdir().unwrap();
    for t in templates {
        let out = packer(work.path(), &["validate", &t.to_string_lossy()]);
        assert!(out.status.success(), "{} does not validate", t.display());
    }
}

#[test]
fn hcl2_type_errors_come_from_packer_and_ours_name_every_option() {
    let work = tempfile::tempdir().unwrap();
    let t = work.path().join("bad.pkr.hcl");
    std::fs::write(
        &t,
        "source \"libvirt\" \"x\" {\n  memory = \"lots\"\n}\nbuild {\n  sources = [\"source.libvirt.x\"]\n}\n",
    )
    .unwrap();
    let out = packer(work.path(), &["validate", &t.to_string_lossy()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("a number is required"),
        "Packer's own HCL2 type check"
    );

    std::fs::write(
        &t,
        "source \"libvirt\" \"x\" {\n  nonsense = 1\n}\nbuild {\n  sources = [\"source.libvirt.x\"]\n}\n",
    )
    .unwrap();
    let out = packer(work.path(), &["validate", &t.to_string_lossy()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Unsupported argument"),
        "unknown HCL2 attributes are Packer's errors"
    );

    std::fs::write(
        &t,
        "source \"libvirt\" \"x\" {\n  memory = \"4096\"\n  accelerator = \"hyperv\"\n  format = \"vmdk\"\n}\nbuild {\n  sources = [\"source.libvirt.x\"]\n}\n",
    )
    .unwrap();
    let out = packer(work.path(), &["validate", &t.to_string_lossy()]);
    let all = text(&out);
    assert!(!out.status.success());
    for field in ["accelerator:", "format:", "iso_url:", "ssh_username:"] {
        assert!(all.contains(field), "{field} missing from:\n{all}");
    }
    assert!(
        !all.contains("memory:"),
        "\"4096\" converts to a number: {all}"
    );
}

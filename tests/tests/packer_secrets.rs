//! A real Packer 1.6.6 build prints none of the template's secrets: the
//! shutdown command (which may pipe a password to sudo), `ssh_password`,
//! and sensitive variables are masked as `<sensitive>`.

use testbed::guest::TinyGuest;
use testbed::libvirtd::Libvirtd;
use testbed::packer::{packer_in, show, tiny_guest_source, workdir};
use testbed::util::{OutputWithin, COMMAND_LIMIT};

const SECRET: &str = "s3cr3t-Pw-4711";
/// Written into the template as is: only the builder knows it is secret.
const LITERAL: &str = "literal-Pw-0815";

#[test]
fn a_build_masks_the_shutdown_command_and_sensitive_variables() {
    let bed = Libvirtd::start().unwrap();
    let guest = TinyGuest::ensure().unwrap();
    let dir = workdir("secrets").unwrap();
    let vm_name = format!("pk-secrets-{}", std::process::id());
    let mut builder = tiny_guest_source(&bed, &guest, &vm_name, &dir.join("output"));
    builder.insert("type".into(), "libvirt".into());
    builder.insert("ssh_password".into(), LITERAL.into());
    builder.insert(
        "shutdown_command".into(),
        format!("echo '{{{{user `pw`}}}}' '{LITERAL}' >/dev/null; poweroff").into(),
    );
    let template = serde_json::json!({
        "variables": { "pw": SECRET },
        "sensitive-variables": ["pw"],
        "builders": [builder],
        "provisioners": [
            { "type": "shell", "inline": ["echo the password is {{user `pw`}}"] }
        ]
    });
    let path = dir.join("template.json");
    std::fs::write(&path, serde_json::to_string_pretty(&template).unwrap()).unwrap();
    let out = packer_in(bed.netns(), &dir, &["build", &path.to_string_lossy()])
        .unwrap()
        .output_within(COMMAND_LIMIT)
        .unwrap();
    let text = show("packer build (secrets)", &out);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "packer build failed");
    assert!(!text.contains(SECRET), "the secret was printed:\n{text}");
    assert!(
        !text.contains(LITERAL),
        "the shutdown command was printed:\n{text}"
    );
    assert!(text.contains("the password is <sensitive>"), "{text}");
    assert!(text.contains("Running the shutdown_command"), "{text}");
}

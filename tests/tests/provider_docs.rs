//! The provider's docs follow the Terraform registry layout: a page for
//! every resource and data source the provider serves, each with an
//! example that `terraform fmt -check` accepts.

use std::io::Write;
use std::process::{Command, Stdio};

use testbed::terraform::required_providers;
use testbed::tools::dev_overrides_config;
use testbed::util::workspace_root;

fn blocks(md: &str) -> Vec<String> {
    md.split("```terraform\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn every_docs_example_is_terraform_fmt_clean() {
    let docs = workspace_root().join("provider/docs");
    let mut pages = vec![docs.join("index.md")];
    for sub in ["resources", "data-sources"] {
        for e in std::fs::read_dir(docs.join(sub)).unwrap() {
            pages.push(e.unwrap().path());
        }
    }
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let examples = blocks(&text);
        assert!(!examples.is_empty(), "{} has no example", page.display());
        for ex in examples {
            let mut child = Command::new("terraform")
                .args(["fmt", "-check", "-"])
                .env("CHECKPOINT_DISABLE", "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(ex.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}: not fmt-clean:\n{ex}",
                page.display()
            );
        }
    }
}

#[test]
fn every_resource_and_data_source_has_a_page() {
    let work = tempfile::tempdir().unwrap();
    let cli = dev_overrides_config(work.path()).unwrap();
    std::fs::write(work.path().join("main.tf"), required_providers()).unwrap();
    let out = Command::new("terraform")
        .args(["providers", "schema", "-json"])
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
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let provider = schema["provider_schemas"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    let docs = workspace_root().join("provider/docs");
    for (kind, dir) in [
        ("resource_schemas", "resources"),
        ("data_source_schemas", "data-sources"),
    ] {
        let names: Vec<&String> = provider[kind].as_object().unwrap().keys().collect();
        assert!(!names.is_empty());
        for name in names {
            let page = docs
                .join(dir)
                .join(format!("{}.md", name.trim_start_matches("libvirt_")));
            assert!(page.exists(), "{} is missing", page.display());
        }
    }
}

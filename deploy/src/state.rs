//! Which builds a Terraform root's state uses, read from
//! `terraform show -json` (Terraform and OpenTofu print the same shape):
//! every attribute or output whose value is a path to a file under an
//! image folder's `builds/<timestamp>/` (or `builds/latest/`) counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::parse_utc;

/// The part of `terraform show -json` that holds values. A root that was
/// never applied prints only `format_version`, so everything is optional.
#[derive(Debug, Default, Deserialize)]
pub struct ShowJson {
    #[serde(default)]
    values: Option<StateValues>,
}

#[derive(Debug, Default, Deserialize)]
struct StateValues {
    #[serde(default)]
    outputs: BTreeMap<String, OutputValue>,
    #[serde(default)]
    root_module: Module,
}

#[derive(Debug, Default, Deserialize)]
struct OutputValue {
    #[serde(default)]
    value: serde_json::Value,
}

#[derive(Debug, Default, Deserialize)]
struct Module {
    #[serde(default)]
    resources: Vec<Resource>,
    #[serde(default)]
    child_modules: Vec<Module>,
}

/// A managed resource or a data source; `values` are its attributes,
/// nested blocks included.
#[derive(Debug, Default, Deserialize)]
struct Resource {
    #[serde(default)]
    values: serde_json::Value,
}

impl ShowJson {
    /// Parses the output of `terraform show -json`.
    pub fn parse(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Every string among the resources' attributes and the outputs.
    fn strings(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let Some(v) = &self.values else {
            return out;
        };
        let mut modules = vec![&v.root_module];
        while let Some(m) = modules.pop() {
            for r in &m.resources {
                collect_strings(&r.values, &mut out);
            }
            modules.extend(&m.child_modules);
        }
        for o in v.outputs.values() {
            collect_strings(&o.value, &mut out);
        }
        out
    }
}

/// Builds in use, by image folder (canonical path).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// Image folder to the builds of it that the state names.
    pub by_image: BTreeMap<PathBuf, BTreeSet<String>>,
}

/// The builds that `state` (from `terraform show -json`, run in `root`)
/// names; relative paths are taken from `root`.
pub fn deployed_builds(state: &ShowJson, root: &Path) -> Deployed {
    let mut out = Deployed::default();
    for s in state.strings() {
        // A value is one path, whatever it holds: spaces, `=` and `,` are
        // as much part of a folder's name as letters are.
        for (image, name) in build_references(s) {
            let image = if image.is_empty() { "." } else { image };
            let Ok(image) = root.join(image).canonicalize() else {
                continue;
            };
            let version = if name == "latest" {
                std::fs::read_link(image.join("builds/latest"))
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned())
            } else {
                Some(name.to_string())
            };
            if let Some(v) = version.filter(|v| parse_utc(v).is_some()) {
                out.by_image.entry(image).or_default().insert(v);
            }
        }
    }
    out
}

/// Each way to read `path` as `<image folder>/builds/<name>/...`: one per
/// `builds/` that starts a path component (a folder above the image may be
/// called `builds` too; the name tells them apart later).
fn build_references(path: &str) -> impl Iterator<Item = (&str, &str)> {
    path.match_indices("builds/")
        .filter(move |(at, _)| *at == 0 || path.as_bytes()[at - 1] == b'/')
        .map(move |(at, m)| {
            let after = &path[at + m.len()..];
            (&path[..at], after.split('/').next().unwrap_or(after))
        })
}

fn collect_strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(json: serde_json::Value) -> ShowJson {
        ShowJson::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn sources_under_builds_are_found_relative_to_the_root_and_through_latest() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("terraform/build-agents");
        let image = t.path().join("packer/build-agents/debian-agent-image");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(image.join("builds/2026-11-02T00:00:00Z")).unwrap();
        std::os::unix::fs::symlink("2026-11-02T00:00:00Z", image.join("builds/latest")).unwrap();
        let state = show(serde_json::json!({
            "values": {"root_module": {"child_modules": [{"resources": [
                {"values": {"source": "../../packer/build-agents/debian-agent-image/builds/2026-11-01T00:00:00Z/debian-agent.qcow2"}},
                {"values": {"source": format!("{}/builds/latest/debian-agent.qcow2", image.display())}},
                {"values": {"name": "builds/not-a-build", "user_data": "#cloud-config"}}
            ]}]}}
        }));
        let found = deployed_builds(&state, &root);
        let image = image.canonicalize().unwrap();
        assert_eq!(
            found.by_image,
            BTreeMap::from([(
                image,
                BTreeSet::from([
                    "2026-11-01T00:00:00Z".to_string(),
                    "2026-11-02T00:00:00Z".to_string()
                ])
            )])
        );
    }

    #[test]
    fn a_folder_with_a_space_an_equals_sign_and_a_comma_is_one_path() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("my images/os=debian,arch=amd64/agent");
        std::fs::create_dir_all(image.join("builds/2026-11-01T00:00:00Z")).unwrap();
        let state = show(serde_json::json!({
            "format_version": "1.0",
            "values": {"root_module": {"resources": [{
                "address": "libvirt_volume.base",
                "mode": "managed",
                "values": {"source": format!("{}/builds/2026-11-01T00:00:00Z/agent.qcow2", image.display())}
            }]}}
        }));
        let found = deployed_builds(&state, t.path());
        assert_eq!(
            found.by_image,
            BTreeMap::from([(
                image.canonicalize().unwrap(),
                BTreeSet::from(["2026-11-01T00:00:00Z".to_string()])
            )])
        );
    }

    #[test]
    fn data_sources_nested_modules_and_outputs_count() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("img");
        std::fs::create_dir_all(image.join("builds")).unwrap();
        let path = |v: &str| format!("{}/builds/{v}/a.qcow2", image.display());
        let state = show(serde_json::json!({
            "format_version": "1.0",
            "terraform_version": "1.15.0",
            "values": {
                "outputs": {"image": {"sensitive": false, "value": path("2026-11-03T00:00:00Z"), "type": "string"}},
                "root_module": {"child_modules": [{
                    "address": "module.a",
                    "child_modules": [{"address": "module.a.module.b", "resources": [
                        {"mode": "data", "values": {"path": path("2026-11-02T00:00:00Z")}}
                    ]}]
                }], "resources": [
                    {"mode": "managed", "values": {"disk": [{"source": path("2026-11-01T00:00:00Z")}]},
                     "sensitive_values": {"disk": [{}]}}
                ]}
            }
        }));
        let found = &deployed_builds(&state, t.path()).by_image[&image.canonicalize().unwrap()];
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn a_state_that_was_never_applied_uses_no_builds() {
        let state = ShowJson::parse(br#"{"format_version":"1.0"}"#).unwrap();
        assert_eq!(deployed_builds(&state, Path::new("/")), Deployed::default());
    }

    #[test]
    fn a_folder_named_builds_above_the_image_is_not_taken_for_its_builds() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("builds/agent");
        std::fs::create_dir_all(image.join("builds")).unwrap();
        let state = show(serde_json::json!({"values": {"root_module": {"resources": [
            {"values": {"source": format!("{}/builds/2026-11-01T00:00:00Z/a.qcow2", image.display())}}
        ]}}}));
        let found = deployed_builds(&state, t.path());
        assert_eq!(
            found.by_image.keys().collect::<Vec<_>>(),
            [&image.canonicalize().unwrap()]
        );
    }
}

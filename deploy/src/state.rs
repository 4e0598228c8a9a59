//! Which builds a Terraform root's state uses, read from
//! `terraform show -json`: every string that names a file under an image
//! folder's `builds/<timestamp>/` (or `builds/latest/`) counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::parse_utc;

/// Builds in use, by image folder (canonical path).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// Image folder to the builds of it that the state names.
    pub by_image: BTreeMap<PathBuf, BTreeSet<String>>,
}

/// The builds that `state` (the JSON of `terraform show -json`, run in
/// `root`) names; relative paths are taken from `root`.
pub fn deployed_builds(state: &serde_json::Value, root: &Path) -> Deployed {
    let mut out = Deployed::default();
    let mut strings = Vec::new();
    collect_strings(state, &mut strings);
    for s in strings {
        let mut rest = s;
        while let Some(at) = rest.find("builds/") {
            let (prefix, after) = (&rest[..at], &rest[at + "builds/".len()..]);
            rest = after;
            // The image folder is the path up to `builds/`: the part of
            // the string from its last separator-free start.
            let start = prefix
                .rfind(|c: char| c.is_whitespace() || c == '"' || c == '=' || c == ',')
                .map_or(0, |i| i + 1);
            let image = &prefix[start..];
            let image = if image.is_empty() { "." } else { image };
            let image = root.join(image);
            let Ok(image) = image.canonicalize() else {
                continue;
            };
            let name = after.split('/').next().unwrap_or("");
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

    #[test]
    fn sources_under_builds_are_found_relative_to_the_root_and_through_latest() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("terraform/build-agents");
        let image = t.path().join("packer/build-agents/debian-agent-image");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(image.join("builds/2026-11-02T00:00:00Z")).unwrap();
        std::os::unix::fs::symlink("2026-11-02T00:00:00Z", image.join("builds/latest")).unwrap();
        let state = serde_json::json!({
            "values": {"root_module": {"child_modules": [{"resources": [
                {"values": {"source": "../../packer/build-agents/debian-agent-image/builds/2026-11-01T00:00:00Z/debian-agent.qcow2"}},
                {"values": {"source": format!("{}/builds/latest/debian-agent.qcow2", image.display())}},
                {"values": {"name": "builds/not-a-build", "user_data": "#cloud-config"}}
            ]}]}}
        });
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
}

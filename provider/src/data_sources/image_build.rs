//! `libvirt_image_build`: the newest image build under a directory.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kvmhost::source::{digest_in_list, Checksum};
use serde::{Deserialize, Serialize};
use tfplugin::schema::Schema;
use tfplugin::value::{Value, ValueEmpty};
use tfplugin::{map, DataSource, Diagnostics};

use crate::diagnostics::fail;
use crate::schema::{comp_str, flat_schema, req_str};

/// `libvirt_image_build`: the newest `builds/<timestamp>/<name>.qcow2`
/// under a directory, the layout image builds keep.
pub struct ImageBuildSource;

/// State of `libvirt_image_build`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageBuild {
    id: Value<String>,
    directory: Value<String>,
    name: Value<String>,
    version: Value<String>,
    path: Value<String>,
    sha256: Value<String>,
}

/// Why no build of an image was found.
#[derive(Debug)]
pub enum LatestBuildError {
    /// The `builds` folder could not be listed.
    List {
        /// The folder.
        builds: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No build folder holds the image.
    NoBuild {
        /// The folder.
        builds: PathBuf,
        /// The image's file name (`<name>.qcow2`).
        file: String,
    },
}

impl std::fmt::Display for LatestBuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LatestBuildError::List { builds, source } => {
                write!(f, "cannot list {}: {source}", builds.display())
            }
            LatestBuildError::NoBuild { builds, file } => {
                write!(f, "no build of {file} under {}", builds.display())
            }
        }
    }
}

impl std::error::Error for LatestBuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LatestBuildError::List { source, .. } => Some(source),
            LatestBuildError::NoBuild { .. } => None,
        }
    }
}

/// Finds the newest build of `name` under `directory`: its version, the
/// image's path and its sha256 when the build lists one.
pub fn latest_build(
    directory: &Path,
    name: &str,
) -> Result<(String, PathBuf, Option<String>), LatestBuildError> {
    let builds = directory.join("builds");
    let file = format!("{name}.qcow2");
    let entries = std::fs::read_dir(&builds).map_err(|source| LatestBuildError::List {
        builds: builds.clone(),
        source,
    })?;
    let newest = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(&file).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .max()
        .ok_or_else(|| LatestBuildError::NoBuild {
            builds: builds.clone(),
            file: file.clone(),
        })?;
    let path = builds.join(&newest).join(&file);
    let sums = std::fs::read_to_string(builds.join(&newest).join("SHA256SUMS")).ok();
    let sha = sums.and_then(|text| match digest_in_list(&text, &file) {
        Some(Checksum::Sha256(hex)) => Some(hex),
        _ => None,
    });
    Ok((newest, path, sha))
}

#[async_trait]
impl DataSource for ImageBuildSource {
    type State<'a> = ImageBuild;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        flat_schema("The newest image build: `<directory>/builds/<version>/<name>.qcow2`, versions compared as text (timestamps).", map! {
                    "id" => comp_str("Path of the image."),
                    "directory" => req_str("Folder holding `builds/`."),
                    "name" => req_str("Image name without `.qcow2`."),
                    "version" => comp_str("Name of the newest build folder."),
                    "path" => comp_str("Path of the newest image."),
                    "sha256" => comp_str("The image's sha256 from the build's `SHA256SUMS`, when there is one."),
                })
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let dir = config.directory.as_ref_option()?.clone();
        let name = config.name.as_ref_option()?.clone();
        match latest_build(Path::new(&dir), &name) {
            Ok((version, path, sha)) => Some(ImageBuild {
                id: Value::Value(path.display().to_string()),
                directory: Value::Value(dir),
                name: Value::Value(name),
                version: Value::Value(version),
                path: Value::Value(path.display().to_string()),
                sha256: sha.map(Value::Value).unwrap_or(Value::Null),
            }),
            Err(msg) => fail(
                diags,
                tfplugin::Diagnostic::new(
                    "No image build found",
                    msg.to_string(),
                    tfplugin::AttributePath::new("directory"),
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_build_wins_and_its_checksum_is_read() {
        let dir = tempfile::tempdir().unwrap();
        for (ts, sum) in [
            ("20240101-0101", None),
            ("20240301-0900", Some("AB".repeat(32))),
            ("20240201-0000", None),
        ] {
            let b = dir.path().join("builds").join(ts);
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(b.join("agent.qcow2"), ts).unwrap();
            if let Some(s) = &sum {
                std::fs::write(
                    b.join("SHA256SUMS"),
                    format!("{s}  agent.qcow2\nffff  other.qcow2\n"),
                )
                .unwrap();
            }
        }
        std::fs::create_dir_all(dir.path().join("builds/20990101-0000")).unwrap();
        let (v, p, sha) = latest_build(dir.path(), "agent").unwrap();
        assert_eq!(v, "20240301-0900");
        assert!(p.ends_with("builds/20240301-0900/agent.qcow2"));
        assert_eq!(sha, Some("ab".repeat(32)));
        assert!(latest_build(dir.path(), "missing")
            .unwrap_err()
            .to_string()
            .contains("no build of missing.qcow2"));
    }
}

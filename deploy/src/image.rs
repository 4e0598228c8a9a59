//! An image folder: one Packer template and the builds made from it.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::sources_digest;
use crate::timestamp::{format_utc, parse_utc};
use crate::{Error, Result};

/// The file in each build that records its sources' digest.
pub const DIGEST_FILE: &str = "template.sha256";

/// An image folder.
#[derive(Debug, Clone)]
pub struct ImageDir {
    root: PathBuf,
}

/// One build: a `builds/<timestamp>` folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Build {
    /// When it started; orders builds oldest first.
    pub time: SystemTime,
    /// Its name, the timestamp as written.
    pub version: String,
    /// Its folder.
    pub path: PathBuf,
}

/// Whether an image needs building again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// The newest build is young enough and made from today's sources.
    Fresh {
        /// The newest build.
        version: String,
        /// How old it is.
        age: Duration,
    },
    /// It must be built, and why.
    Stale(Staleness),
}

/// Why an image must be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// There is no build yet.
    NeverBuilt,
    /// The newest build is older than the maximum age.
    TooOld {
        /// The newest build.
        version: String,
        /// Its age.
        age: Duration,
        /// The maximum.
        max: Duration,
    },
    /// The sources changed since the newest build.
    SourcesChanged {
        /// The newest build.
        version: String,
    },
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Staleness::NeverBuilt => write!(f, "never built"),
            Staleness::TooOld { version, age, max } => write!(
                f,
                "build {version} is {} old, older than the maximum of {}",
                human(*age),
                human(*max)
            ),
            Staleness::SourcesChanged { version } => {
                write!(f, "the template folder changed since build {version}")
            }
        }
    }
}

/// `d` in the largest whole unit: `3d`, `5h`, `12m`, `40s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        86400.. => format!("{}d{}h", s / 86400, s % 86400 / 3600),
        3600.. => format!("{}h{}m", s / 3600, s % 3600 / 60),
        60.. => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{s}s"),
    }
}

impl ImageDir {
    /// The image folder at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let meta = std::fs::metadata(root).map_err(Error::io(root))?;
        if !meta.is_dir() {
            return Err(Error::Io {
                path: root.into(),
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder"),
            });
        }
        Ok(ImageDir { root: root.into() })
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The one Packer template in the folder.
    pub fn template(&self) -> Result<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(Error::io(&self.root))? {
            let path = entry.map_err(Error::io(&self.root))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_file() && (name.ends_with(".pkr.hcl") || name.ends_with(".pkr.json")) {
                found.push(path);
            }
        }
        found.sort();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::Template {
                dir: self.root.clone(),
                what: "no *.pkr.hcl or *.pkr.json file".into(),
            }),
            _ => Err(Error::Template {
                dir: self.root.clone(),
                what: format!("{} templates", found.len()),
            }),
        }
    }

    /// `builds/`.
    pub fn builds_dir(&self) -> PathBuf {
        self.root.join("builds")
    }

    /// Every build, oldest first.
    pub fn builds(&self) -> Result<Vec<Build>> {
        let dir = self.builds_dir();
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(Error::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().map_err(Error::io(entry.path()))?.is_dir();
            if let (true, Some(time)) = (is_dir, parse_utc(&name)) {
                out.push(Build {
                    time,
                    version: name,
                    path: entry.path(),
                });
            }
        }
        out.sort();
        Ok(out)
    }

    /// The name in `builds/latest-version`, if any.
    pub fn latest(&self) -> Result<Option<String>> {
        let path = self.builds_dir().join("latest-version");
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    /// Makes `version` the latest: `builds/latest` and
    /// `builds/latest-version`, each replaced in one rename.
    pub fn set_latest(&self, version: &str) -> Result<()> {
        let dir = self.builds_dir();
        let tmp_link = dir.join(".latest.new");
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(version, &tmp_link).map_err(Error::io(&tmp_link))?;
        let link = dir.join("latest");
        std::fs::rename(&tmp_link, &link).map_err(Error::io(&link))?;
        write_atomic(
            &dir.join("latest-version"),
            format!("{version}\n").as_bytes(),
        )
    }

    /// Records the digest of today's sources in `build`.
    pub fn record_sources(&self, build: &Path) -> Result<()> {
        let digest = sources_digest(&self.root)?;
        write_atomic(&build.join(DIGEST_FILE), format!("{digest}\n").as_bytes())
    }

    /// The builds that Terraform roots' states use, as `kvmbe deploy`
    /// recorded them in `builds/deployed/`.
    pub fn deployed(&self) -> Result<BTreeSet<String>> {
        let dir = self.builds_dir().join("deployed");
        let mut out = BTreeSet::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(Error::io(&dir))?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
        Ok(out)
    }

    /// Records that the Terraform root known as `root_key` uses `versions`
    /// (none: forgets the root).
    pub fn record_deployed(&self, root_key: &str, versions: &BTreeSet<String>) -> Result<()> {
        let dir = self.builds_dir().join("deployed");
        let path = dir.join(root_key);
        if versions.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path)(e)),
                _ => Ok(()),
            };
        }
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let text: String = versions.iter().map(|v| format!("{v}\n")).collect();
        write_atomic(&path, text.as_bytes())
    }

    /// Whether the image must be built again: never built, the newest
    /// build older than `max_age` at `now`, or the sources changed since.
    pub fn freshness(&self, max_age: Duration, now: SystemTime) -> Result<Freshness> {
        let Some(newest) = self.builds()?.pop() else {
            return Ok(Freshness::Stale(Staleness::NeverBuilt));
        };
        let age = now.duration_since(newest.time).unwrap_or_default();
        if age > max_age {
            return Ok(Freshness::Stale(Staleness::TooOld {
                version: newest.version,
                age,
                max: max_age,
            }));
        }
        let recorded = std::fs::read_to_string(newest.path.join(DIGEST_FILE)).unwrap_or_default();
        if recorded.trim() != sources_digest(&self.root)? {
            return Ok(Freshness::Stale(Staleness::SourcesChanged {
                version: newest.version,
            }));
        }
        Ok(Freshness::Fresh {
            version: newest.version,
            age,
        })
    }

    /// The name the next build started at `now` gets.
    pub fn next_version(now: SystemTime) -> String {
        format_utc(now)
    }
}

/// Writes `path` whole or not at all (a temporary file beside it, renamed).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(Error::io(dir))?;
    std::io::Write::write_all(&mut tmp, data).map_err(Error::io(path))?;
    tmp.persist(path).map_err(|e| Error::io(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> (tempfile::TempDir, ImageDir) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("agent.pkr.hcl"),
            "source \"libvirt\" \"x\" {}",
        )
        .unwrap();
        let dir = ImageDir::open(t.path()).unwrap();
        (t, dir)
    }

    fn build(dir: &ImageDir, version: &str) -> PathBuf {
        let path = dir.builds_dir().join(version);
        std::fs::create_dir_all(&path).unwrap();
        dir.record_sources(&path).unwrap();
        path
    }

    fn at(version: &str) -> SystemTime {
        parse_utc(version).unwrap()
    }

    #[test]
    fn builds_are_listed_oldest_first_and_other_entries_are_ignored() {
        let (_t, dir) = image();
        build(&dir, "2026-12-01T10:00:00Z");
        build(&dir, "2026-11-01T10:00:00Z");
        std::fs::create_dir_all(dir.builds_dir().join("scratch")).unwrap();
        dir.set_latest("2026-12-01T10:00:00Z").unwrap();
        let names: Vec<_> = dir
            .builds()
            .unwrap()
            .into_iter()
            .map(|b| b.version)
            .collect();
        assert_eq!(names, ["2026-11-01T10:00:00Z", "2026-12-01T10:00:00Z"]);
        assert_eq!(
            dir.latest().unwrap().as_deref(),
            Some("2026-12-01T10:00:00Z")
        );
        assert_eq!(
            std::fs::read_link(dir.builds_dir().join("latest")).unwrap(),
            PathBuf::from("2026-12-01T10:00:00Z")
        );
    }

    #[test]
    fn freshness_says_never_built_then_fresh_then_stale_for_a_change_and_for_age() {
        let (t, dir) = image();
        let day = Duration::from_secs(86400);
        let now = at("2026-12-01T12:00:00Z");
        assert_eq!(
            dir.freshness(day, now).unwrap(),
            Freshness::Stale(Staleness::NeverBuilt)
        );
        build(&dir, "2026-12-01T10:00:00Z");
        assert_eq!(
            dir.freshness(day, now).unwrap(),
            Freshness::Fresh {
                version: "2026-12-01T10:00:00Z".into(),
                age: Duration::from_secs(7200)
            }
        );
        let later = at("2026-12-03T10:00:00Z");
        let Freshness::Stale(why) = dir.freshness(day, later).unwrap() else {
            panic!("two days old with a one-day maximum is stale");
        };
        assert_eq!(
            why.to_string(),
            "build 2026-12-01T10:00:00Z is 2d0h old, older than the maximum of 1d0h"
        );
        std::fs::write(t.path().join("user-data.tpl"), "#cloud-config").unwrap();
        assert_eq!(
            dir.freshness(day, now).unwrap(),
            Freshness::Stale(Staleness::SourcesChanged {
                version: "2026-12-01T10:00:00Z".into()
            })
        );
    }

    #[test]
    fn deployed_records_are_per_root_and_unite() {
        let (_t, dir) = image();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        dir.record_deployed("agents", &set(&["2026-11-01T10:00:00Z"]))
            .unwrap();
        dir.record_deployed("infra", &set(&["2026-11-02T10:00:00Z"]))
            .unwrap();
        assert_eq!(
            dir.deployed().unwrap(),
            set(&["2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z"])
        );
        dir.record_deployed("agents", &BTreeSet::new()).unwrap();
        assert_eq!(dir.deployed().unwrap(), set(&["2026-11-02T10:00:00Z"]));
    }

    #[test]
    fn the_template_is_found_or_its_absence_explained() {
        let (t, dir) = image();
        assert!(dir.template().unwrap().ends_with("agent.pkr.hcl"));
        std::fs::write(t.path().join("other.pkr.hcl"), "").unwrap();
        let e = dir.template().unwrap_err().to_string();
        assert!(e.contains("2 templates") && e.contains("--template"), "{e}");
    }
}

//! `libvirt_volume`: a volume, empty, from an image (local file or
//! http(s) URL, uploaded as a sparse stream), or a copy-on-write overlay.

use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::image::{image_info, HostFileKind, ImageInfo, Overlay};
use kvmhost::libvirt::volume::{Backing, VolumeFormat, VolumeInfo, VolumeSpec};
use kvmhost::libvirt::{Error as HostError, Host};
use serde::{Deserialize, Serialize};
use tfplugin::schema::{Block, Description, Schema};
use tfplugin::value::{Value, ValueEmpty};
use tfplugin::{map, AttributePath, Diagnostic, Diagnostics, Resource};

use crate::connection::{blocking, Shared};
use crate::diagnostics::{fail, to_diag};
use crate::schema::{comp_str, oc_num, oc_str, opt_str, req_str};
use crate::source::{checksum_file, fetch, stamp, Source};
use crate::state::{known, Maybe};

/// `libvirt_volume`.
pub struct VolumeResource(pub Arc<Shared>);

/// State of `libvirt_volume`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VolumeState {
    id: Value<String>,
    name: Value<String>,
    pool: Value<String>,
    source: Value<String>,
    source_checksum: Value<String>,
    size: Value<i64>,
    format: Value<String>,
    base_volume_id: Value<String>,
    base_volume_name: Value<String>,
    base_volume_pool: Value<String>,
    path: Value<String>,
}

/// Remembers the local source's size and mtime so that a plan checksums
/// the file again only when it changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VolumePrivate {
    source_len: u64,
    source_mtime: i64,
}

fn fill(s: &mut VolumeState, info: &VolumeInfo) {
    s.id = Value::Value(info.key.clone());
    s.name = Value::Value(info.name.clone());
    s.pool = Value::Value(info.pool.clone());
    s.size = Value::Value(info.capacity as i64);
    s.format = Value::Value(info.format.clone());
    s.path = Value::Value(info.path.clone());
}

const DEFAULT_POOL: &str = "default";

#[async_trait]
impl Resource for VolumeResource {
    type State<'a> = Maybe<VolumeState>;
    type PrivateState<'a> = Maybe<VolumePrivate>;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 0,
            block: Block {
                version: 0,
                description: Description::markdown(
                    "A storage volume: empty, filled from an image, or a copy-on-write overlay of another volume. Any change replaces it.",
                ),
                attributes: map! {
                    "id" => comp_str("The volume's key (its path, for directory pools)."),
                    "name" => req_str("Name inside the pool."),
                    "pool" => oc_str("Pool name. Default `default`."),
                    "source" => opt_str("Image to upload: a local path or an http(s) URL. Holes and zero blocks are not sent."),
                    "source_checksum" => comp_str("sha256 over the source's non-zero 1 MiB blocks (holes cost nothing); a change replaces the volume."),
                    "size" => oc_num("Virtual size in bytes. Default: the source's virtual size, the base volume's size, or required."),
                    "format" => oc_str("`qcow2`, `raw` or `iso`. Default: the source's format, else `qcow2`."),
                    "base_volume_id" => oc_str("Key of a volume to use as backing store (copy-on-write overlay)."),
                    "base_volume_name" => oc_str("Name of the backing volume, with `base_volume_pool`."),
                    "base_volume_pool" => oc_str("Pool of `base_volume_name`. Default: this volume's pool."),
                    "path" => comp_str("Path of the volume on the host."),
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        let Some(c) = config.0 else { return Some(()) };
        // Conflicts count only values already known: in `terraform
        // validate` a module's inputs are unknown, and one may yet be null.
        let has_base = !c.base_volume_id.is_null() || !c.base_volume_name.is_null();
        let base_known = c.base_volume_id.is_value() || c.base_volume_name.is_value();
        if c.source.is_value() && base_known {
            diags.error(
                "Conflicting volume content",
                "a volume is either uploaded from `source` or an overlay of a base volume, not both",
                AttributePath::new("source"),
            );
        }
        if c.base_volume_id.is_value() && c.base_volume_name.is_value() {
            diags.error(
                "Conflicting base volume",
                "give base_volume_id or base_volume_name, not both",
                AttributePath::new("base_volume_name"),
            );
        }
        if c.source.is_null() && !has_base && c.size.is_null() {
            diags.error(
                "Missing volume size",
                "an empty volume needs size (bytes); or give source or base_volume_id",
                AttributePath::new("size"),
            );
        }
        if let Some(f) = known(&c.format) {
            if let Err(e) = VolumeFormat::parse(f, "format") {
                diags.error(
                    "Invalid volume format",
                    e.to_string(),
                    AttributePath::new("format"),
                );
            }
        }
        if let Value::Value(sz) = c.size {
            if sz <= 0 {
                diags.error(
                    "Invalid volume size",
                    format!("{sz} is not a positive number of bytes"),
                    AttributePath::new("size"),
                );
            }
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let Some(mut s) = state.0 else {
            return Some((Maybe(None), private));
        };
        let key = known(&s.id)?.to_string();
        let found = self
            .0
            .read_back(diags, "Cannot read the volume", move |h| {
                let info = h.volume_by_key(&key)?;
                let base = match &info.backing_path {
                    Some(p) => h.volume_by_path(p).ok(),
                    None => None,
                };
                Ok((info, base))
            })
            .await?;
        let Some((info, base)) = found else {
            return Some((Maybe(None), private));
        };
        fill(&mut s, &info);
        // Both ways of naming the base are filled, so a
        // configuration written either way matches an import.
        match base {
            Some(b) => {
                s.base_volume_id = Value::Value(b.key);
                s.base_volume_name = Value::Value(b.name);
                s.base_volume_pool = Value::Value(b.pool);
            }
            None => {
                s.base_volume_id = Value::Null;
                s.base_volume_name = Value::Null;
                s.base_volume_pool = Value::Null;
            }
        }
        Some((Maybe(Some(s)), private))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut s = proposed.0?;
        s.id = Value::Unknown;
        s.path = Value::Unknown;
        if s.pool.is_null() {
            s.pool = Value::Value(DEFAULT_POOL.into());
        }
        s.source_checksum = if s.source.is_null() {
            Value::Null
        } else {
            Value::Unknown
        };
        if s.size.is_null() {
            s.size = Value::Unknown;
        }
        let has_base = !s.base_volume_id.is_null() || !s.base_volume_name.is_null();
        if has_base {
            for v in [
                &mut s.base_volume_id,
                &mut s.base_volume_name,
                &mut s.base_volume_pool,
            ] {
                if v.is_null() {
                    *v = Value::Unknown;
                }
            }
        }
        if s.format.is_null() {
            s.format =
                if s.source.is_null() && s.base_volume_id.is_null() && s.base_volume_name.is_null()
                {
                    Value::Value("qcow2".into())
                } else {
                    Value::Unknown
                };
        }
        Some((Maybe(Some(s)), Maybe(None)))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let prior = prior.0?;
        let mut s = proposed.0?;
        let mut private = private;
        let mut replace: Vec<AttributePath> = [
            "name",
            "pool",
            "size",
            "format",
            "base_volume_id",
            "base_volume_name",
            "base_volume_pool",
            "source_checksum",
        ]
        .map(AttributePath::new)
        .to_vec();
        // An imported volume has no recorded source: naming one in the
        // configuration adopts the volume as it is instead of replacing it.
        if !prior.source.is_null() || prior.id.is_null() {
            replace.push(AttributePath::new("source"));
        }
        if s.source != prior.source {
            s.source_checksum = if s.source.is_null() {
                Value::Null
            } else {
                Value::Unknown
            };
        } else if let (Some(src), Some(_)) = (known(&s.source), known(&prior.source_checksum)) {
            if let Source::File(path) = Source::parse(src) {
                let stamped = stamp(&path);
                let same = matches!((&stamped, &private.0), (Ok((len, mtime)), Some(p)) if p.source_len == *len && p.source_mtime == *mtime);
                if !same {
                    match tokio::task::spawn_blocking(move || {
                        checksum_file(&path).map(|sha| (sha, stamp(&path)))
                    })
                    .await
                    {
                        Ok(Ok((sha, Ok((len, mtime))))) => {
                            s.source_checksum = Value::Value(sha);
                            private = Maybe(Some(VolumePrivate {
                                source_len: len,
                                source_mtime: mtime,
                            }));
                        }
                        Ok(Ok((_, Err(e)))) | Ok(Err(e)) => {
                            diags.error(
                                "Cannot read the volume source",
                                format!("{src}: {e}"),
                                AttributePath::new("source"),
                            );
                            return None;
                        }
                        Err(e) => {
                            return fail(diags, Diagnostic::root("Internal error", e.to_string()))
                        }
                    }
                }
            }
        }
        Some((Maybe(Some(s)), private, replace))
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut s = planned.0?;
        let host = self.0.connect(diags).await?;
        let mut private = Maybe(None);
        let local = match known(&s.source).map(Source::parse) {
            None => None,
            Some(src) => match fetch(&src).await {
                Ok(l) => Some(l),
                Err(msg) => {
                    return fail(
                        diags,
                        Diagnostic::new(
                            "Cannot read the volume source",
                            msg.to_string(),
                            AttributePath::new("source"),
                        ),
                    )
                }
            },
        };
        if let Some(l) = &local {
            s.source_checksum = Value::Value(l.checksum.clone());
            if let Ok((len, mtime)) = stamp(&l.path) {
                if matches!(
                    Source::parse(known(&s.source).unwrap_or_default()),
                    Source::File(_)
                ) {
                    private = Maybe(Some(VolumePrivate {
                        source_len: len,
                        source_mtime: mtime,
                    }));
                }
            }
        }
        let plan = s.clone();
        let local_path = local.as_ref().map(|l| l.path.clone());
        let made = blocking(&host, move |h| {
            create_blocking(h, &plan, local_path.as_deref())
        })
        .await;
        drop(local);
        match made {
            Ok((info, base)) => {
                fill(&mut s, &info);
                if let Some(b) = base {
                    s.base_volume_id = Value::Value(b.key);
                    s.base_volume_name = Value::Value(b.name);
                    s.base_volume_pool = Value::Value(b.pool);
                }
                Some((Maybe(Some(s)), private))
            }
            Err((attr, e)) => fail(diags, to_diag("Cannot create the volume", &e, Some(attr))),
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // Only adopting a source for an imported volume gets here: record
        // the source's checksum without touching the volume.
        let mut s = planned.0?;
        if s.source_checksum.is_unknown() {
            match known(&s.source).map(Source::parse) {
                Some(src) => match fetch(&src).await {
                    Ok(l) => s.source_checksum = Value::Value(l.checksum.clone()),
                    Err(msg) => {
                        return fail(
                            diags,
                            Diagnostic::new(
                                "Cannot read the volume source",
                                msg.to_string(),
                                AttributePath::new("source"),
                            ),
                        )
                    }
                },
                None => s.source_checksum = Value::Null,
            }
        }
        Some((Maybe(Some(s)), private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let key = known(&state.0?.id)?.to_string();
        self.0
            .delete(diags, "Cannot delete the volume", move |h| {
                h.delete_volume(&key)
            })
            .await
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let info = self
            .0
            .import(
                diags,
                "volume",
                "give the volume's key (its path) or POOL/NAME",
                move |h| match id.split_once('/') {
                    Some((pool, name)) if !id.starts_with('/') => h.volume(pool, name),
                    _ => h.volume_by_key(&id),
                },
            )
            .await?;
        let mut s = VolumeState::default();
        fill(&mut s, &info);
        Some((Maybe(Some(s)), Maybe(None)))
    }
}

/// Creates the volume and fills it; on failure removes what it made.
fn create_blocking(
    h: &Host,
    s: &VolumeState,
    local: Option<&std::path::Path>,
) -> Result<(VolumeInfo, Option<VolumeInfo>), (&'static str, HostError)> {
    let name = known(&s.name).unwrap_or_default().to_string();
    let pool = known(&s.pool).unwrap_or(DEFAULT_POOL).to_string();
    let fmt = |f: &str| VolumeFormat::parse(f, "format");
    let size = s.size.as_ref_option().map(|v| *v as u64);
    let base = if let Some(key) = known(&s.base_volume_id) {
        Some(h.volume_by_key(key).map_err(|e| ("base_volume_id", e))?)
    } else if let Some(n) = known(&s.base_volume_name) {
        let bp = known(&s.base_volume_pool).unwrap_or(&pool);
        Some(h.volume(bp, n).map_err(|e| ("base_volume_name", e))?)
    } else {
        None
    };
    let mut spec;
    match (local, &base) {
        (Some(path), _) => {
            let img = source_image(s, path)?;
            let format = match known(&s.format) {
                Some(f) => fmt(f).map_err(|e| ("format", e))?,
                None => img.format,
            };
            if let Some(want) = size.filter(|w| *w < img.virtual_size) {
                return Err((
                    "size",
                    HostError::Invalid {
                        field: "size",
                        message: format!(
                            "{want} bytes is smaller than the source's virtual size of {} bytes; images cannot shrink",
                            img.virtual_size
                        ),
                    },
                ));
            }
            spec = VolumeSpec::new(&name, img.virtual_size.max(1), format);
        }
        (None, Some(b)) => {
            let base_format = fmt(&b.format).unwrap_or(VolumeFormat::Raw);
            spec = VolumeSpec::new(
                &name,
                size.unwrap_or(b.capacity).max(b.capacity),
                VolumeFormat::Qcow2,
            );
            spec.backing = Some(Backing {
                path: b.path.clone(),
                format: base_format,
            });
        }
        (None, None) => {
            let format = fmt(known(&s.format).unwrap_or("qcow2")).map_err(|e| ("format", e))?;
            spec = VolumeSpec::new(&name, size.unwrap_or(0), format);
        }
    }
    let made = h
        .create_volume(&pool, &spec)
        .map_err(|e| (create_volume_attr(&e), e))?;
    let filled = (|| {
        if let Some(path) = local {
            h.upload_file(&made.key, path).map_err(|e| ("source", e))?;
        }
        let info = h.volume_by_key(&made.key).map_err(|e| ("name", e))?;
        if let Some(want) = size {
            if want > info.capacity {
                h.resize_volume(&made.key, want).map_err(|e| ("size", e))?;
                return h.volume_by_key(&made.key).map_err(|e| ("name", e));
            }
        }
        Ok(info)
    })();
    if filled.is_err() {
        let _ = h.delete_volume(&made.key);
    }
    filled.map(|info| (info, base))
}

/// The header of the file `source` was fetched to (the user's file or a
/// download). The file is uploaded as it is, so one naming a host file
/// QEMU would read as part of the disk (a backing file, an external data
/// file) is refused: an overlay is made with `base_volume_id` instead.
fn source_image(
    s: &VolumeState,
    path: &std::path::Path,
) -> Result<ImageInfo, (&'static str, HostError)> {
    let img = image_info(path).map_err(|e| ("source", e))?;
    img.refuse_host_files(Overlay::Refused).map_err(|e| {
        let overlay = match e {
            HostError::NamesHostFile {
                kind: HostFileKind::Backing,
                ..
            } => "; for an overlay, make its base a volume of its own and give base_volume_id",
            _ => "",
        };
        let message = format!("{}: {e}{overlay}", known(&s.source).unwrap_or_default());
        (
            "source",
            HostError::Invalid {
                field: "source",
                message,
            },
        )
    })?;
    Ok(img)
}

/// The attribute a failed `create_volume` acted on: `pool` when the pool
/// is missing, else `name` (see [`to_diag`] for when the error's own
/// field wins).
pub(crate) fn create_volume_attr(e: &HostError) -> &'static str {
    match e {
        HostError::NotFound {
            kind: "storage pool",
            ..
        } => "pool",
        _ => "name",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_naming_a_backing_file_is_refused_on_source_and_leaves_no_volume() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "SECRET-KEY").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let image = dir.path().join("disk.qcow2");
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&key)
            .arg(&image)
            .arg("1M")
            .status()
            .unwrap();
        assert!(made.success());
        let host = Host::open("test:///default").unwrap();
        let s = VolumeState {
            name: Value::Value("from-url.qcow2".into()),
            pool: Value::Value("default-pool".into()),
            source: Value::Value("https://images.example/disk.qcow2".into()),
            ..Default::default()
        };
        let (attr, e) = create_blocking(&host, &s, Some(&image)).unwrap_err();
        let d = to_diag("Cannot create the volume", &e, Some(attr));
        assert_eq!(d.attribute, AttributePath::new("source"));
        assert_eq!(
            d.detail,
            format!(
                "invalid source: https://images.example/disk.qcow2: the image names the backing file '{}', \
                 a host file QEMU would read as part of the disk; flatten it where that file exists \
                 (`qemu-img convert -O qcow2 IMAGE FLAT.qcow2`) and use the flat image; \
                 for an overlay, make its base a volume of its own and give base_volume_id",
                key.display()
            )
        );
        assert!(host
            .volume("default-pool", "from-url.qcow2")
            .unwrap_err()
            .is_not_found());
    }
}

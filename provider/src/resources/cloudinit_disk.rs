//! `libvirt_cloudinit_disk`: a NoCloud seed image (ISO 9660, label
//! `cidata`) written by our own code and uploaded as a volume readable
//! only by its owner, since `user_data` may carry secrets.

use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::volume::{VolumeFormat, VolumeInfo, VolumeSpec};
use kvmhost::libvirt::{Error as HostError, Host};
use kvmhost::nocloud::Seed;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tfplugin::schema::{Attribute, AttributeConstraint, AttributeType, Block, Description, Schema};
use tfplugin::value::{RawValue, Value, ValueEmpty};
use tfplugin::{map, AttributePath, Diagnostic, Diagnostics, Resource};

use crate::connection::{blocking, Shared};
use crate::diagnostics::{fail, to_diag};
use crate::resources::volume::create_volume_attr;
use crate::schema::{attr, comp_str, oc_str, opt_str, req_str};
use crate::state::{known, Maybe};

/// `libvirt_cloudinit_disk`.
pub struct CloudinitDiskResource(pub Arc<Shared>);

/// State of `libvirt_cloudinit_disk`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CloudinitDiskState {
    id: Value<String>,
    name: Value<String>,
    pool: Value<String>,
    user_data: Value<String>,
    meta_data: Value<String>,
    network_config: Value<String>,
    path: Value<String>,
}

/// The id joins the volume key and a digest of the content, the
/// `<key>;<suffix>` shape the `cloudinit` attribute of domains expects.
pub fn make_id(key: &str, digest: &str) -> String {
    format!("{key};{digest}")
}

/// The volume key inside a cloud-init disk id (the part before `;`).
pub fn key_of(id: &str) -> &str {
    id.split(';').next().unwrap_or(id)
}

/// Schema version: 1 since state written by dmacvicar/libvirt 0.8 (also
/// version 0) is normalized on upgrade, see [`upgrade_v0`].
const VERSION: i64 = 1;

/// Version-0 state to version 1. Ours is unchanged; dmacvicar/libvirt
/// 0.8's (no `path`, empty strings for unset contents) gets null for its
/// empty contents. Its id, `<path>;<uuid>`, is kept: the part before `;`
/// is the volume key as in ours, and domains name the disk by that id.
pub fn upgrade_v0(mut v0: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v0.as_object_mut() {
        if !o.contains_key("path") {
            for k in ["user_data", "meta_data", "network_config"] {
                if o.get(k).is_some_and(|v| v.as_str() == Some("")) {
                    o.insert(k.to_string(), serde_json::Value::Null);
                }
            }
        }
    }
    v0
}

/// What `create` writes as `meta-data` when none is given.
fn default_meta(name: &str) -> String {
    let host_name = name.split('.').next().unwrap_or(name);
    format!("instance-id: {name}\nlocal-hostname: {host_name}\n")
}

fn content_digest(user: &str, meta: &str, net: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [user, meta, net.unwrap_or("")] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

#[async_trait]
impl Resource for CloudinitDiskResource {
    type State<'a> = Maybe<CloudinitDiskState>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: VERSION,
            block: Block {
                version: 0,
                description: Description::markdown(
                    "A NoCloud seed (ISO 9660 labelled `cidata`) for cloud-init, kept as a volume with mode 0600. Any change replaces it.",
                ),
                attributes: map! {
                    "id" => comp_str("`<volume key>;<content digest>`; give it to a domain's `cloudinit`."),
                    "name" => req_str("Volume name, e.g. `web-seed.iso`."),
                    "pool" => oc_str("Pool name. Default `default`."),
                    "user_data" => Attribute {
                        sensitive: true,
                        ..attr(AttributeType::String, AttributeConstraint::Optional, "Content of `user-data` (often `#cloud-config`). Sensitive.")
                    },
                    "meta_data" => Attribute {
                        sensitive: true,
                        ..opt_str("Content of `meta-data`. Default: `instance-id` and `local-hostname` from the name. Sensitive.")
                    },
                    "network_config" => Attribute {
                        sensitive: true,
                        ..opt_str("Content of `network-config` (netplan may hold Wi-Fi or VPN keys); omitted when unset. Sensitive.")
                    },
                    "path" => comp_str("Path of the image on the host."),
                },
                ..Default::default()
            },
        })
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
        let key = key_of(known(&s.id)?).to_string();
        let found = self
            .0
            .read_back(diags, "Cannot read the cloud-init disk", move |h| {
                volume_and_bytes(h, &key)
            })
            .await?;
        let Some((info, bytes)) = found else {
            return Some((Maybe(None), private));
        };
        let content = match SeedContent::parse(&info, &bytes) {
            Ok(c) => c,
            Err(e) => {
                return fail(
                    diags,
                    Diagnostic::root(
                        "Cannot read the cloud-init disk",
                        format!("{e}; replace it with `terraform apply -replace=<address>`"),
                    ),
                )
            }
        };
        content.refresh(&mut s, &info.name);
        s.name = Value::Value(info.name);
        s.pool = Value::Value(info.pool);
        s.path = Value::Value(info.path);
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
            s.pool = Value::Value("default".into());
        }
        Some((Maybe(Some(s)), ValueEmpty::Null))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let replace = ["name", "pool", "user_data", "meta_data", "network_config"]
            .map(AttributePath::new)
            .to_vec();
        Some((proposed, private, replace))
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut s = planned.0?;
        let name = known(&s.name)?.to_string();
        let pool = known(&s.pool).unwrap_or("default").to_string();
        let user = known(&s.user_data).unwrap_or_default().to_string();
        let meta = match known(&s.meta_data) {
            Some(m) => m.to_string(),
            None => default_meta(&name),
        };
        let net = known(&s.network_config).map(str::to_string);
        let iso = match Seed::nocloud(&user, &meta, net.as_deref()).to_iso() {
            Ok(i) => i,
            Err(e) => {
                return fail(
                    diags,
                    Diagnostic::root("Cannot build the cloud-init image", e.to_string()),
                )
            }
        };
        let digest = content_digest(&user, &meta, net.as_deref());
        let host = self.0.connect(diags).await?;
        let made = blocking(&host, move |h| {
            let mut spec = VolumeSpec::new(&name, iso.len() as u64, VolumeFormat::Raw);
            spec.mode = Some(0o600);
            let vol = h.create_volume(&pool, &spec)?;
            if let Err(e) = h.upload_bytes(&vol.key, &iso) {
                let _ = h.delete_volume(&vol.key);
                return Err(e);
            }
            Ok::<_, HostError>(vol)
        })
        .await;
        match made {
            Ok(vol) => {
                s.id = Value::Value(make_id(&vol.key, &digest));
                s.pool = Value::Value(vol.pool);
                s.path = Value::Value(vol.path);
                Some((Maybe(Some(s)), private))
            }
            Err(e) => fail(
                diags,
                to_diag(
                    "Cannot create the cloud-init disk",
                    &e,
                    Some(create_volume_attr(&e)),
                ),
            ),
        }
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let key = key_of(known(&state.0?.id)?).to_string();
        self.0
            .delete(diags, "Cannot delete the cloud-init disk", move |h| {
                h.delete_volume(&key)
            })
            .await
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let key = key_of(&id).to_string();
        let (vol, bytes) = self
            .0
            .import(
                diags,
                "cloud-init disk",
                "give the id `<volume key>;<suffix>` or the volume key",
                move |h| volume_and_bytes(h, &key),
            )
            .await?;
        let content = match SeedContent::parse(&vol, &bytes) {
            Ok(c) => c,
            Err(e) => {
                return fail(
                    diags,
                    Diagnostic::root("Cannot import the cloud-init disk", e.to_string()),
                )
            }
        };
        // Without a suffix, the id gets the digest `create` would have
        // given the same content, so domains naming the disk see no change.
        let id = if id.contains(';') {
            id
        } else {
            make_id(&vol.key, &content.digest(&vol.name))
        };
        let mut s = CloudinitDiskState {
            id: Value::Value(id),
            name: Value::Value(vol.name.clone()),
            pool: Value::Value(vol.pool),
            path: Value::Value(vol.path),
            ..Default::default()
        };
        content.import(&mut s, &vol.name);
        Some((Maybe(Some(s)), ValueEmpty::Null))
    }

    async fn upgrade<'a>(
        &self,
        diags: &mut Diagnostics,
        version: i64,
        prior_state: RawValue,
    ) -> Option<Self::State<'a>> {
        let v0 = crate::state::state_v0_json(
            diags,
            "libvirt_cloudinit_disk",
            VERSION,
            version,
            prior_state,
        )?;
        crate::state::state_from_json(diags, upgrade_v0(v0))
    }
}

/// Largest volume read back as a seed; NoCloud seeds are tens of KiB, and
/// anything far larger is not one.
const SEED_MAX: u64 = 16 << 20;

/// Looks up the volume `key` and, when it is small enough to be a seed,
/// downloads its bytes (empty when it is not).
fn volume_and_bytes(h: &Host, key: &str) -> Result<(VolumeInfo, Vec<u8>), HostError> {
    let info = h.volume_by_key(key)?;
    if info.capacity > SEED_MAX {
        return Ok((info, Vec::new()));
    }
    // Owner-only (0600) with a random name before any byte lands:
    // `user_data` may carry secrets. Removed when dropped.
    let temp = tempfile::Builder::new()
        .prefix("libvirt-seed-")
        .suffix(".iso")
        .tempfile()
        .map_err(|source| HostError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let path = temp.path().to_path_buf();
    let io = |source| HostError::Io {
        path: path.clone(),
        source,
    };
    let read = h
        .download_volume(&info.key, &path)
        .and_then(|_| std::fs::read(&path).map_err(io));
    Ok((info, read?))
}

/// Why a seed read back from the host cannot be read.
#[derive(Debug)]
enum SeedContentError {
    /// The volume is larger than any seed.
    TooLarge {
        /// The volume's key.
        key: String,
        /// Its size in bytes.
        capacity: u64,
    },
    /// The volume holds no readable seed image.
    Image {
        /// The volume's key.
        key: String,
        /// Why.
        source: kvmhost::nocloud::SeedError,
    },
    /// A file whose value is text is not UTF-8.
    NotUtf8 {
        /// The volume's key.
        key: String,
        /// The file's name (`user-data`).
        name: String,
    },
}

impl std::fmt::Display for SeedContentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeedContentError::TooLarge { key, capacity } => write!(
                f,
                "volume {key} holds {capacity} bytes, more than a NoCloud seed ({SEED_MAX} at most)"
            ),
            SeedContentError::Image { key, source } => write!(f, "volume {key}: {source}"),
            SeedContentError::NotUtf8 { key, name } => write!(
                f,
                "`{name}` on volume {key} is not UTF-8 text, which `{}` must be",
                name.replace('-', "_")
            ),
        }
    }
}

impl std::error::Error for SeedContentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SeedContentError::Image { source, .. } => Some(source),
            SeedContentError::TooLarge { .. } | SeedContentError::NotUtf8 { .. } => None,
        }
    }
}

/// The files of a seed read back from the host, as state values.
struct SeedContent {
    user: Option<String>,
    meta: Option<String>,
    net: Option<String>,
}

impl SeedContent {
    /// Parses the downloaded image of volume `info`.
    fn parse(info: &VolumeInfo, bytes: &[u8]) -> Result<Self, SeedContentError> {
        if info.capacity > SEED_MAX {
            return Err(SeedContentError::TooLarge {
                key: info.key.clone(),
                capacity: info.capacity,
            });
        }
        let seed = Seed::from_iso(bytes).map_err(|source| SeedContentError::Image {
            key: info.key.clone(),
            source,
        })?;
        let text = |name: &str| {
            seed.get(name)
                .map(|b| {
                    String::from_utf8(b.to_vec()).map_err(|_| SeedContentError::NotUtf8 {
                        key: info.key.clone(),
                        name: name.to_string(),
                    })
                })
                .transpose()
        };
        Ok(Self {
            user: text("user-data")?,
            meta: text("meta-data")?,
            net: text("network-config")?,
        })
    }

    /// The content `create` would have written for a state, unset values
    /// standing for their defaults.
    fn effective(&self, name: &str) -> (String, String, Option<String>) {
        (
            self.user.clone().unwrap_or_default(),
            self.meta.clone().unwrap_or_else(|| default_meta(name)),
            self.net.clone(),
        )
    }

    /// The content digest `create` gives the same files.
    fn digest(&self, name: &str) -> String {
        let (user, meta, net) = self.effective(name);
        content_digest(&user, &meta, net.as_deref())
    }

    /// Fills an imported state: what `create` writes for an unset value
    /// (empty `user-data`, the default `meta-data`) reads back as unset.
    fn import(&self, s: &mut CloudinitDiskState, name: &str) {
        let (user, meta, net) = self.effective(name);
        s.user_data = value((!user.is_empty()).then_some(user));
        s.meta_data = value((meta != default_meta(name)).then_some(meta));
        s.network_config = value(net);
    }

    /// Refreshes a state: values whose content is on the disk stay as
    /// they are (unset stays unset); changed content is taken as imported,
    /// so the next plan replaces the disk.
    ///
    /// An unset value also matches an empty file (dmacvicar/libvirt 0.8
    /// writes every file, empty when unset), and an unset `meta_data` also
    /// the default one.
    fn refresh(&self, s: &mut CloudinitDiskState, name: &str) {
        let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
        let same =
            |was: &Value<String>, disk: &Option<String>, default: Option<&str>| match known(was) {
                Some(w) => disk.as_deref() == Some(w),
                None => empty(disk) || disk.as_deref() == default,
            };
        let meta_default = default_meta(name);
        let unchanged = same(&s.user_data, &self.user, None)
            && same(&s.meta_data, &self.meta, Some(&meta_default))
            && same(&s.network_config, &self.net, None);
        if !unchanged {
            self.import(s, name);
        }
    }
}

fn value(v: Option<String>) -> Value<String> {
    v.map_or(Value::Null, Value::Value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmacvicar_empty_contents_become_null_and_the_id_stays() {
        let v0 = serde_json::json!({
            "id": "/p/seed.iso;2a294c50-4feb-4610-80b0-6e15baeafb90",
            "meta_data": "", "name": "seed.iso", "network_config": "",
            "pool": "bed", "user_data": "#cloud-config\n"
        });
        let mut d = Diagnostics::default();
        let v1 = serde_json::to_vec(&upgrade_v0(v0)).unwrap();
        let s: CloudinitDiskState = RawValue::Json(v1).deserialize(&mut d).unwrap();
        assert_eq!(
            s.id,
            Value::Value("/p/seed.iso;2a294c50-4feb-4610-80b0-6e15baeafb90".into())
        );
        assert_eq!(key_of(known(&s.id).unwrap()), "/p/seed.iso");
        assert!(s.meta_data.is_null() && s.network_config.is_null());
        assert_eq!(s.user_data, Value::Value("#cloud-config\n".into()));
        // Ours has `path`: empty strings are what the user wrote.
        let ours = serde_json::json!({"id": "k;d", "path": "/p", "meta_data": ""});
        assert_eq!(upgrade_v0(ours.clone()), ours);
    }

    #[test]
    fn refresh_takes_empty_files_for_unset_values() {
        let disk = SeedContent {
            user: Some("u".into()),
            meta: Some(String::new()),
            net: Some(String::new()),
        };
        let mut s = CloudinitDiskState {
            user_data: Value::Value("u".into()),
            ..Default::default()
        };
        disk.refresh(&mut s, "seed.iso");
        assert!(s.meta_data.is_null() && s.network_config.is_null());
        let changed = SeedContent {
            user: Some("v".into()),
            meta: None,
            net: None,
        };
        changed.refresh(&mut s, "seed.iso");
        assert_eq!(s.user_data, Value::Value("v".into()));
    }
}

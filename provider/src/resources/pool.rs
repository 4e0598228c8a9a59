//! `libvirt_pool`: a directory storage pool.
//!
//! Schema version 1 accepts the directory either as `path` or, as
//! dmacvicar/libvirt 0.8 writes it, as `target { path }`. Stored state of
//! version 0 (ours, with `path`; dmacvicar's, with `target`) upgrades to it.

use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::pool::{PoolInfo, PoolSpec};
use serde::{Deserialize, Serialize};
use tfplugin::schema::{Block, Description, NestedBlock, Schema};
use tfplugin::value::{serde_as_vec, RawValue, Value, ValueEmpty};
use tfplugin::{map, AttributePath, Diagnostics, Resource};

use crate::connection::Shared;
use crate::schema::{comp_num, comp_str, oc_str, req_str};
use crate::state::{known, Maybe};

/// `libvirt_pool`.
pub struct PoolResource(pub Arc<Shared>);

/// State of `libvirt_pool`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PoolState {
    id: Value<String>,
    name: Value<String>,
    #[serde(rename = "type")]
    kind: Value<String>,
    path: Value<String>,
    capacity: Value<i64>,
    allocation: Value<i64>,
    available: Value<i64>,
    // `default`: state stored before the block existed has no `target`.
    #[serde(default, with = "serde_as_vec")]
    target: Value<Target>,
}

/// `target { path }`, dmacvicar/libvirt's way to write the directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    path: Value<String>,
}

/// The schema version; see the module docs for what changed.
const VERSION: i64 = 1;

impl PoolState {
    /// The directory the configuration names, from `path` or `target`.
    fn wanted_path(&self) -> Value<String> {
        match (&self.path, self.target.as_ref_option()) {
            (Value::Null, Some(t)) => t.path.clone(),
            (p, _) => p.clone(),
        }
    }
}

/// Version-0 state as JSON to version 1: dmacvicar's state keeps the
/// directory in `target[0].path` (its `path` empty); ours in `path`.
/// Attributes version 1 does not know (dmacvicar's `xml`, `source`) are
/// dropped when the result is read as [`PoolState`].
pub fn upgrade_v0(mut v0: serde_json::Value) -> serde_json::Value {
    let target_path = v0
        .pointer("/target/0/path")
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    if let Some(obj) = v0.as_object_mut() {
        let path_empty = match obj.get("path") {
            None | Some(serde_json::Value::Null) => true,
            Some(serde_json::Value::String(p)) => p.is_empty(),
            Some(_) => false,
        };
        if path_empty {
            if let Some(t) = target_path {
                obj.insert("path".into(), t.into());
            }
        }
    }
    v0
}

fn state_of(info: &PoolInfo) -> PoolState {
    PoolState {
        id: Value::Value(info.uuid.clone()),
        name: Value::Value(info.name.clone()),
        kind: Value::Value(info.kind.clone()),
        path: if info.path.is_empty() {
            Value::Null
        } else {
            Value::Value(info.path.clone())
        },
        capacity: Value::Value(info.capacity as i64),
        allocation: Value::Value(info.allocation as i64),
        available: Value::Value(info.available as i64),
        target: Value::Null,
    }
}

/// The live pool, with `target` as the configuration wrote it.
fn state_with_target(info: &PoolInfo, written: &PoolState) -> PoolState {
    PoolState {
        target: written.target.clone(),
        ..state_of(info)
    }
}

#[async_trait]
impl Resource for PoolResource {
    type State<'a> = Maybe<PoolState>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: VERSION,
            block: Block {
                version: VERSION,
                description: Description::markdown(
                    "A directory storage pool. Any change replaces it.",
                ),
                attributes: map! {
                    "id" => comp_str("UUID of the pool."),
                    "name" => req_str("Pool name, unique on the host."),
                    "type" => req_str("Pool type; only `dir` is supported."),
                    "path" => oc_str("Directory that holds the volumes; created if missing. Required for `dir`, here or as `target { path }`."),
                    "capacity" => comp_num("Bytes in total."),
                    "allocation" => comp_num("Bytes used."),
                    "available" => comp_num("Bytes free."),
                },
                blocks: map! {
                    "target" => NestedBlock::Optional(Block {
                        version: VERSION,
                        description: Description::plain("The directory, as dmacvicar/libvirt writes it (same as `path`)."),
                        attributes: map! { "path" => req_str("Directory that holds the volumes.") },
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        let Some(c) = config.0 else { return Some(()) };
        if let Some(t) = known(&c.kind) {
            if t != "dir" {
                diags.error(
                    "Unsupported pool type",
                    format!("'{t}' pools are not supported; use type = \"dir\""),
                    AttributePath::new("type"),
                );
            }
        }
        let target = c.target.as_ref_option().map(|t| &t.path);
        match (&c.path, target) {
            (Value::Null, None) => diags.error(
                "Missing pool path",
                "a dir pool needs path = \"/some/directory\" (or target { path = \"...\" })",
                AttributePath::new("path"),
            ),
            (Value::Value(p), Some(Value::Value(t))) if p != t => diags.error(
                "Conflicting pool paths",
                format!("path is '{p}' but target.path is '{t}'; write the directory once"),
                AttributePath::new("target").index(0).attribute("path"),
            ),
            _ => {}
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
        let Some(prior) = state.0 else {
            return Some((Maybe(None), private));
        };
        let id = known(&prior.id)?.to_string();
        let live = self
            .0
            .read_back(diags, "Cannot read the storage pool", move |h| {
                h.pool_by_uuid(&id)
            })
            .await?;
        Some((
            Maybe(live.map(|info| state_with_target(&info, &prior))),
            private,
        ))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut s = proposed.0?;
        s.path = s.wanted_path();
        s.id = Value::Unknown;
        s.capacity = Value::Unknown;
        s.allocation = Value::Unknown;
        s.available = Value::Unknown;
        Some((Maybe(Some(s)), ValueEmpty::Null))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        proposed: Self::State<'a>,
        config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut proposed = proposed;
        if let (Some(p), Some(c)) = (proposed.0.as_mut(), config.0.as_ref()) {
            // `path` is computed when only `target` names the directory:
            // a new target directory must show as a new path.
            if c.path.is_null() && c.target.is_value() {
                p.path = c.wanted_path();
            }
        }
        let replace = ["name", "type", "path"].map(AttributePath::new).to_vec();
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
        let p = planned.0?;
        let spec = PoolSpec {
            name: known(&p.name)?.to_string(),
            path: known(&p.wanted_path()).unwrap_or_default().to_string(),
        };
        let info = self
            .0
            .call(
                diags,
                "Cannot create the storage pool",
                Some("name"),
                move |h| h.create_dir_pool(&spec),
            )
            .await?;
        Some((Maybe(Some(state_with_target(&info, &p))), private))
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
        let s = state.0?;
        let name = known(&s.name)?.to_string();
        self.0
            .delete(diags, "Cannot delete the storage pool", move |h| {
                h.delete_pool(&name, true)
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
                "storage pool",
                "give the pool's UUID or name",
                move |h| h.pool_by_uuid(&id).or_else(|_| h.pool(&id)),
            )
            .await?;
        Some((Maybe(Some(state_of(&info))), ValueEmpty::Null))
    }

    async fn upgrade<'a>(
        &self,
        diags: &mut Diagnostics,
        version: i64,
        prior_state: RawValue,
    ) -> Option<Self::State<'a>> {
        let v0 = crate::state::state_v0_json(diags, "libvirt_pool", VERSION, version, prior_state)?;
        crate::state::state_from_json(diags, upgrade_v0(v0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgraded(v0: serde_json::Value) -> PoolState {
        let mut d = Diagnostics::default();
        let v1 = serde_json::to_vec(&upgrade_v0(v0)).unwrap();
        RawValue::Json(v1).deserialize(&mut d).unwrap()
    }

    #[test]
    fn our_version_0_state_keeps_its_path_and_gains_no_target() {
        let s = upgraded(serde_json::json!({
            "id": "u", "name": "p", "type": "dir", "path": "/srv/p",
            "capacity": 1, "allocation": 2, "available": 3
        }));
        assert_eq!(s.path, Value::Value("/srv/p".into()));
        assert!(s.target.is_null());
        assert_eq!(s.available, Value::Value(3));
    }

    // The attributes of dmacvicar/libvirt 0.8's libvirt_pool as its state
    // holds them (written from its schema, not recorded from its binary).
    #[test]
    fn dmacvicar_state_moves_target_path_into_path_and_drops_the_rest() {
        let s = upgraded(serde_json::json!({
            "id": "u", "name": "p", "type": "dir", "path": null,
            "target": [{"path": "/srv/p"}],
            "source": [], "xml": [],
            "capacity": 1, "allocation": 2, "available": 3
        }));
        assert_eq!(s.path, Value::Value("/srv/p".into()));
        assert_eq!(
            s.target,
            Value::Value(Target {
                path: Value::Value("/srv/p".into())
            })
        );
    }
}

//! `libvirt_pool`: a directory storage pool.

use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::pool::{PoolInfo, PoolSpec};
use serde::{Deserialize, Serialize};
use tfplugin::schema::{Block, Description, Schema};
use tfplugin::value::{Value, ValueEmpty};
use tfplugin::{map, AttributePath, Diagnostics, Resource};

use crate::common::{comp_num, comp_str, known, opt_str, req_str, Maybe, Shared};

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
    }
}

#[async_trait]
impl Resource for PoolResource {
    type State<'a> = Maybe<PoolState>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 0,
            block: Block {
                version: 0,
                description: Description::markdown(
                    "A directory storage pool. Any change replaces it.",
                ),
                attributes: map! {
                    "id" => comp_str("UUID of the pool."),
                    "name" => req_str("Pool name, unique on the host."),
                    "type" => req_str("Pool type; only `dir` is supported."),
                    "path" => opt_str("Directory that holds the volumes; created if missing. Required for `dir`."),
                    "capacity" => comp_num("Bytes in total."),
                    "allocation" => comp_num("Bytes used."),
                    "available" => comp_num("Bytes free."),
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
        if c.path.is_null() {
            diags.error(
                "Missing pool path",
                "a dir pool needs path = \"/some/directory\"",
                AttributePath::new("path"),
            );
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
        Some((Maybe(live.map(|info| state_of(&info))), private))
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
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let replace = ["name", "type", "path"].map(AttributePath::new).to_vec();
        Some((proposed, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(private)
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
            path: known(&p.path).unwrap_or_default().to_string(),
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
        Some((Maybe(Some(state_of(&info))), private))
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
}

//! The `libvirt_volume` data source: a volume looked up by pool and name.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tfplugin::schema::Schema;
use tfplugin::value::{Value, ValueEmpty};
use tfplugin::{map, DataSource, Diagnostics};

use crate::connection::Shared;
use crate::schema::{comp_num, comp_str, flat_schema, opt_str, req_str};

/// `libvirt_volume` (data): a volume looked up by pool and name.
pub struct VolumeSource(pub Arc<Shared>);

/// State of the `libvirt_volume` data source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VolumeLookup {
    id: Value<String>,
    name: Value<String>,
    pool: Value<String>,
    path: Value<String>,
    size: Value<i64>,
    allocation: Value<i64>,
    format: Value<String>,
}

#[async_trait]
impl DataSource for VolumeSource {
    type State<'a> = VolumeLookup;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        flat_schema(
            "An existing volume, by pool and name.",
            map! {
                "id" => comp_str("The volume's key."),
                "name" => req_str("Name inside the pool."),
                "pool" => opt_str("Pool name. Default `default`."),
                "path" => comp_str("Path on the host."),
                "size" => comp_num("Virtual size in bytes."),
                "allocation" => comp_num("Bytes allocated on the host."),
                "format" => comp_str("Format, e.g. `qcow2`."),
            },
        )
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let name = config.name.as_ref_option()?.clone();
        let pool = config
            .pool
            .as_ref_option()
            .cloned()
            .unwrap_or_else(|| "default".into());
        let v = self
            .0
            .call(diags, "Cannot find the volume", Some("name"), move |h| {
                h.volume(&pool, &name)
            })
            .await?;
        Some(VolumeLookup {
            id: Value::Value(v.key),
            name: Value::Value(v.name),
            pool: Value::Value(v.pool),
            path: Value::Value(v.path),
            size: Value::Value(v.capacity as i64),
            allocation: Value::Value(v.allocation as i64),
            format: Value::Value(v.format),
        })
    }
}

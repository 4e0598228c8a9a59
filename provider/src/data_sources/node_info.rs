//! `libvirt_node_info`: CPUs and memory of the host.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tfplugin::schema::Schema;
use tfplugin::value::{Value, ValueEmpty};
use tfplugin::{map, DataSource, Diagnostics};

use crate::connection::Shared;
use crate::schema::{comp_num, comp_str, flat_schema};

/// `libvirt_node_info`: CPUs and memory of the host.
pub struct NodeInfoSource(pub Arc<Shared>);

/// State of `libvirt_node_info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeInfoState {
    id: Value<String>,
    hostname: Value<String>,
    cpu_model: Value<String>,
    cpus: Value<i64>,
    memory_total_kb: Value<i64>,
    memory_free_kb: Value<i64>,
}

#[async_trait]
impl DataSource for NodeInfoSource {
    type State<'a> = NodeInfoState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        flat_schema(
            "CPUs and memory of the libvirt host.",
            map! {
                "id" => comp_str("Host name."),
                "hostname" => comp_str("Host name as libvirt reports it."),
                "cpu_model" => comp_str("CPU model, e.g. `x86_64`."),
                "cpus" => comp_num("Active CPUs."),
                "memory_total_kb" => comp_num("Memory in KiB."),
                "memory_free_kb" => comp_num("Free memory in KiB."),
            },
        )
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let n = self
            .0
            .call(diags, "Cannot read the host's node info", None, |h| {
                h.node_info()
            })
            .await?;
        Some(NodeInfoState {
            id: Value::Value(n.hostname.clone()),
            hostname: Value::Value(n.hostname),
            cpu_model: Value::Value(n.cpu_model),
            cpus: Value::Value(n.cpus as i64),
            memory_total_kb: Value::Value(n.memory_kib as i64),
            memory_free_kb: Value::Value((n.free_memory_bytes / 1024) as i64),
        })
    }
}

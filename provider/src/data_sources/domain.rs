//! The `libvirt_domain` data source: a domain looked up by name.

use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::domain::{AddressSource, PowerState};
use serde::{Deserialize, Serialize};
use tfplugin::schema::Schema;
use tfplugin::value::{Value, ValueEmpty};
use tfplugin::{map, DataSource, Diagnostics};

use crate::connection::Shared;
use crate::schema::{attr, comp_num, comp_str, flat_schema, req_str};

/// `libvirt_domain` (data): a domain looked up by name.
pub struct DomainSource(pub Arc<Shared>);

/// State of the `libvirt_domain` data source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DomainLookup {
    id: Value<String>,
    name: Value<String>,
    #[serde(rename = "type")]
    kind: Value<String>,
    memory: Value<i64>,
    vcpu: Value<i64>,
    running: Value<bool>,
    autostart: Value<bool>,
    macs: Value<Vec<String>>,
    addresses: Value<Vec<String>>,
}

#[async_trait]
impl DataSource for DomainSource {
    type State<'a> = DomainLookup;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use tfplugin::schema::{AttributeConstraint as C, AttributeType as T};
        flat_schema(
            "An existing domain, by name.",
            map! {
                "id" => comp_str("UUID."),
                "name" => req_str("Domain name."),
                "type" => comp_str("`kvm` or `qemu`."),
                "memory" => comp_num("Memory in MiB."),
                "vcpu" => comp_num("Virtual CPUs."),
                "running" => attr(T::Bool, C::Computed, "Whether it runs."),
                "autostart" => attr(T::Bool, C::Computed, "Whether it starts with libvirtd."),
                "macs" => attr(T::List(T::String.into()), C::Computed, "MAC addresses of its interfaces."),
                "addresses" => attr(T::List(T::String.into()), C::Computed, "IP addresses from DHCP leases."),
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
        let (st, def, leases) = self
            .0
            .call(diags, "Cannot find the domain", Some("name"), move |h| {
                let st = h.domain_status(&name)?;
                let def = h.domain_def(&st.uuid)?;
                let leases = h
                    .domain_addresses(&st.uuid, AddressSource::Lease)
                    .unwrap_or_default();
                Ok((st, def, leases))
            })
            .await?;
        Some(DomainLookup {
            id: Value::Value(st.uuid),
            name: Value::Value(st.name),
            kind: Value::Value(def.kind.as_str().to_string()),
            memory: Value::Value(def.memory_mib as i64),
            vcpu: Value::Value(def.vcpu as i64),
            running: Value::Value(st.state == PowerState::Running),
            autostart: Value::Value(st.autostart),
            macs: Value::Value(
                def.interfaces
                    .iter()
                    .filter_map(|i| i.mac.clone())
                    .collect(),
            ),
            addresses: Value::Value(leases.into_iter().flat_map(|l| l.addresses).collect()),
        })
    }
}

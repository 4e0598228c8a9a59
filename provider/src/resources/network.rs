//! `libvirt_network`: a NAT, routed, isolated or bridged network.
//! `autostart` changes in place; anything else replaces the network.

use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::network::{NetworkDef, NetworkMode, NetworkStatus};
use serde::{Deserialize, Serialize};
use tfplugin::schema::{
    AttributeConstraint as C, AttributeType as T, Block, Description, NestedBlock, Schema,
};
use tfplugin::value::{serde_as_vec, Value, ValueEmpty};
use tfplugin::{map, AttributePath, Diagnostics, Resource};

use crate::connection::Shared;
use crate::diagnostics::{fail, to_diag};
use crate::schema::{attr, comp_str, oc_bool, oc_str, opt_bool, opt_str, req_str};
use crate::state::{known, Maybe};

/// `libvirt_network`.
pub struct NetworkResource(pub Arc<Shared>);

/// State of `libvirt_network`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkState {
    id: Value<String>,
    name: Value<String>,
    mode: Value<String>,
    bridge: Value<String>,
    domain: Value<String>,
    addresses: Value<Vec<Value<String>>>,
    autostart: Value<bool>,
    #[serde(with = "serde_as_vec")]
    dhcp: Value<Toggle>,
    #[serde(with = "serde_as_vec")]
    dns: Value<Toggle>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Toggle {
    enabled: Value<bool>,
}

fn def_of(s: &NetworkState) -> Result<NetworkDef, (&'static str, kvmhost::libvirt::Error)> {
    let mode =
        NetworkMode::parse(known(&s.mode).unwrap_or("nat"), "mode").map_err(|e| ("mode", e))?;
    let on = |t: &Value<Toggle>, default: bool| {
        t.as_ref_option()
            .and_then(|t| t.enabled.as_ref_option().copied())
            .unwrap_or(default)
    };
    Ok(NetworkDef {
        name: known(&s.name).unwrap_or_default().to_string(),
        uuid: None,
        mode,
        bridge: known(&s.bridge).map(str::to_string),
        domain: known(&s.domain).map(str::to_string),
        addresses: s
            .addresses
            .as_ref_option()
            .map(|v| {
                v.iter()
                    .filter_map(|a| a.as_ref_option().cloned())
                    .collect()
            })
            .unwrap_or_default(),
        dhcp: on(&s.dhcp, true),
        dns: on(&s.dns, true),
    })
}

fn merge(prior: &NetworkState, st: &NetworkStatus) -> NetworkState {
    let d = &st.def;
    let mut s = prior.clone();
    s.id = Value::Value(d.uuid.clone().unwrap_or_default());
    s.name = Value::Value(d.name.clone());
    s.mode = Value::Value(d.mode.as_str().to_string());
    s.bridge = d.bridge.clone().map(Value::Value).unwrap_or(Value::Null);
    s.domain = d.domain.clone().map(Value::Value).unwrap_or(Value::Null);
    s.addresses = if d.addresses.is_empty() && prior.addresses.is_null() {
        Value::Null
    } else {
        Value::Value(d.addresses.iter().cloned().map(Value::Value).collect())
    };
    s.autostart = Value::Value(st.autostart);
    // Blocks keep the form they were written in unless libvirt disagrees;
    // an import writes them only when they differ from the default (on).
    s.dhcp = toggle_state(&prior.dhcp, d.dhcp);
    s.dns = toggle_state(&prior.dns, d.dns);
    s
}

fn toggle_state(prior: &Value<Toggle>, live: bool) -> Value<Toggle> {
    let written = prior
        .as_ref_option()
        .and_then(|t| t.enabled.as_ref_option().copied());
    if written.unwrap_or(true) == live {
        prior.clone()
    } else if live {
        Value::Null
    } else {
        Value::Value(Toggle {
            enabled: Value::Value(false),
        })
    }
}

#[async_trait]
impl Resource for NetworkResource {
    type State<'a> = Maybe<NetworkState>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let toggle = |d: &str| {
            NestedBlock::Optional(Block {
                version: 0,
                description: Description::plain(d),
                attributes: map! { "enabled" => opt_bool("On or off. Default true.") },
                ..Default::default()
            })
        };
        Some(Schema {
            version: 0,
            block: Block {
                version: 0,
                description: Description::markdown("A libvirt virtual network."),
                attributes: map! {
                    "id" => comp_str("UUID of the network."),
                    "name" => req_str("Network name, unique on the host."),
                    "mode" => oc_str("`nat` (default), `route`, `bridge` (an existing host bridge) or `none`."),
                    "bridge" => oc_str("Bridge device name; libvirt picks one for nat/route/none when unset."),
                    "domain" => opt_str("DNS domain for guests."),
                    "addresses" => attr(T::List(T::String.into()), C::Optional, "IPv4 subnets in CIDR form, e.g. `10.17.3.0/24`."),
                    "autostart" => oc_bool("Start with libvirtd. Default true."),
                },
                blocks: map! {
                    "dhcp" => toggle("DHCP on the subnets."),
                    "dns" => toggle("DNS for guests."),
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        let Some(c) = config.0 else { return Some(()) };
        if c.name.is_unknown()
            || c.addresses.is_unknown()
            || c.mode.is_unknown()
            || c.bridge.is_unknown()
        {
            return Some(());
        }
        let mut probe = c.clone();
        if probe.name.is_null() {
            probe.name = Value::Value("x".into());
        }
        match def_of(&probe) {
            Ok(d) => {
                if let Err(e) = d.validate() {
                    if let kvmhost::libvirt::Error::Invalid { field, .. } = &e {
                        diags.error(
                            "Invalid network",
                            e.to_string(),
                            AttributePath::new(field.to_string()),
                        );
                    }
                }
            }
            Err((field, e)) => {
                diags.error("Invalid network", e.to_string(), AttributePath::new(field))
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
        let Some(prior) = state.0 else {
            return Some((Maybe(None), private));
        };
        let id = known(&prior.id)?.to_string();
        let live = self
            .0
            .read_back(diags, "Cannot read the network", move |h| h.network(&id))
            .await?;
        Some((Maybe(live.map(|st| merge(&prior, &st))), private))
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
        if s.mode.is_null() {
            s.mode = Value::Value("nat".into());
        }
        if s.bridge.is_null() {
            s.bridge = Value::Unknown;
        }
        if s.autostart.is_null() {
            s.autostart = Value::Value(true);
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
        let replace = [
            "name",
            "mode",
            "bridge",
            "domain",
            "addresses",
            "dhcp",
            "dns",
        ]
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
        let s = planned.0?;
        let def = match def_of(&s) {
            Ok(d) => d,
            Err((field, e)) => return fail(diags, to_diag("Invalid network", &e, Some(field))),
        };
        let autostart = s.autostart.as_ref_option().copied().unwrap_or(true);
        let st = self
            .0
            .call(diags, "Cannot create the network", Some("name"), move |h| {
                let uuid = h.create_network(&def, autostart)?;
                h.network(&uuid)
            })
            .await?;
        Some((Maybe(Some(merge(&s, &st))), private))
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
        let s = planned.0?;
        let id = known(&s.id)?.to_string();
        let autostart = s.autostart.as_ref_option().copied().unwrap_or(true);
        let st = self
            .0
            .call(
                diags,
                "Cannot update the network",
                Some("autostart"),
                move |h| {
                    h.set_network_autostart(&id, autostart)
                        .and_then(|_| h.network(&id))
                },
            )
            .await?;
        Some((Maybe(Some(merge(&s, &st))), private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let id = known(&state.0?.id)?.to_string();
        self.0
            .delete(diags, "Cannot delete the network", move |h| {
                h.delete_network(&id)
            })
            .await
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let st = self
            .0
            .import(
                diags,
                "network",
                "give the network's UUID or name",
                move |h| h.network(&id),
            )
            .await?;
        Some((
            Maybe(Some(merge(&NetworkState::default(), &st))),
            ValueEmpty::Null,
        ))
    }
}

//! The provider block: which host, how to reach it, how to wake it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::{Error as HostError, SshOptions, Uri};
use serde::{Deserialize, Serialize};
use tfplugin::schema::{Block, Description, NestedBlock, Schema};
use tfplugin::value::{Value, ValueEmpty};
use tfplugin::{map, Diagnostics, DynamicDataSource, DynamicResource, Provider};

use kvmhost::libvirt::handle::HostAddress;

use crate::connection::Shared;
use crate::schema::{attr, opt_bool, opt_str};
use crate::wake::parse_wake;

/// `provider "libvirt" {}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    uri: Value<String>,
    keyfile: Value<String>,
    known_hosts: Value<String>,
    no_verify: Value<bool>,
    #[serde(with = "tfplugin::value::serde_as_vec")]
    wake: Value<WakeBlock>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct WakeBlock {
    mac: Value<String>,
    broadcast: Value<String>,
    port: Value<i64>,
    powerwake_port: Value<i64>,
    timeout: Value<i64>,
}

/// The libvirt provider.
#[derive(Default)]
pub struct LibvirtProvider {
    shared: Arc<Shared>,
}

const DEFAULT_URI: &str = "qemu:///system";

fn host_config(config: &Config) -> Result<HostAddress, tfplugin::Diagnostic> {
    let uri = config
        .uri
        .as_ref_option()
        .map(String::as_str)
        .unwrap_or(DEFAULT_URI);
    let ssh = SshOptions {
        keyfile: config.keyfile.as_ref_option().cloned(),
        known_hosts: config.known_hosts.as_ref_option().cloned(),
        no_verify: config.no_verify.as_ref_option().copied().unwrap_or(false),
    };
    let uri = Uri::parse(uri)
        .map_err(HostError::from)
        .and_then(|u| u.with_ssh(&ssh))
        .map_err(|e| crate::diagnostics::to_diag("Invalid libvirt URI", &e, Some("uri")))?;
    let wake = match config.wake.as_ref_option() {
        None => None,
        Some(w) => {
            let host = uri.host();
            Some(parse_wake(
                w.mac
                    .as_ref_option()
                    .map(String::as_str)
                    .unwrap_or_default(),
                w.broadcast.as_ref_option().map(String::as_str),
                w.port.as_ref_option().copied(),
                w.powerwake_port.as_ref_option().copied(),
                w.timeout.as_ref_option().copied(),
                host,
            )?)
        }
    };
    Ok(HostAddress { uri, wake })
}

#[async_trait]
impl Provider for LibvirtProvider {
    type Config<'a> = Config;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use tfplugin::schema::{AttributeConstraint as C, AttributeType as T};
        Some(Schema {
            version: 0,
            block: Block {
                version: 0,
                description: Description::markdown("Manages libvirt hosts: pools, volumes, cloud-init seeds, networks and domains."),
                attributes: map! {
                    "uri" => opt_str("libvirt connection URI. Default `qemu:///system`. For another host: `qemu+ssh://user@host/system`."),
                    "keyfile" => opt_str("Private key for `qemu+ssh://` (libvirt's `keyfile` URI parameter)."),
                    "known_hosts" => opt_str("known_hosts file for `qemu+libssh://` (libvirt's OpenSSH transport `qemu+ssh://` ignores it and is refused with it; it checks `~/.ssh/known_hosts`, never prompting). The host key is always verified unless `no_verify` is true."),
                    "no_verify" => opt_bool("Skip SSH host key verification (`no_verify=1`). Default false."),
                },
                blocks: map! {
                    "wake" => NestedBlock::Optional(Block {
                        version: 0,
                        description: Description::markdown("Wake the host (Wake-on-LAN / powerwake) when it does not answer, then wait for libvirt."),
                        attributes: map! {
                            "mac" => attr(T::String, C::Required, "MAC address of the host's NIC."),
                            "broadcast" => opt_str("Broadcast address of the host's subnet. Default: found from the URI's host."),
                            "port" => attr(T::Number, C::Optional, "UDP port for the magic packet. Default 7."),
                            "powerwake_port" => attr(T::Number, C::Optional, "UDP port powernapd listens on. Default 57748."),
                            "timeout" => attr(T::Number, C::Optional, "Seconds to wait for the host. Default 300."),
                        },
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Config) -> Option<()> {
        // Unknown values (from other resources) are checked at configure time.
        if config.uri.is_unknown() || config.wake.is_unknown() {
            return Some(());
        }
        if let Err(d) = host_config(&config) {
            diags.add_error(d);
        }
        if let Some(detail) = config.uri.as_ref_option().and_then(|u| libssh_warning(u)) {
            diags.warning(
                "libvirt's libssh transport is unreliable for volume transfers",
                detail,
                tfplugin::AttributePath::new("uri"),
            );
        }
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        _terraform_version: String,
        config: Config,
    ) -> Option<()> {
        match host_config(&config) {
            Ok(c) => {
                self.shared.configure(c).await;
                Some(())
            }
            Err(d) => {
                diags.add_error(d);
                None
            }
        }
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        let s = &self.shared;
        Some(map! {
            "pool" => crate::resources::pool::PoolResource(s.clone()),
            "volume" => crate::resources::volume::VolumeResource(s.clone()),
            "cloudinit_disk" => crate::resources::cloudinit_disk::CloudinitDiskResource(s.clone()),
            "domain" => crate::resources::domain::DomainResource(s.clone()),
            "network" => crate::resources::network::NetworkResource(s.clone()),
            "domain_template" => crate::resources::domain_template::DomainTemplateResource(s.clone()),
        })
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        let s = &self.shared;
        Some(map! {
            "node_info" => crate::data_sources::NodeInfoSource(s.clone()),
            "volume" => crate::data_sources::VolumeSource(s.clone()),
            "domain" => crate::data_sources::DomainSource(s.clone()),
            "image_build" => crate::data_sources::ImageBuildSource,
        })
    }
}

/// The warning for a `qemu+libssh://` (or libssh2) URI: libvirt 9.0's
/// client over libssh now and then stalls or crashes in volume streams,
/// which every image upload and cloud-init disk uses.
fn libssh_warning(uri: &str) -> Option<String> {
    let u = Uri::parse(uri).ok()?;
    matches!(u.transport(), Some("libssh" | "libssh2")).then(|| {
        format!(
            "`{uri}` uses libvirt's libssh transport, whose client (libvirt 9.0) now and then \
             stalls or crashes in volume transfers (image uploads, cloud-init disks, template \
             seeds). Use `qemu+ssh://` (OpenSSH) for hosts that receive images; it reads \
             ~/.ssh/known_hosts and ~/.ssh/config."
        )
    })
}

#[cfg(test)]
mod libssh_tests {
    use super::libssh_warning;

    #[test]
    fn only_the_libssh_transports_are_warned_about() {
        let w = libssh_warning("qemu+libssh://root@h/system?sshauth=privkey").unwrap();
        assert!(w.contains("qemu+ssh://"), "{w}");
        assert!(libssh_warning("qemu+libssh2://root@h/system").is_some());
        for quiet in ["qemu+ssh://root@h/system", "qemu:///system", "not a uri"] {
            assert!(libssh_warning(quiet).is_none(), "{quiet}");
        }
    }
}

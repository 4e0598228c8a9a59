//! Data sources: read-only views of the host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use kvmhost::libvirt::domain::{AddressSource, PowerState};
use kvmhost::source::{digest_in_list, Checksum};
use serde::{Deserialize, Serialize};
use tfplugin::schema::{Block, Description, Schema};
use tfplugin::value::{Value, ValueEmpty};
use tfplugin::{map, DataSource, Diagnostics};

use crate::common::{attr, comp_num, comp_str, fail, opt_str, req_str, Shared};

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
        Some(Schema {
            version: 0,
            block: Block {
                version: 0,
                description: Description::markdown("CPUs and memory of the libvirt host."),
                attributes: map! {
                    "id" => comp_str("Host name."),
                    "hostname" => comp_str("Host name as libvirt reports it."),
                    "cpu_model" => comp_str("CPU model, e.g. `x86_64`."),
                    "cpus" => comp_num("Active CPUs."),
                    "memory_total_kb" => comp_num("Memory in KiB."),
                    "memory_free_kb" => comp_num("Free memory in KiB."),
                },
                ..Default::default()
            },
        })
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
        Some(Schema {
            version: 0,
            block: Block {
                version: 0,
                description: Description::markdown("An existing volume, by pool and name."),
                attributes: map! {
                    "id" => comp_str("The volume's key."),
                    "name" => req_str("Name inside the pool."),
                    "pool" => opt_str("Pool name. Default `default`."),
                    "path" => comp_str("Path on the host."),
                    "size" => comp_num("Virtual size in bytes."),
                    "allocation" => comp_num("Bytes allocated on the host."),
                    "format" => comp_str("Format, e.g. `qcow2`."),
                },
                ..Default::default()
            },
        })
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
        Some(Schema {
            version: 0,
            block: Block {
                version: 0,
                description: Description::markdown("An existing domain, by name."),
                attributes: map! {
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
                ..Default::default()
            },
        })
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

/// `libvirt_image_build`: the newest `builds/<timestamp>/<name>.qcow2`
/// under a directory, the layout image builds keep.
pub struct ImageBuildSource;

/// State of `libvirt_image_build`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageBuild {
    id: Value<String>,
    directory: Value<String>,
    name: Value<String>,
    version: Value<String>,
    path: Value<String>,
    sha256: Value<String>,
}

/// Finds the newest build of `name` under `directory`; `Err` is user text.
pub fn latest_build(
    directory: &Path,
    name: &str,
) -> Result<(String, PathBuf, Option<String>), String> {
    let builds = directory.join("builds");
    let file = format!("{name}.qcow2");
    let entries =
        std::fs::read_dir(&builds).map_err(|e| format!("cannot list {}: {e}", builds.display()))?;
    let newest = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(&file).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .max()
        .ok_or_else(|| format!("no build of {file} under {}", builds.display()))?;
    let path = builds.join(&newest).join(&file);
    let sums = std::fs::read_to_string(builds.join(&newest).join("SHA256SUMS")).ok();
    let sha = sums.and_then(|text| match digest_in_list(&text, &file) {
        Some(Checksum::Sha256(hex)) => Some(hex),
        _ => None,
    });
    Ok((newest, path, sha))
}

#[async_trait]
impl DataSource for ImageBuildSource {
    type State<'a> = ImageBuild;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 0,
            block: Block {
                version: 0,
                description: Description::markdown(
                    "The newest image build: `<directory>/builds/<version>/<name>.qcow2`, versions compared as text (timestamps).",
                ),
                attributes: map! {
                    "id" => comp_str("Path of the image."),
                    "directory" => req_str("Folder holding `builds/`."),
                    "name" => req_str("Image name without `.qcow2`."),
                    "version" => comp_str("Name of the newest build folder."),
                    "path" => comp_str("Path of the newest image."),
                    "sha256" => comp_str("The image's sha256 from the build's `SHA256SUMS`, when there is one."),
                },
                ..Default::default()
            },
        })
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let dir = config.directory.as_ref_option()?.clone();
        let name = config.name.as_ref_option()?.clone();
        match latest_build(Path::new(&dir), &name) {
            Ok((version, path, sha)) => Some(ImageBuild {
                id: Value::Value(path.display().to_string()),
                directory: Value::Value(dir),
                name: Value::Value(name),
                version: Value::Value(version),
                path: Value::Value(path.display().to_string()),
                sha256: sha.map(Value::Value).unwrap_or(Value::Null),
            }),
            Err(msg) => fail(
                diags,
                tfplugin::Diagnostic::new(
                    "No image build found",
                    msg,
                    tfplugin::AttributePath::new("directory"),
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_build_wins_and_its_checksum_is_read() {
        let dir = tempfile::tempdir().unwrap();
        for (ts, sum) in [
            ("20240101-0101", None),
            ("20240301-0900", Some("AB".repeat(32))),
            ("20240201-0000", None),
        ] {
            let b = dir.path().join("builds").join(ts);
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(b.join("agent.qcow2"), ts).unwrap();
            if let Some(s) = &sum {
                std::fs::write(
                    b.join("SHA256SUMS"),
                    format!("{s}  agent.qcow2\nffff  other.qcow2\n"),
                )
                .unwrap();
            }
        }
        std::fs::create_dir_all(dir.path().join("builds/20990101-0000")).unwrap();
        let (v, p, sha) = latest_build(dir.path(), "agent").unwrap();
        assert_eq!(v, "20240301-0900");
        assert!(p.ends_with("builds/20240301-0900/agent.qcow2"));
        assert_eq!(sha, Some("ab".repeat(32)));
        assert!(latest_build(dir.path(), "missing")
            .unwrap_err()
            .contains("no build of missing.qcow2"));
    }
}

//! Storage pools (directory pools).

use super::error::{lv, Error, Result};
use super::xml::{child, child_attr, child_text, esc, parse, size_of};
use super::Host;

/// A directory storage pool to define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Pool name, unique on the host.
    pub name: String,
    /// Directory that holds the pool's volumes.
    pub path: String,
}

/// A storage pool as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// Pool name.
    pub name: String,
    /// Pool UUID.
    pub uuid: String,
    /// Pool type, e.g. "dir".
    pub kind: String,
    /// Target directory (empty for pools without one).
    pub path: String,
    /// Bytes in total.
    pub capacity: u64,
    /// Bytes used.
    pub allocation: u64,
    /// Bytes free.
    pub available: u64,
    /// Whether the pool is started.
    pub active: bool,
    /// Whether libvirt starts it at boot.
    pub autostart: bool,
}

impl PoolSpec {
    /// The pool's libvirt XML.
    pub fn to_xml(&self) -> String {
        format!(
            "<pool type='dir'><name>{}</name><target><path>{}</path></target></pool>",
            esc(&self.name),
            esc(&self.path)
        )
    }
}

impl Host {
    /// Defines, builds (creates the directory), starts and autostarts a
    /// directory pool. On failure, whatever was defined is removed again.
    pub fn create_dir_pool(&self, spec: &PoolSpec) -> Result<PoolInfo> {
        if spec.name.is_empty() || spec.name.contains('/') {
            return Err(Error::Invalid {
                field: "name",
                message: format!(
                    "'{}' is not a valid pool name: use letters, digits, '-' or '_'",
                    spec.name
                ),
            });
        }
        if !spec.path.starts_with('/') {
            return Err(Error::Invalid {
                field: "path",
                message: format!("'{}' must be an absolute directory path", spec.path),
            });
        }
        let ctx = format!("define storage pool '{}'", spec.name);
        let pool = self
            .raw()
            .define_storage_pool_xml(&spec.to_xml(), 0)
            .map_err(lv(ctx, "storage pool", &spec.name))?;
        let started = (|| {
            pool.build(0)?;
            pool.create(0)?;
            pool.set_autostart(true)?;
            Ok::<(), virt::error::Error>(())
        })();
        if let Err(e) = started {
            let _ = pool.destroy();
            let _ = pool.undefine();
            return Err(Error::Libvirt {
                context: format!("start storage pool '{}'", spec.name),
                message: e.message().to_string(),
            });
        }
        self.pool(&spec.name)
    }

    /// Looks a pool up by name.
    pub fn pool(&self, name: &str) -> Result<PoolInfo> {
        let pool = self.raw().lookup_storage_pool_by_name(name).map_err(lv(
            format!("look up storage pool '{name}'"),
            "storage pool",
            name,
        ))?;
        pool_info(&pool, name)
    }

    /// Looks a pool up by UUID.
    pub fn pool_by_uuid(&self, uuid: &str) -> Result<PoolInfo> {
        let pool = self
            .raw()
            .lookup_storage_pool_by_uuid_string(uuid)
            .map_err(lv(
                format!("look up storage pool {uuid}"),
                "storage pool",
                uuid,
            ))?;
        pool_info(&pool, uuid)
    }

    /// Stops and undefines a pool; with `delete_dir`, removes its (empty)
    /// directory too.
    pub fn delete_pool(&self, name: &str, delete_dir: bool) -> Result<()> {
        let pool = self.raw().lookup_storage_pool_by_name(name).map_err(lv(
            format!("look up storage pool '{name}'"),
            "storage pool",
            name,
        ))?;
        let fail = |what: &str| {
            let context = format!("{what} storage pool '{name}'");
            move |e: virt::error::Error| Error::Libvirt {
                context,
                message: e.message().to_string(),
            }
        };
        if pool.is_active().map_err(fail("inspect"))? {
            if delete_dir {
                let _ = pool.refresh(0);
                if pool.num_of_volumes().map_err(fail("list volumes of"))? > 0 {
                    return Err(Error::Libvirt {
                        context: format!("delete storage pool '{name}'"),
                        message: "the pool still holds volumes; delete them first".into(),
                    });
                }
            }
            pool.destroy().map_err(fail("stop"))?;
        }
        if delete_dir {
            pool.delete(0).map_err(fail("delete the directory of"))?;
        }
        pool.undefine().map_err(fail("undefine"))
    }

    /// Names of all pools, active or not.
    pub fn pool_names(&self) -> Result<Vec<String>> {
        let pools = self.raw().list_all_storage_pools(0).map_err(lv(
            "list storage pools",
            "storage pool",
            "",
        ))?;
        pools
            .iter()
            .map(|p| {
                p.name().map_err(|e| Error::Libvirt {
                    context: "list storage pools".into(),
                    message: e.message().to_string(),
                })
            })
            .collect()
    }
}

fn pool_info(pool: &virt::storage_pool::StoragePool, name: &str) -> Result<PoolInfo> {
    let fail = |e: virt::error::Error| Error::Libvirt {
        context: format!("read storage pool '{name}'"),
        message: e.message().to_string(),
    };
    let xml = pool.xml_desc(0).map_err(fail)?;
    let doc = parse(&format!("XML of storage pool '{name}'"), &xml)?;
    let root = doc.root_element();
    Ok(PoolInfo {
        name: child_text(root, "name").unwrap_or_default(),
        uuid: child_text(root, "uuid").unwrap_or_default(),
        kind: root.attribute("type").unwrap_or_default().to_string(),
        path: child(root, "target")
            .and_then(|t| child_text(t, "path"))
            .unwrap_or_default(),
        capacity: size_of(root, "capacity", "bytes").unwrap_or(0),
        allocation: size_of(root, "allocation", "bytes").unwrap_or(0),
        available: size_of(root, "available", "bytes").unwrap_or(0),
        active: pool.is_active().map_err(fail)?,
        autostart: pool.autostart().map_err(fail)?,
    })
    .map(|mut info: PoolInfo| {
        if info.kind.is_empty() {
            info.kind = child_attr(root, "source", "type").unwrap_or_default();
        }
        info
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_pool_is_created_started_and_deleted() {
        let host = Host::open("test:///default").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spec = PoolSpec {
            name: "images".into(),
            path: dir.path().join("images").display().to_string(),
        };
        let info = host.create_dir_pool(&spec).unwrap();
        assert_eq!(info.name, "images");
        assert_eq!(info.kind, "dir");
        assert!(info.active && info.autostart);
        assert_eq!(host.pool_by_uuid(&info.uuid).unwrap().name, "images");
        host.delete_pool("images", false).unwrap();
        assert!(host.pool("images").unwrap_err().is_not_found());
    }

    #[test]
    fn relative_pool_path_is_refused_with_the_field_name() {
        let host = Host::open("test:///default").unwrap();
        let err = host
            .create_dir_pool(&PoolSpec {
                name: "x".into(),
                path: "relative/dir".into(),
            })
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid path"), "{err}");
    }
}

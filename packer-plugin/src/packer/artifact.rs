//! The build's result as Packer sees it: files, id, a description, and
//! `Destroy` for `packer build` runs that throw it away.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rmpv::Value;

use crate::protocol::rpc::value::{key_str, object};
use crate::protocol::rpc::{ReplyFuture, Service};

/// The id post-processors match on.
pub const BUILDER_ID: &str = "kvmbe.libvirt";

/// An image made by the builder.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The output folder.
    pub dir: PathBuf,
    /// The files in it (disk, SHA256SUMS).
    pub files: Vec<PathBuf>,
    /// The image's id: the disk file name.
    pub id: String,
    /// Values for `State(name)` lookups (e.g. `diskName`, `diskType`).
    pub state: BTreeMap<String, String>,
}

impl Artifact {
    fn describe(&self) -> String {
        format!(
            "VM files in directory: {}\n{}",
            self.dir.display(),
            self.files
                .iter()
                .map(|f| format!("  {}", f.display()))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

impl Service for Artifact {
    fn call(self: Arc<Self>, method: &str, arg: Value) -> ReplyFuture {
        let reply = match method {
            "BuilderId" => Ok(Value::from(BUILDER_ID)),
            "Files" => Ok(Value::Array(
                self.files
                    .iter()
                    .map(|f| Value::from(f.display().to_string()))
                    .collect(),
            )),
            "Id" => Ok(Value::from(self.id.as_str())),
            "String" => Ok(Value::from(self.describe())),
            "State" => Ok(key_str(&arg)
                .and_then(|k| self.state.get(k))
                .map_or(Value::Nil, |v| Value::from(v.as_str()))),
            "Destroy" => Ok(match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => Value::Nil,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Nil,
                Err(e) => object([(
                    "Message",
                    Value::from(format!("removing {}: {e}", self.dir.display())),
                )]),
            }),
            m => Err(format!("rpc: can't find method Artifact.{m}")),
        };
        Box::pin(async move { reply })
    }
}

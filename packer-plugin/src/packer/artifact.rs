//! The build's result as Packer sees it: files, id, a description, and
//! `Destroy` for `packer build` runs that throw it away.

use std::sync::Arc;

use rmpv::Value;

use crate::build::Image;
use crate::protocol::rpc::value::{key_str, object};
use crate::protocol::rpc::{ReplyFuture, Service};

/// The id post-processors match on.
pub const BUILDER_ID: &str = "kvmbe.libvirt";

/// An image made by the builder, served to Packer.
#[derive(Debug, Clone)]
pub struct Artifact(pub Image);

impl Artifact {
    fn describe(&self) -> String {
        format!(
            "VM files in directory: {}\n{}",
            self.0.dir.display(),
            self.0
                .files
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
                self.0
                    .files
                    .iter()
                    .map(|f| Value::from(f.display().to_string()))
                    .collect(),
            )),
            "Id" => Ok(Value::from(self.0.id.as_str())),
            "String" => Ok(Value::from(self.describe())),
            "State" => Ok(key_str(&arg)
                .and_then(|k| self.0.state.get(k))
                .map_or(Value::Nil, |v| Value::from(v.as_str()))),
            "Destroy" => Ok(match std::fs::remove_dir_all(&self.0.dir) {
                Ok(()) => Value::Nil,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Nil,
                Err(e) => object([(
                    "Message",
                    Value::from(format!("removing {}: {e}", self.0.dir.display())),
                )]),
            }),
            m => Err(format!("rpc: can't find method Artifact.{m}")),
        };
        Box::pin(async move { reply })
    }
}

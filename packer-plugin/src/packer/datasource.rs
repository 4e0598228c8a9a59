//! The `Datasource` service Packer 1.7+ calls for an HCL2 `data` block:
//! `ConfigSpec`, `Configure`, `OutputSpec`, `Execute`, `Cancel`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rmpv::Value;

use crate::packer::builder::{split_configs, ConfigsError, JsonMap};
use crate::protocol::handshake::Protocol;
use crate::protocol::rpc::value::object;
use crate::protocol::rpc::{ReplyFuture, Service};
use crate::protocol::spec::{self, ObjectSpec, ProtobufSpecError};

/// Why a data source refused its settings or gave no result; the text is
/// what Packer shows.
pub type DataSourceError = Box<dyn std::error::Error + Send + Sync>;

/// Why a `Datasource` call failed, before it goes on the wire as the
/// reply's error text (Go's `net/rpc` errors are strings).
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// The call's arguments are not what Packer sends.
    #[error("{0}")]
    Arguments(#[from] ConfigsError),
    /// The spec could not be encoded.
    #[error("{0}")]
    Spec(#[from] ProtobufSpecError),
    /// `Execute` before `Configure` succeeded.
    #[error("Datasource.Execute called before a successful Configure")]
    NotConfigured,
    /// A method the service does not have.
    #[error("rpc: can't find method Datasource.{0}")]
    NoMethod(String),
    /// The data source's own refusal.
    #[error("{0}")]
    Source(DataSourceError),
}

/// A data source: its settings, what it gives (all strings), and the
/// work that gives it.
pub trait DataSource: Send + Sync + 'static {
    /// The HCL2 schema of the `data` block.
    fn config_spec(&self) -> ObjectSpec;
    /// The names of the string attributes the result has.
    fn outputs(&self) -> &'static [&'static str];
    /// Checks the block's settings (an error names the setting).
    fn configure(&self, config: &JsonMap) -> Result<(), DataSourceError>;
    /// Produces the result, one value per name of [`DataSource::outputs`].
    fn execute(&self) -> Result<BTreeMap<String, String>, DataSourceError>;
}

/// A data source as served to Packer.
pub struct DatasourceService {
    ds: Arc<dyn DataSource>,
    protocol: Protocol,
    protobuf: bool,
    configured: Mutex<bool>,
}

impl DatasourceService {
    /// `ds` served to a Packer speaking `protocol`; `protobuf` when Packer
    /// started the plugin with `--protobuf`.
    pub fn new(ds: Arc<dyn DataSource>, protocol: Protocol, protobuf: bool) -> Arc<Self> {
        Arc::new(DatasourceService {
            ds,
            protocol,
            protobuf,
            configured: Mutex::new(false),
        })
    }

    fn encode_spec(&self, s: &ObjectSpec) -> Result<Vec<u8>, CallError> {
        if self.protobuf {
            spec::encode_protobuf(s).map_err(CallError::Spec)
        } else {
            Ok(spec::encode(s, self.protocol.flavor()))
        }
    }

    fn output_spec(&self) -> ObjectSpec {
        self.ds
            .outputs()
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    spec::Spec::Attr {
                        ty: spec::CtyType::String,
                        required: false,
                    },
                )
            })
            .collect()
    }

    fn configure(&self, arg: &Value) -> Result<Value, CallError> {
        let (user, _packer) = split_configs(arg).map_err(CallError::Arguments)?;
        self.ds.configure(&user).map_err(CallError::Source)?;
        *self.configured.lock().expect("configured lock") = true;
        Ok(object([("Error", Value::Nil)]))
    }

    fn execute(&self) -> Result<Value, CallError> {
        if !*self.configured.lock().expect("configured lock") {
            return Err(CallError::NotConfigured);
        }
        let result = self.ds.execute().map_err(CallError::Source)?;
        let bytes = if self.protobuf {
            spec::cty_string_object_msgpack(&result)
        } else {
            spec::cty_string_object_gob(&result)
        };
        Ok(object([
            ("Value", Value::Binary(bytes)),
            ("Error", Value::Nil),
        ]))
    }
}

impl Service for DatasourceService {
    fn call(self: Arc<Self>, method: &str, arg: Value) -> ReplyFuture {
        let reply = match method {
            "ConfigSpec" => self
                .encode_spec(&self.ds.config_spec())
                .map(|b| object([("ConfigSpec", Value::Binary(b))])),
            "OutputSpec" => self
                .encode_spec(&self.output_spec())
                .map(|b| object([("OutputSpec", Value::Binary(b))])),
            "Configure" => self.configure(&arg),
            "Execute" => self.execute(),
            "Cancel" => Ok(Value::Nil),
            m => Err(CallError::NoMethod(m.to_string())),
        };
        let reply = reply.map_err(|e| e.to_string());
        Box::pin(async move { reply })
    }
}

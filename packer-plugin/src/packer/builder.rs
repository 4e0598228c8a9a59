//! The `Builder` service Packer calls: `ConfigSpec`, `Prepare`, `Run`,
//! `Cancel`.

use std::sync::{Arc, Mutex};

use rmpv::Value;
use serde_json::Map;
use tokio_util::sync::CancellationToken;

use crate::build::{self, BuildEnv};
use crate::config::{self, CommunicatorConfig, Config};
use crate::packer::artifact::Artifact;
use crate::protocol::handshake::Protocol;
use crate::protocol::mux::{Broker, MuxError};
use crate::protocol::rpc::value::{field, object, strings, to_json};
use crate::protocol::rpc::{Client, ReplyFuture, Router, Service};
use crate::protocol::spec::{self, ProtobufSpecError};
use crate::provision::PackerHook;
use crate::secrets::Secrets;
use crate::ui::Ui;

/// Why `Builder.Run` failed; Packer shows the text.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The argument is not the stream id Packer sends.
    #[error("Builder.Run: the argument is not a stream id")]
    NotAStream,
    /// `Run` came without a successful `Prepare`.
    #[error("Builder.Run called before a successful Prepare")]
    NotPrepared,
    /// The stream Packer named could not be dialed.
    #[error("{0}")]
    Dial(#[from] MuxError),
    /// The build failed; the message has the template's secrets masked.
    #[error("{0}")]
    Build(String),
}

/// Why `Prepare`'s `Configs` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigsError {
    /// `Configs` is something other than a list.
    #[error("Prepare: Configs is not a list")]
    NotAList,
    /// An HCL2 configuration is not valid cty JSON.
    #[error("Prepare: the HCL2 configuration is not cty JSON: {0}")]
    NotCtyJson(serde_json::Error),
    /// An HCL2 configuration's value is not an object.
    #[error("Prepare: the HCL2 configuration is not an object")]
    NotAnObject,
    /// A configuration that is neither a map nor cty JSON.
    #[error("Prepare: unexpected configuration value {0}")]
    Unexpected(Value),
}

/// The builder as served to Packer.
pub struct BuilderService {
    broker: Arc<Broker>,
    protocol: Protocol,
    protobuf: bool,
    config: Mutex<Option<Config>>,
    /// The template's secrets, masked in all output and errors.
    secrets: Mutex<Secrets>,
    cancel: CancellationToken,
}

impl BuilderService {
    /// A builder served over `broker` to a Packer speaking `protocol`;
    /// `protobuf` when Packer started it with `--protobuf`.
    pub fn new(broker: Arc<Broker>, protocol: Protocol, protobuf: bool) -> Arc<Self> {
        Arc::new(BuilderService {
            broker,
            protocol,
            protobuf,
            config: Mutex::new(None),
            secrets: Mutex::default(),
            cancel: CancellationToken::new(),
        })
    }

    fn config_spec(&self) -> Result<Value, ProtobufSpecError> {
        let bytes = if self.protobuf {
            spec::encode_protobuf(&config::hcl_spec())?
        } else {
            spec::encode(&config::hcl_spec(), self.protocol.flavor())
        };
        Ok(object([("ConfigSpec", Value::Binary(bytes))]))
    }

    fn prepare(&self, arg: &Value) -> Value {
        let (user, packer) = match split_configs(arg) {
            Ok(v) => v,
            Err(e) => return prepare_reply(Some(e.to_string()), &[]),
        };
        let mut secrets = Secrets::from_prepare(&user, &packer);
        let reply = match Config::parse(&user, &packer) {
            Ok(c) => {
                // The values after the template engine ran, too.
                let password = match &c.communicator {
                    CommunicatorConfig::Ssh(s) => s.password.clone(),
                    CommunicatorConfig::WinRm(w) => Some(w.password.clone()),
                    CommunicatorConfig::None => None,
                };
                secrets = secrets.with(password.into_iter().chain(c.shutdown_command.clone()));
                let warnings: Vec<String> = c.warnings().iter().map(|w| secrets.mask(w)).collect();
                *self.config.lock().expect("config lock") = Some(c);
                prepare_reply(None, &warnings)
            }
            Err(e) => prepare_reply(Some(secrets.mask(&e.to_string())), &[]),
        };
        *self.secrets.lock().expect("secrets lock") = secrets;
        reply
    }

    async fn run(self: Arc<Self>, arg: Value) -> Result<Value, RunError> {
        let stream = crate::protocol::rpc::value::as_u32(&arg).ok_or(RunError::NotAStream)?;
        let config = self
            .config
            .lock()
            .expect("config lock")
            .clone()
            .ok_or(RunError::NotPrepared)?;
        let secrets = self.secrets.lock().expect("secrets lock").clone();
        let conn = self.broker.dial(stream).await?;
        let client = Client::new(conn);
        let ui = Ui::new(client.clone()).masking(secrets.clone());
        let env = BuildEnv {
            ui: ui.clone(),
            provisioners: Box::new(PackerHook {
                ui,
                hook: client,
                broker: self.broker.clone(),
            }),
            cancel: self.cancel.clone(),
        };
        let artifact = build::run(config, env)
            .await
            .map_err(|e| RunError::Build(secrets.mask(&e.to_string())))?;
        let Some(image) = artifact else {
            return Ok(Value::from(0));
        };
        let id = self.broker.next_id();
        let broker = self.broker.clone();
        tokio::spawn(serve_artifact(broker, id, Artifact(image)));
        Ok(Value::from(id))
    }
}

async fn serve_artifact(broker: Arc<Broker>, id: u32, artifact: Artifact) {
    if let Ok(conn) = broker.accept(id).await {
        Router::new()
            .with("Artifact", Arc::new(artifact))
            .serve(conn)
            .await;
    }
}

fn prepare_reply(error: Option<String>, warnings: &[String]) -> Value {
    object([
        (
            "GeneratedVars",
            if error.is_some() {
                Value::Nil
            } else {
                Value::Array(
                    build::GENERATED_VARS
                        .iter()
                        .map(|v| Value::from(*v))
                        .collect(),
                )
            },
        ),
        ("Warnings", strings(warnings)),
        (
            "Error",
            error.map_or(Value::Nil, |m| object([("Message", Value::from(m))])),
        ),
    ])
}

/// A JSON object.
pub type JsonMap = Map<String, serde_json::Value>;

/// Splits `Prepare`'s `Configs` into the user's options and Packer's
/// `packer_*` settings. JSON templates send maps; HCL2 sends the options
/// as cty JSON in a byte string.
pub fn split_configs(arg: &Value) -> Result<(JsonMap, JsonMap), ConfigsError> {
    let mut user = Map::new();
    let mut packer = Map::new();
    let configs = match field(arg, "Configs") {
        Some(Value::Array(a)) => a.as_slice(),
        Some(Value::Nil) | None => &[],
        Some(_) => return Err(ConfigsError::NotAList),
    };
    for c in configs {
        let obj = match c {
            Value::Binary(b) => {
                let v: serde_json::Value =
                    serde_json::from_slice(b).map_err(ConfigsError::NotCtyJson)?;
                match v.get("value") {
                    Some(serde_json::Value::Object(o)) => o.clone(),
                    Some(serde_json::Value::Null) | None => Map::new(),
                    Some(_) => return Err(ConfigsError::NotAnObject),
                }
            }
            Value::Map(_) => match to_json(c) {
                serde_json::Value::Object(o) => o,
                _ => Map::new(),
            },
            Value::Nil => continue,
            other => return Err(ConfigsError::Unexpected(other.clone())),
        };
        for (k, v) in obj {
            if k.starts_with("packer_") {
                packer.insert(k, v);
            } else {
                user.insert(k, v);
            }
        }
    }
    Ok((user, packer))
}

impl Service for BuilderService {
    fn call(self: Arc<Self>, method: &str, arg: Value) -> ReplyFuture {
        match method {
            // The wire carries errors as text (see `Reply`).
            "ConfigSpec" => {
                let v = self.config_spec().map_err(|e| e.to_string());
                Box::pin(async move { v })
            }
            "Prepare" => {
                let v = self.prepare(&arg);
                Box::pin(async move { Ok(v) })
            }
            "Run" => Box::pin(async move { self.run(arg).await.map_err(|e| e.to_string()) }),
            "Cancel" => {
                self.cancel.cancel();
                Box::pin(async { Ok(Value::Nil) })
            }
            m => {
                let m = format!("rpc: can't find method Builder.{m}");
                Box::pin(async move { Err(m) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::rpc::value::from_json;

    /// Builds a `Prepare` argument the way Packer sends a JSON template's.
    fn json_prepare_arg(user: &serde_json::Value, packer: &serde_json::Value) -> Value {
        object([(
            "Configs",
            Value::Array(vec![from_json(user), from_json(packer)]),
        )])
    }
    use serde_json::json;

    #[test]
    fn hcl2_cty_json_and_json_maps_both_split_into_user_and_packer_parts() {
        let cty = json!({"value": {"memory": 512, "vm_name": null}, "type": ["object", {}]});
        let arg = object([(
            "Configs",
            Value::Array(vec![
                from_json(&json!({"packer_build_name": "b", "packer_force": false})),
                Value::Binary(serde_json::to_vec(&cty).unwrap()),
            ]),
        )]);
        let (user, packer) = split_configs(&arg).unwrap();
        assert_eq!(user["memory"], json!(512));
        assert!(user["vm_name"].is_null());
        assert_eq!(packer["packer_build_name"], json!("b"));

        let arg = json_prepare_arg(&json!({"cpus": 2}), &json!({"packer_debug": true}));
        let (user, packer) = split_configs(&arg).unwrap();
        assert_eq!(user["cpus"], json!(2));
        assert_eq!(packer["packer_debug"], json!(true));
    }

    #[tokio::test]
    async fn a_failed_prepare_masks_the_templates_secrets() {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let (broker, _) = Broker::start(a.compat(), yamux::Mode::Server);
        let builder = BuilderService::new(broker, Protocol::Current, false);
        let arg = json_prepare_arg(
            &json!({"memory": "tok-123", "ssh_password": "hunter2", "cpus": "hunter2"}),
            &json!({
                "packer_user_variables": {"token": "tok-123"},
                "packer_sensitive_variables": ["token"],
            }),
        );
        let reply = builder.prepare(&arg);
        let err = field(&reply, "Error").unwrap();
        let msg = field(err, "Message").unwrap().as_str().unwrap();
        assert!(
            msg.contains("memory") && msg.contains("<sensitive>"),
            "{msg}"
        );
        assert!(
            !msg.contains("tok-123") && !msg.contains("hunter2"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn the_shutdown_command_is_masked_as_the_template_engine_renders_it() {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let (broker, _) = Broker::start(a.compat(), yamux::Mode::Server);
        let builder = BuilderService::new(broker, Protocol::Current, false);
        let arg = json_prepare_arg(
            &json!({
                "disk_image": true, "iso_url": "/tmp/x.qcow2", "iso_checksum": "none",
                "ssh_username": "root", "ssh_password": "pw",
                "shutdown_command": "echo {{user `pw`}} | sudo -S poweroff",
            }),
            &json!({"packer_user_variables": {"pw": "hunter3"}}),
        );
        let reply = builder.prepare(&arg);
        assert_eq!(field(&reply, "Error"), Some(&Value::Nil), "{reply}");
        let secrets = builder.secrets.lock().unwrap().clone();
        assert_eq!(
            secrets.mask("ran echo hunter3 | sudo -S poweroff"),
            "ran <sensitive>"
        );
    }

    #[test]
    fn a_failed_prepare_carries_a_basic_error_with_the_message() {
        let reply = prepare_reply(Some("memory: bad".into()), &[]);
        let err = field(&reply, "Error").unwrap();
        assert_eq!(field(err, "Message").unwrap().as_str(), Some("memory: bad"));
        assert_eq!(field(&prepare_reply(None, &[]), "Error"), Some(&Value::Nil));
    }
}

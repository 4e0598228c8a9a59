//! Packer's provisioners, reached through its `packer_provision` hook:
//! the build hands over its communicator to the guest, and this serves it
//! to the provisioners as a Communicator next to a Ui.

use std::sync::Arc;

use futures::future::BoxFuture;
use rmpv::Value;

use crate::build::{HookData, ProvisionError, Provisioners};
use crate::packer::communicator::CommunicatorService;
use crate::protocol::mux::Broker;
use crate::protocol::rpc::value::object;
use crate::protocol::rpc::{Client, Router};
use crate::remote::Remote;
use crate::ui::{Ui, UiProxy};

/// Packer's `Hook` on the stream `Builder.Run` was given.
pub struct PackerHook {
    /// Packer's Ui, which provisioners write to.
    pub ui: Ui,
    /// The client of Packer's `Hook` (same stream as the Ui).
    pub hook: Arc<Client>,
    /// The broker, for the streams provisioners use.
    pub broker: Arc<Broker>,
}

impl Provisioners for PackerHook {
    /// Serves a Communicator and a Ui on a fresh stream id, then calls
    /// `Hook.Run("packer_provision")` with that id.
    fn run<'a>(
        &'a self,
        remote: Arc<Remote>,
        hook_data: &'a HookData,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            // Dropped when the run ends or the build is cancelled.
            let stop = tokio_util::sync::CancellationToken::new();
            let _stop_on_drop = stop.clone().drop_guard();
            let id = self.broker.next_id();
            let ui = Arc::new(UiProxy(self.ui.clone()));
            let router = Router::new()
                .with(
                    "Communicator",
                    Arc::new(CommunicatorService {
                        remote,
                        broker: self.broker.clone(),
                        stop,
                    }),
                )
                .with("Ui", ui.clone())
                .with_prefix("Ui", ui);
            let broker = self.broker.clone();
            let server = tokio::spawn(async move {
                if let Ok(conn) = broker.accept(id).await {
                    router.serve(conn).await;
                }
            });
            let data = hook_data_value(hook_data);
            let arg = object([
                ("Name", Value::from("packer_provision")),
                ("Data", data),
                ("StreamId", Value::from(id)),
            ]);
            let r = self.hook.call("Hook.Run", arg).await;
            server.abort();
            r.map(|_| ()).map_err(ProvisionError::from)
        })
    }
}

/// The build variables as the hook's `Data` object.
fn hook_data_value(data: &HookData) -> Value {
    // Without an HTTP server, say so in the words Packer's builders use.
    let no_http = |what: &str| Value::from(format!("ERR_HTTP_{what}_NOT_IMPLEMENTED_BY_BUILDER"));
    let (http_ip, http_port, http_addr) = match &data.http {
        Some((ip, port)) => (
            Value::from(ip.as_str()),
            Value::from(port.to_string()),
            Value::from(format!("{ip}:{port}")),
        ),
        None => (no_http("IP"), no_http("PORT"), no_http("ADDR")),
    };
    object([
        ("ID", Value::from(data.id.as_str())),
        (
            "PackerRunUUID",
            Value::from(std::env::var("PACKER_RUN_UUID").unwrap_or_default()),
        ),
        ("PackerHTTPIP", http_ip),
        ("PackerHTTPPort", http_port),
        ("PackerHTTPAddr", http_addr),
        ("Host", Value::from(data.host.as_str())),
        ("Port", Value::from(data.port)),
        ("User", Value::from(data.user.as_str())),
        ("Password", Value::from(data.password.as_str())),
        ("ConnType", Value::from(data.conn_type)),
        ("SSHPublicKey", Value::from(data.public_key.as_str())),
    ])
}

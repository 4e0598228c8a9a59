//! Packer's Ui, called over RPC: what the user sees during a build.

use std::sync::Arc;

use rmpv::Value;

use crate::rpc::value::object;
use crate::rpc::{Client, ReplyFuture, Service};

/// The build's output to the user.
#[derive(Clone)]
pub struct Ui {
    client: Arc<Client>,
}

impl Ui {
    /// A Ui over the client of the stream Packer gave `Builder.Run`.
    pub fn new(client: Arc<Client>) -> Self {
        Ui { client }
    }

    /// A step headline (`==> name: text`).
    pub async fn say(&self, msg: impl AsRef<str>) {
        self.send("Ui.Say", msg.as_ref()).await;
    }

    /// A detail line under the last headline.
    pub async fn message(&self, msg: impl AsRef<str>) {
        self.send("Ui.Message", msg.as_ref()).await;
    }

    /// An error line.
    pub async fn error(&self, msg: impl AsRef<str>) {
        self.send("Ui.Error", msg.as_ref()).await;
    }

    /// Asks the user a question on Packer's terminal; empty when Packer
    /// cannot ask (no terminal).
    pub async fn ask(&self, query: &str) -> String {
        match self.client.call("Ui.Ask", Value::from(query)).await {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(_) => String::new(),
        }
    }

    /// A machine-readable line (`-machine-readable`).
    pub async fn machine(&self, category: &str, args: &[String]) {
        let arg = object([
            ("Category", Value::from(category)),
            (
                "Args",
                Value::Array(args.iter().map(|a| Value::from(a.as_str())).collect()),
            ),
        ]);
        // A Ui that went away must not fail the build: nothing to report to.
        let _ = self.client.call("Ui.Machine", arg).await;
    }

    async fn send(&self, method: &str, msg: &str) {
        let _ = self.client.call(method, Value::from(msg)).await;
    }

    /// Forwards a raw call ("Service.Method") to Packer's side of this
    /// stream (used to serve Packer's provisioners a Ui that writes to
    /// this same Ui).
    pub async fn forward_raw(&self, service_method: &str, arg: Value) -> Result<Value, String> {
        self.client
            .call(service_method, arg)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Serves `Ui` on a stream we own by forwarding each call to Packer's Ui.
/// Registered both as `Ui` (gets the method) and as the `Ui` prefix (gets
/// `Service.Method` of helpers Packer's Ui made, forwarded unchanged).
pub struct UiProxy(pub Ui);

impl Service for UiProxy {
    fn call(self: Arc<Self>, method: &str, arg: Value) -> ReplyFuture {
        let full = if method.contains('.') {
            method.to_string()
        } else {
            format!("Ui.{method}")
        };
        Box::pin(async move { self.0.forward_raw(&full, arg).await })
    }
}

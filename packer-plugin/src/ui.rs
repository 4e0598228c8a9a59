//! Packer's Ui, called over RPC: what the user sees during a build.

use std::sync::Arc;

use rmpv::Value;

use crate::protocol::rpc::value::object;
use crate::protocol::rpc::{CallError, Client, ReplyFuture, Service};
use crate::secrets::Secrets;

/// The build's output to the user, with the template's secrets masked.
#[derive(Clone)]
pub struct Ui {
    client: Arc<Client>,
    secrets: Arc<Secrets>,
}

impl Ui {
    /// A Ui over the client of the stream Packer gave `Builder.Run`.
    pub fn new(client: Arc<Client>) -> Self {
        Ui {
            client,
            secrets: Arc::default(),
        }
    }

    /// This Ui, masking `secrets` in everything it shows.
    pub fn masking(mut self, secrets: Secrets) -> Self {
        self.secrets = Arc::new(secrets);
        self
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
        let query = self.secrets.mask(query);
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
                Value::Array(
                    args.iter()
                        .map(|a| Value::from(self.secrets.mask(a)))
                        .collect(),
                ),
            ),
        ]);
        // A Ui that went away must not fail the build: nothing to report to.
        let _ = self.client.call("Ui.Machine", arg).await;
    }

    async fn send(&self, method: &str, msg: &str) {
        let msg = self.secrets.mask(msg);
        let _ = self.client.call(method, Value::from(msg)).await;
    }

    /// Forwards a raw call ("Service.Method") to Packer's side of this
    /// stream (used to serve Packer's provisioners a Ui that writes to
    /// this same Ui).
    pub async fn forward_raw(&self, service_method: &str, arg: Value) -> Result<Value, CallError> {
        let arg = self.secrets.mask_value(arg);
        self.client.call(service_method, arg).await
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
        // The wire carries the error as text (see `Reply`).
        Box::pin(async move {
            self.0
                .forward_raw(&full, arg)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mux::Broker;
    use crate::protocol::rpc::Router;
    use crate::secrets::Secrets;
    use std::sync::Mutex;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    /// Packer's Ui: records what it is asked to show.
    #[derive(Default)]
    struct Screen(Mutex<Vec<String>>);
    impl Service for Screen {
        fn call(self: Arc<Self>, method: &str, arg: Value) -> ReplyFuture {
            self.0
                .lock()
                .unwrap()
                .push(format!("{method}: {}", arg.as_str().unwrap_or("")));
            Box::pin(async { Ok(Value::Nil) })
        }
    }

    #[tokio::test]
    async fn secrets_never_reach_packers_screen() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (packer, _) = Broker::start(a.compat(), yamux::Mode::Server);
        let (plugin, _) = Broker::start(b.compat(), yamux::Mode::Client);
        let screen = Arc::new(Screen::default());
        let s = screen.clone();
        tokio::spawn(async move {
            let conn = packer.accept(0).await.unwrap();
            Router::new().with("Ui", s).serve(conn).await;
        });
        let ui = Ui::new(Client::new(plugin.dial(0).await.unwrap()))
            .masking(Secrets::new(["hunter2".to_string()]));
        ui.say("Running `echo hunter2 | sudo -S poweroff`").await;
        ui.error("ssh: password hunter2 refused").await;
        // A provisioner's output, forwarded through our Ui service.
        let proxy = Arc::new(UiProxy(ui.clone()));
        proxy
            .call("Message", Value::from("+ echo hunter2"))
            .await
            .unwrap();
        let shown = screen.0.lock().unwrap().clone();
        assert_eq!(
            shown,
            [
                "Say: Running `echo <sensitive> | sudo -S poweroff`",
                "Error: ssh: password <sensitive> refused",
                "Message: + echo <sensitive>",
            ]
        );
    }
}

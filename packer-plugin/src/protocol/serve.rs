//! Serving one Packer connection: socket, handshake line, yamux, the
//! main RPC stream with the builder on it.

use std::io::Write;
use std::sync::Arc;

use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::packer::builder::BuilderService;
use crate::packer::datasource::{DataSource, DatasourceService};
use crate::protocol::handshake::{self, Protocol};
use crate::protocol::mux::Broker;
use crate::protocol::rpc::Router;

/// The plugin's version, as `describe` reports it and install paths name it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name Packer 1.7+ maps to the plugin's own name (`libvirt`).
pub const DEFAULT_NAME: &str = "-packer-default-plugin-name-";

/// Builder names `start builder` accepts.
pub const BUILDER_NAMES: &[&str] = &[DEFAULT_NAME, "libvirt"];

/// Data source names `start datasource` accepts (`data "libvirt-sshkey"`
/// in a template); Packer 1.6 has no data sources.
pub const DATASOURCE_NAMES: &[&str] = &["sshkey"];

/// What one plugin process serves.
pub enum Component {
    /// The `libvirt` builder.
    Builder,
    /// A data source.
    Datasource(Arc<dyn DataSource>),
}

/// The JSON `describe` prints. Packer 1.6 prefixes each builder with the
/// plugin name and knows no default name, so it gets `libvirt` (the type
/// `libvirt-libvirt`; install as `packer-builder-libvirt` for plain
/// `libvirt`); newer Packer gets the default name (type `libvirt`).
pub fn describe(protocol: Protocol) -> String {
    let builder = match protocol {
        Protocol::Legacy => "libvirt",
        Protocol::Current => DEFAULT_NAME,
    };
    let mut d = serde_json::json!({
        "version": VERSION,
        "sdk_version": "0.5.2",
        "api_version": "x5.0",
        "builders": [builder],
        "post_processors": [],
        "provisioners": [],
        "datasources": match protocol {
            Protocol::Legacy => &[][..],
            Protocol::Current => DATASOURCE_NAMES,
        },
    });
    if protocol == Protocol::Current {
        // Packer 1.12+ then starts us with `--protobuf` (when every plugin
        // says so) and reads the spec as protobuf instead of gob.
        d["protocol_version"] = serde_json::json!("v2");
    }
    d.to_string()
}

/// Errors before the connection is served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be made or accepted on.
    #[error("plugin socket: {0}")]
    Socket(#[from] std::io::Error),
    /// Packer never opened the main stream.
    #[error("Packer did not open the main RPC stream: {0}")]
    Mux(#[from] crate::protocol::mux::MuxError),
}

/// Prints the handshake, accepts Packer's one connection and serves the
/// builder until Packer closes it.
pub async fn serve(protocol: Protocol, protobuf: bool) -> Result<(), ServeError> {
    serve_component(protocol, protobuf, Component::Builder).await
}

/// [`serve`] for any component this crate offers.
pub async fn serve_component(
    protocol: Protocol,
    protobuf: bool,
    component: Component,
) -> Result<(), ServeError> {
    ignore_interrupts();
    let (listener, path) = handshake::listen()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", protocol.line(&path))?;
        out.flush()?;
    }
    let accepted = listener.accept().await;
    let _ = std::fs::remove_file(&path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    let (sock, _) = accepted?;
    let (broker, closed) = Broker::start(sock.compat(), yamux::Mode::Server);
    let main = broker.accept(0).await?;
    let router = match component {
        Component::Builder => Router::new().with(
            "Builder",
            BuilderService::new(broker.clone(), protocol, protobuf),
        ),
        Component::Datasource(ds) => {
            Router::new().with("Datasource", DatasourceService::new(ds, protocol, protobuf))
        }
    };
    tokio::select! {
        _ = router.serve(main) => {}
        _ = closed => {}
    }
    Ok(())
}

/// Packer forwards Ctrl-C as `Builder.Cancel`; a signal of our own would
/// kill the plugin before its cleanup ran.
fn ignore_interrupts() {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}

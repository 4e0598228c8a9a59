//! The test bed's stand-in for the `sshkey` data-source plugin
//! (`github.com/ivoronin/sshkey`), which the seed's templates ask for in
//! `required_plugins` and use as `data "sshkey"`: the Go module proxy
//! serves none of its releases, so the bed cannot build it. This plugin
//! serves our own `sshkey` data source (the one `packer-plugin-libvirt`
//! offers as `libvirt-sshkey`) as its default data source, so a template
//! written for that plugin runs unchanged in tests.

use std::process::ExitCode;
use std::sync::Arc;

use packer_plugin_libvirt::protocol::handshake::{self, Protocol};
use packer_plugin_libvirt::protocol::serve::{self, Component, DEFAULT_NAME};
use packer_plugin_libvirt::sshkey::SshKey;

/// The release the bed installs it as.
const VERSION: &str = "1.1.0";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["describe"] => {
            let mut d = serde_json::json!({
                "version": VERSION,
                "sdk_version": "0.5.2",
                "api_version": "x5.0",
                "builders": [],
                "post_processors": [],
                "provisioners": [],
                "datasources": [DEFAULT_NAME],
            });
            if handshake::detect() == Protocol::Current {
                d["protocol_version"] = serde_json::json!("v2");
            }
            println!("{d}");
            ExitCode::SUCCESS
        }
        ["--version"] | ["version"] => {
            println!("{VERSION}");
            ExitCode::SUCCESS
        }
        ["start", "datasource", rest @ ..] => {
            let protobuf = rest.contains(&"--protobuf");
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let ds = Component::Datasource(Arc::new(SshKey::default()));
            match rt.block_on(serve::serve_component(handshake::detect(), protobuf, ds)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bed-packer-sshkey: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("bed-packer-sshkey: Packer runs it (describe, start datasource)");
            ExitCode::FAILURE
        }
    }
}

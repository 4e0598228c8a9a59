//! `packer-plugin-libvirt`: the libvirt builder for Packer.
//!
//! Run by Packer, never by hand: `describe` prints what the plugin holds,
//! `start builder NAME` serves the builder. Installed under the name
//! `packer-builder-libvirt`, it serves the builder when started with no
//! arguments, as Packer 1.6 starts single-component plugins.

use std::process::ExitCode;

use packer_plugin_libvirt::protocol::{handshake, serve};

const USAGE: &str = "packer-plugin-libvirt is a Packer plugin: Packer starts it.

Install it where Packer finds plugins (see README.md), then use the builder
`libvirt` and the data source `libvirt-sshkey` in a template. Commands
Packer runs:
  packer-plugin-libvirt describe
  packer-plugin-libvirt start builder libvirt
  packer-plugin-libvirt start datasource sshkey";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let single = argv0.starts_with("packer-builder-");
    match rest.as_slice() {
        [] if single => run_server(false),
        ["describe"] => {
            println!("{}", serve::describe(handshake::detect()));
            ExitCode::SUCCESS
        }
        ["start", "builder", names @ ..] => {
            let protobuf = names.contains(&"--protobuf");
            let name = names.iter().rev().find(|n| !n.starts_with("--")).copied();
            match name {
                Some(n) if serve::BUILDER_NAMES.contains(&n) => run_server(protobuf),
                other => {
                    eprintln!(
                        "this plugin has one builder, `libvirt`; it was asked for `{}`",
                        other.unwrap_or("")
                    );
                    ExitCode::FAILURE
                }
            }
        }
        ["start", "datasource", names @ ..] => {
            let protobuf = names.contains(&"--protobuf");
            let name = names.iter().rev().find(|n| !n.starts_with("--")).copied();
            match name {
                Some("sshkey") => run_component(
                    protobuf,
                    serve::Component::Datasource(std::sync::Arc::new(
                        packer_plugin_libvirt::sshkey::SshKey::default(),
                    )),
                ),
                other => {
                    eprintln!(
                        "this plugin has one data source, `sshkey`; it was asked for `{}`",
                        other.unwrap_or("")
                    );
                    ExitCode::FAILURE
                }
            }
        }
        ["--version"] | ["version"] => {
            println!("{}", serve::VERSION);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(protobuf: bool) -> ExitCode {
    run_component(protobuf, serve::Component::Builder)
}

fn run_component(protobuf: bool, component: serve::Component) -> ExitCode {
    if std::env::var(handshake::MAGIC_COOKIE_KEY).as_deref() != Ok(handshake::MAGIC_COOKIE_VALUE) {
        eprintln!("This is a Packer plugin: please do not run it directly. Packer runs it for you.\n\n{USAGE}");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve::serve_component(
        handshake::detect(),
        protobuf,
        component,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packer-plugin-libvirt: {e}");
            ExitCode::FAILURE
        }
    }
}

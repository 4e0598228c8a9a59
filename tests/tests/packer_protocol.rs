//! The plugin as Packer 1.7 and later see it, driven by a client of our own
//! (no newer Packer runs here): the install layout `packer plugins install
//! --path` writes (binary plus `_SHA256SUM`), `describe` with `api_version`
//! x5.0 and the default builder name, the 4-part handshake, yamux with the
//! mux broker, `ConfigSpec` with module-build type names, `Prepare` of an
//! HCL2 config (cty JSON) and `Run` calling back into our Ui.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use packer_plugin_libvirt::protocol::handshake::{MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
use packer_plugin_libvirt::protocol::mux::Broker;
use packer_plugin_libvirt::protocol::rpc::value::{field, object, str_field};
use packer_plugin_libvirt::protocol::rpc::{Client, ReplyFuture, Router, Service, Value};
use packer_plugin_libvirt::protocol::serve::{DEFAULT_NAME, VERSION};
use sha2::{Digest, Sha256};

const OS_ARCH: &str = "linux_amd64";

/// Installs the binary the way `packer plugins install --path BIN
/// github.com/kvmbe/libvirt` lays it out.
fn install(root: &Path) -> PathBuf {
    let bin = testbed::util::bin_dir().join("packer-plugin-libvirt");
    let dir = root.join("plugins/github.com/kvmbe/libvirt");
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("packer-plugin-libvirt_v{VERSION}_x5.0_{OS_ARCH}");
    let dest = dir.join(&name);
    std::fs::copy(&bin, &dest).unwrap();
    let sum = hex::encode(Sha256::digest(std::fs::read(&dest).unwrap()));
    std::fs::write(dir.join(format!("{name}_SHA256SUM")), sum).unwrap();
    dest
}

/// Finds installed plugins as Packer >= 1.11 does: the name pattern, the
/// checksum file, and a `describe` whose version and API match the name.
fn discover(root: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut found = Vec::new();
    let dir = root.join("plugins/github.com/kvmbe/libvirt");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("packer-plugin-libvirt_v") else {
            continue;
        };
        let Some(rest) = rest.strip_suffix(&format!("_x5.0_{OS_ARCH}")) else {
            continue;
        };
        let version = rest.to_string();
        let sum = std::fs::read_to_string(dir.join(format!("{name}_SHA256SUM"))).unwrap();
        let actual = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
        assert_eq!(sum.trim(), actual, "the SHA256SUM file matches the binary");
        let out = Command::new(&p).arg("describe").output().unwrap();
        assert!(out.status.success());
        let desc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            desc["version"],
            serde_json::json!(version),
            "describe reports the installed version"
        );
        assert_eq!(desc["api_version"], serde_json::json!("x5.0"));
        found.push((p, desc));
    }
    found
}

/// A Ui that records what the plugin says.
#[derive(Default)]
struct RecordingUi(Mutex<Vec<String>>);

impl Service for RecordingUi {
    fn call(self: Arc<Self>, method: &str, arg: Value) -> ReplyFuture {
        let line = format!("{method}: {}", arg.as_str().unwrap_or_default());
        self.0.lock().unwrap().push(line);
        Box::pin(async { Ok(Value::Nil) })
    }
}

fn cty_config(value: serde_json::Value) -> Value {
    let cty = serde_json::json!({ "value": value, "type": ["object", {}] });
    object([(
        "Configs",
        Value::Array(vec![
            packer_plugin_libvirt::protocol::rpc::value::from_json(&serde_json::json!({
                "packer_build_name": "tiny", "packer_builder_type": "libvirt",
                "packer_force": false, "packer_on_error": "cleanup"
            })),
            Value::Binary(serde_json::to_vec(&cty).unwrap()),
        ]),
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_plugin_speaks_the_current_protocol_to_a_packer_1_7_style_client() {
    let root = tempfile::tempdir().unwrap();
    install(root.path());
    let found = discover(root.path());
    assert_eq!(found.len(), 1);
    let (path, desc) = &found[0];
    assert_eq!(desc["builders"], serde_json::json!([DEFAULT_NAME]));
    assert_eq!(desc["protocol_version"], serde_json::json!("v2"));

    let mut child = Command::new(path)
        .args(["start", "builder", DEFAULT_NAME])
        .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .env("PACKER_PLUGIN_MIN_PORT", "10000")
        .env("PACKER_PLUGIN_MAX_PORT", "25000")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let parts: Vec<&str> = line.trim().split('|').collect();
    assert_eq!(parts.len(), 4, "4-part handshake: {line}");
    assert_eq!(&parts[..3], &["5", "0", "unix"]);

    let sock = tokio::net::UnixStream::connect(parts[3]).await.unwrap();
    let (broker, _closed) = Broker::client_unix(sock);
    let main = Client::new(broker.dial(0).await.unwrap());

    let spec = main.call("Builder.ConfigSpec", Value::Nil).await.unwrap();
    let Some(Value::Binary(bytes)) = field(&spec, "ConfigSpec").cloned() else {
        panic!("ConfigSpec is not bytes: {spec}")
    };
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("ObjectSpec") && text.contains("*hcldec.AttrSpec"),
        "{text}"
    );
    assert!(
        text.contains("iso_url") && !text.contains("vendor/"),
        "{text}"
    );

    let bad = main
        .call(
            "Builder.Prepare",
            cty_config(serde_json::json!({ "memory": "lots", "format": "vmdk" })),
        )
        .await
        .unwrap();
    let err = str_field(field(&bad, "Error").unwrap(), "Message");
    assert!(err.contains("memory:") && err.contains("format:"), "{err}");

    let good = main
        .call(
            "Builder.Prepare",
            cty_config(serde_json::json!({
                "iso_url": "/nonexistent/disk.qcow2", "iso_checksum": "none", "disk_image": true,
                "communicator": "none", "memory": 256, "vm_name": null
            })),
        )
        .await
        .unwrap();
    assert_eq!(field(&good, "Error"), Some(&Value::Nil), "{good}");

    // Run: serve Ui and Hook on a fresh id, as Packer does, and expect the
    // plugin to report its steps there and fail on the missing image.
    let ui = Arc::new(RecordingUi::default());
    let id = 1;
    let server = {
        let broker = broker.clone();
        let ui = ui.clone();
        tokio::spawn(async move {
            let conn = broker.accept(id).await.unwrap();
            Router::new().with("Ui", ui).serve(conn).await;
        })
    };
    let run = main.call("Builder.Run", Value::from(id)).await;
    let err = run
        .expect_err("the build fails on the missing image")
        .to_string();
    assert!(
        err.contains("iso_url") && err.contains("/nonexistent/disk.qcow2"),
        "{err}"
    );
    let said = ui.0.lock().unwrap().clone();
    assert!(
        said.iter()
            .any(|l| l.starts_with("Say: Retrieving source image")),
        "{said:?}"
    );
    server.abort();
    drop(main);
    let _ = child.kill();
    let _ = child.wait();

    // Packer 1.12+ adds `--protobuf` when every plugin says v2: the spec
    // then comes as the SDK's protobuf `Spec` message.
    let mut child = Command::new(path)
        .args(["start", "builder", "--protobuf", DEFAULT_NAME])
        .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sock_path = line.trim().rsplit('|').next().unwrap().to_string();
    let sock = tokio::net::UnixStream::connect(sock_path).await.unwrap();
    let (broker, _closed) = Broker::client_unix(sock);
    let main = Client::new(broker.dial(0).await.unwrap());
    let spec = main.call("Builder.ConfigSpec", Value::Nil).await.unwrap();
    let Some(Value::Binary(bytes)) = field(&spec, "ConfigSpec").cloned() else {
        panic!("ConfigSpec is not bytes: {spec}")
    };
    assert_eq!(bytes[0], 0x0a, "Spec.object, field 1");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("cty.String") && text.contains("iso_url"),
        "{text}"
    );
    assert!(!text.contains("hcldec"), "no gob type names: {text}");
    drop(main);
    let _ = child.kill();
    let _ = child.wait();
}

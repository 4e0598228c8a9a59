//! Only the Terraform that started the provider may talk to it: the
//! provider, started as Terraform starts it (magic cookie, its client
//! certificate in `PLUGIN_CLIENT_CERT`), refuses in the TLS handshake a
//! client without a certificate and one with another certificate, so no
//! call of theirs runs; the client holding the certificate gets the
//! schema and can shut the provider down.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testbed::util::{bin_dir, poll_until};
use tfplugin::client::Handshake;
use tfplugin::proto::{self, plugin::g_r_p_c_controller_client::GRPCControllerClient};
use tfplugin::tls::Identity;

struct Provider {
    child: Child,
    handshake: Handshake,
    stderr: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the provider the way Terraform does.
fn start(client_cert_pem: &str) -> Provider {
    let tmp = tempfile::tempdir().unwrap();
    let stderr = tmp.path().join("stderr");
    let mut child = Command::new(bin_dir().join("terraform-provider-libvirt"))
        .env(tfplugin::MAGIC_COOKIE_KEY, tfplugin::MAGIC_COOKIE_VALUE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .env("PLUGIN_CLIENT_CERT", client_cert_pem)
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let handshake = Handshake::parse(&line).unwrap();
    Provider {
        child,
        handshake,
        stderr,
        _tmp: tmp,
    }
}

fn stderr_of(p: &Provider) -> String {
    std::fs::read_to_string(&p.stderr).unwrap_or_default()
}

async fn shutdown_as(p: &Provider, me: Option<&Identity>) -> Result<(), String> {
    let channel = p.handshake.channel(me).await.map_err(|e| e.to_string())?;
    GRPCControllerClient::new(channel)
        .shutdown(proto::Empty {})
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn schema_as(
    p: &Provider,
    me: Option<&Identity>,
) -> Result<proto::GetProviderSchemaResponse, String> {
    let mut c = p.handshake.provider(me).await.map_err(|e| e.to_string())?;
    c.get_provider_schema(proto::Empty {})
        .await
        .map(|r| r.into_inner())
        .map_err(|e| e.to_string())
}

fn exited_within(p: &mut Provider, limit: Duration) -> Option<std::process::ExitStatus> {
    poll_until(limit, || p.child.try_wait().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_client_holding_the_certificate_gets_through() {
    let terraform = Identity::generate().unwrap();
    let stranger = Identity::generate().unwrap();
    let mut p = start(&terraform.cert_pem());

    assert_eq!(p.handshake.protocol, 6);
    assert_eq!(p.handshake.network, "unix");
    assert!(
        p.handshake.cert.is_some(),
        "the handshake must carry the server certificate"
    );
    let dir = Path::new(&p.handshake.address)
        .parent()
        .unwrap()
        .to_path_buf();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode,
        0o700,
        "socket directory {} is {mode:o}",
        dir.display()
    );

    // Both strangers ask the provider to shut down: had either call run,
    // the provider would be gone.
    for (who, id) in [
        ("no certificate", None),
        ("another certificate", Some(&stranger)),
    ] {
        let r = shutdown_as(&p, id).await;
        assert!(r.is_err(), "a client with {who} was served");
        let r = schema_as(&p, id).await;
        assert!(r.is_err(), "a client with {who} got the schema");
    }
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the provider stopped on a stranger's call"
    );
    let log = stderr_of(&p);
    assert!(
        log.matches("refused a connection in the TLS handshake")
            .count()
            >= 4,
        "{log}"
    );

    let schema = schema_as(&p, Some(&terraform)).await.unwrap();
    assert!(schema.resource_schemas.contains_key("libvirt_pool"));
    assert!(schema.data_source_schemas.contains_key("libvirt_node_info"));
    assert!(schema.diagnostics.is_empty(), "{:?}", schema.diagnostics);

    shutdown_as(&p, Some(&terraform)).await.unwrap();
    let st = exited_within(&mut p, Duration::from_secs(5)).expect("still running after Shutdown");
    assert!(st.success(), "{st}");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn run_by_hand_it_says_it_is_a_plugin_and_exits() {
    let out = Command::new(bin_dir().join("terraform-provider-libvirt"))
        .env_remove(tfplugin::MAGIC_COOKIE_KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let mut err = String::new();
    out.stderr.as_slice().read_to_string(&mut err).unwrap();
    assert!(err.contains("Terraform plugin"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_terraform_that_speaks_only_protocol_5_is_told_why() {
    let out = Command::new(bin_dir().join("terraform-provider-libvirt"))
        .env(tfplugin::MAGIC_COOKIE_KEY, tfplugin::MAGIC_COOKIE_VALUE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("protocol versions 5"), "{err}");
}

//! Download sites stood in for: a network namespace of its own, with only
//! loopback, whose `/etc/hosts` points the sites' names at 127.0.0.1,
//! where `bed-mirror` serves a folder of the bed's over HTTPS under those
//! names. Programs run in it through [`Mirror::cmd`] trust the mirror's
//! certificate (`SSL_CERT_FILE`, which Go programs such as Packer and its
//! plugins read), so a template's `iso_checksum = "file:https://..."`
//! reads the bed's checksum file, and nothing reaches the network.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::util;

/// A running stand-in; dropping it stops the server and deletes the
/// namespace and its hosts file.
#[derive(Debug)]
pub struct Mirror {
    child: Option<Child>,
    etc: PathBuf,
    cert: PathBuf,
    _dir: tempfile::TempDir,
    ns: Netns,
}

impl Mirror {
    /// Serves `root` as `https://<host>/` for every `hosts` name.
    pub fn start(root: &Path, hosts: &[&str]) -> Result<Mirror> {
        let program = util::bin_dir().join("bed-mirror");
        if !program.is_file() {
            bail!(
                "{} is not built: run cargo build -p kvmbe-tests --bins",
                program.display()
            );
        }
        let ns = Netns::new("mirror")?;
        let etc = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
        std::fs::write(
            etc.join("hosts"),
            format!("127.0.0.1 localhost {}\n::1 localhost\n", hosts.join(" ")),
        )
        .with_context(|| format!("writing {}/hosts", etc.display()))?;
        let dir = tempfile::tempdir()?;
        let cert = dir.path().join("mirror.pem");
        let mut mirror = Mirror {
            child: None,
            etc,
            cert,
            _dir: dir,
            ns,
        };
        let mut c = mirror.ns.cmd(&program.to_string_lossy());
        c.arg(root)
            .arg(&mirror.cert)
            .args(hosts)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = c.spawn().context("starting bed-mirror")?;
        let stdout = child.stdout.take().expect("piped");
        mirror.child = Some(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("bed-mirror did not start (it said {line:?})");
        }
        Ok(mirror)
    }

    /// The namespace the mirror answers in.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The mirror's certificate (PEM).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// A command running `program` in the namespace, trusting the mirror.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = self.ns.cmd(program);
        c.env("SSL_CERT_FILE", &self.cert);
        c
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// Writes a checksum file (`<digest>  <name>` lines, the form
/// `sha256sum`/`sha512sum` print) at `path` listing `names` with made-up
/// digests, SHA-512 long when the file's name says 512, else SHA-256:
/// enough for Packer to find each image's entry when it validates.
pub fn write_checksum_file(path: &Path, names: &[&str]) -> Result<()> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let len = if file_name.contains("512") { 128 } else { 64 };
    let mut text = String::new();
    for name in names {
        text.push_str(&format!("{}  {name}\n", "0".repeat(len)));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

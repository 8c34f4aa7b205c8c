//! `cargo xtask setup`: everything the build and the tests need on a fresh Debian 12 machine,
//! installed idempotently. Each step checks first, so a second run takes about a second.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{root, run};

/// Debian packages: the LLVM that bpf-linker links against, kernel tools, the baselines and
/// load generators of the benchmarks, the backends' web server, PostgreSQL for the HA store's
/// tests, Python for the real AWS clients, and the headless browser (with a font, since
/// recommended packages are not installed) that drives the web console's test.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libxml2-dev",
    // elb-engine signs RSA handshakes with OpenSSL's libcrypto (the openssl crate links it).
    "libssl-dev",
    "pkg-config",
    "bpftool",
    "iproute2",
    "iputils-ping",
    "ethtool",
    "util-linux",
    "procps",
    "xdp-tools",
    "haproxy",
    "nftables",
    "wrk",
    "nginx-light",
    "postgresql",
    "openssl",
    "curl",
    "python3-venv",
    "chromium",
    "chromium-driver",
    "fonts-dejavu-core",
];

/// The LLVM prefix bpf-linker is built against (its major must match nightly's LLVM).
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> String {
    cmd.stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .contains("install ok installed")
        })
        .collect()
}

fn apt() -> anyhow::Result<()> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

fn nightly() -> anyhow::Result<()> {
    if !output(Command::new("rustup").args(["toolchain", "list"])).contains("nightly") {
        println!("setup: installing the nightly toolchain (the XDP program needs it)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: adding rust-src to nightly (build-std for bpfel-unknown-none)");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    if quiet(Command::new("bpf-linker").arg("--version")) {
        return Ok(());
    }
    println!("setup: building bpf-linker against LLVM 22 (about two minutes)");
    // llvm-sys reads LLVM_SYS_221_PREFIX; bpf-linker's build script reads LLVM_PREFIX.
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            "^0.13",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX))?;
    Ok(())
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, target, kind) = (f.next(), f.next(), f.next());
        target == Some("/sys/fs/bpf") && kind == Some("bpf")
    }) {
        return Ok(());
    }
    println!("setup: mounting bpffs at /sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

fn python() -> anyhow::Result<()> {
    let root = root();
    let requirements = root.join("control/tests-py/requirements.txt");
    if !requirements.exists() {
        return Ok(());
    }
    let venv = root.join(".venv");
    let stamp = venv.join(".requirements");
    let wanted = fs::read_to_string(&requirements)?;
    if venv.join("bin/python").exists()
        && fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
    {
        return Ok(());
    }
    println!("setup: creating .venv with the API test clients (boto3, awscli, pytest)");
    if !venv.join("bin/python").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(&requirements))?;
    fs::write(&stamp, wanted)?;
    Ok(())
}

fn check_root() -> anyhow::Result<()> {
    let uid = output(Command::new("id").arg("-u"));
    if uid.trim() != "0" {
        bail!(
            "setup installs packages and mounts bpffs, and the tests build network namespaces: run as root"
        );
    }
    Ok(())
}

/// Runs every step.
pub fn setup() -> anyhow::Result<()> {
    check_root()?;
    apt()?;
    nightly()?;
    bpf_linker()?;
    bpffs()?;
    python()?;
    // A quick sanity check that the pieces are where the build expects them.
    if !Path::new(LLVM_PREFIX).exists() {
        bail!("{LLVM_PREFIX} is missing after setup");
    }
    println!("setup: ok");
    Ok(())
}

//! Building the XDP objects of `elb-ebpf` from a build script: shared by `elb-userspace`
//! (which embeds the production object `elb`) and `tests` (which embeds the benchmark object
//! `elb-bench`), so both are built the same way.
//!
//! Why not aya-build: it overwrites `CARGO_ENCODED_RUSTFLAGS`, and the program needs
//! `-C target-cpu=v3` for the fetch-and-add of its round-robin cursor (toolchain.md).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Builds the `elb-ebpf` package's objects and copies the binary `bin` to `out`.
/// With `ELB_EBPF_SKIP` set, writes an empty file instead (for lint-only runs; loaders report a
/// clear error if it is ever loaded).
pub fn build_object(bin: &str, out: &Path) -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("workspace root")?
        .to_path_buf();
    for path in [
        "elb-ebpf/src",
        "elb-ebpf/Cargo.toml",
        "elb-common/src",
        "elb-common/Cargo.toml",
        "elb-userspace/build_support",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=ELB_EBPF_SKIP");

    if env::var_os("ELB_EBPF_SKIP").is_some() {
        std::fs::write(out, b"")?;
        return Ok(());
    }

    let target_dir = root.join("target").join("ebpf");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "-Z", "build-std=core"])
        .args([
            "--target",
            "bpfel-unknown-none",
            "--release",
            "-p",
            "elb-ebpf",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&root);
    // The outer cargo's settings (stable rustc, wrappers such as clippy-driver, host rustflags)
    // must not leak into the nested nightly build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let leaks = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTUP_TOOLCHAIN"
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS";
        if leaks {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        ["-Ctarget-cpu=v3", "-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
    );
    let status = cmd.status().context(
        "running `rustup run nightly cargo build` for elb-ebpf (run `cargo xtask setup` first)",
    )?;
    if !status.success() {
        bail!(
            "building the eBPF programs failed ({status}); run `cargo xtask setup` if the nightly toolchain, rust-src or bpf-linker is missing"
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release").join(bin);
    std::fs::copy(&built, out)
        .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    Ok(())
}

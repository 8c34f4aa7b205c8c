//! Builds the XDP program (`elb-ebpf`) for `bpfel-unknown-none` and hands the object to the
//! library, which embeds it.
//!
//! Why not aya-build: it overwrites `CARGO_ENCODED_RUSTFLAGS`, and the program needs
//! `-C target-cpu=v3` for the fetch-and-add of its round-robin cursor (toolchain.md).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("elb.o");

    for path in [
        "elb-ebpf/src",
        "elb-ebpf/Cargo.toml",
        "elb-common/src",
        "elb-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=ELB_EBPF_SKIP");

    if env::var_os("ELB_EBPF_SKIP").is_some() {
        // For lint-only runs on machines without the eBPF toolchain: the loader reports a
        // clear error if this empty object is ever loaded.
        std::fs::write(&object, b"")?;
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
            "building the eBPF program failed ({status}); run `cargo xtask setup` if the nightly toolchain, rust-src or bpf-linker is missing"
        );
    }
    let built: &Path = &target_dir.join("bpfel-unknown-none/release/elb");
    std::fs::copy(built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    Ok(())
}

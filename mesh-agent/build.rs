//! Builds the kernel programs (`mesh-ebpf`) so the agent can embed the object file.
//!
//! The eBPF crate needs Debian's rustc 1.96 with its matching `core` source and `bpf-linker`
//! (installed by `cargo xtask setup`; see mesh-ebpf/README.md). It is built with its own cargo in
//! its own directory and a clean environment, because the variables cargo sets for this build
//! script (RUSTC, RUSTUP_TOOLCHAIN, CARGO_*) would pick the host toolchain.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const CORE_SOURCE: &str = "/usr/lib/rustlib/src/rust/library/core";

fn main() {
    if let Err(message) = build() {
        println!("cargo::error={message}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let ebpf_dir = manifest_dir.join("../mesh-ebpf");
    let common_dir = manifest_dir.join("../mesh-common");
    for watched in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        ebpf_dir.join(".cargo/config.toml"),
        common_dir.join("src/kernel.rs"),
        common_dir.join("src/ports.rs"),
    ] {
        println!("cargo::rerun-if-changed={}", watched.display());
    }
    check_toolchain()?;

    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = format!("{home}/.cargo/bin:{}", env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.current_dir(&ebpf_dir)
        .args(["build", "--release", "--locked"]);
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO")
            || key.starts_with("RUST")
            || key == "DEBUG"
            || key == "OPT_LEVEL"
            || key == "PROFILE"
            || key == "TARGET"
            || key == "HOST"
            || key == "NUM_JOBS"
            || key == "OUT_DIR"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PATH", path)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1");
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {DEBIAN_CARGO}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "building the eBPF programs in {} failed:\n{}",
            ebpf_dir.display(),
            tail.join("\n")
        ));
    }
    let object = ebpf_dir.join("target/bpfel-unknown-none/release/mesh-ebpf");
    if !object.exists() {
        return Err(format!(
            "the eBPF build succeeded but {} is missing",
            object.display()
        ));
    }
    println!("cargo::rustc-env=MESH_EBPF_OBJECT={}", object.display());
    Ok(())
}

fn check_toolchain() -> Result<(), String> {
    let missing = |what: &str| {
        format!("{what} is missing: the eBPF programs cannot be built. Run `cargo xtask setup` (see mesh-ebpf/README.md).")
    };
    for (path, what) in [
        (DEBIAN_CARGO, "Debian's cargo (package cargo-web)"),
        (DEBIAN_RUSTC, "Debian's rustc (package rustc-web)"),
        (
            CORE_SOURCE,
            "the Rust library source for rustc-web (package rust-web-src)",
        ),
    ] {
        if !Path::new(path).exists() {
            return Err(missing(what));
        }
    }
    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let linker_found = Path::new(&format!("{home}/.cargo/bin/bpf-linker")).exists()
        || env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .any(|dir| Path::new(dir).join("bpf-linker").exists());
    if !linker_found {
        return Err(missing("bpf-linker"));
    }
    Ok(())
}

//! `cargo xtask setup`: installs what building and testing need, and nothing that is present.
//!
//! The eBPF programs need Debian's rustc-web 1.96 with its matching library source and
//! bpf-linker 0.13 built against LLVM 22 (see mesh-ebpf/README.md for why); the tests need
//! iproute2, nsenter, bpftool and tcpdump; the benchmarks need iperf3, wrk, h2load
//! (nghttp2-client), nginx and haproxy; the test runner is
//! cargo-nextest.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::sh;

/// Debian packages and why each is needed.
const PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "Debian's rustc 1.96: the compiler whose `core` source is installable, for the eBPF target",
    ),
    (
        "cargo-web",
        "Debian's cargo matching rustc-web, used to build mesh-ebpf",
    ),
    (
        "rust-web-src",
        "the Rust library source that -Z build-std=core compiles for bpfel-unknown-none",
    ),
    (
        "libstd-rust-web-dev",
        "the standard library of rustc-web (host build scripts of mesh-ebpf)",
    ),
    (
        "llvm-22-dev",
        "LLVM 22, which bpf-linker must be built against to match rustc-web's LLVM",
    ),
    ("bpftool", "inspecting attached programs (end-to-end tests)"),
    (
        "iproute2",
        "network namespaces and veths of the local cluster",
    ),
    (
        "util-linux",
        "nsenter, to run processes inside the local cluster's namespaces",
    ),
    (
        "tcpdump",
        "capturing traffic between nodes (encryption tests)",
    ),
    (
        "iperf3",
        "throughput between pods, mesh against direct (cargo xtask bench)",
    ),
    (
        "wrk",
        "HTTP/1.1 keep-alive requests per second (cargo xtask bench)",
    ),
    (
        "prometheus",
        "a real Prometheus server scraping the mesh's metrics (observability end-to-end tests)",
    ),
    (
        "nghttp2-client",
        "h2load: HTTP/2 requests per second through the waypoint and the other proxies (cargo xtask bench)",
    ),
    (
        "nginx",
        "the reverse proxy the waypoint is compared with (cargo xtask bench, which runs its own in a pod; Debian starts the packaged service only where systemd runs)",
    ),
    (
        "haproxy",
        "the other reverse proxy the waypoint is compared with (cargo xtask bench; run by the bench in a pod)",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

fn bpf_linker_path() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cargo/bin/bpf-linker")
}

fn installed(package: &str) -> bool {
    sh::output("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|status| status.contains("install ok installed"))
}

fn is_root() -> bool {
    sh::output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0")
}

/// Installs whatever is missing; prints what and why; does nothing when all is present.
pub fn run() -> anyhow::Result<()> {
    let missing: Vec<&(&str, &str)> = PACKAGES.iter().filter(|(p, _)| !installed(p)).collect();
    if !missing.is_empty() {
        sh::step("installing missing Debian packages");
        for (package, why) in &missing {
            eprintln!("  {package}: {why}");
        }
        if !is_root() {
            bail!(
                "missing Debian packages {:?} and not root: run `sudo cargo xtask setup` or install them with apt-get",
                missing.iter().map(|(p, _)| *p).collect::<Vec<_>>()
            );
        }
        sh::run("apt-get", &["update", "-qq"])
            .context("apt-get update (are Debian's package mirrors reachable?)")?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(missing.iter().map(|(p, _)| *p));
        sh::run_with_env("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])
            .context("installing Debian packages")?;
        // Debian starts the services it installs (on a host with systemd); the bench runs its
        // own nginx and HAProxy in pods, so the system ones are stopped (best effort).
        for service in ["nginx", "haproxy"] {
            if missing.iter().any(|(p, _)| *p == service) {
                let _ = sh::output("systemctl", &["disable", "--now", service]);
            }
        }
    }

    let linker = bpf_linker_path();
    let linker_ok = sh::output(&linker.display().to_string(), &["--version"])
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if !linker_ok {
        sh::step(&format!(
            "installing bpf-linker {BPF_LINKER_VERSION} against Debian's LLVM 22 (links the eBPF programs; ~1-3 min)"
        ));
        sh::run_with_env(
            "cargo",
            &[
                "install",
                "--locked",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                "llvm-22",
            ],
            &[("LLVM_PREFIX", "/usr/lib/llvm-22")],
        )
        .context("cargo install bpf-linker (needs llvm-22-dev)")?;
    }

    if !sh::succeeds("cargo", &["nextest", "--version"]) {
        sh::step("installing cargo-nextest (the test runner)");
        sh::run("cargo", &["install", "--locked", "cargo-nextest"])
            .context("cargo install cargo-nextest")?;
    }

    if missing.is_empty() && linker_ok {
        eprintln!("setup: everything is installed (Debian packages, bpf-linker {BPF_LINKER_VERSION}, cargo-nextest)");
    }
    Ok(())
}

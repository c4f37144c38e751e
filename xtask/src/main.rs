//! Project automation: `cargo xtask <setup|build|test|lint|demo|bench>`.
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod setup;
mod sh;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Project tasks. Each installs what it needs first (`setup`).
#[derive(Parser, Debug)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Install the toolchain and tools (Debian packages, bpf-linker, cargo-nextest); idempotent.
    Setup,
    /// Build the eBPF programs, then the userspace binaries that embed them.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Formatting and clippy checks for the workspace and the eBPF crate.
    Lint,
    /// Setup, lint, build, then every test (unit, integration, end-to-end) with cargo-nextest.
    Test {
        /// Skip the formatting and clippy checks.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo nextest run` (e.g. a test name filter).
        #[arg(last = true)]
        nextest_args: Vec<String>,
    },
    /// Run the mesh on a local two-node cluster and show what it does.
    Demo,
    /// Benchmarks on a local two-node cluster (release build): the L4 mesh against direct
    /// traffic, then the waypoint against direct, the L4 mesh, nginx and HAProxy.
    Bench {
        /// Fewer and shorter runs (about 5 minutes; the full run takes about 25).
        #[arg(long)]
        quick: bool,
        /// Only the waypoint rows (about 10 minutes; 4 with --quick).
        #[arg(long)]
        waypoint_only: bool,
        /// Where to write the JSON results (default benches/results/latest.json).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The bench itself, run by `bench` from the release build of xtask.
    #[command(hide = true)]
    BenchRun {
        #[arg(long)]
        quick: bool,
        #[arg(long)]
        waypoint_only: bool,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Build { release } => {
            setup::run()?;
            build(release)
        }
        Task::Lint => {
            setup::run()?;
            lint()
        }
        Task::Test {
            no_lint,
            nextest_args,
        } => {
            setup::run()?;
            if !no_lint {
                lint()?;
            }
            test(&nextest_args)
        }
        Task::Demo => {
            setup::run()?;
            build(false)?;
            demo::run()
        }
        Task::Bench {
            quick,
            waypoint_only,
            json,
        } => {
            setup::run()?;
            build(true)?;
            let options = bench::Options {
                quick,
                waypoint_only,
            };
            bench::run(options, json.as_deref())
        }
        Task::BenchRun {
            quick,
            waypoint_only,
            json,
        } => {
            let options = bench::Options {
                quick,
                waypoint_only,
            };
            bench::run_here(options, &json.unwrap_or_else(bench::default_json))
        }
    }
}

fn build(release: bool) -> anyhow::Result<()> {
    sh::step("building the eBPF programs and the workspace (mesh-agent's build script builds mesh-ebpf first)");
    let mut args = vec!["build", "--workspace", "--bins"];
    if release {
        args.push("--release");
    }
    sh::cargo(&args)
}

fn lint() -> anyhow::Result<()> {
    sh::step("cargo fmt --check (workspace and mesh-ebpf)");
    sh::cargo(&["fmt", "--all", "--", "--check"])?;
    sh::host_cargo_in("mesh-ebpf", &["fmt", "--", "--check"])?;
    sh::step("cargo clippy -D warnings");
    sh::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}

fn test(nextest_args: &[String]) -> anyhow::Result<()> {
    build(false)?;
    sh::step("cargo nextest run --workspace (unit, integration and end-to-end tests; the end-to-end tests need root)");
    let mut args: Vec<&str> = vec!["nextest", "run", "--workspace", "--no-fail-fast"];
    args.extend(nextest_args.iter().map(String::as_str));
    sh::cargo(&args)
}

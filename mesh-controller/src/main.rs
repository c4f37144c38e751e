//! The control plane binary.
#![forbid(unsafe_code)]

use clap::Parser;

/// mesh-controller: turns Istio-style configuration into the data-plane model.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("mesh-controller is not implemented yet")
}

//! meshctl: the mesh's command-line interface.
#![forbid(unsafe_code)]

use clap::Parser;

/// meshctl: inspect and operate the mesh.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("meshctl has no commands yet")
}

//! The L7 waypoint proxy. Not built yet: the data path (capture, HBONE tunnel) lands first; the
//! waypoint will terminate HBONE on 15008 and apply routes, resilience and L7 authorization.
#![forbid(unsafe_code)]

use clap::Parser;

/// mesh-waypoint: L7 proxy for a namespace or service account (not yet implemented).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("mesh-waypoint is not implemented yet: L7 routing lands after the HBONE tunnel")
}

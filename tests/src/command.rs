//! Running the system tools the cluster is built with (`ip`, `nsenter`, `bpftool`).

use std::process::Command;

use anyhow::{bail, Context};

/// Runs a command to completion; its stdout, or an error naming the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program).args(args).output().with_context(|| {
        format!("cannot run {program} (is it installed? `cargo xtask setup` installs it)")
    })?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fails loudly unless the process runs as root: the end-to-end tests must not skip silently.
pub fn require_root() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    if euid != "0" {
        bail!("the local cluster needs root (network namespaces, cgroups, eBPF); run the tests as root (CI does)");
    }
    Ok(())
}

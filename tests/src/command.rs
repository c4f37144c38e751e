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

/// Waits (at most 10 s) until something listens on TCP `port` inside `pod`.
pub fn wait_listening(pod: &crate::Pod, port: u16) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let filter = format!("sport = :{port}");
        let out = run("ip", &["netns", "exec", &pod.netns, "ss", "-Hltn", &filter])?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{} is not listening on {port}", pod.uid());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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

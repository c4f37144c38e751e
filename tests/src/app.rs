//! Running `mesh-testapp` inside the local cluster's pods: servers and clients.

use std::process::Output;

use anyhow::{bail, Context};

use crate::agent::binary;
use crate::cluster::{Cluster, Pod};
use crate::command::wait_listening;

/// Starts the echo server in `pod` on `port` (answering as `name`) and waits until it listens.
pub fn serve(cluster: &mut Cluster, pod: &Pod, port: u16, name: &str) -> anyhow::Result<()> {
    let mut cmd = pod.command(&binary("mesh-testapp")?.display().to_string());
    cmd.args(["serve", &port.to_string(), name]);
    cluster.spawn(cmd)?;
    wait_listening(pod, port)
}

/// Runs `mesh-testapp <args>` in `pod` and returns its output, whatever its exit status.
pub fn run(pod: &Pod, args: &[&str]) -> anyhow::Result<Output> {
    pod.command(&binary("mesh-testapp")?.display().to_string())
        .args(args)
        .output()
        .context("running mesh-testapp")
}

/// Sends one line from `pod` to `addr` and returns the answer; fails if there is none.
pub fn reply(pod: &Pod, addr: &str, message: &str) -> anyhow::Result<String> {
    let out = run(pod, &["connect", addr, message])?;
    if !out.status.success() {
        bail!(
            "{} -> {addr} failed: {}",
            pod.uid(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

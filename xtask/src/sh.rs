//! Running commands from tasks, with the command echoed first.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Announces a step.
pub fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs a command in the workspace root; fails with the command line if it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_cmd(Command::new(program).args(args).current_dir(root()))
}

/// Like [`run`], with extra environment variables for the command.
pub fn run_with_env(program: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(root());
    for (key, value) in envs {
        cmd.env(key, value);
    }
    run_cmd(&mut cmd)
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Runs the cargo that runs this xtask (the host toolchain) in the workspace root.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(&cargo, args)
}

/// Runs the host toolchain's cargo in a sub-directory that has its own `rust-toolchain.toml`
/// (the eBPF crate), forcing the host toolchain (for rustfmt, which Debian's toolchain lacks).
pub fn host_cargo_in(dir: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args(args)
        .current_dir(root().join(dir))
        .env("RUSTUP_TOOLCHAIN", "stable");
    run_cmd(&mut cmd)
}

/// Whether a command exists and exits 0 with these arguments.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A command's stdout, or `None` if it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

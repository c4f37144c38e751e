//! The agent's own cgroup v2 directory: the loopback legs of the connections the agent relays
//! are spliced by `sockops` attached there (the agent's sockets are created in its cgroup).

use std::path::{Path, PathBuf};

/// Errors finding the agent's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A /proc file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
    /// The process is not in a cgroup v2 hierarchy, or it is not mounted.
    #[error("{0}")]
    NotFound(String),
}

/// The agent's cgroup v2 directory, or `None` when the agent runs in the root cgroup (attaching
/// there would act on every socket of the machine, so the caller should not).
pub fn own_cgroup() -> Result<Option<PathBuf>, CgroupError> {
    let read = |path: &'static str| {
        std::fs::read_to_string(path).map_err(|source| CgroupError::Read { path, source })
    };
    let relative = unified_path(&read("/proc/self/cgroup")?)
        .ok_or_else(|| CgroupError::NotFound("no cgroup v2 entry in /proc/self/cgroup".into()))?;
    let mount = cgroup2_mount(&read("/proc/self/mountinfo")?)
        .ok_or_else(|| CgroupError::NotFound("cgroup v2 is not mounted".into()))?;
    if relative == "/" {
        return Ok(None);
    }
    Ok(Some(
        Path::new(&mount).join(relative.trim_start_matches('/')),
    ))
}

/// The cgroup v2 path from `/proc/self/cgroup` (the `0::<path>` line).
fn unified_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The mount point of the cgroup v2 filesystem from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_entry_among_v1_lines() {
        let text = "12:cpu,cpuacct:/x\n0::/mt42/agent-node1\n";
        assert_eq!(unified_path(text).as_deref(), Some("/mt42/agent-node1"));
        assert_eq!(unified_path("3:memory:/x\n"), None);
    }

    #[test]
    fn finds_the_cgroup2_mount_point() {
        let text = "25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro\n\
                    31 25 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(text).as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        assert_eq!(
            cgroup2_mount("25 30 0:22 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }
}

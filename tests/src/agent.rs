//! Running a node agent in the local cluster and talking to its enrolment API and admin endpoint.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cluster::{Node, Pod};

/// Where the workspace's binaries are: next to the running test's `deps/` directory.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let mut dir = exe
        .parent()
        .context("test binary has no directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built; run `cargo build --workspace` (cargo xtask test does)",
            path.display()
        );
    }
    Ok(path)
}

/// The agents' `RUST_LOG` in the tests: every connection logged by the agent (info) and every
/// captured connect by the kernel programs (debug), which the tests' assertions read.
pub const TEST_LOG: &str = "info,mesh_ebpf=debug";

/// A running agent on one node.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    /// Node the agent serves.
    pub node: Node,
    /// Its enrolment socket.
    pub socket: PathBuf,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl Agent {
    /// Starts the agent in `node`'s network namespace, with `workdir` for its socket and log and
    /// an optional model file; waits (at most 10 s) until its enrolment socket answers.
    pub fn start(
        node: &Node,
        workdir: &Path,
        local_config: Option<&Path>,
    ) -> anyhow::Result<Agent> {
        Agent::start_with(node, workdir, local_config, &[])
    }

    /// Like [`Agent::start`], with extra command-line arguments.
    pub fn start_with(
        node: &Node,
        workdir: &Path,
        local_config: Option<&Path>,
        extra_args: &[String],
    ) -> anyhow::Result<Agent> {
        Agent::start_with_log(node, workdir, local_config, extra_args, TEST_LOG)
    }

    /// Like [`Agent::start_with`], with `rust_log` as the agent's `RUST_LOG` (the benchmarks
    /// use a quieter one than the tests, whose assertions read info and debug lines).
    pub fn start_with_log(
        node: &Node,
        workdir: &Path,
        local_config: Option<&Path>,
        extra_args: &[String],
        rust_log: &str,
    ) -> anyhow::Result<Agent> {
        let socket = workdir.join(format!("{}.sock", node.name));
        let log = workdir.join(format!("{}-agent.log", node.name));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = node.agent_command(&binary("mesh-agent")?.display().to_string())?;
        cmd.arg("--node")
            .arg(&node.name)
            .arg("--enrol-socket")
            .arg(&socket);
        if let Some(path) = local_config {
            cmd.arg("--local-config").arg(path);
        }
        cmd.args(extra_args);
        cmd.env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("log file")?)
            .stderr(log_file);
        let child = cmd.spawn().context("starting mesh-agent")?;
        let mut agent = Agent {
            child: Some(child),
            node: node.clone(),
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if agent.request(&json!({"op": "list"})).is_ok() {
                return Ok(agent);
            }
            if let Some(child) = agent.child.as_mut() {
                if let Some(status) = child.try_wait().context("waiting for mesh-agent")? {
                    bail!("mesh-agent exited with {status}:\n{}", agent.logs());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "mesh-agent did not answer on {} within 10 s:\n{}",
                    agent.socket.display(),
                    agent.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one raw line to the enrolment API and returns the response line.
    pub fn raw_request(&self, line: &[u8]) -> anyhow::Result<Value> {
        let mut stream = UnixStream::connect(&self.socket)
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        // The agent may answer and close before it has read all of an oversized request, so a
        // failed write is reported only if there is no response to read.
        let written = stream.write_all(line).and_then(|()| {
            if line.ends_with(b"\n") {
                Ok(())
            } else {
                stream.write_all(b"\n")
            }
        });
        let mut response = String::new();
        let read = BufReader::new(stream).read_line(&mut response);
        if response.is_empty() {
            written.context("sending the enrolment request")?;
            read.context("reading the enrolment response")?;
            bail!("the agent closed the connection without answering");
        }
        serde_json::from_str(&response).with_context(|| format!("enrolment response {response:?}"))
    }

    /// Sends a request; returns the response (which may say `ok: false`).
    pub fn request(&self, request: &Value) -> anyhow::Result<Value> {
        self.raw_request(serde_json::to_string(request)?.as_bytes())
    }

    /// Enrols a pod with the given namespace labels; fails unless the agent says ok.
    pub fn add_pod(
        &self,
        pod: &Pod,
        namespace_labels: Value,
        labels: Value,
    ) -> anyhow::Result<Value> {
        let response =
            self.request(&json!({"op": "add", "pod": pod_json(pod, namespace_labels, labels)}))?;
        if response["ok"] != json!(true) {
            bail!("enrolling {} failed: {response}", pod.uid());
        }
        Ok(response)
    }

    /// Removes a pod; fails unless the agent says ok.
    pub fn remove_pod(&self, pod: &Pod) -> anyhow::Result<()> {
        let response = self.request(&json!({"op": "remove", "uid": pod.uid()}))?;
        if response["ok"] != json!(true) {
            bail!("removing {} failed: {response}", pod.uid());
        }
        Ok(())
    }

    /// GETs an admin endpoint path (the admin listens on the node's loopback).
    pub fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        self.admin("get", path)
    }

    /// POSTs to the agent's admin endpoint (from the node's netns); fails unless 200.
    pub fn admin_post(&self, path: &str) -> anyhow::Result<String> {
        self.admin("post", path)
    }

    fn admin(&self, method: &str, path: &str) -> anyhow::Result<String> {
        let output = self
            .node
            .command(&binary("mesh-testapp")?.display().to_string())
            .args([method, "127.0.0.1:15000", path])
            .output()
            .context("running mesh-testapp")?;
        if !output.status.success() {
            bail!(
                "admin {method} {path}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The agent's readiness as the kubelet sees it: `GET <node>:15021/healthz/ready` from the
    /// node's netns; `None` when nothing answered.
    pub fn readiness(&self) -> anyhow::Result<Option<(u16, String)>> {
        let addr = format!("{}:{READINESS_PORT}", self.node.ip4);
        http_status(|p| self.node.command(p), "GET", &addr, "/healthz/ready")
    }

    /// How many descriptors the agent has open (`/proc/<pid>/fd`).
    pub fn open_fds(&self) -> anyhow::Result<usize> {
        let pid = self.pid().context("the agent is not running")?;
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
            .with_context(|| format!("listing /proc/{pid}/fd"))?
            .count())
    }

    /// The agent's process id while it runs (`nsenter` execs the agent, so this is the agent).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The agent's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `timeout`) until the log has a line containing every one of `needles`.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if let Some(line) = logs.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(line.to_owned());
            }
            if Instant::now() > deadline {
                bail!("no agent log line contains all of {needles:?}; log:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the agent with SIGTERM and waits (at most 10 s) for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        crate::command::run("kill", &["-TERM", &child.id().to_string()])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("mesh-agent exited with {status}:\n{}", self.logs());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("mesh-agent did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The agent's Prometheus port (every address of the node).
pub const METRICS_PORT: u16 = 15020;
/// The agent's readiness port (every address of the node).
pub const READINESS_PORT: u16 = 15021;
/// The agent's admin port (the node's loopback only).
pub const ADMIN_PORT: u16 = 15000;

/// One HTTP request made by `mesh-testapp status` run through `command` (e.g. a node's or a
/// pod's `command`): the status code and body of any answer, `None` when there was none
/// (refused, closed before answering, timed out).
pub fn http_status(
    command: impl FnOnce(&str) -> Command,
    method: &str,
    addr: &str,
    path: &str,
) -> anyhow::Result<Option<(u16, String)>> {
    let output = command(&binary("mesh-testapp")?.display().to_string())
        .args(["status", method, addr, path])
        .output()
        .context("running mesh-testapp")?;
    if !output.status.success() {
        return Ok(None);
    }
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (code, body) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    let code = code
        .trim()
        .parse()
        .with_context(|| format!("mesh-testapp status printed {stdout:?}"))?;
    Ok(Some((code, body.to_owned())))
}

/// The enrolment JSON for a pod.
pub fn pod_json(pod: &Pod, namespace_labels: Value, labels: Value) -> Value {
    json!({
        "uid": pod.uid(),
        "name": pod.name,
        "namespace": pod.namespace,
        "serviceAccount": pod.name,
        "netns": pod.netns_path(),
        "cgroup": pod.cgroup,
        "addresses": pod.addresses(),
        "labels": labels,
        "namespaceLabels": namespace_labels,
    })
}

/// The namespace labels that opt a namespace into the mesh.
pub fn ambient() -> Value {
    json!({"istio.io/dataplane-mode": "ambient"})
}

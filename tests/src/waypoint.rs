//! Running a waypoint instance (`mesh-waypoint`) in a pod of the local cluster, as a waypoint
//! Deployment's pod runs in Kubernetes: in the pod's network namespace and cgroup, not enrolled
//! with any agent (waypoint pods are not captured), with its bootstrap token from
//! [`Controller::start_with_waypoints`] and the controller's pinned root.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::agent::binary;
use crate::cluster::Pod;
use crate::controller::{waypoint_token_file, Controller};

/// The status port of a waypoint (readiness and metrics).
pub const STATUS_PORT: u16 = 15021;

/// A running waypoint instance.
#[derive(Debug)]
pub struct Waypoint {
    child: Option<Child>,
    /// The pod it runs in.
    pub pod: Pod,
    /// Its log file.
    pub log: PathBuf,
}

/// The Kubernetes objects of a waypoint in the local cluster: its Gateway
/// (`istio.io/waypoint-for: <waypoint_for>`) and its instance pod (label
/// `gateway.networking.k8s.io/gateway-name`, service account = the waypoint's name) on `node`.
pub fn waypoint_yaml(pod: &Pod, node: &str, name: &str, waypoint_for: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}, labels: {{istio.io/waypoint-for: {waypoint_for}}}}}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod_name}, namespace: {ns}, labels: {{gateway.networking.k8s.io/gateway-name: {name}}}}}\nspec:\n  nodeName: {node}\n  serviceAccountName: {name}\n  containers: [{{name: waypoint, image: mesh-waypoint}}]\nstatus:\n  phase: Running\n  podIP: \"{ip4}\"\n  podIPs: [{{ip: \"{ip4}\"}}, {{ip: \"{ip6}\"}}]\n",
        ns = pod.namespace,
        pod_name = pod.name,
        ip4 = pod.ip4,
        ip6 = pod.ip6,
    )
}

impl Waypoint {
    /// Starts the waypoint `<pod namespace>/<name>` in `pod`, following `controller`; waits (at
    /// most 15 s) until it reports ready (a model and a certificate).
    pub fn start(
        pod: &Pod,
        workdir: &Path,
        controller: &Controller,
        name: &str,
    ) -> anyhow::Result<Waypoint> {
        Waypoint::start_with_log(pod, workdir, controller, name, "info")
    }

    /// Like [`start`](Self::start) with `rust_log` as its `RUST_LOG`.
    pub fn start_with_log(
        pod: &Pod,
        workdir: &Path,
        controller: &Controller,
        name: &str,
        rust_log: &str,
    ) -> anyhow::Result<Waypoint> {
        let log = workdir.join(format!("waypoint-{}-{}.log", pod.namespace, pod.name));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = pod.command(&binary("mesh-waypoint")?.display().to_string());
        cmd.arg("--waypoint")
            .arg(format!("{}/{name}", pod.namespace))
            .arg("--controller-addr")
            .arg(&controller.config_url)
            .arg("--ca-addr")
            .arg(&controller.ca_url)
            .arg("--ca-token-file")
            .arg(waypoint_token_file(workdir, &pod.namespace, name))
            .arg("--ca-root-file")
            .arg(&controller.root_file)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("log file")?)
            .stderr(log_file);
        let child = cmd.spawn().context("starting mesh-waypoint")?;
        let mut waypoint = Waypoint {
            child: Some(child),
            pod: pod.clone(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if waypoint.ready()? {
                return Ok(waypoint);
            }
            if let Some(child) = waypoint.child.as_mut() {
                if let Some(status) = child.try_wait().context("waiting for mesh-waypoint")? {
                    bail!("mesh-waypoint exited with {status}:\n{}", waypoint.logs());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "mesh-waypoint in {} not ready within 15 s:\n{}",
                    pod.uid(),
                    waypoint.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether its readiness endpoint answers 200.
    pub fn ready(&self) -> anyhow::Result<bool> {
        let out = self.status_get("/healthz/ready")?;
        Ok(out.is_some())
    }

    /// The body of `GET <path>` on its status port, `None` unless it answered 200.
    pub fn status_get(&self, path: &str) -> anyhow::Result<Option<String>> {
        let out = self
            .pod
            .command(&binary("mesh-testapp")?.display().to_string())
            .args(["get", &format!("127.0.0.1:{STATUS_PORT}"), path])
            .output()
            .context("running mesh-testapp get")?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// The value of one series of its metrics (a line starting with `series`), 0 when absent.
    pub fn metric(&self, series: &str) -> anyhow::Result<u64> {
        let text = self.status_get("/metrics")?.unwrap_or_default();
        Ok(text
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::parse)
            .transpose()?
            .unwrap_or(0))
    }

    /// Its process id while it runs (`nsenter` execs the waypoint, so this is the waypoint).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it (SIGKILL) and waits for it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing mesh-waypoint")?;
            child.wait().context("waiting for mesh-waypoint")?;
        }
        Ok(())
    }
}

impl Drop for Waypoint {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

//! Running the controller (config stream and certificate authority) in the local cluster's
//! `net` namespace, reachable from every node at the control-plane address, over TLS: the
//! serving certificate names that address, and agents pin the CA root the controller writes to
//! `workdir/ca/root-cert.pem`.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::agent::binary;
use crate::cluster::Cluster;
use crate::command::run;

/// Config stream port.
pub const CONFIG_PORT: u16 = 15010;
/// Certificate service port.
pub const CA_PORT: u16 = 15012;
/// The admin endpoint, on the control plane namespace's loopback.
pub const ADMIN_ADDR: &str = "127.0.0.1:15014";

/// A running controller.
#[derive(Debug)]
pub struct Controller {
    child: Option<Child>,
    /// The directory of YAML it watches.
    pub config_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// `https://<ip>:15010`.
    pub config_url: String,
    /// `https://<ip>:15012`.
    pub ca_url: String,
    /// The mesh root (PEM) agents pin (`--ca-root-file`).
    pub root_file: PathBuf,
}

impl Controller {
    /// Starts the controller on `config_dir`, with a CA in `workdir/ca` issuing certificates of
    /// `cert_lifetime`, and bootstrap tokens for every node of the cluster (written to
    /// `workdir/<node>.token`). Waits (at most 10 s) until both ports listen.
    pub fn start(
        cluster: &Cluster,
        workdir: &Path,
        config_dir: &Path,
        cert_lifetime: Duration,
    ) -> anyhow::Result<Controller> {
        Controller::start_with_waypoints(cluster, workdir, config_dir, cert_lifetime, &[])
    }

    /// Like [`start`](Self::start), with bootstrap tokens for the waypoints `(namespace, name)`
    /// too (principal `waypoint/<namespace>/<name>`, written to
    /// `workdir/waypoint-<namespace>-<name>.token`; see [`waypoint_token_file`]).
    pub fn start_with_waypoints(
        cluster: &Cluster,
        workdir: &Path,
        config_dir: &Path,
        cert_lifetime: Duration,
        waypoints: &[(&str, &str)],
    ) -> anyhow::Result<Controller> {
        let ip = cluster.control_plane_ip();
        let mut tokens = String::new();
        for node in cluster.nodes() {
            let token = format!("{}-{:016x}{:016x}", node.name, rand_u64(), rand_u64());
            std::fs::write(workdir.join(format!("{}.token", node.name)), &token)?;
            tokens.push_str(&format!("{}={token}\n", node.name));
        }
        for (namespace, name) in waypoints {
            let token = format!("wp-{:016x}{:016x}", rand_u64(), rand_u64());
            std::fs::write(waypoint_token_file(workdir, namespace, name), &token)?;
            tokens.push_str(&format!("waypoint/{namespace}/{name}={token}\n"));
        }
        let tokens_file = workdir.join("bootstrap-tokens");
        std::fs::write(&tokens_file, tokens)?;
        let log = workdir.join("controller.log");
        let log_file = std::fs::File::create(&log)?;
        let mut cmd =
            cluster.control_plane_command(&binary("mesh-controller")?.display().to_string());
        cmd.arg("--config-dir")
            .arg(config_dir)
            .arg("--poll-interval-ms")
            .arg("200")
            .arg("--grpc-addr")
            .arg(format!("{ip}:{CONFIG_PORT}"))
            .arg("--admin-addr")
            .arg(ADMIN_ADDR)
            .arg("--ca-addr")
            .arg(format!("{ip}:{CA_PORT}"))
            .arg("--ca-dir")
            .arg(workdir.join("ca"))
            .arg("--bootstrap-tokens")
            .arg(&tokens_file)
            .arg("--serving-san")
            .arg(ip.to_string())
            .arg("--cert-lifetime-secs")
            .arg(cert_lifetime.as_secs().to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd.spawn().context("starting mesh-controller")?;
        let mut controller = Controller {
            child: Some(child),
            config_dir: config_dir.to_owned(),
            log,
            config_url: format!("https://{ip}:{CONFIG_PORT}"),
            ca_url: format!("https://{ip}:{CA_PORT}"),
            root_file: workdir.join("ca").join("root-cert.pem"),
        };
        let (net, _) = cluster.node_link(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening = run("ip", &["netns", "exec", &net, "ss", "-Hltn"])?;
            if [CONFIG_PORT, CA_PORT]
                .iter()
                .all(|p| listening.contains(&format!(":{p} ")))
            {
                return Ok(controller);
            }
            if let Some(child) = controller.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "mesh-controller exited with {status}:\n{}",
                        controller.logs()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "mesh-controller did not listen within 10 s:\n{}",
                    controller.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The flags that point `node`'s agent at this controller: both URLs, its token (written
    /// to `workdir/<node>.token` by [`start`](Self::start)) and the pinned root.
    pub fn agent_args(&self, workdir: &Path, node: &str) -> Vec<String> {
        vec![
            "--controller-addr".to_owned(),
            self.config_url.clone(),
            "--ca-addr".to_owned(),
            self.ca_url.clone(),
            "--ca-token-file".to_owned(),
            workdir.join(format!("{node}.token")).display().to_string(),
            "--ca-root-file".to_owned(),
            self.root_file.display().to_string(),
        ]
    }

    /// GETs a path of the controller's admin endpoint (`127.0.0.1:15014` in the control plane's
    /// namespace of `cluster`); fails unless 200.
    pub fn admin_get(&self, cluster: &Cluster, path: &str) -> anyhow::Result<String> {
        let out = cluster
            .control_plane_command(&binary("mesh-testapp")?.display().to_string())
            .args(["get", ADMIN_ADDR, path])
            .output()
            .context("running mesh-testapp")?;
        if !out.status.success() {
            bail!(
                "controller admin GET {path}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The controller's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where [`Controller::start_with_waypoints`] writes a waypoint's bootstrap token.
pub fn waypoint_token_file(workdir: &Path, namespace: &str, name: &str) -> PathBuf {
    workdir.join(format!("waypoint-{namespace}-{name}.token"))
}

/// A random number from the kernel (tokens need not be guessable even in tests).
fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u64::from_ne_bytes(bytes)
}

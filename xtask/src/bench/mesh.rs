//! The bench topology: a two-node local cluster, the controller, one agent per node, and pairs of
//! client/server pods, one pair in the mesh and one outside it, on the same nodes.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use mesh_tests::agent::{ambient, binary};
use mesh_tests::command::{run, wait_listening};
use mesh_tests::config::{namespace_yaml, pod_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::json;

use super::tools::{ECHO_PORT, HTTP_PORT, IPERF_PORT, LOOPBACK_ECHO_PORT};

/// The agents' `RUST_LOG` here: startup and config lines, warnings, no line per connection
/// (the proxies' access log and the kernel programs' per-connect debug line cost CPU on every
/// connection and would be measured with the data path).
const AGENT_LOG: &str = "warn,mesh_agent=info,mesh_agent::proxy=warn";

/// Namespace of the meshed pods.
const MESHED: &str = "bench";
/// Namespace of the direct (not captured) pods.
const DIRECT: &str = "direct";

/// Client and servers of one side of the comparison.
#[derive(Debug)]
pub struct Side {
    /// Client on node 1.
    pub client: Pod,
    /// Server on node 2.
    pub remote: Pod,
    /// Server on node 1 (same node as the client).
    pub local: Pod,
}

/// Everything the bench runs on; dropping it stops the agents and controller and removes the
/// cluster (in that order: fields drop in declaration order).
#[derive(Debug)]
pub struct BenchMesh {
    /// The meshed pods.
    pub mesh: Side,
    /// The same pods outside the mesh.
    pub direct: Side,
    /// Pods enrolled only to measure the memory per enrolled pod (node 1).
    pub idle: Vec<Pod>,
    /// Agents of node 1 and node 2.
    pub agents: Vec<Agent>,
    controller: Controller,
    /// Kept to be dropped last but one: removes the cluster.
    _cluster: Cluster,
    _dir: tempfile::TempDir,
}

/// Per-netns settings for a connection-churning client: a wide ephemeral port range and
/// TIME_WAIT reuse (these sysctls are per network namespace: only the bench's pods change).
fn tune(pod: &Pod) -> anyhow::Result<()> {
    for setting in [
        "net.ipv4.ip_local_port_range=1024 65000",
        "net.ipv4.tcp_tw_reuse=1",
    ] {
        run(
            "ip",
            &["netns", "exec", &pod.netns, "sysctl", "-q", "-w", setting],
        )?;
    }
    Ok(())
}

fn start_servers(cluster: &mut Cluster, pod: &Pod) -> anyhow::Result<()> {
    let app = binary("mesh-testapp")?.display().to_string();
    let port = IPERF_PORT.to_string();
    let mut commands = vec![pod.command("iperf3")];
    commands[0].args(["-s", "-p", &port]);
    let mut echo = pod.command(&app);
    echo.args(["echo", &ECHO_PORT.to_string()]);
    commands.push(echo);
    let mut http = pod.command(&app);
    http.args(["http", &HTTP_PORT.to_string()]);
    commands.push(http);
    for mut cmd in commands {
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cluster.spawn(cmd)?;
    }
    for port in [IPERF_PORT, ECHO_PORT, HTTP_PORT] {
        wait_listening(pod, port)?;
    }
    Ok(())
}

/// A client and two servers in namespace `ns`, servers started.
fn side(cluster: &mut Cluster, ns: &str) -> anyhow::Result<Side> {
    let side = Side {
        client: cluster.add_pod(1, ns, "client")?,
        remote: cluster.add_pod(2, ns, "remote")?,
        local: cluster.add_pod(1, ns, "local")?,
    };
    for pod in [&side.client, &side.remote, &side.local] {
        tune(pod)?;
    }
    start_servers(cluster, &side.remote)?;
    start_servers(cluster, &side.local)?;
    Ok(side)
}

/// An echo server in `pod` for clients of the same pod (over loopback).
fn start_loopback_echo(cluster: &mut Cluster, pod: &Pod) -> anyhow::Result<()> {
    let mut echo = pod.command(&binary("mesh-testapp")?.display().to_string());
    echo.args(["echo", &LOOPBACK_ECHO_PORT.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cluster.spawn(echo)?;
    wait_listening(pod, LOOPBACK_ECHO_PORT)
}

impl BenchMesh {
    /// Builds the cluster and starts everything; pods are created but only the agents' idle
    /// state exists until [`BenchMesh::enrol`].
    pub fn start(idle_pods: u8) -> anyhow::Result<BenchMesh> {
        let dir = tempfile::Builder::new().prefix("mesh-bench").tempdir()?;
        let mut cluster = Cluster::new(2)?;
        let mesh = side(&mut cluster, MESHED)?;
        let direct = side(&mut cluster, DIRECT)?;
        start_loopback_echo(&mut cluster, &direct.client)?;
        let idle = (0..idle_pods)
            .map(|i| cluster.add_pod(1, MESHED, &format!("idle{i:02}")))
            .collect::<anyhow::Result<Vec<_>>>()?;

        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(&config_dir)?;
        let mut docs = vec![namespace_yaml(MESHED, true), namespace_yaml(DIRECT, false)];
        for (pod, node) in [
            (&mesh.client, "node1"),
            (&mesh.remote, "node2"),
            (&mesh.local, "node1"),
        ] {
            docs.push(pod_yaml(pod, node, &pod.name));
        }
        docs.extend(idle.iter().map(|p| pod_yaml(p, "node1", &p.name)));
        let workloads = docs.len() - 2;
        std::fs::write(config_dir.join("bench.yaml"), docs.join("---\n"))?;

        let controller = Controller::start(
            &cluster,
            dir.path(),
            &config_dir,
            Duration::from_secs(24 * 3600),
        )?;
        let mut agents = Vec::new();
        for node in cluster.nodes() {
            let args = agent_args(&controller, dir.path(), &node.name);
            agents.push(Agent::start_with_log(
                node,
                dir.path(),
                None,
                &args,
                AGENT_LOG,
            )?);
        }
        let needle = format!("workloads={workloads}");
        for agent in &agents {
            agent
                .wait_for_log(&["config applied", &needle], Duration::from_secs(20))
                .context("waiting for the agents to get the config")?;
        }
        Ok(BenchMesh {
            mesh,
            direct,
            idle,
            agents,
            controller,
            _cluster: cluster,
            _dir: dir,
        })
    }

    /// The agents' process ids.
    pub fn agent_pids(&self) -> anyhow::Result<Vec<u32>> {
        self.agents
            .iter()
            .map(|a| a.pid().context("agent not running"))
            .collect()
    }

    /// Enrols the client and server pods: the meshed ones captured, the direct ones not.
    pub fn enrol(&self) -> anyhow::Result<()> {
        let (a1, a2) = (&self.agents[0], &self.agents[1]);
        for (agent, pod, ns_labels) in [
            (a1, &self.mesh.client, ambient()),
            (a2, &self.mesh.remote, ambient()),
            (a1, &self.mesh.local, ambient()),
            (a1, &self.direct.client, json!({})),
            (a2, &self.direct.remote, json!({})),
            (a1, &self.direct.local, json!({})),
        ] {
            let response = agent.add_pod(pod, ns_labels.clone(), json!({"app": pod.name}))?;
            let captured = response["captured"] == json!(true);
            if captured != (ns_labels == ambient()) {
                anyhow::bail!("{}: unexpected capture state {response}", pod.uid());
            }
        }
        Ok(())
    }

    /// Switches the kernel fast path of both agents (admin endpoint): `enabled=true|false` or
    /// `splice=true|false`.
    pub fn fast_path(&self, query: &str) -> anyhow::Result<()> {
        for agent in &self.agents {
            agent.admin_post(&format!("/fastpath?{query}"))?;
        }
        Ok(())
    }

    /// Node 1's fast-path counters summed over its verdicts: (connections decided in the kernel
    /// and let through, spliced directions that stayed on TCP).
    pub fn fast_path_counts(&self) -> anyhow::Result<(u64, u64)> {
        let listing: serde_json::Value =
            serde_json::from_str(&self.agents[0].admin_get("/fastpath")?)?;
        let verdicts = listing["verdicts"].as_array().cloned().unwrap_or_default();
        let sum = |field: &str| verdicts.iter().filter_map(|v| v[field].as_u64()).sum();
        Ok((sum("spliced"), sum("tcp_fallbacks")))
    }

    /// Enrols the idle pods on node 1.
    pub fn enrol_idle(&self) -> anyhow::Result<()> {
        for pod in &self.idle {
            self.agents[0].add_pod(pod, ambient(), json!({"app": pod.name}))?;
        }
        Ok(())
    }

    /// Both agents' logs, for error reports.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for agent in &self.agents {
            let logs = agent.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} agent (last 40 lines)\n", agent.node.name));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("--- controller (last 20 lines)\n");
        let logs = self.controller.logs();
        let tail: Vec<&str> = logs.lines().rev().take(20).collect();
        for line in tail.iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

fn agent_args(controller: &Controller, dir: &Path, node: &str) -> Vec<String> {
    vec![
        "--controller-addr".to_owned(),
        controller.config_url.clone(),
        "--ca-addr".to_owned(),
        controller.ca_url.clone(),
        "--ca-token-file".to_owned(),
        dir.join(format!("{node}.token")).display().to_string(),
        "--ca-root-file".to_owned(),
        controller.root_file.display().to_string(),
    ]
}

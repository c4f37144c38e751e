//! A controlled mesh on the local cluster: the controller (config stream and CA) and one agent
//! per node, each agent following the controller over TLS, pinning its root and holding its node's
//! bootstrap token.

use std::path::Path;
use std::time::Duration;

use crate::agent::Agent;
use crate::cluster::Cluster;
use crate::controller::Controller;

/// The controller and the agents (agent `i` serves node `i + 1`).
#[derive(Debug)]
pub struct ControlledMesh {
    /// The agents, in node order.
    pub agents: Vec<Agent>,
    /// The controller.
    pub controller: Controller,
}

impl ControlledMesh {
    /// Starts the controller on `config_dir` and an agent on every node, then waits (at most
    /// 10 s each) until every agent has applied a model with `workloads` workloads.
    pub fn start(
        cluster: &Cluster,
        workdir: &Path,
        config_dir: &Path,
        cert_lifetime: Duration,
        workloads: usize,
    ) -> anyhow::Result<ControlledMesh> {
        ControlledMesh::start_with_waypoints(
            cluster,
            workdir,
            config_dir,
            cert_lifetime,
            workloads,
            &[],
        )
    }

    /// Like [`start`](Self::start), with bootstrap tokens for the waypoints `(namespace, name)`
    /// (see [`Controller::start_with_waypoints`]).
    pub fn start_with_waypoints(
        cluster: &Cluster,
        workdir: &Path,
        config_dir: &Path,
        cert_lifetime: Duration,
        workloads: usize,
        waypoints: &[(&str, &str)],
    ) -> anyhow::Result<ControlledMesh> {
        let controller = Controller::start_with_waypoints(
            cluster,
            workdir,
            config_dir,
            cert_lifetime,
            waypoints,
        )?;
        let mut agents = Vec::new();
        for node in cluster.nodes() {
            let args = controller.agent_args(workdir, &node.name);
            agents.push(Agent::start_with(node, workdir, None, &args)?);
        }
        let applied = format!("workloads={workloads}");
        for agent in &agents {
            agent.wait_for_log(&["config applied", &applied], Duration::from_secs(10))?;
        }
        Ok(ControlledMesh { agents, controller })
    }
}

//! End-to-end: L4 routing on a two-node local cluster with the real controller, one agent per
//! node and a waypoint. Clients and servers are `mesh-testapp` line echo servers and its `tally`
//! client (each connection's answer names the server that took it) in meshed pods.
//!
//! - A VirtualService `tcp` route on a `tcp` port of a service behind the waypoint, weights
//!   80/20 over two backend services: 500 connections split within ±4 points.
//! - Its `tls` routes by SNI: a ClientHello naming `a.test` reaches backend a, `b.test` backend
//!   b (the waypoint reads the name without terminating TLS and replays the bytes); a name no
//!   TLS rule has falls to the `tcp` rule.
//! - `trafficDistribution: PreferClose` on a service without waypoint (the agent picks the
//!   endpoint): with node 1 in zone a and node 2 in zone b, a client on node 1 reaches only the
//!   zone-a endpoint; with that endpoint moved to zone d (no endpoint left in zone a), both.
//!
//! Needs root: each test fails loudly without it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::ambient;
use mesh_tests::config::{namespace_yaml, node_yaml, pod_yaml, replace_file};
use mesh_tests::controller::Controller;
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::waypoint::{waypoint_yaml, Waypoint};
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::{json, Value};

const DAY: Duration = Duration::from_secs(24 * 3600);
const PORT: u16 = 7000;
/// `apps/front`: the service the routes are for (no endpoints of its own).
const FRONT: &str = "198.19.0.40:7000";
/// `zoned/near`: endpoints in zone a (node 1) and zone b (node 2), `PreferClose`.
const NEAR: &str = "198.19.0.50:7000";

const ROUTES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: apps}
spec:
  hosts: [front, a.test, b.test]
  tls:
  - match: [{port: 7000, sniHosts: [a.test]}]
    route: [{destination: {host: backend-a}}]
  - match: [{sniHosts: [b.test]}]
    route: [{destination: {host: backend-b}}]
  tcp:
  - match: [{port: 7000}]
    route:
    - {destination: {host: backend-a}, weight: 80}
    - {destination: {host: backend-b}, weight: 20}
";

fn service(namespace: &str, name: &str, ip: &str, app: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  clusterIP: {ip}\n  selector: {{app: {app}}}\n  ports: [{{name: tcp, port: {PORT}, targetPort: {PORT}}}]\n{extra}")
}

fn nodes(zone1: &str) -> String {
    [
        node_yaml(
            "node1",
            &[
                ("topology.kubernetes.io/region", "r1"),
                ("topology.kubernetes.io/zone", zone1),
            ],
        ),
        node_yaml(
            "node2",
            &[
                ("topology.kubernetes.io/region", "r1"),
                ("topology.kubernetes.io/zone", "b"),
            ],
        ),
    ]
    .join("---\n")
}

/// `apps/client` (node 1), the waypoint `apps/waypoint` (node 1, for the whole `apps`
/// namespace), backends `apps/backend-a` (node 1) and `apps/backend-b` (node 2) each behind its
/// own service, and `zoned/z-a` (node 1), `zoned/z-b` (node 2) behind `zoned/near`.
struct Mesh {
    client: Pod,
    waypoint: Waypoint,
    agents: Vec<Agent>,
    _controller: Controller,
    config_dir: PathBuf,
    _cluster: Cluster,
    _dir: tempfile::TempDir,
}

fn start_mesh(prefix: &str) -> anyhow::Result<Mesh> {
    mesh_tests::command::require_root()?;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let client = cluster.add_pod(1, "apps", "client")?;
    let waypoint_pod = cluster.add_pod(1, "apps", "waypoint")?;
    let a = cluster.add_pod(1, "apps", "backend-a")?;
    let b = cluster.add_pod(2, "apps", "backend-b")?;
    let za = cluster.add_pod(1, "zoned", "z-a")?;
    let zb = cluster.add_pod(2, "zoned", "z-b")?;
    for pod in [&a, &b, &za, &zb] {
        mesh_tests::app::serve(&mut cluster, pod, PORT, &pod.name)?;
    }
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let base = [
        namespace_yaml("apps", true).replace(
            "labels: {istio.io/dataplane-mode: ambient}",
            "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
        ),
        namespace_yaml("zoned", true),
        waypoint_yaml(&waypoint_pod, "node1", "waypoint", "all"),
        pod_yaml(&client, "node1", "client"),
        pod_yaml(&a, "node1", "backend-a"),
        pod_yaml(&b, "node2", "backend-b"),
        pod_yaml(&za, "node1", "near"),
        pod_yaml(&zb, "node2", "near"),
        service("apps", "front", "198.19.0.40", "front", ""),
        service("apps", "backend-a", "198.19.0.41", "backend-a", ""),
        service("apps", "backend-b", "198.19.0.42", "backend-b", ""),
        service(
            "zoned",
            "near",
            "198.19.0.50",
            "near",
            "  trafficDistribution: PreferClose\n",
        ),
    ]
    .join("---\n");
    std::fs::write(config_dir.join("base.yaml"), base)?;
    std::fs::write(config_dir.join("nodes.yaml"), nodes("a"))?;
    std::fs::write(config_dir.join("routes.yaml"), ROUTES)?;
    let ControlledMesh { agents, controller } = ControlledMesh::start_with_waypoints(
        &cluster,
        dir.path(),
        &config_dir,
        DAY,
        6,
        &[("apps", "waypoint")],
    )?;
    agents[0].add_pod(&client, ambient(), json!({"app": "client"}))?;
    agents[0].add_pod(&a, ambient(), json!({"app": "backend-a"}))?;
    agents[1].add_pod(&b, ambient(), json!({"app": "backend-b"}))?;
    agents[0].add_pod(&za, ambient(), json!({"app": "near"}))?;
    agents[1].add_pod(&zb, ambient(), json!({"app": "near"}))?;
    let waypoint = Waypoint::start(&waypoint_pod, dir.path(), &controller, "waypoint")?;
    Ok(Mesh {
        client,
        waypoint,
        agents,
        _controller: controller,
        config_dir,
        _cluster: cluster,
        _dir: dir,
    })
}

impl Mesh {
    fn diagnostics(&self) -> String {
        let mut out = format!("--- waypoint\n{}", self.waypoint.logs());
        for agent in &self.agents {
            out.push_str(&format!("--- agent {}\n{}", agent.node.name, agent.logs()));
        }
        out
    }

    /// `mesh-testapp tally` from the client: connections per answering server, and failures.
    fn tally(
        &self,
        addr: &str,
        n: usize,
        sni: Option<&str>,
    ) -> anyhow::Result<(BTreeMap<String, u64>, u64)> {
        let n = n.to_string();
        let mut args = vec!["tally", addr, n.as_str()];
        args.extend(sni);
        let out = mesh_tests::app::run(&self.client, &args)?;
        if !out.status.success() {
            bail!("tally {addr}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: Value = serde_json::from_slice(&out.stdout).context("tally output")?;
        let servers = v["servers"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        Ok((servers, v["failed"].as_u64().unwrap_or(u64::MAX)))
    }

    /// Tallies `n` connections until `done` holds of the result (at most 15 s: the model may
    /// still be on its way to the agents and the waypoint).
    fn tally_until(
        &self,
        addr: &str,
        n: usize,
        sni: Option<&str>,
        done: impl Fn(&BTreeMap<String, u64>, u64) -> bool,
    ) -> anyhow::Result<BTreeMap<String, u64>> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (servers, failed) = self.tally(addr, n, sni)?;
            if done(&servers, failed) {
                return Ok(servers);
            }
            if Instant::now() > deadline {
                bail!(
                    "{addr} (sni {sni:?}): still {servers:?}, {failed} failed after 15 s\n{}",
                    self.diagnostics()
                );
            }
            sleep(Duration::from_millis(200));
        }
    }
}

fn only(servers: &BTreeMap<String, u64>, name: &str, n: u64) -> bool {
    servers.len() == 1 && servers.get(name) == Some(&n)
}

#[test]
fn tcp_weights_and_tls_server_names_route_opaque_connections() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-l4-routes")?;
    // The routes are in the waypoint's model once a TLS name routes.
    mesh.tally_until(FRONT, 5, Some("b.test"), |s, failed| {
        failed == 0 && only(s, "backend-b", 5)
    })?;
    // 80/20 by weight over 500 connections, each its own TCP connection.
    let (servers, failed) = mesh.tally(FRONT, 500, None)?;
    assert_eq!(failed, 0, "{servers:?}\n{}", mesh.diagnostics());
    let total: u64 = servers.values().sum();
    assert_eq!(total, 500, "{servers:?}");
    let share_a = 100.0 * servers.get("backend-a").copied().unwrap_or(0) as f64 / 500.0;
    assert!(
        (share_a - 80.0).abs() <= 4.0,
        "backend-a took {share_a:.1}% (80 ± 4 wanted): {servers:?}"
    );
    assert_eq!(servers.len(), 2, "only the two backends: {servers:?}");
    eprintln!("tcp route 80/20 over 500 connections: {servers:?}");
    // TLS by server name, the name read from the ClientHello and the bytes replayed.
    let (a, failed) = mesh.tally(FRONT, 50, Some("a.test"))?;
    assert!(
        failed == 0 && only(&a, "backend-a", 50),
        "a.test: {a:?}, {failed} failed"
    );
    let (b, failed) = mesh.tally(FRONT, 50, Some("b.test"))?;
    assert!(
        failed == 0 && only(&b, "backend-b", 50),
        "b.test: {b:?}, {failed} failed"
    );
    // A name no TLS rule has: the tcp rule's split.
    let (other, failed) = mesh.tally(FRONT, 100, Some("c.test"))?;
    assert_eq!(failed, 0, "{other:?}");
    let other_a = other.get("backend-a").copied().unwrap_or(0);
    assert!(
        (76..=84).contains(&other_a) && other.values().sum::<u64>() == 100,
        "{other:?}"
    );
    // The metric names the rule.
    let tcp_rule = mesh
        .waypoint
        .metric("mesh_waypoint_tcp_connections_total{route=\"tcp route apps/front rule 0\"}")?;
    assert!(tcp_rule >= 600, "tcp rule counted {tcp_rule}");
    Ok(())
}

#[test]
fn prefer_close_keeps_connections_in_the_clients_zone() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-l4-zones")?;
    // Node 1 in zone a: only z-a (on node 1) while it is there.
    let servers = mesh.tally_until(NEAR, 40, None, |s, failed| failed == 0 && !s.is_empty())?;
    assert!(
        only(&servers, "z-a", 40),
        "{servers:?}\n{}",
        mesh.diagnostics()
    );
    let (servers, failed) = mesh.tally(NEAR, 100, None)?;
    assert!(failed == 0 && only(&servers, "z-a", 100), "{servers:?}");
    // z-a moved to zone d (Istio's `istio-locality` pod label overrides its node's), so no
    // endpoint is in the client's zone: both endpoints take connections.
    let base = std::fs::read_to_string(mesh.config_dir.join("base.yaml"))?;
    let moved = base.replace(
        "{name: z-a, namespace: zoned, labels: {app: near}}",
        "{name: z-a, namespace: zoned, labels: {app: near, istio-locality: r1.d}}",
    );
    assert_ne!(base, moved, "the z-a pod is in base.yaml");
    replace_file(&mesh.config_dir, "base.yaml", &moved)?;
    let servers = mesh.tally_until(NEAR, 40, None, |s, failed| {
        failed == 0
            && s.get("z-a").is_some_and(|&n| n >= 10)
            && s.get("z-b").is_some_and(|&n| n >= 10)
    })?;
    assert_eq!(servers.values().sum::<u64>(), 40, "{servers:?}");
    Ok(())
}

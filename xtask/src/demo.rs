//! `cargo xtask demo`: the mesh on a local two-node cluster.
//!
//! Builds the cluster (network namespaces, veths, cgroups), starts the controller (config from a
//! directory of Istio/Kubernetes YAML, certificate authority; both served over TLS to agents
//! that pin its root and authenticate with their node token) and one agent per node, enrols the
//! pods, and shows what the mesh does: capture by eBPF, the mTLS tunnel between nodes with
//! workload identities, an AuthorizationPolicy at work, the trust boundaries a pod meets (the
//! agent's own ports refused, only metrics served to the network), and the agent's metrics. Everything is
//! torn down at the end.

use std::time::Duration;

use mesh_tests::agent::ambient;
use mesh_tests::config::{namespace_yaml, pod_yaml, service_yaml};
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::json;

const SERVICE_VIP: &str = "198.19.0.10";
const APP_PORT: u16 = 9080;

fn call(pod: &Pod, addr: &str, message: &str) -> anyhow::Result<String> {
    let out = mesh_tests::app::run(pod, &["connect", addr, message])?;
    Ok(if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        format!("REFUSED ({})", String::from_utf8_lossy(&out.stderr).trim())
    })
}

fn show_logs(agent: &Agent, needles: &[&str]) {
    for line in agent
        .logs()
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
    {
        let line = line.split_once("  ").map_or(line, |(_, rest)| rest).trim();
        println!("  [{}] {line}", agent.node.name);
    }
}

/// Runs the demo.
pub fn run() -> anyhow::Result<()> {
    crate::sh::step("local cluster: 2 nodes, 3 pods (network namespaces + cgroups)");
    let dir = tempfile::Builder::new().prefix("mesh-demo").tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let reviews = cluster.add_pod(2, "shop", "reviews")?;
    mesh_tests::app::serve(&mut cluster, &reviews, APP_PORT, "reviews")?;
    let productpage = cluster.add_pod(1, "shop", "productpage")?;
    let batch = cluster.add_pod(1, "legacy", "batch")?;

    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let config = [
        namespace_yaml("shop", true),
        namespace_yaml("legacy", false),
        service_yaml("shop", "reviews", SERVICE_VIP, 80, APP_PORT, "reviews"),
        pod_yaml(&reviews, "node2", "reviews"),
        pod_yaml(&productpage, "node1", "productpage"),
        pod_yaml(&batch, "node1", "batch"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: reviews-viewers, namespace: shop}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/shop/sa/productpage]}}]\n".to_owned(),
    ]
    .join("---\n");
    std::fs::write(config_dir.join("mesh.yaml"), &config)?;
    println!("  config ({}):", config_dir.join("mesh.yaml").display());
    for line in config
        .lines()
        .filter(|l| l.starts_with("kind:") || l.starts_with("metadata:"))
    {
        println!("    {line}");
    }

    crate::sh::step(
        "control plane (config stream + CA, TLS only, node tokens) and one agent per node (pinning the CA root)",
    );
    let mesh = ControlledMesh::start(
        &cluster,
        dir.path(),
        &config_dir,
        Duration::from_secs(24 * 3600),
        3,
    )?;
    let agents = &mesh.agents;
    let (agent1, agent2) = (&agents[0], &agents[1]);
    for (agent, pod, namespace_labels) in [
        (agent2, &reviews, ambient()),
        (agent1, &productpage, ambient()),
        (agent1, &batch, json!({})),
    ] {
        let response = agent.add_pod(pod, namespace_labels, json!({"app": pod.name}))?;
        let state = if response["captured"] == json!(true) {
            format!(
                "in the mesh, spiffe://cluster.local/ns/{}/sa/{}",
                pod.namespace, pod.name
            )
        } else {
            "outside the mesh".to_owned()
        };
        println!(
            "  {:<18} node{} {:<13} {state}",
            pod.uid(),
            pod.node,
            pod.ip4
        );
    }

    crate::sh::step(&format!(
        "shop/productpage calls the reviews service at {SERVICE_VIP}:80"
    ));
    println!(
        "  reply: {}",
        call(&productpage, &format!("{SERVICE_VIP}:80"), "GET /reviews/1")?
    );
    crate::sh::step("legacy/batch (no identity) calls the reviews pod directly");
    println!(
        "  reply: {}",
        call(
            &batch,
            &format!("{}:{APP_PORT}", reviews.ip4),
            "GET /reviews/2"
        )?
    );

    crate::sh::step("trust boundaries: what a pod on the network cannot do");
    println!(
        "  legacy/batch -> the agent's own port {}:15006: {}",
        reviews.ip4,
        call(&batch, &format!("{}:15006", reviews.ip4), "loop?")?
    );
    let node2 = format!(
        "{}:{}",
        cluster.node(2)?.ip4,
        mesh_tests::agent::METRICS_PORT
    );
    for path in ["/metrics", "/config_dump"] {
        let answer = mesh_tests::agent::http_status(|p| batch.command(p), "GET", &node2, path)?;
        let code = answer.map_or("no answer".to_owned(), |(code, _)| code.to_string());
        println!("  legacy/batch -> GET {node2}{path}: {code}");
    }
    println!("  (15020 serves metrics only; admin stays on each node's loopback 15000)");

    std::thread::sleep(Duration::from_millis(200));
    crate::sh::step("what the agents saw");
    let needles = [
        "connection captured",
        "HBONE connection",
        "plaintext connection",
        "refused (logged once per burst)",
        "mesh_ebpf",
    ];
    show_logs(agent1, &needles);
    show_logs(agent2, &needles);
    crate::sh::step("node1 agent metrics (excerpt of /metrics)");
    for line in agent1
        .admin_get("/metrics")?
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("mesh_agent_"))
    {
        println!("  {line}");
    }
    drop(mesh);
    cluster.teardown()?;
    println!("\ndemo done: cluster removed");
    Ok(())
}

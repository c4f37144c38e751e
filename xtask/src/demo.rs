//! `cargo xtask demo`: the mesh on a local two-node cluster.
//!
//! Builds the cluster (network namespaces, veths, cgroups), starts one agent per node, enrols
//! the pods, and shows capture at work: a pod in an ambient namespace reaches a service address
//! that exists only in the mesh, the agent logs who called what, and a pod outside the mesh is
//! left alone. Everything is torn down at the end.

use std::time::Duration;

use anyhow::Context;
use mesh_tests::agent::{ambient, binary};
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::json;

const SERVICE_VIP: &str = "198.19.0.10";

fn call(pod: &Pod, addr: &str, message: &str) -> anyhow::Result<String> {
    let out = pod
        .command(&binary("mesh-testapp")?.display().to_string())
        .args(["connect", addr, message])
        .output()
        .context("running the demo client")?;
    Ok(if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        format!("FAILED: {}", String::from_utf8_lossy(&out.stderr).trim())
    })
}

/// Runs the demo.
pub fn run() -> anyhow::Result<()> {
    crate::sh::step("starting a local cluster: 2 nodes, 3 pods");
    let dir = tempfile::Builder::new().prefix("mesh-demo").tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let reviews = cluster.add_pod(2, "shop", "reviews")?;
    let mut serve = reviews.command(&binary("mesh-testapp")?.display().to_string());
    serve.args(["serve", "9080", "reviews"]);
    cluster.spawn(serve)?;
    let productpage = cluster.add_pod(1, "shop", "productpage")?;
    let legacy = cluster.add_pod(1, "legacy", "batch")?;
    let model = dir.path().join("model.yaml");
    std::fs::write(
        &model,
        format!(
            "services:\n- name: reviews\n  namespace: shop\n  vips: [\"{SERVICE_VIP}\"]\n  ports: [{{port: 80, targetPort: 9080}}]\n  endpoints: [{{workloadUid: shop/reviews, address: \"{}\"}}]\n",
            reviews.ip4
        ),
    )?;
    let agent1 = Agent::start(cluster.node(1)?, dir.path(), Some(&model))?;
    let agent2 = Agent::start(cluster.node(2)?, dir.path(), Some(&model))?;
    for (agent, pod, labels) in [
        (&agent2, &reviews, ambient()),
        (&agent1, &productpage, ambient()),
        (&agent1, &legacy, json!({})),
    ] {
        let response = agent.add_pod(pod, labels, json!({}))?;
        println!(
            "  {:<18} node{} {:<13} {}",
            pod.uid(),
            pod.node,
            pod.ip4,
            if response["captured"] == json!(true) {
                "in the mesh (captured by eBPF)"
            } else {
                "outside the mesh"
            }
        );
    }
    std::thread::sleep(Duration::from_millis(200));

    crate::sh::step(&format!(
        "shop/productpage calls the reviews service at {SERVICE_VIP}:80"
    ));
    println!(
        "  reply: {}",
        call(&productpage, &format!("{SERVICE_VIP}:80"), "GET /reviews/1")?
    );
    crate::sh::step(&format!(
        "legacy/batch (outside the mesh) calls {SERVICE_VIP}:80"
    ));
    println!(
        "  reply: {}",
        call(&legacy, &format!("{SERVICE_VIP}:80"), "GET /reviews/1")?
    );
    crate::sh::step("legacy/batch calls the reviews pod directly (plaintext into a meshed pod)");
    println!(
        "  reply: {}",
        call(&legacy, &format!("{}:9080", reviews.ip4), "GET /reviews/2")?
    );

    std::thread::sleep(Duration::from_millis(200));
    crate::sh::step("what the agents saw");
    for agent in [&agent1, &agent2] {
        for line in agent
            .logs()
            .lines()
            .filter(|l| l.contains("connection") || l.contains("mesh_ebpf"))
        {
            println!("  [{}] {}", agent.node.name, line.trim());
        }
    }
    crate::sh::step("node1's admin endpoint: enrolled pods and attached programs (/pods)");
    println!("{}", agent1.admin_get("/pods")?);
    drop((agent1, agent2));
    cluster.teardown()?;
    println!("\ndemo done: cluster removed");
    Ok(())
}

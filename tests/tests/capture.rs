//! End-to-end: eBPF capture on the local cluster (real namespaces, cgroups, kernel programs).
//!
//! Needs root: each test fails loudly without it. Traffic stays inside the namespaces the test
//! creates (198.18.0.0/15, fd18::/15 and the service addresses 198.19.0.10, fd19::10).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::Context;
use mesh_tests::agent::{ambient, binary};
use mesh_tests::app::reply;
use mesh_tests::command::run;
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::{json, Value};

const APP_PORT: u16 = 8080;
const SERVICE_V4: &str = "198.19.0.10";
const SERVICE_V6: &str = "fd19::10";

/// A server pod running the echo app on `APP_PORT`.
fn start_server(
    cluster: &mut Cluster,
    node: u8,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Pod> {
    let pod = cluster.add_pod(node, namespace, name)?;
    mesh_tests::app::serve(cluster, &pod, APP_PORT, name)?;
    Ok(pod)
}

fn write_model(dir: &Path, server: &Pod) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("model.yaml");
    let model = format!(
        "version: test\nservices:\n- name: echo\n  namespace: {ns}\n  vips: [\"{SERVICE_V4}\", \"{SERVICE_V6}\"]\n  ports:\n  - port: 80\n    targetPort: {APP_PORT}\n  endpoints:\n  - workloadUid: {uid}\n    address: \"{ip4}\"\n",
        ns = server.namespace,
        uid = server.uid(),
        ip4 = server.ip4,
    );
    std::fs::write(&path, model)?;
    Ok(path)
}

fn connect(pod: &Pod, addr: &str, message: &str) -> anyhow::Result<Output> {
    mesh_tests::app::run(pod, &["connect", addr, message])
}

fn workdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("mesh-e2e")
        .tempdir()
        .context("temp dir")
}

#[test]
fn outbound_capture_recovers_original_destination_v4_and_v6() -> anyhow::Result<()> {
    let dir = workdir()?;
    let mut cluster = Cluster::new(1)?;
    let server = start_server(&mut cluster, 1, "default", "server")?;
    let client = cluster.add_pod(1, "apps", "client")?;
    let model = write_model(dir.path(), &server)?;
    let agent = Agent::start(cluster.node(1)?, dir.path(), Some(&model))?;
    let response = agent.add_pod(&client, ambient(), json!({}))?;
    assert_eq!(response["captured"], json!(true));

    // A made-up service address, mapped to the server only in the agent's model.
    let got = reply(&client, &format!("{SERVICE_V4}:80"), "hello-v4-service")?;
    assert!(
        got.starts_with("server ") && got.contains("hello-v4-service"),
        "{got}"
    );
    // The agent connects from inside the client pod: the server sees the client's address.
    assert!(got.contains(&format!("peer={}", client.ip4)), "{got}");
    agent.wait_for_log(
        &[
            "outbound connection captured",
            "src.workload=apps/client",
            &format!("dst.original={SERVICE_V4}:80"),
            &format!("dst.target={}:{APP_PORT}", server.ip4),
        ],
        Duration::from_secs(5),
    )?;

    // Metrics count the connection with its workload and service.
    let metrics = agent.admin_get("/metrics")?;
    assert!(
        metrics.contains(r#"mesh_agent_tcp_connections_opened_total{direction="Outbound",transport="Plaintext",workload="apps/client",destination_service="default/echo"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("mesh_agent_enrolled_pods 1"), "{metrics}");

    // The kernel program's own log line (aya-log, forwarded into the agent's tracing output).
    agent.wait_for_log(
        &[
            "mesh_ebpf",
            &format!("captured connect4 to {SERVICE_V4}:80"),
        ],
        Duration::from_secs(5),
    )?;

    // A pod address directly.
    let got = reply(
        &client,
        &format!("{}:{APP_PORT}", server.ip4),
        "hello-v4-pod",
    )?;
    assert!(got.contains("hello-v4-pod"), "{got}");
    agent.wait_for_log(
        &[
            "outbound connection captured",
            &format!("dst.original={}:{APP_PORT}", server.ip4),
        ],
        Duration::from_secs(5),
    )?;

    // IPv6: service address and pod address.
    let got = reply(&client, &format!("[{SERVICE_V6}]:80"), "hello-v6-service")?;
    assert!(got.contains("hello-v6-service"), "{got}");
    agent.wait_for_log(
        &[
            "outbound connection captured",
            &format!("dst.original=[{SERVICE_V6}]:80"),
        ],
        Duration::from_secs(5),
    )?;
    let got = reply(
        &client,
        &format!("[{}]:{APP_PORT}", server.ip6),
        "hello-v6-pod",
    )?;
    assert!(
        got.contains("hello-v6-pod") && got.contains(&format!("peer=[{}]", client.ip6)),
        "{got}"
    );
    agent.wait_for_log(
        &[
            "outbound connection captured",
            &format!("dst.original=[{}]:{APP_PORT}", server.ip6),
        ],
        Duration::from_secs(5),
    )?;

    // UDP (DNS and the like) is left alone, even from a connected socket.
    let out = client
        .command(&binary("mesh-testapp")?.display().to_string())
        .args(["udp", &format!("{}:{APP_PORT}", server.ip4), "datagram"])
        .output()?;
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && got.contains(&format!("udp peer={}", client.ip4)),
        "{got} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let captured = agent
        .logs()
        .lines()
        .filter(|l| l.contains("outbound connection captured"))
        .count();
    assert_eq!(
        captured,
        4,
        "only the four TCP connections are captured:\n{}",
        agent.logs()
    );
    Ok(())
}

#[test]
fn pod_outside_the_mesh_is_not_captured() -> anyhow::Result<()> {
    let dir = workdir()?;
    let mut cluster = Cluster::new(1)?;
    let server = start_server(&mut cluster, 1, "default", "server")?;
    let plain = cluster.add_pod(1, "plain", "client")?;
    let opted_out = cluster.add_pod(1, "apps", "optout")?;
    let model = write_model(dir.path(), &server)?;
    let agent = Agent::start(cluster.node(1)?, dir.path(), Some(&model))?;
    assert_eq!(
        agent.add_pod(&plain, json!({}), json!({}))?["captured"],
        json!(false)
    );
    // The pod label overrides the namespace's.
    let response = agent.add_pod(
        &opted_out,
        ambient(),
        json!({"istio.io/dataplane-mode": "none"}),
    )?;
    assert_eq!(response["captured"], json!(false));

    for pod in [&plain, &opted_out] {
        // The service address exists only in the mesh: without capture it is unreachable.
        let out = connect(pod, &format!("{SERVICE_V4}:80"), "x")?;
        assert!(
            !out.status.success(),
            "{} reached the service address without capture",
            pod.uid()
        );
        // Pod addresses work as plain networking, and the agent proxies nothing.
        let got = reply(pod, &format!("{}:{APP_PORT}", server.ip4), "direct")?;
        assert!(got.contains("direct"), "{got}");
    }
    let logs = agent.logs();
    assert!(
        !logs.contains("outbound connection captured"),
        "captured traffic of a pod outside the mesh:\n{logs}"
    );
    Ok(())
}

#[test]
fn inbound_from_outside_the_mesh_goes_through_the_agent() -> anyhow::Result<()> {
    let dir = workdir()?;
    let mut cluster = Cluster::new(1)?;
    let server = start_server(&mut cluster, 1, "default", "server")?;
    let outsider = cluster.add_pod(1, "plain", "outsider")?;
    let agent = Agent::start(cluster.node(1)?, dir.path(), None)?;
    agent.add_pod(&server, ambient(), json!({}))?;

    for addr in [
        format!("{}:{APP_PORT}", server.ip4),
        format!("[{}]:{APP_PORT}", server.ip6),
    ] {
        let got = reply(&outsider, &addr, "knock")?;
        assert!(got.starts_with("server ") && got.contains("knock"), "{got}");
        agent.wait_for_log(
            &[
                "inbound plaintext connection",
                "dst.workload=default/server",
                &format!("dst.original={addr}"),
            ],
            Duration::from_secs(5),
        )?;
    }
    Ok(())
}

/// The project's programs attached to a cgroup (by `bpftool cgroup show`).
fn cgroup_programs(cgroup: &Path) -> anyhow::Result<Vec<String>> {
    let out = run(
        "bpftool",
        &["-j", "cgroup", "show", &cgroup.display().to_string()],
    )?;
    let list: Value = if out.trim().is_empty() {
        json!([])
    } else {
        serde_json::from_str(&out)?
    };
    Ok(list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// `sk_lookup` links on a network namespace (by `bpftool link show`).
fn netns_links(netns: &Path) -> anyhow::Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(netns)?.ino();
    let out = run("bpftool", &["-j", "link", "show"])?;
    let links: Value = serde_json::from_str(&out)?;
    Ok(links
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|l| l["netns_ino"].as_u64() == Some(ino))
                .count()
        })
        .unwrap_or(0))
}

#[test]
fn programs_are_detached_after_pod_removal_and_agent_exit() -> anyhow::Result<()> {
    let dir = workdir()?;
    let mut cluster = Cluster::new(1)?;
    let a = cluster.add_pod(1, "apps", "a")?;
    let b = cluster.add_pod(1, "apps", "b")?;
    let mut agent = Agent::start(cluster.node(1)?, dir.path(), None)?;
    agent.add_pod(&a, ambient(), json!({}))?;
    agent.add_pod(&b, ambient(), json!({}))?;

    for pod in [&a, &b] {
        let names = cgroup_programs(&pod.cgroup)?;
        for want in ["mesh_connect4", "mesh_connect6", "mesh_sockops"] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} not on {}: {names:?}",
                pod.cgroup.display()
            );
        }
        assert_eq!(
            netns_links(&pod.netns_path())?,
            1,
            "sk_lookup link on {}",
            pod.netns
        );
    }
    // The admin endpoint lists the pods and their programs.
    let pods: Value = serde_json::from_str(&agent.admin_get("/pods")?)?;
    let listed: Vec<&str> = pods
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|p| p["uid"].as_str())
        .collect();
    assert_eq!(listed, vec!["apps/a", "apps/b"]);
    let programs: Vec<&str> = pods[0]["programs"]
        .as_array()
        .context("programs")?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        programs,
        vec![
            "mesh_connect4",
            "mesh_connect6",
            "mesh_sockops",
            "mesh_sk_lookup"
        ]
    );

    agent.remove_pod(&a)?;
    assert_eq!(
        cgroup_programs(&a.cgroup)?,
        Vec::<String>::new(),
        "programs left on a removed pod"
    );
    assert_eq!(
        netns_links(&a.netns_path())?,
        0,
        "sk_lookup left on a removed pod"
    );
    assert!(
        !cgroup_programs(&b.cgroup)?.is_empty(),
        "removing a must not detach b"
    );

    agent.stop()?;
    assert_eq!(
        cgroup_programs(&b.cgroup)?,
        Vec::<String>::new(),
        "programs left after the agent exited"
    );
    assert_eq!(
        netns_links(&b.netns_path())?,
        0,
        "sk_lookup left after the agent exited"
    );
    Ok(())
}

#[test]
fn enrolment_api_rejects_bad_requests_and_keeps_serving() -> anyhow::Result<()> {
    let dir = workdir()?;
    let mut cluster = Cluster::new(1)?;
    let pod = cluster.add_pod(1, "apps", "a")?;
    let agent = Agent::start(cluster.node(1)?, dir.path(), None)?;
    let good = mesh_tests::agent::pod_json(&pod, ambient(), json!({}));
    let with = |field: &str, value: Value| {
        let mut p = good.clone();
        p[field] = value;
        serde_json::to_vec(&json!({"op": "add", "pod": p})).unwrap_or_default()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "malformed request"),
        (br#"{"op":"launch"}"#.to_vec(), "unknown variant"),
        (br#"{"op":"add"}"#.to_vec(), "needs field pod"),
        (br#"{"op":"remove"}"#.to_vec(), "needs field uid"),
        (
            br#"{"op":"remove","uid":"nobody/none"}"#.to_vec(),
            "not known",
        ),
        (
            with("netns", json!("/var/run/netns/does-not-exist")),
            "field netns",
        ),
        (with("netns", json!("/tmp")), "is not a network namespace"),
        (
            with("cgroup", json!("/tmp")),
            "is not a cgroup v2 directory",
        ),
        (with("addresses", json!([])), "field addresses"),
        (
            with("addresses", json!(["not-an-ip"])),
            "invalid IP address",
        ),
        (with("colour", json!("blue")), "unknown field"),
    ];
    for (line, want) in &cases {
        let response = agent.raw_request(line)?;
        assert_eq!(
            response["ok"],
            json!(false),
            "{}",
            String::from_utf8_lossy(line)
        );
        let error = response["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(want),
            "error {error:?} should contain {want:?}"
        );
    }
    let oversized = vec![b'x'; 70 * 1024];
    assert_eq!(agent.raw_request(&oversized)?["ok"], json!(false));
    // Still serving: a good request works afterwards.
    assert_eq!(
        agent.add_pod(&pod, ambient(), json!({}))?["captured"],
        json!(true)
    );
    Ok(())
}

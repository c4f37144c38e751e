//! End-to-end: the zero-trust tunnel on a two-node local cluster with the real controller (config
//! stream and CA) and one agent per node. Traffic between nodes crosses a real veth, captured with
//! tcpdump to prove it is encrypted.
//!
//! Needs root: each test fails loudly without it. Traffic stays inside the cluster's namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::ambient;
use mesh_tests::app::{reply, run as app};
use mesh_tests::command::run;
use mesh_tests::config::{namespace_yaml, pod_yaml, service_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::json;

const APP_PORT: u16 = 8080;
const SERVICE: &str = "198.19.0.10:80";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The cluster: `apps/client` and `apps/intruder` (meshed, node 1), `legacy/outsider` (not
/// meshed, node 1), `prod/server` (meshed, node 2) behind the service `prod/echo` at 198.19.0.10:80,
/// and `prod/neighbour` (meshed, node 1, same app port, no service).
struct Mesh {
    client: Pod,
    intruder: Pod,
    outsider: Pod,
    server: Pod,
    neighbour: Pod,
    agent1: Agent,
    agent2: Agent,
    controller: Controller,
    config_dir: PathBuf,
    cluster: Cluster,
    dir: tempfile::TempDir,
}

fn base_config() -> String {
    [
        namespace_yaml("apps", true),
        namespace_yaml("prod", true),
        namespace_yaml("legacy", false),
        service_yaml("prod", "echo", "198.19.0.10", 80, APP_PORT, "server"),
    ]
    .join("---\n")
}

fn start_mesh(cert_lifetime: Duration) -> anyhow::Result<Mesh> {
    let dir = tempfile::Builder::new().prefix("mesh-tunnel").tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let server = cluster.add_pod(2, "prod", "server")?;
    mesh_tests::app::serve(&mut cluster, &server, APP_PORT, "server")?;
    let client = cluster.add_pod(1, "apps", "client")?;
    let intruder = cluster.add_pod(1, "apps", "intruder")?;
    let outsider = cluster.add_pod(1, "legacy", "outsider")?;
    let neighbour = cluster.add_pod(1, "prod", "neighbour")?;
    mesh_tests::app::serve(&mut cluster, &neighbour, APP_PORT, "neighbour")?;

    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(config_dir.join("base.yaml"), base_config())?;
    let pods = [
        pod_yaml(&client, "node1", "client"),
        pod_yaml(&intruder, "node1", "intruder"),
        pod_yaml(&outsider, "node1", "outsider"),
        pod_yaml(&server, "node2", "server"),
        pod_yaml(&neighbour, "node1", "neighbour"),
    ]
    .join("---\n");
    std::fs::write(config_dir.join("pods.yaml"), pods)?;

    let ControlledMesh {
        mut agents,
        controller,
    } = ControlledMesh::start(&cluster, dir.path(), &config_dir, cert_lifetime, 5)?;
    let (Some(agent2), Some(agent1)) = (agents.pop(), agents.pop()) else {
        bail!("expected two agents");
    };
    agent2.add_pod(&server, ambient(), json!({}))?;
    agent1.add_pod(&client, ambient(), json!({}))?;
    agent1.add_pod(&intruder, ambient(), json!({}))?;
    agent1.add_pod(&outsider, json!({}), json!({}))?;
    agent1.add_pod(&neighbour, ambient(), json!({"app": "neighbour"}))?;
    Ok(Mesh {
        client,
        intruder,
        outsider,
        server,
        neighbour,
        agent1,
        agent2,
        controller,
        config_dir,
        cluster,
        dir,
    })
}

/// A tcpdump on node 2's link to the inter-node bridge.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(cluster: &Cluster, index: u8, file: &Path) -> anyhow::Result<Capture> {
        let (netns, link) = cluster.node_link(index);
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "tcpdump",
                "--immediate-mode",
                "-i",
                &link,
                "-U",
                "-s",
                "0",
                "-w",
            ])
            .arg(file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump")?;
        // tcpdump says "listening on <link>" once it captures.
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .context("tcpdump did not start capturing")?;
        Ok(Capture {
            child,
            file: file.to_owned(),
        })
    }

    fn stop(mut self) -> anyhow::Result<Vec<u8>> {
        sleep(Duration::from_millis(300));
        run("kill", &["-INT", &self.child.id().to_string()])?;
        let _ = self.child.wait();
        Ok(std::fs::read(&self.file)?)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS handshake record (type 22, version 3.x) whose first message is a ClientHello (type 1).
fn has_client_hello(pcap: &[u8]) -> bool {
    pcap.windows(6)
        .any(|w| w[0] == 0x16 && w[1] == 0x03 && w[2] <= 0x04 && w[5] == 0x01)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn traffic_between_nodes_is_mutual_tls_1_3() -> anyhow::Result<()> {
    let mesh = start_mesh(DAY)?;
    let capture = Capture::start(&mesh.cluster, 2, &mesh.dir.path().join("node2.pcap"))?;
    let marker = "PLAINTEXT-MARKER-7f3a9c";
    let got = reply(&mesh.client, SERVICE, marker).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nAGENT1:\n{}\nAGENT2:\n{}",
            mesh.agent1.logs(),
            mesh.agent2.logs()
        )
    })?;
    assert!(got.starts_with("server ") && got.contains(marker), "{got}");
    let pcap = capture.stop()?;

    // A TLS handshake crossed the wire: a ClientHello record, and a ServerHello choosing TLS 1.3
    // (supported_versions extension = 0x0304).
    let decoded = run(
        "tcpdump",
        &[
            "-nn",
            "-r",
            &mesh.dir.path().join("node2.pcap").display().to_string(),
        ],
    )
    .unwrap_or_else(|e| format!("{e:#}"));
    let (net, link) = mesh.cluster.node_link(2);
    let decoded = format!(
        "{decoded}\n{} bytes\n{}",
        pcap.len(),
        run("ip", &["-n", &net, "-s", "link", "show", &link]).unwrap_or_default()
    );
    assert!(
        has_client_hello(&pcap),
        "no TLS ClientHello record in the capture:\n{decoded}\n{}",
        mesh.agent1.logs()
    );
    assert!(
        contains(&pcap, &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]),
        "no TLS 1.3 ServerHello in the capture"
    );
    assert!(
        !contains(&pcap, marker.as_bytes()),
        "the plaintext marker crossed the wire"
    );
    assert!(
        pcap.len() > 1000,
        "capture too small to have seen the connection"
    );

    mesh.agent1.wait_for_log(
        &[
            "outbound connection captured",
            "src.workload=apps/client",
            "transport=Hbone",
        ],
        Duration::from_secs(5),
    )?;
    mesh.agent2.wait_for_log(
        &[
            "inbound HBONE connection",
            "dst.workload=prod/server",
            "src.identity=spiffe://cluster.local/ns/apps/sa/client",
        ],
        Duration::from_secs(5),
    )?;
    Ok(())
}

#[test]
fn policy_and_peer_authentication_are_enforced() -> anyhow::Result<()> {
    let mesh = start_mesh(DAY)?;
    std::fs::write(
        mesh.config_dir.join("policy.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-client, namespace: prod}\nspec:\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/apps/sa/client]}}]\n",
    )?;
    // Only node 2 runs a workload of `prod`: only its agent receives the policy.
    wait_config(&mesh.agent2, "only-client")?;
    // Allowed.
    assert!(reply(&mesh.client, SERVICE, "allowed")?.contains("allowed"));
    // Another identity: closed without reaching the server.
    let out = app(&mesh.intruder, &["connect", SERVICE, "intruding"])?;
    assert!(
        !out.status.success(),
        "intruder got through: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    mesh.agent2.wait_for_log(
        &[
            "inbound HBONE connection denied",
            "spiffe://cluster.local/ns/apps/sa/intruder",
            "no ALLOW policy matched",
        ],
        Duration::from_secs(5),
    )?;
    // Plaintext from outside the mesh has no identity: the ALLOW policy refuses it too.
    let direct = format!("{}:{APP_PORT}", mesh.server.ip4);
    assert!(!app(&mesh.outsider, &["connect", &direct, "plain"])?
        .status
        .success());
    mesh.agent2.wait_for_log(
        &["plaintext connection denied", "dst.workload=prod/server"],
        Duration::from_secs(5),
    )?;

    // Not TLS at all on 15008: refused with a reason, and the agent keeps serving.
    let hbone = format!("{}:15008", mesh.server.ip4);
    let out = app(&mesh.outsider, &["connect", &hbone, "GET / HTTP/1.1"])?;
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        !answer.contains("says:"),
        "plaintext on 15008 reached the application: {answer}"
    );
    mesh.agent2.wait_for_log(
        &["HBONE connection refused", "reason=peer did not speak TLS"],
        Duration::from_secs(5),
    )?;
    assert!(reply(&mesh.client, SERVICE, "still-serving")?.contains("still-serving"));

    // STRICT: plaintext refused before any policy; mTLS still allowed.
    std::fs::write(mesh.config_dir.join("policy.yaml"), "")?;
    std::fs::write(
        mesh.config_dir.join("strict.yaml"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: prod}\nspec: {mtls: {mode: STRICT}}\n",
    )?;
    wait_config(&mesh.agent2, "strict")?;
    assert!(!app(&mesh.outsider, &["connect", &direct, "plain"])?
        .status
        .success());
    mesh.agent2.wait_for_log(
        &["plaintext connection refused: PeerAuthentication is STRICT"],
        Duration::from_secs(5),
    )?;
    assert!(reply(&mesh.intruder, SERVICE, "mtls-ok")?.contains("mtls-ok"));
    Ok(())
}

/// Waits until the agent's model (admin `/config_dump`) mentions `needle`.
fn wait_config(agent: &Agent, needle: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if agent.admin_get("/config_dump")?.contains(needle) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "agent on {} never received config with {needle:?}",
                agent.node.name
            );
        }
        sleep(Duration::from_millis(100));
    }
}

fn metric(agent: &Agent, name: &str) -> anyhow::Result<u64> {
    let text = agent.admin_get("/metrics")?;
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .with_context(|| format!("no metric {name}:\n{text}"))?;
    Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
}

#[test]
fn concurrent_connections_share_one_tls_connection() -> anyhow::Result<()> {
    let mesh = start_mesh(DAY)?;
    let out = app(&mesh.client, &["burst", SERVICE, "100"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 100");
    assert_eq!(
        metric(&mesh.agent1, "mesh_agent_hbone_connections_opened_total")?,
        1,
        "{}",
        mesh.agent1.logs()
    );
    assert!(metric(&mesh.agent1, "mesh_agent_hbone_streams_opened_total")? >= 100);
    Ok(())
}

#[test]
fn ca_refuses_a_certificate_for_a_pod_of_another_node() -> anyhow::Result<()> {
    let mut mesh = start_mesh(DAY)?;
    // The controller places prod/server on node2; node1's agent is told of a pod of that name
    // (hence that identity) on node1.
    let impostor = mesh.cluster.add_pod(1, "prod", "server")?;
    mesh.agent1.add_pod(&impostor, ambient(), json!({}))?;
    mesh.agent1.wait_for_log(
        &[
            "certificate request failed",
            "spiffe://cluster.local/ns/prod/sa/server",
        ],
        Duration::from_secs(10),
    )?;
    let logs = mesh.controller.logs();
    assert!(
        logs.contains("refused a certificate for a workload not on the node")
            && logs.contains("node1"),
        "{logs}"
    );
    Ok(())
}

#[test]
fn certificates_rotate_under_continuous_traffic() -> anyhow::Result<()> {
    let mesh = start_mesh(Duration::from_secs(4))?;
    let out = app(&mesh.client, &["loop", SERVICE, "12"])?;
    let summary = String::from_utf8_lossy(&out.stdout);
    let warnings = |agent: &Agent| -> String {
        agent
            .logs()
            .lines()
            .filter(|l| {
                l.contains("WARN") || l.contains("ERROR") || l.contains("certificate issued")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        out.status.success(),
        "{summary} {}\nnode1 warnings:\n{}\nnode2 warnings:\n{}",
        String::from_utf8_lossy(&out.stderr),
        warnings(&mesh.agent1),
        warnings(&mesh.agent2)
    );
    let ok: u64 = summary.split_whitespace().nth(1).unwrap_or("0").parse()?;
    assert!(ok > 50, "too few connections to cover rotations: {summary}");
    // 12 s of 4 s certificates renewed at half-life: several certificates per identity.
    let issued = mesh
        .controller
        .logs()
        .matches("issued workload certificate")
        .count();
    assert!(
        issued >= 6,
        "only {issued} certificates issued in 12 s of 4 s certificates"
    );
    Ok(())
}

#[test]
fn same_node_pods_skip_the_tunnel_but_not_the_policy() -> anyhow::Result<()> {
    let mesh = start_mesh(DAY)?;
    std::fs::write(
        mesh.config_dir.join("policy.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-client, namespace: prod}\nspec:\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/apps/sa/client]}}]\n",
    )?;
    wait_config(&mesh.agent1, "only-client")?;
    let neighbour = format!("{}:{APP_PORT}", mesh.neighbour.ip4);
    let got = reply(&mesh.client, &neighbour, "next-door")?;
    // Delivered from inside the destination pod: the application sees its own address.
    assert!(
        got.starts_with("neighbour ") && got.contains("next-door"),
        "{got}"
    );
    mesh.agent1.wait_for_log(
        &[
            "outbound connection captured",
            "src.workload=apps/client",
            "transport=Local",
        ],
        Duration::from_secs(5),
    )?;
    mesh.agent1.wait_for_log(
        &[
            "inbound same-node connection",
            "dst.workload=prod/neighbour",
            "src.identity=spiffe://cluster.local/ns/apps/sa/client",
        ],
        Duration::from_secs(5),
    )?;
    // The same policy as over the tunnel: another identity is refused.
    assert!(!app(&mesh.intruder, &["connect", &neighbour, "x"])?
        .status
        .success());
    mesh.agent1.wait_for_log(
        &[
            "same-node connection denied",
            "spiffe://cluster.local/ns/apps/sa/intruder",
            "no ALLOW policy matched",
        ],
        Duration::from_secs(5),
    )?;
    // No TLS connection was needed, and the metrics count the connection both ways.
    assert_eq!(
        metric(&mesh.agent1, "mesh_agent_hbone_connections_opened_total")?,
        0
    );
    let metrics = mesh.agent1.admin_get("/metrics")?;
    for direction in ["Outbound", "Inbound"] {
        let series = format!("mesh_agent_tcp_connections_opened_total{{direction=\"{direction}\",transport=\"Local\"");
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
    Ok(())
}

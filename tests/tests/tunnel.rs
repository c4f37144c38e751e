//! End-to-end: the zero-trust tunnel on a two-node local cluster with the real controller (config
//! stream and CA) and one agent per node. Traffic between nodes crosses a real veth, captured with
//! tcpdump to prove it is encrypted.
//!
//! Needs root: each test fails loudly without it. Traffic stays inside the cluster's namespaces.

use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::ambient;
use mesh_tests::app::{reply, run as app};
use mesh_tests::command::run;
use mesh_tests::config::{namespace_yaml, pod_yaml, service_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::pcap::Capture;
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
    let (netns, link) = mesh.cluster.node_link(2);
    let mut tcpdump = Command::new("ip");
    tcpdump.args(["netns", "exec", &netns, "tcpdump"]);
    let capture = Capture::start(tcpdump, &link, "tcp", &mesh.dir.path().join("node2.pcap"))?;
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
    allow_only_client(&mesh)?;
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

/// Writes the policy `prod/only-client`: in namespace `prod`, ALLOW only the identity of
/// `apps/client`.
fn allow_only_client(mesh: &Mesh) -> anyhow::Result<()> {
    std::fs::write(
        mesh.config_dir.join("policy.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: only-client, namespace: prod}\nspec:\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/apps/sa/client]}}]\n",
    )?;
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
        logs.contains("refused a certificate for an identity the caller does not hold")
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
    allow_only_client(&mesh)?;
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

const ECHO_PORT: u16 = 9000;

/// The same-node fast path's entry for `src` -> `requested` on the admin endpoint.
fn fastpath_entry(agent: &Agent, src: &str, requested: &str) -> anyhow::Result<serde_json::Value> {
    let listing: serde_json::Value = serde_json::from_str(&agent.admin_get("/fastpath")?)?;
    listing["verdicts"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|v| v["src_workload"] == src && v["requested"] == requested)
        })
        .cloned()
        .with_context(|| format!("no fast-path verdict {src} -> {requested} in {listing}"))
}

fn count_lines(agent: &Agent, needles: &[&str]) -> usize {
    agent
        .logs()
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .count()
}

/// Waits (bounded) until `metric` (a full series name) reaches at least `at_least`.
fn wait_metric(agent: &Agent, series: &str, at_least: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric(agent, series).unwrap_or(0);
        if value >= at_least {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{series} is {value}, expected at least {at_least}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// The same-node fast path: the agent decides the first connection from a pod to a same-node
/// destination; the kernel reuses that verdict for the next ones (straight to the destination
/// pod, or refused at connect), with the same metrics, until the model changes or it is switched
/// off. With the splice switched on, allowed connections move their bytes socket to socket.
#[test]
fn same_node_decisions_are_reused_in_the_kernel() -> anyhow::Result<()> {
    let mut mesh = start_mesh(DAY)?;
    start_echo(&mut mesh.cluster, &mesh.neighbour)?;
    allow_only_client(&mesh)?;
    wait_config(&mesh.agent1, "only-client")?;
    let neighbour = format!("{}:{APP_PORT}", mesh.neighbour.ip4);
    let captured = ["outbound connection captured", "src.workload=apps/client"];

    // First connection: the agent decides (and delivers from inside the destination pod).
    let first = reply(&mesh.client, &neighbour, "first")?;
    assert!(
        first.contains(&format!("peer={}:", mesh.neighbour.ip4)),
        "{first}"
    );
    assert_eq!(count_lines(&mesh.agent1, &captured), 1);
    let entry = fastpath_entry(&mesh.agent1, "apps/client", &neighbour)?;
    assert_eq!(entry["verdict"], "splice", "{entry}");
    assert_eq!(entry["active"], true, "{entry}");

    // Next connections: decided in the kernel, straight to the application (it sees the
    // client's own address) and never through the agent.
    for i in 0..3 {
        let got = reply(&mesh.client, &neighbour, &format!("again-{i}"))?;
        assert!(
            got.contains(&format!("peer={}:", mesh.client.ip4))
                && got.contains(&format!("again-{i}")),
            "{got}"
        );
    }
    assert_eq!(
        count_lines(&mesh.agent1, &captured),
        1,
        "the agent saw a connection the kernel decided"
    );
    let entry = fastpath_entry(&mesh.agent1, "apps/client", &neighbour)?;
    assert_eq!(entry["spliced"], 3, "{entry}");

    // Bytes are counted from the client's TCP counters when it closes, under the same metrics
    // as connections the agent relays, with transport "Kernel".
    let echo = format!("{}:{ECHO_PORT}", mesh.neighbour.ip4);
    stream(&mesh.client, &echo, 1000)?; // decided by the agent
    const MIB: u64 = 1 << 20;
    stream(&mesh.client, &echo, MIB)?; // decided in the kernel
    assert_eq!(count_lines(&mesh.agent1, &captured), 2);
    let outbound = "mesh_agent_tcp_connections_opened_total{direction=\"Outbound\",transport=\"Kernel\",workload=\"apps/client\",destination_service=\"unknown\"}";
    assert_eq!(wait_metric(&mesh.agent1, outbound, 4)?, 4);
    let inbound = "mesh_agent_tcp_sent_bytes_total{direction=\"Inbound\",transport=\"Kernel\",workload=\"prod/neighbour\",destination_service=\"unknown\"}";
    assert!(wait_metric(&mesh.agent1, inbound, MIB)? >= MIB);
    let received = "mesh_agent_tcp_received_bytes_total{direction=\"Outbound\",transport=\"Kernel\",workload=\"apps/client\",destination_service=\"unknown\"}";
    assert!(wait_metric(&mesh.agent1, received, MIB)? >= MIB);

    // The splice: bulk data both ways, byte-exact, moved socket to socket. No payload crosses
    // the pod's link unless the kernel counted a TCP fallback (first bytes sent before the peer
    // socket joined).
    mesh.agent1.admin_post("/fastpath?splice=true")?;
    let capture = capture_in_pod(
        &mesh.neighbour,
        "any",
        &format!("tcp port {ECHO_PORT}"),
        mesh.dir.path().join("neighbour.pcap"),
    )?;
    const BULK: u64 = 16 << 20;
    let before = fastpath_entry(&mesh.agent1, "apps/client", &echo)?;
    for _ in 0..3 {
        stream(&mesh.client, &echo, BULK)?;
    }
    let segments = mesh_tests::pcap::tcp_segments(&capture.stop()?)?;
    let entry = fastpath_entry(&mesh.agent1, "apps/client", &echo)?;
    let grew =
        |field: &str| entry[field].as_u64().unwrap_or(0) - before[field].as_u64().unwrap_or(0);
    let with_payload = segments.iter().filter(|s| s.payload > 0).count();
    assert!(segments.len() >= 9, "handshakes not captured: {segments:?}");
    assert!(
        grew("tcp_fallbacks") < 6,
        "no direction was spliced: {entry}"
    );
    if grew("tcp_fallbacks") == 0 {
        assert_eq!(
            with_payload, 0,
            "payload crossed TCP with no fallback counted: {entry}"
        );
    } else {
        eprintln!(
            "{} direction(s) stayed on TCP: {entry}",
            grew("tcp_fallbacks")
        );
    }
    assert_eq!(grew("spliced"), 3, "{entry}");
    assert!(grew("bytes_sent") >= 3 * BULK, "{entry}");
    assert!(grew("bytes_received") >= 3 * BULK, "{entry}");
    assert_eq!(
        count_lines(&mesh.agent1, &captured),
        2,
        "a spliced connection went through the agent"
    );
    assert!(wait_metric(&mesh.agent1, inbound, 3 * BULK)? >= 3 * BULK);

    // A refused identity: the agent refuses the first connection, the kernel the next ones at
    // connect (EPERM), counted as denied by the same policy.
    assert!(!app(&mesh.intruder, &["connect", &neighbour, "x"])?
        .status
        .success());
    let denied_in_agent = ["same-node connection denied", "sa/intruder"];
    mesh.agent1
        .wait_for_log(&denied_in_agent, Duration::from_secs(5))?;
    let refused = app(&mesh.intruder, &["connect", &neighbour, "y"])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("Operation not permitted"),
        "{stderr}"
    );
    assert_eq!(count_lines(&mesh.agent1, &denied_in_agent), 1);
    let denied =
        "mesh_agent_connections_denied_total{workload=\"prod/neighbour\",reason=\"policy\"}";
    assert_eq!(wait_metric(&mesh.agent1, denied, 2)?, 2);

    // A policy change withdraws every verdict: with the policy gone the intruder gets in.
    std::fs::write(mesh.config_dir.join("policy.yaml"), "")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reply(&mesh.intruder, &neighbour, "now-allowed").is_ok_and(|r| r.contains("now-allowed"))
    {
        if Instant::now() > deadline {
            bail!("the intruder is still refused after the policy was removed");
        }
        sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fastpath_entry(&mesh.agent1, "apps/client", &neighbour)?["active"],
        false
    );

    // Switched off at run time: every connection goes through the agent again.
    mesh.agent1.admin_post("/fastpath?enabled=false")?;
    let before = count_lines(&mesh.agent1, &captured);
    for i in 0..2 {
        let got = reply(&mesh.client, &neighbour, &format!("slow-{i}"))?;
        assert!(
            got.contains(&format!("peer={}:", mesh.neighbour.ip4)),
            "{got}"
        );
    }
    assert_eq!(count_lines(&mesh.agent1, &captured), before + 2);
    Ok(())
}

/// `mesh-testapp stream` of `bytes` from `pod` to the echo server at `addr`; fails unless every
/// byte came back in order.
fn stream(pod: &Pod, addr: &str, bytes: u64) -> anyhow::Result<()> {
    let out = app(pod, &["stream", addr, &bytes.to_string()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(&format!("ok bytes={bytes}")) {
        bail!(
            "stream of {bytes} bytes to {addr}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Starts the echo server on `ECHO_PORT` in `pod`.
fn start_echo(cluster: &mut Cluster, pod: &Pod) -> anyhow::Result<()> {
    let mut cmd = pod.command(
        &mesh_tests::agent::binary("mesh-testapp")?
            .display()
            .to_string(),
    );
    cmd.args(["echo", &ECHO_PORT.to_string()]);
    cluster.spawn(cmd)?;
    mesh_tests::command::wait_listening(pod, ECHO_PORT)
}

/// Captures `filter` on `interface` inside `pod` (tcpdump run as a process of the pod).
fn capture_in_pod(
    pod: &Pod,
    interface: &str,
    filter: &str,
    file: PathBuf,
) -> anyhow::Result<Capture> {
    let mut tcpdump = pod.command("tcpdump");
    tcpdump.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    Capture::start(tcpdump, interface, filter, &file)
}

/// Streams `bytes` from the client to the server's echo port through the tunnel while capturing
/// both loopback legs; returns the TCP segments with payload seen on (client's 15001 leg,
/// server's delivery leg).
fn stream_and_count_loopback_payload(
    mesh: &Mesh,
    bytes: u64,
    run: &str,
) -> anyhow::Result<(usize, usize)> {
    let dir = mesh.dir.path();
    let outbound = capture_in_pod(
        &mesh.client,
        "lo",
        "tcp port 15001",
        dir.join(format!("{run}-client-lo.pcap")),
    )?;
    let delivery = capture_in_pod(
        &mesh.server,
        "lo",
        &format!("tcp port {ECHO_PORT}"),
        dir.join(format!("{run}-server-lo.pcap")),
    )?;
    stream(
        &mesh.client,
        &format!("{}:{ECHO_PORT}", mesh.server.ip4),
        bytes,
    )?;
    let payload = |segments: Vec<mesh_tests::pcap::Segment>| -> anyhow::Result<usize> {
        if segments.len() < 3 {
            bail!("the capture missed the handshake: {segments:?}");
        }
        Ok(segments.iter().filter(|s| s.payload > 0).count())
    };
    let outbound = payload(mesh_tests::pcap::tcp_segments(&outbound.stop()?)?)?;
    let delivery = payload(mesh_tests::pcap::tcp_segments(&delivery.stop()?)?)?;
    Ok((outbound, delivery))
}

/// With the splice on, the loopback legs of a tunnelled connection (application -> agent in the
/// client pod, agent -> application in the server pod) are spliced socket to socket: the bytes
/// still go through both agents and the mTLS tunnel, but never as TCP over loopback. Switched
/// off, they do.
#[test]
fn loopback_legs_of_tunnelled_connections_are_spliced() -> anyhow::Result<()> {
    let mut mesh = start_mesh(DAY)?;
    start_echo(&mut mesh.cluster, &mesh.server)?;
    for agent in [&mesh.agent1, &mesh.agent2] {
        agent.wait_for_log(
            &["sockops attached to the agent's cgroup"],
            Duration::from_secs(5),
        )?;
        agent.admin_post("/fastpath?splice=true")?;
    }
    const BULK: u64 = 8 << 20;
    let (outbound, delivery) = stream_and_count_loopback_payload(&mesh, BULK, "spliced")?;
    assert_eq!(
        (outbound, delivery),
        (0, 0),
        "payload crossed a loopback leg as TCP"
    );
    // The agents still carried every byte: the tunnel's metrics count them.
    let sent = "mesh_agent_tcp_sent_bytes_total{direction=\"Outbound\",transport=\"Hbone\",workload=\"apps/client\",destination_service=\"unknown\"}";
    assert!(wait_metric(&mesh.agent1, sent, BULK)? >= BULK);

    for agent in [&mesh.agent1, &mesh.agent2] {
        agent.admin_post("/fastpath?splice=false")?;
    }
    let (outbound, delivery) = stream_and_count_loopback_payload(&mesh, BULK, "tcp")?;
    assert!(
        outbound > 0 && delivery > 0,
        "with the splice off the loopback legs must be TCP: {outbound} {delivery}"
    );
    Ok(())
}

//! End-to-end: the control plane (config stream 15010, certificate service 15012) on the local
//! cluster is TLS only and authenticates every node. A raw client on a node's network speaking
//! plaintext HTTP/2 gets no gRPC answer on either port; an agent with a wrong token gets neither
//! config nor certificates; and a capture of the agents' certificate requests on the link to the
//! controller shows a TLS 1.3 handshake and never the token in clear.
//!
//! Needs root: each test fails loudly without it. Traffic stays inside the cluster's namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::ambient;
use mesh_tests::config::{namespace_yaml, pod_yaml};
use mesh_tests::controller::{Controller, CA_PORT, CONFIG_PORT};
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::pcap::Capture;
use mesh_tests::{Agent, Cluster};
use serde_json::json;

const DAY: Duration = Duration::from_secs(24 * 3600);
const WAIT: Duration = Duration::from_secs(10);

/// The HTTP/2 client preface and an empty SETTINGS frame: how every plaintext gRPC client starts.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A TLS handshake record (type 22, version 3.x) whose first message is a ClientHello (type 1).
fn has_client_hello(pcap: &[u8]) -> bool {
    pcap.windows(6)
        .any(|w| w[0] == 0x16 && w[1] == 0x03 && w[2] <= 0x04 && w[5] == 0x01)
}

/// Runs `f` on a thread that has entered the network namespace at `netns` (the test process
/// itself stays where it is).
fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let file = std::fs::File::open(netns).with_context(|| format!("{}", netns.display()))?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
}

/// What a server answers to the plaintext HTTP/2 preface: every byte until it closes (at most
/// 5 s, at most 4 KiB).
fn answer_to_plaintext_h2(addr: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.write_all(H2_PREFACE)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while answer.len() < 4096 {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => bail!("{addr}: no close after the preface: {e}"),
        }
    }
    Ok(answer)
}

/// Waits (bounded) until the controller's log contains every needle.
fn wait_for_controller_log(controller: &Controller, needles: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let logs = controller.logs();
        if logs
            .lines()
            .any(|line| needles.iter().all(|n| line.contains(n)))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no controller log line with {needles:?}:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn control_plane_ports_refuse_plaintext_and_nodes_without_credentials() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("mesh-cp").tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let pod = cluster.add_pod(2, "apps", "web")?;
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(
        config_dir.join("c.yaml"),
        [namespace_yaml("apps", true), pod_yaml(&pod, "node2", "web")].join("---\n"),
    )?;
    let controller = Controller::start(&cluster, dir.path(), &config_dir, DAY)?;
    let ip = cluster.control_plane_ip();

    // 1. Plaintext HTTP/2 from node 1's network: no gRPC answer on either port. A plaintext gRPC
    // server would answer the preface with its own SETTINGS frame (type 4); the TLS servers
    // answer with a TLS alert record (type 21) or close.
    let node1 = cluster.node(1)?.netns_path();
    for port in [CONFIG_PORT, CA_PORT] {
        let addr = SocketAddr::from((ip, port));
        let answer = in_netns(&node1, move || answer_to_plaintext_h2(addr))?;
        assert!(
            answer.is_empty() || answer.starts_with(&[0x15, 0x03]),
            "port {port} answered plaintext HTTP/2 with {answer:02x?}"
        );
        assert!(
            !(answer.len() >= 9 && answer[3] == 0x04),
            "port {port} sent an HTTP/2 SETTINGS frame"
        );
    }
    wait_for_controller_log(
        &controller,
        &[
            "refused a control-plane connection",
            "config stream",
            "not_tls",
        ],
    )?;
    wait_for_controller_log(
        &controller,
        &[
            "refused a control-plane connection",
            "certificate service",
            "not_tls",
        ],
    )?;

    // 2. Node 2's agent with a wrong token (its pinned root is right): refused by both services,
    // so it gets no config and no certificate for its pod.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "node2-not-the-bootstrap-token")?;
    let node2 = cluster.node(2)?;
    let mut args = controller.agent_args(dir.path(), &node2.name);
    let token_flag = args
        .iter()
        .position(|a| a == "--ca-token-file")
        .context("token flag")?;
    args[token_flag + 1] = wrong.display().to_string();
    let agent = Agent::start_with(node2, dir.path(), None, &args)?;
    agent.wait_for_log(&["config stream ended", "bad node token"], WAIT)?;
    wait_for_controller_log(
        &controller,
        &["config stream", "unauthenticated node", "node2"],
    )?;
    agent.add_pod(&pod, ambient(), json!({}))?;
    agent.wait_for_log(&["certificate request failed", "bad node token"], WAIT)?;
    wait_for_controller_log(
        &controller,
        &["certificate service", "unauthenticated node", "node2"],
    )?;
    // (The agent starts with an empty model; the controller's has the pod.)
    assert!(
        !agent.logs().contains("workloads=1"),
        "an agent with a wrong token got config:\n{}",
        agent.logs()
    );
    assert!(
        !controller.logs().contains("issued workload certificate"),
        "a certificate was issued to a node with a wrong token"
    );
    Ok(())
}

#[test]
fn certificate_requests_cross_the_link_in_tls_without_the_token_in_clear() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("mesh-cp").tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let pod = cluster.add_pod(1, "apps", "client")?;
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(
        config_dir.join("c.yaml"),
        [
            namespace_yaml("apps", true),
            pod_yaml(&pod, "node1", "client"),
        ]
        .join("---\n"),
    )?;
    let ControlledMesh { agents, controller } =
        ControlledMesh::start(&cluster, dir.path(), &config_dir, DAY, 1)?;
    let agent1 = agents.first().context("agent 1")?;

    // Capture node 1's link to the controller while its agent asks for the pod's certificate.
    let (netns, link) = cluster.node_link(1);
    let mut tcpdump = Command::new("ip");
    tcpdump.args(["netns", "exec", &netns, "tcpdump"]);
    let file = dir.path().join("ca.pcap");
    let capture = Capture::start(tcpdump, &link, &format!("tcp port {CA_PORT}"), &file)?;
    agent1.add_pod(&pod, ambient(), json!({}))?;
    wait_for_controller_log(&controller, &["issued workload certificate", "node1"])?;
    let pcap = capture.stop()?;

    let token = std::fs::read(dir.path().join("node1.token"))?;
    assert!(
        token.len() >= 16,
        "the fixture's token is long enough to search for"
    );
    assert!(
        has_client_hello(&pcap),
        "no TLS ClientHello on the link to the certificate service ({} bytes)",
        pcap.len()
    );
    assert!(
        contains(&pcap, &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]),
        "no TLS 1.3 ServerHello in the capture"
    );
    assert!(
        !contains(&pcap, b"PRI * HTTP/2.0"),
        "an HTTP/2 preface crossed the link in clear"
    );
    assert!(
        !contains(&pcap, &token),
        "the node's token crossed the link in clear"
    );
    assert!(
        !contains(&pcap, b"Bearer"),
        "an authorization header crossed the link in clear"
    );
    Ok(())
}

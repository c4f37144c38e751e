//! End-to-end: the agent never accepts its own ports as a destination. Hostile connections to
//! the agent's ports (15001, 15006, 15008) of a meshed pod's addresses and of the node's address,
//! from a pod outside the mesh, from meshed pods on the same and on another node, from inside the
//! meshed pod itself (loopback and its own address), and HBONE CONNECTs with a valid identity to
//! an agent port: each is refused without reaching the application, counted in
//! `mesh_agent_connections_denied` with its reason, logged once per burst, and the agent's open
//! files stay flat (one plaintext connection to `<pod>:15006` used to make the agent connect to
//! itself until it ran out of descriptors).
//!
//! Needs root: each test fails loudly without it. Traffic stays inside the cluster's namespaces.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_common::identity::Identity;
use mesh_common::ports::{HBONE, INBOUND_PLAINTEXT, OUTBOUND_CAPTURE};
use mesh_hbone::ca::{CaConfig, CertificateAuthority};
use mesh_hbone::certs::{new_key_and_csr, WorkloadCert};
use mesh_hbone::hbone::{HboneClientConfig, HboneConnection};
use mesh_hbone::tls::{client_config, StaticCert};
use mesh_tests::agent::ambient;
use mesh_tests::app::{reply, run as app};
use mesh_tests::config::{namespace_yaml, pod_yaml, service_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::json;

const APP_PORT: u16 = 8080;
const AGENT_PORTS: [u16; 3] = [OUTBOUND_CAPTURE, INBOUND_PLAINTEXT, HBONE];
/// Hostile connections per case (50 cases: 2,500 in all).
const PER_CASE: u64 = 50;
/// Descriptors the agent may hold above its starting count once the hostile connections end.
const FD_SLACK: usize = 16;
/// Log lines of refusals allowed per agent for the whole run (bursts of 10 s per reason).
const MAX_REFUSAL_LINES: usize = 12;
const REFUSAL_LINE: &str = "(logged once per burst)";
const TRUST_DOMAIN: &str = "cluster.local";
/// A service whose `targetPort` is the agent's plaintext port (selects `apps/server`).
const SELF_SERVICE: &str = "198.19.0.20:80";

/// The cluster: `apps/server` (meshed, node 1, the echo app on 8080), `apps/neighbour` (meshed,
/// node 1), `legacy/outsider` (not meshed, node 1), `apps/remote` (meshed, node 2); the service
/// `apps/selfcall` ([`SELF_SERVICE`]) targets the server's port 15006.
struct Mesh {
    server: Pod,
    neighbour: Pod,
    outsider: Pod,
    remote: Pod,
    agent1: Agent,
    agent2: Agent,
    _controller: Controller,
    cluster: Cluster,
    dir: tempfile::TempDir,
}

fn start_mesh() -> anyhow::Result<Mesh> {
    let dir = tempfile::Builder::new().prefix("mesh-hostile").tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let server = cluster.add_pod(1, "apps", "server")?;
    mesh_tests::app::serve(&mut cluster, &server, APP_PORT, "server")?;
    let neighbour = cluster.add_pod(1, "apps", "neighbour")?;
    let outsider = cluster.add_pod(1, "legacy", "outsider")?;
    let remote = cluster.add_pod(2, "apps", "remote")?;

    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let config = [
        namespace_yaml("apps", true),
        namespace_yaml("legacy", false),
        service_yaml(
            "apps",
            "selfcall",
            "198.19.0.20",
            80,
            INBOUND_PLAINTEXT,
            "server",
        ),
        pod_yaml(&server, "node1", "server"),
        pod_yaml(&neighbour, "node1", "neighbour"),
        pod_yaml(&outsider, "node1", "outsider"),
        pod_yaml(&remote, "node2", "remote"),
    ]
    .join("---\n");
    std::fs::write(config_dir.join("mesh.yaml"), config)?;
    let day = Duration::from_secs(24 * 3600);
    let ControlledMesh {
        mut agents,
        controller,
    } = ControlledMesh::start(&cluster, dir.path(), &config_dir, day, 4)?;
    let (Some(agent2), Some(agent1)) = (agents.pop(), agents.pop()) else {
        bail!("expected two agents");
    };
    agent1.add_pod(&server, ambient(), json!({}))?;
    agent1.add_pod(&neighbour, ambient(), json!({}))?;
    agent1.add_pod(&outsider, json!({}), json!({}))?;
    agent2.add_pod(&remote, ambient(), json!({}))?;
    Ok(Mesh {
        server,
        neighbour,
        outsider,
        remote,
        agent1,
        agent2,
        _controller: controller,
        cluster,
        dir,
    })
}

/// `mesh_agent_connections_denied_total{workload, reason}` of `agent` (0 while absent).
fn denied(agent: &Agent, workload: &str, reason: &str) -> anyhow::Result<u64> {
    let text = agent.admin_get("/metrics")?;
    let labels = format!("{{workload=\"{workload}\",reason=\"{reason}\"}}");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("mesh_agent_connections_denied_total") {
            if let Some(value) = rest.strip_prefix(&labels) {
                return value.trim().parse().context("denied counter value");
            }
        }
    }
    Ok(0)
}

/// Waits (at most 5 s) until `workload`'s `reason` count on `agent` reaches `want`.
fn wait_denied(agent: &Agent, workload: &str, reason: &str, want: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = denied(agent, workload, reason)?;
        if got == want {
            return Ok(());
        }
        if got > want || Instant::now() > deadline {
            bail!(
                "{} counts {got} {workload} connections denied for {reason}, expected {want}",
                agent.node.name
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent's open descriptors.
fn open_fds(agent: &Agent) -> anyhow::Result<usize> {
    let pid = agent.pid().context("agent not running")?;
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .context("reading the agent's descriptors")?
        .count())
}

/// Waits (at most 10 s) until the agent holds at most `limit` descriptors.
fn wait_fds_at_most(agent: &Agent, limit: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fds = open_fds(agent)?;
        if fds <= limit {
            return Ok(fds);
        }
        if Instant::now() > deadline {
            bail!(
                "{} holds {fds} descriptors, more than {limit}",
                agent.node.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How `mesh-testapp hostile` saw its connections end.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    app: u64,
    closed: u64,
    other: u64,
    open: u64,
    refused: u64,
}

fn hostile(from: &Pod, to: SocketAddr, n: u64) -> anyhow::Result<Outcome> {
    let out = app(from, &["hostile", &to.to_string(), &n.to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "hostile {to} from {}: {}",
            from.uid(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut outcome = Outcome::default();
    for field in text.split_whitespace() {
        let (name, value) = field.split_once('=').context("hostile output")?;
        let value: u64 = value.parse().context("hostile count")?;
        match name {
            "app" => outcome.app = value,
            "closed" => outcome.closed = value,
            "other" => outcome.other = value,
            "open" => outcome.open = value,
            "refused" => outcome.refused = value,
            _ => bail!("unexpected hostile output {text:?}"),
        }
    }
    Ok(outcome)
}

/// What a hostile connection must meet.
#[derive(Debug, Clone)]
enum Expect {
    /// Reset by the kernel: nothing listens there (15001 listens on loopback only; the node's
    /// netns has no agent port).
    Refused,
    /// Accepted by an agent listener and closed at once, counted under (agent, workload, reason).
    Counted(usize, String, &'static str),
    /// Plaintext to the HBONE server: the TLS handshake fails (closed, or a TLS alert).
    TlsFailure,
}

fn at(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

#[test]
fn hostile_connections_to_agent_ports_are_refused_counted_and_bounded() -> anyhow::Result<()> {
    let mesh = start_mesh()?;
    let node1 = mesh.cluster.node(1)?.clone();
    let agents = [&mesh.agent1, &mesh.agent2];
    // The normal path works before (this also warms the HBONE pool and certificates).
    for from in [&mesh.neighbour, &mesh.outsider, &mesh.remote] {
        let got = reply(from, &at(mesh.server.ip4, APP_PORT).to_string(), "before")?;
        assert!(got.contains("server ") && got.contains("before"), "{got}");
    }
    let fds_before = [open_fds(&mesh.agent1)?, open_fds(&mesh.agent2)?];

    let server = mesh.server.uid();
    let neighbour = mesh.neighbour.uid();
    let remote = mesh.remote.uid();
    let server_ips: [IpAddr; 2] = [mesh.server.ip4.into(), mesh.server.ip6.into()];
    let node_ips: [IpAddr; 2] = [node1.ip4.into(), node1.ip6.into()];
    let loopbacks: [IpAddr; 2] = [
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ];
    // (source, destination, expectation)
    let mut cases: Vec<(&Pod, SocketAddr, Expect)> = Vec::new();
    for port in AGENT_PORTS {
        for family in 0..2 {
            let (server_ip, node_ip, loopback) =
                (server_ips[family], node_ips[family], loopbacks[family]);
            let pod = at(server_ip, port);
            let node = at(node_ip, port);
            // A pod outside the mesh is not captured: it reaches the listeners as they are.
            let outside = match port {
                OUTBOUND_CAPTURE => Expect::Refused,
                INBOUND_PLAINTEXT => Expect::Counted(0, server.clone(), "agent_port"),
                _ => Expect::TlsFailure,
            };
            cases.push((&mesh.outsider, pod, outside));
            cases.push((&mesh.outsider, node, Expect::Refused));
            // Meshed pods are captured whatever the port; their agent's route refuses it.
            for (from, agent, uid) in [(&mesh.neighbour, 0, &neighbour), (&mesh.remote, 1, &remote)]
            {
                cases.push((from, pod, Expect::Counted(agent, uid.clone(), "agent_port")));
                cases.push((
                    from,
                    node,
                    Expect::Counted(agent, uid.clone(), "agent_port"),
                ));
            }
            // Inside the meshed pod: its own address is captured; loopback is not and reaches
            // the listeners directly.
            let own = Expect::Counted(0, server.clone(), "agent_port");
            cases.push((&mesh.server, pod, own.clone()));
            let inside = match port {
                OUTBOUND_CAPTURE => Expect::Counted(0, server.clone(), "no_original_destination"),
                INBOUND_PLAINTEXT => own,
                _ => Expect::TlsFailure,
            };
            cases.push((&mesh.server, at(loopback, port), inside));
        }
    }

    // A service resolving to an agent port is refused like a direct connect to it.
    let self_service: SocketAddr = SELF_SERVICE.parse()?;
    cases.push((
        &mesh.neighbour,
        self_service,
        Expect::Counted(0, neighbour.clone(), "agent_port"),
    ));
    cases.push((
        &mesh.remote,
        self_service,
        Expect::Counted(1, remote.clone(), "agent_port"),
    ));

    for (from, to, expect) in &cases {
        let counted_before = match expect {
            Expect::Counted(agent, uid, reason) => denied(agents[*agent], uid, reason)?,
            _ => 0,
        };
        let got = hostile(from, *to, PER_CASE)?;
        let case = format!("{} -> {to}: {got:?}", from.uid());
        assert_eq!(got.app, 0, "reached the application: {case}");
        assert_eq!(got.open, 0, "left open: {case}");
        match expect {
            Expect::Refused => assert_eq!(got.refused, PER_CASE, "{case}"),
            Expect::Counted(agent, uid, reason) => {
                assert_eq!(got.closed, PER_CASE, "{case}");
                wait_denied(agents[*agent], uid, reason, counted_before + PER_CASE)
                    .with_context(|| case.clone())?;
            }
            Expect::TlsFailure => {
                assert_eq!(got.closed + got.other, PER_CASE, "{case}")
            }
        }
    }

    // Every hostile connection is gone: the agents hold what they held before.
    for (agent, before) in agents.iter().zip(fds_before) {
        let after = wait_fds_at_most(agent, before + FD_SLACK)?;
        eprintln!(
            "{}: {before} descriptors before, {after} after {} hostile connections",
            agent.node.name,
            PER_CASE * cases.len() as u64
        );
    }
    // A log line per burst, not per connection.
    for agent in agents {
        let logs = agent.logs();
        // The HBONE server logs failed TLS handshakes once per burst too.
        let tls = logs
            .lines()
            .filter(|l| l.contains("HBONE connection refused"))
            .count();
        eprintln!(
            "{}: {tls} log lines of failed HBONE TLS handshakes",
            agent.node.name
        );
        assert!(
            tls <= MAX_REFUSAL_LINES,
            "{} logged {tls} failed HBONE handshakes, not once per burst",
            agent.node.name
        );
        let lines = logs.lines().filter(|l| l.contains(REFUSAL_LINE)).count();
        assert!(
            (1..=MAX_REFUSAL_LINES).contains(&lines),
            "{} logged {lines} refusal lines:\n{}",
            agent.node.name,
            agent.logs()
        );
    }
    // The normal path still works.
    for from in [&mesh.neighbour, &mesh.outsider, &mesh.remote] {
        let got = reply(from, &at(mesh.server.ip4, APP_PORT).to_string(), "after")?;
        assert!(got.contains("server ") && got.contains("after"), "{got}");
    }
    Ok(())
}

/// The kernel captures a meshed pod's connect to port 15008 of another pod (it used to leave
/// every agent port uncaptured): the kernel log shows it redirected, and the route refuses it.
#[test]
fn connects_to_agent_ports_are_captured_by_the_kernel() -> anyhow::Result<()> {
    let mesh = start_mesh()?;
    let neighbour = mesh.neighbour.uid();
    let before = denied(&mesh.agent1, &neighbour, "agent_port")?;
    for ip in [IpAddr::from(mesh.remote.ip4), IpAddr::from(mesh.remote.ip6)] {
        let got = hostile(&mesh.neighbour, at(ip, HBONE), 1)?;
        assert_eq!(got.closed, 1, "{got:?}");
    }
    mesh.agent1.wait_for_log(
        &[
            "captured connect4 to",
            &format!("{}:{HBONE}", mesh.remote.ip4),
        ],
        Duration::from_secs(5),
    )?;
    mesh.agent1.wait_for_log(
        &["captured connect6 to port", &HBONE.to_string()],
        Duration::from_secs(5),
    )?;
    wait_denied(&mesh.agent1, &neighbour, "agent_port", before + 2)?;
    // Not carried to the remote HBONE server either: it never saw a plaintext client.
    assert!(
        !mesh.agent2.logs().contains("HBONE connection refused"),
        "{}",
        mesh.agent2.logs()
    );
    Ok(())
}

/// An HBONE CONNECT with a valid mesh identity to an agent port of the pod is refused by the
/// destination agent (403), IPv4 and IPv6, counted; a CONNECT to the application port on the same
/// connection is accepted (so the refusal is the port's, not the identity's).
#[test]
fn hbone_connect_to_an_agent_port_is_refused() -> anyhow::Result<()> {
    let mesh = start_mesh()?;
    let server = mesh.server.uid();
    // A meshed pod's own agent refuses agent ports in its outbound route, so a direct CONNECT
    // it is: a certificate for `apps/remote` from the mesh's CA, presented from node 2's netns.
    let ca_dir = mesh.dir.path().join("ca");
    let ca = CertificateAuthority::from_pem(
        CaConfig::new(TRUST_DOMAIN),
        &std::fs::read_to_string(ca_dir.join("root-cert.pem"))?,
        &std::fs::read_to_string(ca_dir.join("root-key.pem"))?,
    )?;
    let identity = Identity::new(TRUST_DOMAIN, &mesh.remote.namespace, &mesh.remote.name);
    let (key, csr) = new_key_and_csr(&identity)?;
    let issued = ca.sign_csr_der(&identity, &csr)?;
    let cert = WorkloadCert::new(&identity, issued.chain, key)?;
    let expected = Identity::new(TRUST_DOMAIN, &mesh.server.namespace, &mesh.server.name);

    let before = denied(&mesh.agent1, &server, "agent_port")?;
    let fds_before = open_fds(&mesh.agent1)?;
    let node2 = mesh.cluster.node(2)?.netns_path();
    let server_ips = [IpAddr::from(mesh.server.ip4), IpAddr::from(mesh.server.ip6)];
    let results = std::thread::scope(|scope| {
        scope
            .spawn(|| connect_from_netns(&node2, &cert, &ca, &expected, &server_ips))
            .join()
            .map_err(|_| anyhow::anyhow!("HBONE client thread panicked"))?
    })?;
    let mut refused = 0;
    for (target, result) in &results {
        if target.port() == APP_PORT {
            assert_eq!(result, "200", "{target}: the identity is valid");
        } else {
            assert_eq!(result, "403", "{target}: CONNECT to an agent port");
            refused += 1;
        }
    }
    wait_denied(&mesh.agent1, &server, "agent_port", before + refused)?;
    wait_fds_at_most(&mesh.agent1, fds_before + FD_SLACK)?;
    let got = reply(
        &mesh.remote,
        &at(mesh.server.ip4, APP_PORT).to_string(),
        "after",
    )?;
    assert!(got.contains("server ") && got.contains("after"), "{got}");
    Ok(())
}

/// From a thread inside `netns`: one HBONE connection per server address, then CONNECTs to
/// each agent port and to the application port; returns each target with the status got.
fn connect_from_netns(
    netns: &std::path::Path,
    cert: &WorkloadCert,
    ca: &CertificateAuthority,
    expected: &Identity,
    server_ips: &[IpAddr],
) -> anyhow::Result<Vec<(SocketAddr, String)>> {
    let tls = client_config(StaticCert::new(cert), ca.trust_bundle(), expected.clone())?;
    let ns = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    // Only this thread moves: the test's other threads stay where they are.
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut results = Vec::new();
        for ip in server_ips {
            let conn =
                HboneConnection::dial(at(*ip, HBONE), tls.clone(), &HboneClientConfig::default())
                    .await
                    .with_context(|| format!("HBONE to {ip}"))?;
            for port in AGENT_PORTS.into_iter().chain([APP_PORT]) {
                let target = at(*ip, port);
                let status = match tokio::time::timeout(
                    Duration::from_secs(5),
                    conn.connect(target),
                )
                .await
                {
                    Err(_) => bail!("CONNECT {target}: no answer within 5 s"),
                    Ok(Ok(_stream)) => "200".to_owned(),
                    Ok(Err(mesh_hbone::hbone::HboneError::Status(status))) => {
                        status.as_u16().to_string()
                    }
                    Ok(Err(e)) => format!("error: {e}"),
                };
                results.push((target, status));
            }
        }
        Ok(results)
    })
}

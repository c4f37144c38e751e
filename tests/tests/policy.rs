//! End-to-end: policies on a two-node local cluster with the real controller and one agent per
//! node. A policy change closes a live connection it now denies within 1 s (and leaves the
//! others); a dry-run DENY lets traffic pass and is counted; what nothing enforces (a policy
//! attached to a Service with targetRefs, a service assigned a waypoint that does not run) is
//! refused, counted and reported by the controller.
//!
//! Needs root: each test fails loudly without it. Traffic stays inside the cluster's namespaces.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::{ambient, binary};
use mesh_tests::app::{reply, run as app};
use mesh_tests::config::{namespace_yaml, pod_yaml, service_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::json;

const APP_PORT: u16 = 8080;
const SERVICE: &str = "198.19.0.10:80";
/// `prod/walled` (pod `prod/walled`), assigned the waypoint `prod/wp` (which never runs).
const WALLED: &str = "198.19.0.11:80";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// `apps/client` and `apps/other` (meshed, node 1), `prod/server` (meshed, node 2) behind
/// `prod/echo`, and `prod/walled` (meshed, node 2) behind the service `prod/walled`.
struct Mesh {
    client: Pod,
    other: Pod,
    /// `prod/near` (meshed, node 1, same node as the clients): reached by the kernel fast path.
    near_ip: String,
    walled_ip: String,
    agent1: Agent,
    agent2: Agent,
    _controller: Controller,
    config_dir: PathBuf,
    cluster: Cluster,
    _dir: tempfile::TempDir,
}

fn start_mesh() -> anyhow::Result<Mesh> {
    let dir = tempfile::Builder::new().prefix("mesh-policy").tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let server = cluster.add_pod(2, "prod", "server")?;
    mesh_tests::app::serve(&mut cluster, &server, APP_PORT, "server")?;
    let walled_pod = cluster.add_pod(2, "prod", "walled")?;
    mesh_tests::app::serve(&mut cluster, &walled_pod, APP_PORT, "walled")?;
    let client = cluster.add_pod(1, "apps", "client")?;
    let other = cluster.add_pod(1, "apps", "other")?;
    let near = cluster.add_pod(1, "prod", "near")?;
    mesh_tests::app::serve(&mut cluster, &near, APP_PORT, "near")?;
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let walled = service_yaml("prod", "walled", "198.19.0.11", 80, APP_PORT, "walled").replace(
        "namespace: prod}",
        "namespace: prod, labels: {istio.io/use-waypoint: wp}}",
    );
    let base = [
        namespace_yaml("apps", true),
        namespace_yaml("prod", true),
        service_yaml("prod", "echo", "198.19.0.10", 80, APP_PORT, "server"),
        walled,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: prod}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n".to_owned(),
        pod_yaml(&client, "node1", "client"),
        pod_yaml(&other, "node1", "other"),
        pod_yaml(&server, "node2", "server"),
        pod_yaml(&walled_pod, "node2", "walled"),
        pod_yaml(&near, "node1", "near"),
    ]
    .join("---\n");
    std::fs::write(config_dir.join("base.yaml"), base)?;
    let ControlledMesh {
        mut agents,
        controller,
    } = ControlledMesh::start(&cluster, dir.path(), &config_dir, DAY, 5)?;
    let (Some(agent2), Some(agent1)) = (agents.pop(), agents.pop()) else {
        bail!("expected two agents");
    };
    agent2.add_pod(&server, ambient(), json!({}))?;
    agent2.add_pod(&walled_pod, ambient(), json!({}))?;
    agent1.add_pod(&client, ambient(), json!({}))?;
    agent1.add_pod(&other, ambient(), json!({}))?;
    agent1.add_pod(&near, ambient(), json!({}))?;
    Ok(Mesh {
        client,
        other,
        near_ip: near.ip4.to_string(),
        walled_ip: walled_pod.ip4.to_string(),
        agent1,
        agent2,
        _controller: controller,
        config_dir,
        cluster,
        _dir: dir,
    })
}

/// Waits until the agent's model (admin `/config_dump`) mentions `needle`.
fn wait_config(agent: &Agent, needle: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if agent.admin_get("/config_dump")?.contains(needle) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("agent on {} never received {needle:?}", agent.node.name);
        }
        sleep(Duration::from_millis(50));
    }
}

/// The value of one metric series (a line starting with `series`), 0 when absent.
fn metric(agent: &Agent, series: &str) -> anyhow::Result<u64> {
    let text = agent.admin_get("/metrics")?;
    Ok(text
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::parse)
        .transpose()?
        .unwrap_or(0))
}

/// GET on the controller's admin endpoint (from the control plane's namespace).
fn controller_get(cluster: &Cluster, path: &str) -> anyhow::Result<String> {
    let out = cluster
        .control_plane_command(&binary("mesh-testapp")?.display().to_string())
        .args(["get", "127.0.0.1:15014", path])
        .output()
        .context("running mesh-testapp")?;
    if !out.status.success() {
        bail!("GET {path}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `mesh-testapp chat` from a pod: its lines as they come.
/// Applies a DENY of `apps/client` in `prod` and returns when (unix µs) `agent` applied the
/// model that carries it: the agent logs each version as it applies it, the last one has it.
fn deny_client(mesh: &Mesh, agent: &Agent) -> anyhow::Result<i64> {
    std::fs::write(
        mesh.config_dir.join("deny.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-client, namespace: prod}\nspec:\n  action: DENY\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/apps/sa/client]}}]\n",
    )?;
    wait_config(agent, "deny-client")?;
    let applied = agent
        .logs()
        .lines()
        .rfind(|l| l.contains("config applied"))
        .context("no config applied")?
        .to_owned();
    log_time_us(&applied)
}

struct Chat {
    child: Child,
    lines: Receiver<String>,
    replies: u64,
    closed: Option<String>,
}

impl Chat {
    fn start(pod: &Pod, addr: &str) -> anyhow::Result<Chat> {
        let mut child = pod
            .command(&binary("mesh-testapp")?.display().to_string())
            .args(["chat", addr, "30"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mesh-testapp chat")?;
        let stdout = child.stdout.take().context("chat stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Chat {
            child,
            lines,
            replies: 0,
            closed: None,
        })
    }

    /// Takes what has arrived, waiting at most `wait` for the next line.
    fn poll(&mut self, wait: Duration) {
        let mut wait = wait;
        while let Ok(line) = self.lines.recv_timeout(wait) {
            wait = Duration::ZERO;
            if line.starts_with("reply ") {
                self.replies += 1;
            } else if line.starts_with("closed ") {
                self.closed = Some(line);
            }
        }
    }

    /// Polls until `done` holds (at most `timeout`).
    /// Waits (at most 5 s) for the connection to close; its last line and when (unix µs).
    fn closed_at(&mut self, what: &str) -> anyhow::Result<(String, i64)> {
        self.until(what, Duration::from_secs(5), |c| c.closed.is_some())?;
        let closed = self.closed.clone().unwrap_or_default();
        let at_us = closed
            .split("at_us=")
            .nth(1)
            .and_then(|s| s.split(':').next())
            .context("no at_us in the chat's last line")?
            .parse()?;
        Ok((closed, at_us))
    }

    fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Chat) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what} ({} replies, closed: {:?})",
                    self.replies,
                    self.closed
                );
            }
            self.poll(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Microseconds since the epoch of a log line's RFC 3339 UTC timestamp
/// (`2026-12-01T22:54:49.123456Z ...`).
fn log_time_us(line: &str) -> anyhow::Result<i64> {
    let stamp = line.split_whitespace().next().context("empty log line")?;
    let (date, time) = stamp
        .trim_end_matches('Z')
        .split_once('T')
        .context("no T in the timestamp")?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) = (d.next(), d.next(), d.next()) else {
        bail!("bad date in {stamp}");
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(str::parse::<i64>);
    let (Some(Ok(h)), Some(Ok(min)), Some(Ok(s))) = (t.next(), t.next(), t.next()) else {
        bail!("bad time in {stamp}");
    };
    let micros: i64 = format!("{frac:0<6}")[..6].parse()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + h) * 60 + min) * 60 * 1_000_000 + s * 1_000_000 + micros)
}

#[test]
fn log_timestamps_parse() -> anyhow::Result<()> {
    assert_eq!(log_time_us("1970-01-01T00:00:01.5Z INFO x")?, 1_500_000);
    assert_eq!(
        log_time_us("2026-12-01T22:54:49.000001Z  INFO mesh_agent")?,
        1_796_165_689_000_001
    );
    Ok(())
}

#[test]
fn a_policy_change_closes_a_now_denied_live_connection_within_a_second() -> anyhow::Result<()> {
    let mesh = start_mesh()?;
    let mut denied = Chat::start(&mesh.client, SERVICE)?;
    let mut allowed = Chat::start(&mesh.other, SERVICE)?;
    // Both connections work before the change.
    denied.until("client replies", Duration::from_secs(10), |c| {
        c.replies >= 10 || c.closed.is_some()
    })?;
    allowed.until("other replies", Duration::from_secs(10), |c| {
        c.replies >= 10 || c.closed.is_some()
    })?;
    assert!(
        denied.closed.is_none() && allowed.closed.is_none(),
        "closed before any policy: {:?} {:?}\n{}",
        denied.closed,
        allowed.closed,
        mesh.agent2.logs()
    );

    let applied_us = deny_client(&mesh, &mesh.agent2)?;
    let (closed, closed_us) = denied.closed_at("the denied connection to close")?;
    let after = Duration::from_micros(u64::try_from(closed_us - applied_us).unwrap_or(0));
    eprintln!("closed {after:?} after the agent applied the new policy: {closed}");
    let relevant = |agent: &Agent| -> String {
        agent
            .logs()
            .lines()
            .filter(|l| {
                l.contains("config applied")
                    || l.contains("re-authorized")
                    || l.contains("closed")
                    || l.contains("WARN")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        closed_us >= applied_us && after < Duration::from_secs(1),
        "closed {} µs after the policy applied (must be < 1 s): {closed}\nnode2:\n{}\nnode1:\n{}",
        closed_us - applied_us,
        relevant(&mesh.agent2),
        relevant(&mesh.agent1)
    );
    // The other identity is not denied: its connection keeps working.
    let before = allowed.replies;
    allowed.until("other keeps going", Duration::from_secs(10), |c| {
        c.replies >= before + 20 || c.closed.is_some()
    })?;
    assert!(allowed.closed.is_none(), "{:?}", allowed.closed);
    // Counted and logged.
    assert_eq!(
        metric(
            &mesh.agent2,
            "mesh_agent_connections_denied_total{workload=\"prod/server\",reason=\"policy_changed\"}"
        )?,
        1
    );
    mesh.agent2.wait_for_log(
        &[
            "live connection closed",
            "denied by AuthorizationPolicy prod/deny-client",
        ],
        Duration::from_secs(5),
    )?;
    // And new connections from the client are refused.
    assert!(!app(&mesh.client, &["connect", SERVICE, "again"])?
        .status
        .success());
    Ok(())
}

#[test]
fn a_policy_change_closes_a_now_denied_kernel_carried_connection_within_a_second(
) -> anyhow::Result<()> {
    let mesh = start_mesh()?;
    let near = format!("{}:{APP_PORT}", mesh.near_ip);
    // The first connection to the same-node pod goes through the agent, which installs its
    // verdict; the next one is carried by the kernel, never seen by the agent.
    assert!(app(&mesh.client, &["connect", &near, "first"])?
        .status
        .success());
    let mut chat = Chat::start(&mesh.client, &near)?;
    chat.until("replies", Duration::from_secs(10), |c| {
        c.replies >= 10 || c.closed.is_some()
    })?;
    assert!(chat.closed.is_none(), "{:?}", chat.closed);
    let fastpath = mesh.agent1.admin_get("/fastpath")?;
    assert!(
        fastpath.contains("\"spliced\": 1"),
        "the chat is not kernel-carried: {fastpath}"
    );

    let applied_us = deny_client(&mesh, &mesh.agent1)?;
    let (closed, closed_us) = chat.closed_at("the kernel-carried connection to close")?;
    let after = closed_us - applied_us;
    eprintln!("kernel-carried connection closed {after} µs after the policy applied: {closed}");
    assert!(
        (0..1_000_000).contains(&after),
        "closed {after} µs after the policy applied (must be < 1 s): {closed}\n{}",
        mesh.agent1.logs()
    );
    assert_eq!(
        metric(
            &mesh.agent1,
            "mesh_agent_connections_denied_total{workload=\"prod/near\",reason=\"policy_changed\"}"
        )?,
        1
    );
    mesh.agent1.wait_for_log(
        &["kernel-carried connection closed", "deny-client"],
        Duration::from_secs(5),
    )?;
    Ok(())
}

#[test]
fn a_dry_run_deny_lets_traffic_pass_and_is_counted() -> anyhow::Result<()> {
    let mesh = start_mesh()?;
    std::fs::write(
        mesh.config_dir.join("shadow.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: shadow, namespace: prod, annotations: {istio.io/dry-run: \"true\"}}\nspec:\n  action: DENY\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/apps/sa/client]}}]\n",
    )?;
    wait_config(&mesh.agent2, "\"dryRun\": true")?;
    for i in 0..3 {
        let got = reply(&mesh.client, SERVICE, &format!("shadowed-{i}"))?;
        assert!(got.contains(&format!("shadowed-{i}")), "{got}");
    }
    assert!(reply(&mesh.other, SERVICE, "not-matched")?.contains("not-matched"));
    let series =
        "mesh_agent_dry_run_decisions_total{workload=\"prod/server\",policy=\"prod/shadow\"";
    assert_eq!(
        metric(&mesh.agent2, &format!("{series},decision=\"deny\"}}"))?,
        3
    );
    assert_eq!(
        metric(&mesh.agent2, &format!("{series},decision=\"allow\"}}"))?,
        1
    );
    // Logged once per burst: one line for the three would-be denials.
    mesh.agent2
        .wait_for_log(
            &[
                "dry-run AuthorizationPolicy evaluated",
                "policy=prod/shadow",
                "would=\"deny\"",
            ],
            Duration::from_secs(5),
        )
        .or_else(|_| {
            mesh.agent2.wait_for_log(
                &[
                    "dry-run AuthorizationPolicy evaluated",
                    "policy=prod/shadow",
                    "would=deny",
                ],
                Duration::from_secs(1),
            )
        })?;
    let logged = mesh
        .agent2
        .logs()
        .lines()
        .filter(|l| l.contains("dry-run AuthorizationPolicy evaluated") && l.contains("deny"))
        .count();
    assert_eq!(logged, 1, "{}", mesh.agent2.logs());
    assert_eq!(
        metric(
            &mesh.agent2,
            "mesh_agent_connections_denied_total{workload=\"prod/server\",reason=\"policy\"}"
        )?,
        0
    );
    Ok(())
}

#[test]
fn what_nothing_enforces_is_refused_and_reported() -> anyhow::Result<()> {
    let mesh = start_mesh()?;
    // Without any policy the service works; the waypoint-assigned one is refused outbound.
    assert!(reply(&mesh.client, SERVICE, "open")?.contains("open"));
    assert!(!app(&mesh.client, &["connect", WALLED, "walled"])?
        .status
        .success());
    assert!(
        metric(
            &mesh.agent1,
            "mesh_agent_connections_denied_total{workload=\"apps/client\",reason=\"waypoint_unavailable\"}"
        )? >= 1
    );
    // Addressed to the pod rather than the service: a pod address of the service's endpoint goes
    // through the service's waypoint too, so the client's agent refuses it the same way (the
    // destination's agent would refuse it inbound: FailSafe's unit tests).
    let walled_ip = mesh.walled_ip.clone();
    assert!(!app(
        &mesh.client,
        &["connect", &format!("{walled_ip}:{APP_PORT}"), "direct"]
    )?
    .status
    .success());
    assert!(
        metric(
            &mesh.agent1,
            "mesh_agent_connections_denied_total{workload=\"apps/client\",reason=\"waypoint_unavailable\"}"
        )? >= 2,
        "{}",
        mesh.agent1.logs()
    );
    // A policy attached to the Service: only a waypoint could enforce it, none runs.
    std::fs::write(
        mesh.config_dir.join("l7.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: l7, namespace: prod}\nspec:\n  targetRefs: [{kind: Service, group: \"\", name: echo}]\n  action: ALLOW\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n",
    )?;
    wait_config(&mesh.agent2, "targetRefs")?;
    assert!(!app(&mesh.client, &["connect", SERVICE, "l7"])?
        .status
        .success());
    mesh.agent2.wait_for_log(
        &[
            "inbound HBONE connection denied",
            "policy prod/l7 targets Service prod/echo: no waypoint runs to enforce it",
        ],
        Duration::from_secs(5),
    )?;
    assert!(
        metric(
            &mesh.agent2,
            "mesh_agent_connections_denied_total{workload=\"prod/server\",reason=\"unenforced_policy\"}"
        )? >= 1
    );
    // The controller says why, on /errors and in the report meshctl status prints.
    let errors = controller_get(&mesh.cluster, "/errors")?;
    for why in [
        "policy prod/l7 targets Service prod/echo: no waypoint runs to enforce it; traffic to it is denied",
        "Service prod/walled uses waypoint prod/wp: no waypoint runs to carry its traffic; traffic to it is denied",
    ] {
        assert!(errors.contains(why), "{why:?} not in {errors}");
    }
    let status = controller_get(&mesh.cluster, "/clients")?;
    assert!(
        status.contains("policy prod/l7 targets Service prod/echo"),
        "{status}"
    );
    Ok(())
}

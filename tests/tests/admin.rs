//! End-to-end: the agent's HTTP listeners as a pod and the kubelet see them, on the local cluster.
//! 15020 serves metrics only (to every pod), 15021 readiness only, admin (15000) is on the node's
//! loopback only; every listener is bounded (connection caps, header-read and idle timeouts).
//!
//! Needs root: each test fails loudly without it. Traffic stays inside the cluster's namespaces.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::{ambient, binary, http_status, ADMIN_PORT, METRICS_PORT};
use mesh_tests::config::{namespace_yaml, pod_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::{json, Value};

/// The agent's default connection cap per listener (`--http-max-connections`).
const MAX_CONNECTIONS: usize = 128;

fn workdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("mesh-admin")
        .tempdir()
        .context("temp dir")
}

/// `method addr path` from `pod`.
fn from_pod(
    pod: &Pod,
    method: &str,
    addr: &str,
    path: &str,
) -> anyhow::Result<Option<(u16, String)>> {
    http_status(|p| pod.command(p), method, addr, path)
}

/// The value of the series `series` (name and labels, exactly) in a Prometheus text.
fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn pods_on_another_node_reach_metrics_only_and_cannot_switch_anything() -> anyhow::Result<()> {
    let dir = workdir()?;
    let mut cluster = Cluster::new(2)?;
    let meshed = cluster.add_pod(1, "apps", "client")?;
    let outsider = cluster.add_pod(1, "legacy", "outsider")?;
    let agent1 = Agent::start(cluster.node(1)?, dir.path(), None)?;
    let agent2 = Agent::start(cluster.node(2)?, dir.path(), None)?;
    agent1.add_pod(&meshed, ambient(), json!({}))?;
    agent1.add_pod(&outsider, json!({}), json!({}))?;
    let node2 = cluster.node(2)?.clone();
    let metrics_addr = format!("{}:{METRICS_PORT}", node2.ip4);

    for pod in [&meshed, &outsider] {
        let who = pod.uid();
        let (code, body) = from_pod(pod, "GET", &metrics_addr, "/metrics")?
            .with_context(|| format!("{who}: no answer from {metrics_addr}/metrics"))?;
        assert_eq!(code, 200, "{who}: GET /metrics: {body}");
        assert!(body.contains("mesh_agent_enrolled_pods"), "{who}: {body}");
        for path in ["/config_dump", "/pods", "/fastpath", "/healthz/ready", "/"] {
            let answer = from_pod(pod, "GET", &metrics_addr, path)?;
            assert_eq!(
                answer.as_ref().map(|(code, _)| *code),
                Some(404),
                "{who}: GET {metrics_addr}{path} answered {answer:?}"
            );
        }
        for path in [
            "/fastpath?enabled=false",
            "/fastpath?splice=true",
            "/metrics",
        ] {
            let answer = from_pod(pod, "POST", &metrics_addr, path)?;
            assert!(
                answer.as_ref().is_some_and(|(code, _)| *code != 200),
                "{who}: POST {metrics_addr}{path} answered {answer:?}"
            );
        }
        // Admin listens on the nodes' loopback only: no address of either node answers.
        for node_addr in [
            node2.ip4.to_string(),
            cluster.node(1)?.ip4.to_string(),
            format!("198.18.{}.1", pod.node),
        ] {
            let addr = format!("{node_addr}:{ADMIN_PORT}");
            let answer = from_pod(pod, "GET", &addr, "/pods")?;
            assert!(answer.is_none(), "{who}: {addr}/pods answered {answer:?}");
            let answer = from_pod(pod, "POST", &addr, "/fastpath?enabled=false")?;
            assert!(answer.is_none(), "{who}: POST {addr} answered {answer:?}");
        }
    }
    // Node 2's fast path is still on, as its own admin (on its loopback) says.
    let fastpath: Value = serde_json::from_str(&agent2.admin_get("/fastpath")?)?;
    assert_eq!(fastpath["enabled"], json!(true), "{fastpath}");
    // The admin endpoint still serves the node itself.
    let pods: Value = serde_json::from_str(&agent1.admin_get("/pods")?)?;
    assert_eq!(pods.as_array().map(Vec::len), Some(2), "{pods}");
    Ok(())
}

#[test]
fn an_admin_address_other_than_loopback_is_refused_at_start() -> anyhow::Result<()> {
    let dir = workdir()?;
    let cluster = Cluster::new(1)?;
    let node = cluster.node(1)?;
    let args = [
        "--admin-addr".to_owned(),
        format!("{}:{ADMIN_PORT}", node.ip4),
    ];
    let err = Agent::start_with(node, dir.path(), None, &args)
        .expect_err("a non-loopback admin address must be refused");
    assert!(
        format!("{err:#}").contains("is not a loopback address"),
        "{err:#}"
    );
    Ok(())
}

/// Polls readiness (at most `timeout`) until `done` holds for its answer; returns the answer.
fn wait_readiness(
    agent: &Agent,
    timeout: Duration,
    done: impl Fn(&Option<(u16, String)>) -> bool,
) -> anyhow::Result<Option<(u16, String)>> {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = agent.readiness()?;
        if done(&answer) {
            return Ok(answer);
        }
        if Instant::now() > deadline {
            bail!(
                "readiness still {answer:?} after {timeout:?}; agent log:\n{}",
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readiness_waits_for_the_config_and_the_pods_certificates() -> anyhow::Result<()> {
    let dir = workdir()?;
    let mut cluster = Cluster::new(1)?;
    let pod = cluster.add_pod(1, "apps", "client")?;
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(
        config_dir.join("mesh.yaml"),
        [
            namespace_yaml("apps", true),
            pod_yaml(&pod, "node1", "client"),
        ]
        .join("---\n"),
    )?;
    // The agent starts while its control plane is down: no config, and no certificate service
    // (the token file is rewritten by the controller when it starts again; the agent re-reads
    // it). The controller runs once first so that the mesh root the agent pins exists.
    let args = {
        let first =
            Controller::start(&cluster, dir.path(), &config_dir, Duration::from_secs(3600))?;
        first.agent_args(dir.path(), "node1")
    };
    std::fs::write(dir.path().join("node1.token"), "not-yet")?;
    // Where the certificate service was, a peer that accepts and never answers: certificate
    // requests hang until their timeout instead of failing at once.
    let mut silent = cluster
        .control_plane_command(&binary("mesh-testapp")?.display().to_string())
        .args(["silent", &mesh_tests::controller::CA_PORT.to_string(), "60"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the silent certificate service")?;
    let agent = Agent::start_with(cluster.node(1)?, dir.path(), None, &args)?;
    let (code, body) = wait_readiness(&agent, Duration::from_secs(10), Option::is_some)?
        .context("readiness answered")?;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("no model applied from the controller"),
        "{body}"
    );

    // A captured pod whose certificate cannot be had (enrolment gives up waiting after 5 s).
    // The registry is not locked while it waits: the enrolment API answers meanwhile.
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let started = Instant::now();
        let adding = scope.spawn(|| agent.add_pod(&pod, ambient(), json!({})));
        // Bounded: the add waits at most 5 s for the certificate.
        let deadline = Instant::now() + Duration::from_secs(4);
        loop {
            let started = Instant::now();
            let listed = agent.request(&json!({"op": "list"}))?;
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "the enrolment API took {took:?} to list pods while a pod waited for its certificate"
            );
            if listed.to_string().contains("apps/client") || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        adding
            .join()
            .map_err(|_| anyhow::anyhow!("add_pod panicked"))??;
        // The add did wait for the certificate (up to 5 s), so the listing above overlapped it.
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "the add returned after {:?}: it did not wait for the certificate",
            started.elapsed()
        );
        Ok(())
    })?;
    let _ = silent.kill();
    let _ = silent.wait();
    let (code, body) = agent.readiness()?.context("readiness answered")?;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("pod apps/client") && body.contains("no valid workload certificate"),
        "{body}"
    );
    assert!(
        body.contains("no model applied from the controller"),
        "{body}"
    );

    // The control plane comes: config applied, certificate issued, then ready.
    let _controller =
        Controller::start(&cluster, dir.path(), &config_dir, Duration::from_secs(3600))?;
    let answer = wait_readiness(&agent, Duration::from_secs(60), |a| {
        a.as_ref().is_some_and(|(code, _)| *code == 200)
    })?;
    assert_eq!(answer.map(|(_, body)| body), Some("ready\n".to_owned()));
    // The admin endpoint answers the same.
    assert_eq!(agent.admin_get("/healthz/ready")?, "ready\n");

    // A departed pod's certificate is forgotten, not renewed forever.
    agent.remove_pod(&pod)?;
    agent.wait_for_log(
        &[
            "certificate forgotten",
            "spiffe://cluster.local/ns/apps/sa/client",
        ],
        Duration::from_secs(5),
    )?;
    Ok(())
}

#[test]
fn a_thousand_idle_connections_leave_the_agent_bounded_and_its_metrics_served() -> anyhow::Result<()>
{
    let dir = workdir()?;
    let mut cluster = Cluster::new(2)?;
    let pod = cluster.add_pod(1, "legacy", "idler")?;
    let agent = Agent::start(cluster.node(2)?, dir.path(), None)?;
    let node2 = cluster.node(2)?.clone();
    let metrics_addr = format!("{}:{METRICS_PORT}", node2.ip4);
    let scrape = || -> anyhow::Result<String> {
        match http_status(|p| node2.command(p), "GET", &metrics_addr, "/metrics")? {
            Some((200, body)) => Ok(body),
            other => bail!("GET /metrics from the node answered {other:?}"),
        }
    };
    scrape()?;
    let before = agent.open_fds()?;

    let mut idler = pod
        .command(&binary("mesh-testapp")?.display().to_string())
        .args(["idle", &metrics_addr, "1000", "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the idle client")?;
    let stdout = idler.stdout.take().context("idle client stdout")?;
    let mut line = String::new();
    // The client prints one line once its connections are open, or exits (closing stdout).
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready 1000" {
        let _ = idler.kill();
        let output = idler.wait_with_output()?;
        bail!(
            "idle client: {line:?} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // While they are open: the agent's descriptors stay within the cap, and the node is served.
    let mut most = 0;
    for _ in 0..10 {
        most = most.max(agent.open_fds()?);
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = scrape()?;
    most = most.max(agent.open_fds()?);
    let refused = series(
        &text,
        "mesh_agent_http_connections_refused_total{listener=\"metrics\",cap=\"peer\"}",
    )
    .unwrap_or(0.0);
    let open = series(
        &text,
        "mesh_agent_http_connections_open{listener=\"metrics\"}",
    );
    if let Some(mut stdin) = idler.stdin.take() {
        let _ = stdin.write_all(b"done\n");
    }
    let _ = idler.wait();
    eprintln!(
        "agent descriptors: {before} before, at most {most} with 1000 idle connections; \
         refused {refused}, open {open:?}"
    );
    assert!(
        most <= before + MAX_CONNECTIONS + 10,
        "descriptors grew from {before} to {most} with 1000 idle connections"
    );
    assert!(refused >= 800.0, "refused {refused}:\n{text}");
    // The idle client's places (one peer) and this scrape.
    assert!(
        open.is_some_and(|open| open <= 17.0),
        "open {open:?}:\n{text}"
    );
    Ok(())
}

//! End-to-end: the mesh's own health metrics, scraped from the real controller's admin
//! `/metrics` and the real agent's, after a known sequence on the local cluster: one agent
//! connects (one full push, acked), one pod is enrolled (one certificate signed, expiring in the
//! future), one of its connections is refused, the configuration changes (one incremental push,
//! acked, one warning fewer), with one configuration error throughout. Every metric name a PromQL
//! expression of `deploy/grafana/mesh-health.json` reads must be in the scraped expositions.
//!
//! Needs root: each test fails loudly without it. Traffic stays inside the cluster's namespaces.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use mesh_common::ports::INBOUND_PLAINTEXT;
use mesh_tests::agent::ambient;
use mesh_tests::app::run as app;
use mesh_tests::config::{namespace_yaml, pod_yaml, replace_file, service_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::promql::{exposition_names, metric_names, sample};
use mesh_tests::{Agent, Cluster};
use serde_json::{json, Value};

const DAY: Duration = Duration::from_secs(24 * 3600);
const WAIT: Duration = Duration::from_secs(10);

/// A VirtualService with a field accepted but not applied yet and a host not in the mesh (until
/// `svc.yaml` adds it): two warnings, then one.
const WARNED: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: cors, namespace: apps}\nspec:\n  hosts: [web.apps.svc.cluster.local]\n  http: [{corsPolicy: {allowOrigins: [{exact: \"https://a\"}]}, route: [{destination: {host: web.apps.svc.cluster.local}}]}]\n";

/// An AuthorizationPolicy with an action that does not exist: one error.
const BROKEN: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: broken, namespace: apps}\nspec: {action: PERMIT}\n";

/// Waits (bounded) until `scrape()` has every `(series, value)` of `want`; returns the last text.
fn wait_series(
    what: &str,
    mut scrape: impl FnMut() -> anyhow::Result<String>,
    want: &[(&str, f64)],
) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape()?;
        let missing: Vec<String> = want
            .iter()
            .filter(|(series, value)| sample(&text, series) != Some(*value))
            .map(|(series, value)| format!("{series} = {value} (got {:?})", sample(&text, series)))
            .collect();
        if missing.is_empty() {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{what}: {missing:#?}\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every PromQL expression of a Grafana dashboard (panels, rows' panels, their targets).
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.to_owned());
            }
        }
    }
    out
}

fn dashboard() -> anyhow::Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/mesh-health.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn controller_metrics(controller: &Controller, cluster: &Cluster) -> anyhow::Result<String> {
    controller.admin_get(cluster, "/metrics")
}

fn agent_metrics(agent: &Agent) -> anyhow::Result<String> {
    agent.admin_get("/metrics")
}

#[test]
fn health_metrics_follow_a_known_sequence_and_cover_the_dashboard() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("mesh-health").tempdir()?;
    let mut cluster = Cluster::new(1)?;
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
    std::fs::write(config_dir.join("warned.yaml"), WARNED)?;
    std::fs::write(config_dir.join("broken.yaml"), BROKEN)?;
    let ControlledMesh { agents, controller } =
        ControlledMesh::start(&cluster, dir.path(), &config_dir, DAY, 1)?;
    let agent = agents.first().context("agent 1")?;
    let from_controller = || controller_metrics(&controller, &cluster);

    // 1. The agent connected: one full push, acked; nobody stale; the configuration's problems.
    let text = wait_series(
        "after the agent connected",
        from_controller,
        &[
            ("mesh_controller_clients_connected{kind=\"agent\"}", 1.0),
            ("mesh_controller_clients_connected{kind=\"waypoint\"}", 0.0),
            ("mesh_controller_clients_stale{kind=\"agent\"}", 0.0),
            (
                "mesh_controller_config_pushes_total{kind=\"agent\",type=\"full\"}",
                1.0,
            ),
            (
                "mesh_controller_config_pushes_total{kind=\"agent\",type=\"incremental\"}",
                0.0,
            ),
            ("mesh_controller_config_acks_total{kind=\"agent\"}", 1.0),
            (
                "mesh_controller_config_push_latency_seconds_count{kind=\"agent\"}",
                1.0,
            ),
            (
                "mesh_controller_config_warnings{kind=\"VirtualService\"}",
                2.0,
            ),
            (
                "mesh_controller_config_errors{kind=\"AuthorizationPolicy\"}",
                1.0,
            ),
            ("mesh_controller_ca_certificates_signed_total", 0.0),
        ],
    )?;
    let nacks: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mesh_controller_config_nacks_total{"))
        .collect();
    ensure!(
        !nacks.is_empty() && nacks.iter().all(|l| l.ends_with(" 0")),
        "no Nack was sent, every series at 0: {nacks:#?}"
    );

    // 2. One pod enrolled: one certificate signed for its identity, expiring within a lifetime.
    agent.add_pod(&pod, ambient(), json!({}))?;
    let identity = "spiffe://cluster.local/ns/apps/sa/client";
    let expiry_series = format!(
        "mesh_controller_ca_certificate_expiry_timestamp_seconds{{identity=\"{identity}\"}}"
    );
    let text = wait_series(
        "after the pod's certificate",
        from_controller,
        &[
            ("mesh_controller_ca_certificates_signed_total", 1.0),
            (
                "mesh_controller_ca_signing_failures_total{reason=\"not_authorized\"}",
                0.0,
            ),
            (
                "mesh_controller_ca_signing_failures_total{reason=\"unauthenticated\"}",
                0.0,
            ),
        ],
    )?;
    let expiry =
        sample(&text, &expiry_series).with_context(|| format!("{expiry_series}:\n{text}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    ensure!(
        expiry > now + DAY.as_secs_f64() - 120.0 && expiry <= now + DAY.as_secs_f64() + 1.0,
        "the certificate expires at {expiry}, now is {now}, lifetime {DAY:?}"
    );
    ensure!(
        text.lines()
            .filter(|l| l.starts_with("mesh_controller_ca_certificate_expiry_timestamp_seconds{"))
            .count()
            == 1,
        "one identity signed:\n{text}"
    );

    // 3. One refused connection: the pod calling an agent port of its own address.
    let target = SocketAddr::new(pod.ip4.into(), INBOUND_PLAINTEXT);
    let out = app(&pod, &["hostile", &target.to_string(), "1"])?;
    ensure!(out.status.success(), "hostile: {:?}", out);
    let version = status_version(&controller, &cluster)?;
    let version_series = format!("mesh_agent_config_version{{version=\"{version}\"}}");
    let agent_text = wait_series(
        "the agent",
        || agent_metrics(agent),
        &[
            ("mesh_agent_enrolled_pods", 1.0),
            (
                "mesh_agent_connections_denied_total{workload=\"apps/client\",reason=\"agent_port\"}",
                1.0,
            ),
            ("mesh_agent_config_connected", 1.0),
            (&version_series, 1.0),
            ("mesh_agent_config_nacks_total", 0.0),
            ("mesh_agent_config_connect_attempts_total", 1.0),
            (
                "mesh_agent_kernel_attach_failures_total{program=\"mesh_connect4\"}",
                0.0,
            ),
            (
                "mesh_agent_kernel_attach_failures_total{program=\"mesh_sk_lookup\"}",
                0.0,
            ),
        ],
    )?;
    let applied = sample(
        &agent_text,
        "mesh_agent_config_last_applied_timestamp_seconds",
    )
    .context("last applied")?;
    ensure!(
        applied > now - 60.0 && applied <= now + 60.0,
        "applied at {applied}, now {now}"
    );

    // 4. The configuration changes: one incremental push, acked, its latency observed.
    replace_file(
        &config_dir,
        "svc.yaml",
        &service_yaml("apps", "web", "10.96.0.20", 80, 8080, "client"),
    )?;
    let text = wait_series(
        "after a configuration change",
        from_controller,
        &[
            (
                "mesh_controller_config_pushes_total{kind=\"agent\",type=\"full\"}",
                1.0,
            ),
            (
                "mesh_controller_config_pushes_total{kind=\"agent\",type=\"incremental\"}",
                1.0,
            ),
            ("mesh_controller_config_acks_total{kind=\"agent\"}", 2.0),
            (
                "mesh_controller_config_push_latency_seconds_count{kind=\"agent\"}",
                2.0,
            ),
            ("mesh_controller_clients_stale{kind=\"agent\"}", 0.0),
            (
                "mesh_controller_config_warnings{kind=\"VirtualService\"}",
                1.0,
            ),
            (
                "mesh_controller_config_errors{kind=\"AuthorizationPolicy\"}",
                1.0,
            ),
        ],
    )?;
    // A push is written within the latency histogram's range (well under 10 s here).
    let within = sample(
        &text,
        "mesh_controller_config_push_latency_seconds_bucket{le=\"10.0\",kind=\"agent\"}",
    )
    .with_context(|| format!("latency bucket:\n{text}"))?;
    ensure!(within == 2.0, "pushes within 10 s: {within}\n{text}");
    let version = status_version(&controller, &cluster)?;
    let version_series = format!("mesh_agent_config_version{{version=\"{version}\"}}");
    let agent_text = wait_series(
        "the agent's new version",
        || agent_metrics(agent),
        &[(&version_series, 1.0)],
    )?;
    ensure!(
        agent_text
            .lines()
            .filter(|l| l.starts_with("mesh_agent_config_version{"))
            .count()
            == 1,
        "one applied version:\n{agent_text}"
    );

    // 5. The dashboard reads only series these expositions have.
    let dashboard = dashboard()?;
    check_dashboard_shape(&dashboard)?;
    let mut exposed = exposition_names(&text);
    exposed.extend(exposition_names(&agent_text));
    let mut used = BTreeSet::new();
    for expr in expressions(&dashboard) {
        let names = metric_names(&expr);
        ensure!(!names.is_empty(), "{expr:?} reads no metric");
        used.extend(names);
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
    ensure!(
        missing.is_empty(),
        "the dashboard reads series that are not exposed: {missing:?}\nexposed: {exposed:?}"
    );
    // Every health metric of the brief has a panel.
    for name in [
        "mesh_controller_config_pushes_total",
        "mesh_controller_config_push_latency_seconds_bucket",
        "mesh_controller_clients_connected",
        "mesh_controller_clients_stale",
        "mesh_controller_config_nacks_total",
        "mesh_controller_ca_certificates_signed_total",
        "mesh_controller_ca_signing_failures_total",
        "mesh_controller_ca_certificate_expiry_timestamp_seconds",
        "mesh_controller_config_errors",
        "mesh_controller_config_warnings",
        "mesh_agent_enrolled_pods",
        "mesh_agent_kernel_attach_failures_total",
        "mesh_agent_connections_denied_total",
        "mesh_agent_config_connected",
        "mesh_agent_config_version",
        "mesh_agent_config_nacks_total",
    ] {
        ensure!(used.contains(name), "no panel reads {name}");
    }
    Ok(())
}

/// The controller's published version (`/clients`).
fn status_version(controller: &Controller, cluster: &Cluster) -> anyhow::Result<String> {
    let status: Value = serde_json::from_str(&controller.admin_get(cluster, "/clients")?)?;
    status["version"]
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("no version in {status}"))
}

/// Schema 39 or later, and every panel and target on the `${datasource}` variable, a
/// Prometheus data source.
fn check_dashboard_shape(dashboard: &Value) -> anyhow::Result<()> {
    let schema = dashboard["schemaVersion"]
        .as_u64()
        .context("schemaVersion")?;
    ensure!(schema >= 39, "schemaVersion {schema}");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .context("templating")?;
    ensure!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable: {variables:?}"
    );
    let expected = json!({"type": "prometheus", "uid": "${datasource}"});
    for panel in dashboard["panels"].as_array().context("panels")? {
        if panel["type"] == "row" {
            continue;
        }
        ensure!(panel["datasource"] == expected, "panel {}", panel["title"]);
        for target in panel["targets"].as_array().context("targets")? {
            ensure!(
                target["datasource"] == expected,
                "a target of {}",
                panel["title"]
            );
        }
    }
    Ok(())
}

//! End-to-end: Istio's standard metrics and the access logs, checked by a real Prometheus
//! server (Debian's `prometheus`) scraping both agents, the waypoint and the controller of a
//! two-node local cluster, and by parsing the access-log file the mesh configuration names.
//!
//! The client (node 1) sends a known set of requests to `reviews` (node 2) through the waypoint:
//! 40 answered, 10 denied by an AuthorizationPolicy (403), 20 aborted by a fault (418); and
//! three 100,000-byte echo streams to the TCP service `echo` (node 2, no waypoint, HBONE between
//! the nodes). Prometheus must then hold exact counts per `response_code` and per source and
//! destination workload, the byte totals on both sides and `connection_security_policy=
//! "mutual_tls"`. Every request and connection of namespace `apps` is an access-log line (JSON,
//! every field), while a Telemetry turning logs off in namespace `quiet` stops the lines of
//! `quiet`'s service (behind the same waypoint) and of `quiet`'s pod only.
//!
//! Needs root and the `prometheus` binary (`cargo xtask setup` installs it): fails loudly
//! without them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::{ambient, binary};
use mesh_tests::config::{namespace_yaml, pod_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::waypoint::{waypoint_yaml, Waypoint, STATUS_PORT};
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::{json, Value};

const HTTP_PORT: u16 = 9080;
const ECHO_PORT: u16 = 7000;
const REVIEWS_IP: &str = "198.19.0.20";
const RATINGS_IP: &str = "198.19.0.21";
const ECHO_IP: &str = "198.19.0.22";
const PROMETHEUS: &str = "127.0.0.1:19090";
const DAY: Duration = Duration::from_secs(24 * 3600);
const STREAM_BYTES: u64 = 100_000;

const POLICY: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: apps}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: apps}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: no-logs, namespace: quiet}
spec:
  accessLogging: [{disabled: true}]
";

struct Mesh {
    client: Pod,
    probe: Pod,
    waypoint: Waypoint,
    agents: Vec<Agent>,
    log_file: PathBuf,
    cluster: Cluster,
    _controller: Controller,
    _dir: tempfile::TempDir,
}

fn mesh_config(log_file: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    accessLogFile: {}\n    accessLogEncoding: JSON\n",
        log_file.display()
    )
}

fn service(namespace: &str, name: &str, ip: &str, port: u16, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}\nspec:\n  clusterIP: {ip}\n  selector: {{app: {name}}}\n  ports: [{{name: port, port: {port}, targetPort: {port}}}]\n")
}

fn start_mesh() -> anyhow::Result<Mesh> {
    mesh_tests::command::require_root()?;
    let prometheus = which("prometheus")
        .context("Debian's `prometheus` is not installed: run `cargo xtask setup`")?;
    let dir = tempfile::Builder::new().prefix("observability").tempdir()?;
    let log_file = dir.path().join("access.log");
    let mut cluster = Cluster::new(2)?;
    let client = cluster.add_pod(1, "apps", "client")?;
    let waypoint_pod = cluster.add_pod(1, "apps", "waypoint")?;
    let probe = cluster.add_pod(1, "quiet", "probe")?;
    let reviews = cluster.add_pod(2, "apps", "reviews")?;
    let echo = cluster.add_pod(2, "apps", "echo")?;
    let ratings = cluster.add_pod(2, "quiet", "ratings")?;
    for (pod, name) in [(&reviews, "reviews"), (&ratings, "ratings")] {
        let mut cmd = pod.command(&binary("mesh-httpapp")?.display().to_string());
        cmd.args(["serve", &HTTP_PORT.to_string(), name]);
        cluster.spawn(cmd)?;
    }
    let mut cmd = echo.command(&binary("mesh-testapp")?.display().to_string());
    cmd.args(["echo", &ECHO_PORT.to_string()]);
    cluster.spawn(cmd)?;
    mesh_tests::command::wait_listening(&reviews, HTTP_PORT)?;
    mesh_tests::command::wait_listening(&ratings, HTTP_PORT)?;
    mesh_tests::command::wait_listening(&echo, ECHO_PORT)?;

    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let use_waypoint = "istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: apps";
    let base = [
        namespace_yaml("apps", true),
        namespace_yaml("quiet", true),
        waypoint_yaml(&waypoint_pod, "node1", "waypoint", "service"),
        pod_yaml(&client, "node1", "client"),
        pod_yaml(&probe, "node1", "probe"),
        pod_yaml(&reviews, "node2", "reviews"),
        pod_yaml(&echo, "node2", "echo"),
        pod_yaml(&ratings, "node2", "ratings"),
        service("apps", "reviews", REVIEWS_IP, HTTP_PORT, use_waypoint),
        service("quiet", "ratings", RATINGS_IP, HTTP_PORT, use_waypoint),
        service("apps", "echo", ECHO_IP, ECHO_PORT, ""),
        mesh_config(&log_file),
    ];
    std::fs::write(config_dir.join("base.yaml"), base.join("---\n"))?;
    std::fs::write(config_dir.join("policy.yaml"), POLICY)?;
    let ControlledMesh { agents, controller } = ControlledMesh::start_with_waypoints(
        &cluster,
        dir.path(),
        &config_dir,
        DAY,
        6,
        &[("apps", "waypoint")],
    )?;
    for (agent, pod, app) in [
        (0, &client, "client"),
        (0, &probe, "probe"),
        (1, &reviews, "reviews"),
        (1, &echo, "echo"),
        (1, &ratings, "ratings"),
    ] {
        agents[agent].add_pod(pod, ambient(), json!({ "app": app }))?;
    }
    let waypoint = Waypoint::start(&waypoint_pod, dir.path(), &controller, "waypoint")?;

    // Prometheus in the control plane's namespace, which reaches the nodes and their pods.
    let targets = |addrs: Vec<String>| serde_json::to_string(&addrs).unwrap_or_default();
    let agent_targets: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("{}:15020", n.ip4))
        .collect();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: agents\n  static_configs: [{{targets: {}}}]\n- job_name: waypoint\n  static_configs: [{{targets: {}}}]\n- job_name: controller\n  static_configs: [{{targets: [\"127.0.0.1:15014\"]}}]\n",
        targets(agent_targets),
        targets(vec![format!("{}:{STATUS_PORT}", waypoint_pod.ip4)]),
    );
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, config)?;
    let mut cmd = cluster.control_plane_command(&prometheus.display().to_string());
    cmd.arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log"))?);
    cluster.spawn(cmd)?;
    Ok(Mesh {
        client,
        probe,
        waypoint,
        agents,
        log_file,
        cluster,
        _controller: controller,
        _dir: dir,
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

impl Mesh {
    fn diagnostics(&self) -> String {
        let mut out = format!("--- waypoint\n{}", self.waypoint.logs());
        for agent in &self.agents {
            out.push_str(&format!("--- agent {}\n{}", agent.node.name, agent.logs()));
        }
        out
    }

    /// A PromQL instant query: each series' labels and value.
    fn query(&self, promql: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
        let out = self
            .cluster
            .control_plane_command("curl")
            .args(["-s", "-m", "5", "-G", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://{PROMETHEUS}/api/v1/query"))
            .output()
            .context("running curl")?;
        let body: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "Prometheus answer: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        if body["status"] != "success" {
            bail!("query {promql}: {body}");
        }
        let mut series = Vec::new();
        for item in body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(item["metric"].clone()).unwrap_or_default();
            let value = item["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .context("sample value")?;
            series.push((labels, value));
        }
        Ok(series)
    }

    /// Waits (at most 60 s) until `promql` gives exactly `expected`: label value of `by` to
    /// value (`by` empty: one series, keyed "").
    fn wait_query(&self, promql: &str, by: &str, expected: &[(&str, f64)]) -> anyhow::Result<()> {
        let expected: BTreeMap<String, f64> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: BTreeMap<String, f64> = self
                .query(promql)?
                .into_iter()
                .map(|(labels, v)| (labels.get(by).cloned().unwrap_or_default(), v))
                .collect();
            if got == expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{promql}: got {got:?}, expected {expected:?}\n{}",
                    self.diagnostics()
                );
            }
            sleep(Duration::from_millis(250));
        }
    }
}

fn httpapp(pod: &Pod, args: &[&str]) -> anyhow::Result<Output> {
    pod.command(&binary("mesh-httpapp")?.display().to_string())
        .args(args)
        .output()
        .context("running mesh-httpapp")
}

/// `load` from `pod`: `n` GETs one after another; the count per status.
fn load(pod: &Pod, url: &str, n: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let out = httpapp(pod, &["load", url, &n.to_string(), "--concurrency", "1"])?;
    if !out.status.success() {
        bail!("load {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("load output")?;
    Ok(serde_json::from_value(v["statuses"].clone()).unwrap_or_default())
}

fn stream(pod: &Pod, addr: &str, bytes: u64) -> anyhow::Result<()> {
    let out = pod
        .command(&binary("mesh-testapp")?.display().to_string())
        .args(["stream", addr, &bytes.to_string()])
        .output()
        .context("running mesh-testapp")?;
    if !out.status.success() {
        bail!(
            "stream to {addr}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Waits (at most 30 s) until the waypoint answers for `quiet`'s `ratings` (whose requests the
/// checks below do not count exactly); returns how many were answered 200 on the way.
fn wait_ready(mesh: &Mesh) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = load(
            &mesh.client,
            &format!("http://{RATINGS_IP}:{HTTP_PORT}/"),
            1,
        )?;
        if let Some(n) = statuses.get("200") {
            return Ok(*n);
        }
        if Instant::now() > deadline {
            bail!(
                "the waypoint never answered: {statuses:?}\n{}",
                mesh.diagnostics()
            );
        }
        sleep(Duration::from_millis(100));
    }
}

/// The access-log lines written so far, each parsed as JSON.
fn log_lines(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("access-log line {l:?}")))
        .collect()
}

#[test]
fn prometheus_sees_exact_istio_series_and_the_access_log_every_request() -> anyhow::Result<()> {
    let mesh = start_mesh()?;
    let ready = wait_ready(&mesh)? as f64;
    let reviews = format!("http://{REVIEWS_IP}:{HTTP_PORT}");
    assert_eq!(
        load(&mesh.client, &format!("{reviews}/"), 40)?.get("200"),
        Some(&40)
    );
    assert_eq!(
        load(&mesh.client, &format!("{reviews}/admin"), 10)?.get("403"),
        Some(&10)
    );
    assert_eq!(
        load(&mesh.client, &format!("{reviews}/abort"), 20)?.get("418"),
        Some(&20)
    );
    let ratings = format!("http://{RATINGS_IP}:{HTTP_PORT}/");
    assert_eq!(load(&mesh.client, &ratings, 5)?.get("200"), Some(&5));
    let echo = format!("{ECHO_IP}:{ECHO_PORT}");
    for _ in 0..3 {
        stream(&mesh.client, &echo, STREAM_BYTES)?;
    }
    stream(&mesh.probe, &echo, 1000)?;

    // Every target is scraped.
    mesh.wait_query(
        "sum by (job) (up)",
        "job",
        &[("agents", 2.0), ("controller", 1.0), ("waypoint", 1.0)],
    )?;

    // Requests by status at the waypoint.
    let aborted = 20.0;
    mesh.wait_query(
        "sum by (response_code) (istio_requests_total{reporter=\"waypoint\",destination_service_name=\"reviews\"})",
        "response_code",
        &[("200", 40.0), ("403", 10.0), ("418", aborted)],
    )?;
    mesh.wait_query(
        "sum by (response_flags) (istio_requests_total{reporter=\"waypoint\",response_code=\"418\"})",
        "response_flags",
        &[("FI", aborted)],
    )?;
    // Per source and destination workload: the answered ones reached `reviews`.
    mesh.wait_query(
        "sum by (destination_workload) (istio_requests_total{reporter=\"waypoint\",source_workload=\"client\",source_workload_namespace=\"apps\",destination_service_namespace=\"apps\"})",
        "destination_workload",
        &[("reviews", 40.0), ("unknown", 10.0 + aborted)],
    )?;
    mesh.wait_query(
        "sum by (connection_security_policy) (istio_requests_total{reporter=\"waypoint\",destination_service_name=\"reviews\"})",
        "connection_security_policy",
        &[("mutual_tls", 50.0 + aborted)],
    )?;
    // `quiet`'s metrics are kept (only its logs are off).
    mesh.wait_query(
        "sum by (destination_service_namespace) (istio_requests_total{reporter=\"waypoint\",destination_service_name=\"ratings\",response_code=\"200\"})",
        "destination_service_namespace",
        &[("quiet", 5.0 + ready)],
    )?;
    mesh.wait_query(
        "sum(istio_request_bytes_count{reporter=\"waypoint\",destination_service_name=\"reviews\"})",
        "",
        &[("", 50.0 + aborted)],
    )?;

    // TCP: exact bytes on both sides, mutual TLS at the destination.
    let total = 3.0 * STREAM_BYTES as f64;
    for metric in [
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    ] {
        mesh.wait_query(
            &format!("sum by (reporter) ({metric}{{source_workload=\"client\",destination_service_name=\"echo\"}})"),
            "reporter",
            &[("destination", total), ("source", total)],
        )?;
    }
    mesh.wait_query(
        "sum by (reporter) (istio_tcp_connections_opened_total{source_workload=\"client\",destination_service_name=\"echo\"})",
        "reporter",
        &[("destination", 3.0), ("source", 3.0)],
    )?;
    mesh.wait_query(
        "sum by (connection_security_policy) (istio_tcp_connections_closed_total{reporter=\"destination\",destination_workload=\"echo\"})",
        "connection_security_policy",
        &[("mutual_tls", 4.0)],
    )?;

    // The access log: JSON lines with every field, for `apps` only.
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines = log_lines(&mesh.log_file)?;
        let requests = lines.iter().filter(|l| !l["method"].is_null()).count();
        // reviews: 70 requests at the waypoint; echo: 3 outbound + 4 inbound lines.
        let connections = lines
            .iter()
            .filter(|l| {
                l["upstream_host"]
                    .as_str()
                    .is_some_and(|h| h.ends_with(&format!(":{ECHO_PORT}")))
            })
            .count();
        if (requests >= 70 && connections >= 7) || Instant::now() > deadline {
            break lines;
        }
        sleep(Duration::from_millis(100));
    };
    let fields = [
        "start_time",
        "method",
        "path",
        "protocol",
        "response_code",
        "response_flags",
        "bytes_received",
        "bytes_sent",
        "duration",
        "upstream_host",
        "upstream_cluster",
        "downstream_remote_address",
        "downstream_local_address",
        "source_principal",
        "destination_principal",
        "source_workload",
        "destination_workload",
        "upstream_request_attempt_count",
        "request_id",
        "trace_id",
        "authority",
    ];
    let requests: Vec<&Value> = lines.iter().filter(|l| !l["method"].is_null()).collect();
    let mut by_code: BTreeMap<String, u64> = BTreeMap::new();
    for line in &requests {
        for field in fields {
            assert!(line.get(field).is_some(), "{field} missing from {line}");
        }
        assert_eq!(
            line["source_principal"], "spiffe://cluster.local/ns/apps/sa/client",
            "{line}"
        );
        assert!(line["request_id"].is_string(), "{line}");
        assert!(
            line["authority"]
                .as_str()
                .is_some_and(|a| !a.starts_with(RATINGS_IP)),
            "no line for `quiet`'s service: {line}"
        );
        *by_code
            .entry(line["response_code"].to_string())
            .or_default() += 1;
    }
    assert_eq!(by_code.get("200"), Some(&40), "{by_code:?}");
    assert_eq!(by_code.get("403"), Some(&10), "{by_code:?}");
    assert_eq!(
        by_code.get("418").map(|n| *n as f64),
        Some(aborted),
        "{by_code:?}"
    );
    let answered = requests
        .iter()
        .find(|l| l["response_code"] == 200)
        .context("an answered request")?;
    assert_eq!(
        answered["destination_principal"], "spiffe://cluster.local/ns/apps/sa/reviews",
        "{answered}"
    );
    assert_eq!(
        answered["destination_workload"], "apps/reviews",
        "{answered}"
    );
    assert_eq!(answered["upstream_request_attempt_count"], 1, "{answered}");
    assert!(
        answered["upstream_host"]
            .as_str()
            .is_some_and(|h| h.ends_with(":9080")),
        "{answered}"
    );

    // Connections: the client's outbound lines (dialed the VIP) and echo's inbound lines (all
    // four, the probe's included: `echo` is in `apps`); none from the probe's own agent.
    let vip = format!("{ECHO_IP}:{ECHO_PORT}");
    let conns: Vec<&Value> = lines.iter().filter(|l| l["method"].is_null()).collect();
    let outbound = |workload: &str| {
        conns
            .iter()
            .filter(|l| {
                l["downstream_local_address"] == vip.as_str() && l["source_workload"] == workload
            })
            .count()
    };
    let inbound = |workload: &str| {
        conns
            .iter()
            .filter(|l| {
                l["downstream_local_address"] != vip.as_str()
                    && l["destination_workload"] == "apps/echo"
                    && l["source_workload"] == workload
            })
            .count()
    };
    assert_eq!(outbound("apps/client"), 3, "{conns:#?}");
    assert_eq!(inbound("apps/client"), 3, "{conns:#?}");
    assert_eq!(
        outbound("quiet/probe"),
        0,
        "logs are off in `quiet`: {conns:#?}"
    );
    assert_eq!(inbound("quiet/probe"), 1, "`apps` still logs: {conns:#?}");
    let streamed = conns
        .iter()
        .find(|l| l["downstream_local_address"] == vip.as_str())
        .context("an outbound line")?;
    assert_eq!(streamed["bytes_received"], STREAM_BYTES, "{streamed}");
    assert_eq!(streamed["bytes_sent"], STREAM_BYTES, "{streamed}");
    Ok(())
}

//! `cargo xtask demo`: the mesh on a local two-node cluster.
//!
//! Builds the cluster (network namespaces, veths, cgroups), starts the controller (config from a
//! directory of Istio/Kubernetes YAML, certificate authority; both served over TLS to agents
//! that pin its root and authenticate with their node token) and one agent per node, enrols the
//! pods, and shows what the mesh does: capture by eBPF, the mTLS tunnel between nodes with
//! workload identities, an AuthorizationPolicy at work, the trust boundaries a pod meets (the
//! agent's own ports refused, only metrics served to the network), the agent's metrics, and a
//! waypoint for the `shop` namespace routing HTTP by header and splitting 90/10 (counted by the
//! demo), then making a flaky upstream (every second request a 503) look healthy with retries
//! and cutting a slow one (1 s) with a 200 ms timeout, measured and checked by the demo.
//! Everything is torn down at the end.

use std::time::Duration;

use mesh_tests::agent::ambient;
use mesh_tests::config::{namespace_yaml, pod_yaml, service_yaml};
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::waypoint::{waypoint_yaml, Waypoint};
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::json;

const SERVICE_VIP: &str = "198.19.0.10";
const APP_PORT: u16 = 9080;
/// The `shop/ratings` service (two versions, HTTP), behind the waypoint.
const RATINGS_VIP: &str = "198.19.0.11";
const RATINGS_PORT: u16 = 8080;

/// Istio's Bookinfo routing task, on `ratings`: `end-user: jason` to v2, everyone else to v1.
const RATINGS_BY_USER: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: ratings, subset: v2}}]
  - route: [{destination: {host: ratings, subset: v1}}]
";

/// A 90/10 canary.
const RATINGS_CANARY: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - route:
    - {destination: {host: ratings, subset: v1}, weight: 90}
    - {destination: {host: ratings, subset: v2}, weight: 10}
";

/// `ratings` to the flaky v3 (every second request answered 503), retries off (Istio's
/// `attempts: 0`, so no default policy applies either).
const RATINGS_FLAKY: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings, subset: v3}}]
    retries: {attempts: 0}
";

/// The same with up to 3 retries on a 5xx.
const RATINGS_FLAKY_RETRIED: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings, subset: v3}}]
    retries: {attempts: 3, retryOn: 5xx}
";

/// `ratings` to v1 with a 200 ms route timeout.
const RATINGS_TIMEOUT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings, subset: v1}}]
    timeout: 200ms
";

/// The least share of 200s the retries must reach, and the band the flaky upstream alone must
/// land in (it fails exactly every second request).
const MIN_RETRIED_SUCCESS: f64 = 0.99;
const FLAKY_SUCCESS: std::ops::RangeInclusive<f64> = 0.40..=0.60;
/// How long the slow upstream takes, the route timeout, and the most a cut request may take.
const SLOW_MS: u64 = 1000;
const TIMEOUT_MS: f64 = 200.0;
const MAX_CUT_MS: f64 = 700.0;

/// `mesh-httpapp load <url> <n> --concurrency <c>` from `pod`: its one JSON line.
fn load(pod: &Pod, url: &str, n: u32, concurrency: u32) -> anyhow::Result<serde_json::Value> {
    let out = pod
        .command(
            &mesh_tests::agent::binary("mesh-httpapp")?
                .display()
                .to_string(),
        )
        .args([
            "load",
            url,
            &n.to_string(),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "mesh-httpapp load {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "mesh-httpapp load {url} printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// How many of a `load` run's requests were answered with `status`.
fn answered(run: &serde_json::Value, status: u16) -> u64 {
    run["statuses"][status.to_string()].as_u64().unwrap_or(0)
}

/// The share of `n` requests answered 200, and a line saying so.
fn success_share(run: &serde_json::Value, n: u32) -> (f64, String) {
    let ok = answered(run, 200);
    let share = ok as f64 / f64::from(n.max(1));
    let line = format!(
        "{ok}/{n} answered 200 ({:.1} %), statuses {}, errors {}",
        share * 100.0,
        run["statuses"],
        run["errors"]
    );
    (share, line)
}

/// Shows retries absorbing a flaky upstream and a timeout cutting a slow one, and checks both.
fn resilience(
    config_dir: &std::path::Path,
    waypoint: &Waypoint,
    client: &Pod,
) -> anyhow::Result<()> {
    const N: u32 = 200;
    let url = format!("http://{RATINGS_VIP}:{RATINGS_PORT}/ratings/0");
    // One request at a time: the upstream fails every second request it sees, so a retry
    // lands on a good one; concurrent clients would interleave the tries.
    set_ratings_routes(config_dir, waypoint, RATINGS_FLAKY)?;
    println!("  ratings-v3 fails every second request (mesh-httpapp serve --fail-percent 50)");
    let (without, line) = success_share(&load(client, &url, N, 1)?, N);
    println!("  VirtualService ratings -> v3, retries {{attempts: 0}}:              {line}");
    set_ratings_routes(config_dir, waypoint, RATINGS_FLAKY_RETRIED)?;
    let (with, line) = success_share(&load(client, &url, N, 1)?, N);
    println!("  VirtualService ratings -> v3, retries {{attempts: 3, retryOn: 5xx}}: {line}");
    anyhow::ensure!(
        FLAKY_SUCCESS.contains(&without),
        "without retries {:.1} % of the requests to the flaky upstream succeeded; it fails every \
         second one, so about 50 % were due",
        without * 100.0
    );
    anyhow::ensure!(
        with >= MIN_RETRIED_SUCCESS,
        "with 3 retries on 5xx only {:.1} % of the requests succeeded (at least {:.0} % due): \
         the waypoint did not retry the 503s",
        with * 100.0,
        MIN_RETRIED_SUCCESS * 100.0
    );

    // v1 answers /delay/<ms> after that long: first with no timeout (anyone goes to v1), then
    // with one.
    let slow = format!("http://{RATINGS_VIP}:{RATINGS_PORT}/delay/{SLOW_MS}");
    set_ratings_routes(config_dir, waypoint, RATINGS_BY_USER)?;
    let before = load(client, &slow, 1, 1)?;
    set_ratings_routes(config_dir, waypoint, RATINGS_TIMEOUT)?;
    let cut = load(client, &slow, 1, 1)?;
    let cut_ms = cut["max_ms"].as_f64().unwrap_or(f64::NAN);
    println!(
        "  GET /delay/{SLOW_MS} (v1 answers after {SLOW_MS} ms), no route timeout: statuses {} after {} ms",
        before["statuses"], before["max_ms"]
    );
    println!(
        "  the same with VirtualService timeout: 200ms:               statuses {} after {} ms",
        cut["statuses"], cut["max_ms"]
    );
    let before_ms = before["max_ms"].as_f64().unwrap_or(f64::NAN);
    anyhow::ensure!(
        answered(&before, 200) == 1 && before_ms >= SLOW_MS as f64,
        "with no route timeout the slow request was answered {} after {before_ms} ms (a 200 \
         after at least {SLOW_MS} ms was due)",
        before["statuses"]
    );
    anyhow::ensure!(
        answered(&cut, 504) == 1,
        "with a 200 ms route timeout the 1 s request was answered {} (a 504 was due)",
        cut["statuses"]
    );
    anyhow::ensure!(
        (TIMEOUT_MS..=MAX_CUT_MS).contains(&cut_ms),
        "the 504 came after {cut_ms} ms (between {TIMEOUT_MS} and {MAX_CUT_MS} ms was due)"
    );
    Ok(())
}

/// `n` HTTP requests from `pod` on one keep-alive connection (`mesh-httpapp count`): which
/// server answered how often.
fn count(pod: &Pod, url: &str, n: u32, header: Option<&str>) -> anyhow::Result<String> {
    let n = n.to_string();
    let mut args = vec!["count", url, n.as_str()];
    if let Some(h) = header {
        args.extend(["-H", h]);
    }
    let out = pod
        .command(
            &mesh_tests::agent::binary("mesh-httpapp")?
                .display()
                .to_string(),
        )
        .args(&args)
        .output()?;
    let counted: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "mesh-httpapp count: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(counted["servers"].to_string())
}

/// Writes the `ratings` routes and waits (at most 10 s) until the waypoint applied them.
fn set_ratings_routes(
    config_dir: &std::path::Path,
    waypoint: &Waypoint,
    yaml: &str,
) -> anyhow::Result<()> {
    let before = waypoint.logs().matches("config applied").count();
    mesh_tests::config::replace_file(config_dir, "ratings-routes.yaml", yaml)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while waypoint.logs().matches("config applied").count() <= before {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the waypoint did not apply the routes within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn call(pod: &Pod, addr: &str, message: &str) -> anyhow::Result<String> {
    let out = mesh_tests::app::run(pod, &["connect", addr, message])?;
    Ok(if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        format!("REFUSED ({})", String::from_utf8_lossy(&out.stderr).trim())
    })
}

/// The value of label `name` in a Prometheus text line, `-` when absent.
fn label<'l>(line: &'l str, name: &str) -> &'l str {
    let key = format!("{name}=\"");
    line.find(&key)
        .map(|at| &line[at + key.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("-")
}

/// Prints the waypoint's `istio_requests_total` series (a few of Istio's labels each) and the
/// last waypoint lines of the access log; fails when either is missing.
fn observability(waypoint: &Waypoint, access_log: &std::path::Path) -> anyhow::Result<()> {
    let metrics = waypoint.status_get("/metrics")?.unwrap_or_default();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    if series.is_empty() {
        anyhow::bail!("the waypoint exports no istio_requests_total series");
    }
    for line in &series {
        println!(
            "  istio_requests_total{{source_workload=\"{}\", destination_workload=\"{}\", destination_service_name=\"{}\", response_code=\"{}\", response_flags=\"{}\", connection_security_policy=\"{}\"}} {}",
            label(line, "source_workload"),
            label(line, "destination_workload"),
            label(line, "destination_service_name"),
            label(line, "response_code"),
            label(line, "response_flags"),
            label(line, "connection_security_policy"),
            line.rsplit(' ').next().unwrap_or("?"),
        );
    }
    let text = std::fs::read_to_string(access_log).unwrap_or_default();
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"method\":\""))
        .collect();
    println!(
        "  access log {}: {} lines, {} of them requests at the waypoint; the last two:",
        access_log.display(),
        text.lines().count(),
        requests.len()
    );
    if requests.is_empty() {
        anyhow::bail!("the access log has no request line");
    }
    for line in requests.iter().rev().take(2).rev() {
        println!("  {line}");
    }
    Ok(())
}

fn show_logs(agent: &Agent, needles: &[&str]) {
    for line in agent
        .logs()
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
    {
        let line = line.split_once("  ").map_or(line, |(_, rest)| rest).trim();
        println!("  [{}] {line}", agent.node.name);
    }
}

/// Runs the demo.
pub fn run() -> anyhow::Result<()> {
    crate::sh::step("local cluster: 2 nodes, 7 pods (network namespaces + cgroups)");
    let dir = tempfile::Builder::new().prefix("mesh-demo").tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let reviews = cluster.add_pod(2, "shop", "reviews")?;
    mesh_tests::app::serve(&mut cluster, &reviews, APP_PORT, "reviews")?;
    let productpage = cluster.add_pod(1, "shop", "productpage")?;
    let batch = cluster.add_pod(1, "legacy", "batch")?;
    let ratings_v1 = cluster.add_pod(2, "shop", "ratings-v1")?;
    let ratings_v2 = cluster.add_pod(2, "shop", "ratings-v2")?;
    let ratings_v3 = cluster.add_pod(2, "shop", "ratings-v3")?;
    let waypoint_pod = cluster.add_pod(1, "shop", "waypoint")?;
    for (pod, faults) in [
        (&ratings_v1, &[][..]),
        (&ratings_v2, &[]),
        (&ratings_v3, &["--fail-percent", "50"]),
    ] {
        let mut cmd = pod.command(
            &mesh_tests::agent::binary("mesh-httpapp")?
                .display()
                .to_string(),
        );
        cmd.args(["serve", &RATINGS_PORT.to_string(), &pod.name])
            .args(faults)
            .stdout(std::process::Stdio::null());
        cluster.spawn(cmd)?;
        mesh_tests::command::wait_listening(pod, RATINGS_PORT)?;
    }
    let ratings_pod_yaml = |pod: &Pod, version: &str| {
        pod_yaml(pod, "node2", "ratings").replace(
            "labels: {app: ratings}",
            &format!("labels: {{app: ratings, version: {version}}}"),
        )
    };

    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let access_log = dir.path().join("access.log");
    let config = [
        namespace_yaml("shop", true),
        namespace_yaml("legacy", false),
        service_yaml("shop", "reviews", SERVICE_VIP, 80, APP_PORT, "reviews"),
        pod_yaml(&reviews, "node2", "reviews"),
        pod_yaml(&productpage, "node1", "productpage"),
        pod_yaml(&batch, "node1", "batch"),
        ratings_pod_yaml(&ratings_v1, "v1"),
        ratings_pod_yaml(&ratings_v2, "v2"),
        ratings_pod_yaml(&ratings_v3, "v3"),
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: ratings, namespace: shop, labels: {{istio.io/use-waypoint: waypoint}}}}\nspec:\n  clusterIP: {RATINGS_VIP}\n  selector: {{app: ratings}}\n  ports: [{{name: http, port: {RATINGS_PORT}, targetPort: {RATINGS_PORT}}}]\n"),
        waypoint_yaml(&waypoint_pod, "node1", "waypoint", "service"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings, namespace: shop}\nspec:\n  host: ratings\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v3}}\n".to_owned(),
        // Istio's mesh configuration: every agent and waypoint writes a JSON access-log line
        // per connection and request to one file.
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    accessLogFile: {}\n    accessLogEncoding: JSON\n", access_log.display()),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: reviews-viewers, namespace: shop}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/shop/sa/productpage]}}]\n".to_owned(),
    ]
    .join("---\n");
    std::fs::write(config_dir.join("mesh.yaml"), &config)?;
    println!("  config ({}):", config_dir.join("mesh.yaml").display());
    for line in config
        .lines()
        .filter(|l| l.starts_with("kind:") || l.starts_with("metadata:"))
    {
        println!("    {line}");
    }

    crate::sh::step(
        "control plane (config stream + CA, TLS only, node tokens) and one agent per node (pinning the CA root)",
    );
    let mesh = ControlledMesh::start_with_waypoints(
        &cluster,
        dir.path(),
        &config_dir,
        Duration::from_secs(24 * 3600),
        7,
        &[("shop", "waypoint")],
    )?;
    let agents = &mesh.agents;
    let (agent1, agent2) = (&agents[0], &agents[1]);
    for (agent, pod, namespace_labels) in [
        (agent2, &reviews, ambient()),
        (agent1, &productpage, ambient()),
        (agent1, &batch, json!({})),
        (agent2, &ratings_v1, ambient()),
        (agent2, &ratings_v2, ambient()),
        (agent2, &ratings_v3, ambient()),
    ] {
        let app = pod.name.split('-').next().unwrap_or(&pod.name);
        let response = agent.add_pod(pod, namespace_labels, json!({"app": app}))?;
        let state = if response["captured"] == json!(true) {
            format!(
                "in the mesh, spiffe://cluster.local/ns/{}/sa/{}",
                pod.namespace, pod.name
            )
        } else {
            "outside the mesh".to_owned()
        };
        println!(
            "  {:<18} node{} {:<13} {state}",
            pod.uid(),
            pod.node,
            pod.ip4
        );
    }

    crate::sh::step(&format!(
        "shop/productpage calls the reviews service at {SERVICE_VIP}:80"
    ));
    println!(
        "  reply: {}",
        call(&productpage, &format!("{SERVICE_VIP}:80"), "GET /reviews/1")?
    );
    crate::sh::step("legacy/batch (no identity) calls the reviews pod directly");
    println!(
        "  reply: {}",
        call(
            &batch,
            &format!("{}:{APP_PORT}", reviews.ip4),
            "GET /reviews/2"
        )?
    );

    crate::sh::step("trust boundaries: what a pod on the network cannot do");
    println!(
        "  legacy/batch -> the agent's own port {}:15006: {}",
        reviews.ip4,
        call(&batch, &format!("{}:15006", reviews.ip4), "loop?")?
    );
    let node2 = format!(
        "{}:{}",
        cluster.node(2)?.ip4,
        mesh_tests::agent::METRICS_PORT
    );
    for path in ["/metrics", "/config_dump"] {
        let answer = mesh_tests::agent::http_status(|p| batch.command(p), "GET", &node2, path)?;
        let code = answer.map_or("no answer".to_owned(), |(code, _)| code.to_string());
        println!("  legacy/batch -> GET {node2}{path}: {code}");
    }
    println!("  (15020 serves metrics only; admin stays on each node's loopback 15000)");

    std::thread::sleep(Duration::from_millis(200));
    crate::sh::step("what the agents saw");
    let needles = [
        "connection captured",
        "HBONE connection",
        "plaintext connection",
        "refused (logged once per burst)",
        "mesh_ebpf",
    ];
    show_logs(agent1, &needles);
    show_logs(agent2, &needles);
    crate::sh::step("node1 agent metrics (excerpt of /metrics)");
    for line in agent1
        .admin_get("/metrics")?
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("mesh_agent_"))
    {
        println!("  {line}");
    }
    crate::sh::step(
        "a waypoint for shop's ratings service: L7 routing (Istio's Bookinfo routing task)",
    );
    let waypoint = Waypoint::start(&waypoint_pod, dir.path(), &mesh.controller, "waypoint")?;
    println!(
        "  waypoint shop/waypoint running in pod {} ({}), identity spiffe://cluster.local/ns/shop/sa/waypoint",
        waypoint_pod.uid(),
        waypoint_pod.ip4
    );
    set_ratings_routes(&config_dir, &waypoint, RATINGS_BY_USER)?;
    let url = format!("http://{RATINGS_VIP}:{RATINGS_PORT}/ratings/0");
    println!("  VirtualService ratings: end-user: jason -> v2, everyone else -> v1");
    println!(
        "  100 requests as jason:   {}",
        count(&productpage, &url, 100, Some("end-user: jason"))?
    );
    println!(
        "  100 requests as anyone:  {}",
        count(&productpage, &url, 100, None)?
    );
    set_ratings_routes(&config_dir, &waypoint, RATINGS_CANARY)?;
    println!("  VirtualService ratings: 90 % to v1, 10 % to v2");
    println!(
        "  1000 requests:           {}",
        count(&productpage, &url, 1000, None)?
    );
    println!(
        "  legacy/batch (outside the mesh) -> ratings-v1 pod directly: {}",
        call(
            &batch,
            &format!("{}:{RATINGS_PORT}", ratings_v1.ip4),
            "GET / HTTP/1.0"
        )?
    );
    println!("  (a pod behind the waypoint admits only the waypoint: nothing goes around it)");
    crate::sh::step(
        "the waypoint's resilience: retries absorb a flaky upstream, a timeout cuts a slow one",
    );
    resilience(&config_dir, &waypoint, &productpage)?;
    crate::sh::step("what the waypoint reported: Istio's metrics (excerpt) and the access log");
    observability(&waypoint, &access_log)?;

    drop(waypoint);
    drop(mesh);
    cluster.teardown()?;
    println!("\ndemo done: cluster removed");
    Ok(())
}

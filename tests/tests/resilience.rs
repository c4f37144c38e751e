//! End-to-end: the waypoint's resilience layers on a one-node local cluster with the real
//! controller, an agent and a `mesh-waypoint` instance; clients and servers are `mesh-httpapp`
//! in meshed pods (client → agent → waypoint → agent → server over HBONE).
//!
//! A 200 ms route timeout cuts a 1 s upstream (504 `UT`); 3 retries on 5xx turn an upstream
//! failing every second request into ≥ 99% successes with the attempts logged; the retry budget
//! keeps a 100%-failing upstream from getting much more than its load (`URX`); a 30% abort gives
//! 30 ± 4% of its status over 2,000 requests (`FI`); a 2 s delay for `end-user: jason` delays
//! only those, within 20 ms (`DI`); `maxConnections: 1` with `http1MaxPendingRequests: 1` gives
//! 20 concurrent clients fast 503 `UO`s and the upstream never more than one connection; a
//! mirror gets every request while the client sees only the primary's answers, and a mirror
//! that sleeps 1 s adds nothing to the primary's p99.
//!
//! Needs root: each test fails loudly without it.

use std::path::PathBuf;
use std::process::Output;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::{ambient, binary};
use mesh_tests::config::{namespace_yaml, pod_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::waypoint::{waypoint_yaml, Waypoint};
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::{json, Value};

const PORT: u16 = 9080;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The servers: (pod and service name, service address, extra `serve` flags).
const SERVERS: [(&str, &str, &[&str]); 6] = [
    ("reviews", "198.19.0.20", &[]),
    ("flaky", "198.19.0.40", &["--fail-percent", "50"]),
    ("broken", "198.19.0.41", &["--fail-percent", "100"]),
    ("limited", "198.19.0.42", &["--delay-ms", "100"]),
    ("shadow", "198.19.0.43", &["--delay-ms", "1000"]),
    ("mirrored", "198.19.0.44", &[]),
];

const ROUTES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: apps}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {delay: {fixedDelay: 2s, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 30}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /delay}}]
    timeout: 200ms
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: apps}
spec:
  hosts: [flaky]
  http:
  - retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: flaky}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: apps}
spec:
  hosts: [broken]
  http:
  - retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: broken}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: limited, namespace: apps}
spec:
  hosts: [limited]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: limited}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: limited, namespace: apps}
spec:
  host: limited.apps.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mirrored, namespace: apps}
spec:
  hosts: [mirrored]
  http:
  - route: [{destination: {host: mirrored}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 100}
";

struct Mesh {
    client: Pod,
    servers: Vec<Pod>,
    waypoint: Waypoint,
    agents: Vec<Agent>,
    _controller: Controller,
    _config_dir: PathBuf,
    _cluster: Cluster,
    _dir: tempfile::TempDir,
}

fn start_mesh(prefix: &str) -> anyhow::Result<Mesh> {
    mesh_tests::command::require_root()?;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let mut cluster = Cluster::new(1)?;
    let client = cluster.add_pod(1, "apps", "client")?;
    let waypoint_pod = cluster.add_pod(1, "apps", "waypoint")?;
    let mut servers = Vec::new();
    for (name, _, flags) in SERVERS {
        let pod = cluster.add_pod(1, "apps", name)?;
        let mut cmd = pod.command(&binary("mesh-httpapp")?.display().to_string());
        cmd.args(["serve", &PORT.to_string(), name]).args(flags);
        cluster.spawn(cmd)?;
        servers.push(pod);
    }
    for pod in &servers {
        mesh_tests::command::wait_listening(pod, PORT)?;
    }
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let mut base = vec![
        namespace_yaml("apps", true).replace(
            "labels: {istio.io/dataplane-mode: ambient}",
            "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
        ),
        waypoint_yaml(&waypoint_pod, "node1", "waypoint", "all"),
        pod_yaml(&client, "node1", "client"),
    ];
    for ((name, ip, _), pod) in SERVERS.iter().zip(&servers) {
        base.push(pod_yaml(pod, "node1", name));
        base.push(format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  clusterIP: {ip}\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: {PORT}, targetPort: {PORT}}}]\n"));
    }
    std::fs::write(config_dir.join("base.yaml"), base.join("---\n"))?;
    std::fs::write(config_dir.join("routes.yaml"), ROUTES)?;
    let ControlledMesh { agents, controller } = ControlledMesh::start_with_waypoints(
        &cluster,
        dir.path(),
        &config_dir,
        DAY,
        8,
        &[("apps", "waypoint")],
    )?;
    agents[0].add_pod(&client, ambient(), json!({"app": "client"}))?;
    for ((name, _, _), pod) in SERVERS.iter().zip(&servers) {
        agents[0].add_pod(pod, ambient(), json!({"app": name}))?;
    }
    let waypoint = Waypoint::start(&waypoint_pod, dir.path(), &controller, "waypoint")?;
    Ok(Mesh {
        client,
        servers,
        waypoint,
        agents,
        _controller: controller,
        _config_dir: config_dir,
        _cluster: cluster,
        _dir: dir,
    })
}

impl Mesh {
    fn url(&self, name: &str, path: &str) -> String {
        let ip = SERVERS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or("0.0.0.0", |(_, ip, _)| ip);
        format!("http://{ip}:{PORT}{path}")
    }

    /// The server's own `/stats`, read from inside its pod (loopback is not captured).
    fn stats(&self, name: &str) -> anyhow::Result<Value> {
        let i = SERVERS
            .iter()
            .position(|(n, _, _)| *n == name)
            .context("no such server")?;
        let out = httpapp(
            &self.servers[i],
            &["get", &format!("http://127.0.0.1:{PORT}/stats")],
        )?;
        let got: Value = serde_json::from_slice(&out.stdout).context("get output")?;
        let body = got["body"].as_str().map_or_else(
            || got["body"].clone(),
            |s| serde_json::from_str(s).unwrap_or(Value::Null),
        );
        Ok(body)
    }

    /// The server's `/stats` read through the mesh (and the waypoint).
    fn stats_via_mesh(&self, name: &str) -> anyhow::Result<Value> {
        let out = httpapp(&self.client, &["get", &self.url(name, "/stats")])?;
        let got: Value = serde_json::from_slice(&out.stdout).context("get output")?;
        Ok(got["body"].as_str().map_or_else(
            || got["body"].clone(),
            |s| serde_json::from_str(s).unwrap_or(Value::Null),
        ))
    }

    fn diagnostics(&self) -> String {
        let mut out = format!("--- waypoint\n{}", self.waypoint.logs());
        for agent in &self.agents {
            out.push_str(&format!("--- agent {}\n{}", agent.node.name, agent.logs()));
        }
        out
    }

    /// Waits (at most 10 s) until the waypoint has routes: the first request that is answered
    /// by the route for `reviews` (a fault-free path).
    fn wait_routed(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = curl(&self.client, &self.url("reviews", "/abort"), &[])?;
            if status == 418 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the routes never applied:\n{}", self.diagnostics());
            }
            sleep(Duration::from_millis(50));
        }
    }
}

fn httpapp(pod: &Pod, args: &[&str]) -> anyhow::Result<Output> {
    pod.command(&binary("mesh-httpapp")?.display().to_string())
        .args(args)
        .output()
        .context("running mesh-httpapp")
}

/// `load` from `pod`: n GETs over `concurrency` workers.
fn load(
    pod: &Pod,
    url: &str,
    n: usize,
    concurrency: usize,
    extra: &[&str],
) -> anyhow::Result<Value> {
    let (n, c) = (n.to_string(), concurrency.to_string());
    let mut args = vec!["load", url, n.as_str(), "--concurrency", c.as_str()];
    args.extend(extra);
    let out = httpapp(pod, &args)?;
    if !out.status.success() {
        bail!("load {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("load output")
}

fn status_count(v: &Value, code: u16) -> u64 {
    v["statuses"][code.to_string()].as_u64().unwrap_or(0)
}

/// One request with curl: (status, seconds taken); status 0 when there was no answer.
fn curl(pod: &Pod, url: &str, extra: &[&str]) -> anyhow::Result<(u16, f64)> {
    let out = pod
        .command("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total}",
        ])
        .args(extra)
        .arg(url)
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = text.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let secs = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    Ok((status, secs))
}

/// Waits (at most 5 s) until the waypoint's metric `series` reaches `at_least`.
fn wait_metric(mesh: &Mesh, series: &str, at_least: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = mesh.waypoint.metric(series)?;
        if v >= at_least || Instant::now() > deadline {
            return Ok(v);
        }
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn route_timeout_cuts_a_slow_upstream() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-res-timeout")?;
    mesh.wait_routed()?;
    let (status, secs) = curl(&mesh.client, &mesh.url("reviews", "/delay/1000"), &[])?;
    assert_eq!(status, 504, "{}", mesh.diagnostics());
    assert!(secs < 0.6, "cut after {secs} s");
    let logs = mesh.waypoint.logs();
    assert!(
        logs.lines().any(|l| l.contains("/delay/1000")
            && l.contains("status=504")
            && l.contains("flags=\"UT\"")
            || l.contains("/delay/1000") && l.contains("flags=UT")),
        "access log: {logs}"
    );
    let ut = wait_metric(
        &mesh,
        "mesh_waypoint_requests_total{response_code=\"504\",response_flags=\"UT\"}",
        1,
    )?;
    assert_eq!(ut, 1, "metric");
    // A fast answer on the same route is not cut.
    let (status, _) = curl(&mesh.client, &mesh.url("reviews", "/delay/10"), &[])?;
    assert_eq!(status, 200);
    println!("200 ms route timeout: 504 UT after {:.0} ms", secs * 1000.0);
    Ok(())
}

#[test]
fn retries_absorb_failures_within_the_budget() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-res-retries")?;
    mesh.wait_routed()?;
    // One client: the server fails every second request it sees, so each failure's retry is
    // the next request it sees (concurrent clients interleave, and 4 tries at an independent
    // 50% leave 1/16 failing whatever the retries).
    let flaky = load(&mesh.client, &mesh.url("flaky", "/"), 1000, 1, &[])?;
    let ok = status_count(&flaky, 200);
    assert!(
        ok >= 990,
        "≥ 99% successes: {flaky}\n{}",
        mesh.diagnostics()
    );
    let logs = mesh.waypoint.logs();
    assert!(
        logs.lines().any(|l| l.contains("attempts=2")),
        "attempts logged: {}",
        logs.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    println!("50% failing upstream with 3 retries on 5xx: {ok}/1000 answered 200");

    // A 100%-failing upstream: without a budget each request would reach it 4 times.
    let n = 1000u64;
    let broken = load(&mesh.client, &mesh.url("broken", "/"), n as usize, 20, &[])?;
    assert_eq!(status_count(&broken, 503), n, "{broken}");
    let seen = mesh.stats("broken")?["requests"].as_u64().unwrap_or(0);
    assert!(seen >= n, "every request reached it once: {seen}");
    assert!(
        seen <= n + n / 2,
        "the budget bounds the extra load: {seen} requests for {n} (4x without)\n{}",
        mesh.diagnostics()
    );
    let urx = mesh
        .waypoint
        .metric("mesh_waypoint_requests_total{response_code=\"503\",response_flags=\"URX\"}")?;
    assert!(urx > 0, "URX counted");
    println!("100% failing upstream, 3 retries, 20 clients: {seen} upstream requests for {n}");
    Ok(())
}

#[test]
fn faults_abort_a_share_and_delay_jason() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-res-fault")?;
    mesh.wait_routed()?;
    let aborted = load(&mesh.client, &mesh.url("reviews", "/abort"), 2000, 8, &[])?;
    let share = 100.0 * status_count(&aborted, 418) as f64 / 2000.0;
    assert!(
        (share - 30.0).abs() <= 4.0,
        "30% abort: {share:.1}%: {aborted}"
    );
    assert_eq!(
        status_count(&aborted, 418) + status_count(&aborted, 200),
        2000,
        "{aborted}"
    );
    let (status, jason) = curl(
        &mesh.client,
        &mesh.url("reviews", "/"),
        &["-H", "end-user: jason"],
    )?;
    assert_eq!(status, 200);
    let (_, other) = curl(
        &mesh.client,
        &mesh.url("reviews", "/"),
        &["-H", "end-user: alice"],
    )?;
    assert!(
        (jason - 2.0).abs() <= 0.02 + other,
        "jason delayed 2 s within 20 ms: {jason} s (alice {other} s)"
    );
    assert!(other < 0.5, "alice not delayed: {other} s");
    let logs = mesh.waypoint.logs();
    assert!(logs.contains("DI"), "DI logged");
    assert!(logs.contains("FI"), "FI logged");
    println!("30% abort: {share:.1}% over 2000; jason {jason:.3} s, alice {other:.3} s");
    Ok(())
}

#[test]
fn circuit_breaker_overflows_fast() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-res-breaker")?;
    mesh.wait_routed()?;
    let got = load(&mesh.client, &mesh.url("limited", "/"), 200, 20, &[])?;
    let overflow = status_count(&got, 503);
    let ok = status_count(&got, 200);
    assert!(
        overflow > 0 && ok > 0,
        "some 503 UO, some 200: {got}\n{}",
        mesh.diagnostics()
    );
    let uo = mesh
        .waypoint
        .metric("mesh_waypoint_requests_total{response_code=\"503\",response_flags=\"UO\"}")?;
    assert_eq!(uo, overflow, "every 503 is UO");
    // Read through the waypoint, on its one connection (a direct read would add its own).
    let stats = mesh.stats_via_mesh("limited")?;
    assert_eq!(stats["connections_max"], 1, "one connection: {stats}");
    let fast = got["p50_ms"].as_f64().unwrap_or(f64::MAX);
    assert!(
        fast < 50.0,
        "overflow answered at once: p50 {fast} ms with a 100 ms upstream"
    );
    println!("maxConnections 1, pending 1, 20 clients: {ok} answered, {overflow} UO; {got}");
    Ok(())
}

#[test]
fn mirror_gets_every_request_and_never_slows_the_primary() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-res-mirror")?;
    mesh.wait_routed()?;
    let n = 200u64;
    let got = load(&mesh.client, &mesh.url("mirrored", "/"), n as usize, 4, &[])?;
    assert_eq!(
        got["servers"],
        json!({"mirrored": n}),
        "only the primary answers: {got}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = mesh.stats("shadow")?["requests"].as_u64().unwrap_or(0);
        if seen >= n {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert_eq!(
        seen,
        n,
        "the mirror got every request\n{}",
        mesh.diagnostics()
    );
    let p99 = got["p99_ms"].as_f64().unwrap_or(f64::MAX);
    assert!(
        p99 < 200.0,
        "a 1 s mirror adds nothing to the primary's p99: {p99} ms"
    );
    println!("mirror: {seen}/{n} copies; primary p99 {p99:.1} ms with a 1 s mirror");
    Ok(())
}

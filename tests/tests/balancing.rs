//! End-to-end: the waypoint's endpoint choice on a two-node local cluster (real controller,
//! agents, waypoint; `mesh-httpapp serve` endpoints of one service `apps/web`). Outlier
//! detection ejects an endpoint answering 503 after 5 consecutive 5xx and takes it back after
//! `baseEjectionTime`; least request keeps traffic off a slow endpoint; consistent hashing on a
//! header keeps one value on one endpoint over 1,000 requests; with node localities, the
//! client's zone takes the traffic until its endpoints are ejected, then the other zone does.
//!
//! Needs root: each test fails loudly without it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::{ambient, binary};
use mesh_tests::config::{namespace_yaml, node_yaml, pod_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::mesh::ControlledMesh;
use mesh_tests::waypoint::{waypoint_yaml, Waypoint};
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::{json, Value};

const PORT: u16 = 8080;
const WEB: &str = "198.19.0.40";
const HOST: &str = "web.apps.svc.cluster.local";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// One endpoint: its node (1 or 2) and `serve` flags.
struct Server {
    node: u8,
    flags: &'static [&'static str],
}

/// Servers without flags, one on each of `nodes`.
fn plain(nodes: &[u8]) -> Vec<Server> {
    nodes
        .iter()
        .map(|&node| Server { node, flags: &[] })
        .collect()
}

/// `apps/client` and the waypoint on node 1, the `web` servers `web-1`… where asked.
struct Mesh {
    client: Pod,
    servers: Vec<(Pod, u32)>,
    waypoint: Waypoint,
    agents: Vec<Agent>,
    _controller: Controller,
    _config_dir: PathBuf,
    cluster: Cluster,
    _dir: tempfile::TempDir,
}

fn destination_rule(traffic_policy: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: apps}}\nspec:\n  host: {HOST}\n  trafficPolicy: {traffic_policy}\n")
}

fn start_mesh(
    prefix: &str,
    servers: &[Server],
    traffic_policy: &str,
    zones: bool,
) -> anyhow::Result<Mesh> {
    start_mesh_with(prefix, servers, traffic_policy, zones, &[])
}

/// A VirtualService for `web` that turns retries off (Istio's default retries 503s, which would
/// hide from the client the failures outlier detection counts).
fn no_retries() -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: apps}}\nspec:\n  hosts: [{HOST}]\n  http:\n  - route: [{{destination: {{host: {HOST}}}}}]\n    retries: {{attempts: 0}}\n")
}

fn start_mesh_with(
    prefix: &str,
    servers: &[Server],
    traffic_policy: &str,
    zones: bool,
    extra: &[String],
) -> anyhow::Result<Mesh> {
    mesh_tests::command::require_root()?;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let client = cluster.add_pod(1, "apps", "client")?;
    let waypoint_pod = cluster.add_pod(1, "apps", "waypoint")?;
    let mut pods = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let pod = cluster.add_pod(s.node, "apps", &format!("web-{}", i + 1))?;
        let mut cmd = pod.command(&binary("mesh-httpapp")?.display().to_string());
        cmd.args(["serve", &PORT.to_string(), &pod.name])
            .args(s.flags);
        let pid = cluster.spawn(cmd)?;
        pods.push((pod, pid));
    }
    for (pod, _) in &pods {
        mesh_tests::command::wait_listening(pod, PORT)?;
    }
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let mut base = vec![
        namespace_yaml("apps", true).replace(
            "labels: {istio.io/dataplane-mode: ambient}",
            "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
        ),
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: apps}}\nspec:\n  clusterIP: {WEB}\n  selector: {{app: web}}\n  ports: [{{name: http, port: {PORT}, targetPort: {PORT}}}]\n"),
        waypoint_yaml(&waypoint_pod, "node1", "waypoint", "all"),
        pod_yaml(&client, "node1", "client"),
        destination_rule(traffic_policy),
    ];
    base.extend(extra.iter().cloned());
    for (s, (pod, _)) in servers.iter().zip(&pods) {
        base.push(pod_yaml(pod, &format!("node{}", s.node), "web"));
    }
    if zones {
        for (node, zone) in [("node1", "a"), ("node2", "b")] {
            base.push(node_yaml(
                node,
                &[
                    ("topology.kubernetes.io/region", "r1"),
                    ("topology.kubernetes.io/zone", zone),
                ],
            ));
        }
    }
    std::fs::write(config_dir.join("base.yaml"), base.join("---\n"))?;
    let ControlledMesh { agents, controller } = ControlledMesh::start_with_waypoints(
        &cluster,
        dir.path(),
        &config_dir,
        DAY,
        2 + pods.len(),
        &[("apps", "waypoint")],
    )?;
    agents[0].add_pod(&client, ambient(), json!({"app": "client"}))?;
    for (s, (pod, _)) in servers.iter().zip(&pods) {
        agents[usize::from(s.node - 1)].add_pod(pod, ambient(), json!({"app": "web"}))?;
    }
    let waypoint = Waypoint::start(&waypoint_pod, dir.path(), &controller, "waypoint")?;
    Ok(Mesh {
        client,
        servers: pods,
        waypoint,
        agents,
        _controller: controller,
        _config_dir: config_dir,
        cluster,
        _dir: dir,
    })
}

impl Mesh {
    fn diagnostics(&self) -> String {
        let mut out = format!("--- waypoint\n{}", self.waypoint.logs());
        for agent in &self.agents {
            out.push_str(&format!("--- agent {}\n{}", agent.node.name, agent.logs()));
        }
        out
    }

    /// Restarts server `i` (from 0) with `flags`.
    fn restart(&mut self, i: usize, flags: &[&str]) -> anyhow::Result<()> {
        let (pod, pid) = &self.servers[i];
        let status = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill {pid} failed");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_listening(pod)? {
            if Instant::now() > deadline {
                bail!("{} still listening after kill", pod.name);
            }
            sleep(Duration::from_millis(50));
        }
        let mut cmd = pod.command(&binary("mesh-httpapp")?.display().to_string());
        cmd.args(["serve", &PORT.to_string(), &pod.name])
            .args(flags);
        let pid = self.cluster.spawn(cmd)?;
        mesh_tests::command::wait_listening(pod, PORT)?;
        self.servers[i].1 = pid;
        Ok(())
    }
}

fn is_listening(pod: &Pod) -> anyhow::Result<bool> {
    let out = pod
        .command("ss")
        .args(["-Htln", &format!("sport = :{PORT}")])
        .output()
        .context("ss")?;
    Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

fn httpapp(pod: &Pod, args: &[&str]) -> anyhow::Result<Value> {
    let out = pod
        .command(&binary("mesh-httpapp")?.display().to_string())
        .args(args)
        .output()
        .context("running mesh-httpapp")?;
    if !out.status.success() {
        bail!(
            "mesh-httpapp {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("mesh-httpapp output")
}

/// `n` requests one after another (one keep-alive connection), with `headers`.
fn count(mesh: &Mesh, n: usize, headers: &[&str]) -> anyhow::Result<Value> {
    let url = format!("http://{WEB}:{PORT}/");
    let n = n.to_string();
    let mut args = vec!["count", url.as_str(), n.as_str()];
    for h in headers {
        args.extend(["-H", h]);
    }
    httpapp(&mesh.client, &args)
}

fn tally(v: &Value, key: &str) -> BTreeMap<String, u64> {
    v[key]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn get(m: &BTreeMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

#[test]
fn outlier_detection_ejects_after_five_5xx_and_returns_after_the_base_time() -> anyhow::Result<()> {
    let servers = [
        Server {
            node: 1,
            flags: &["--fail-percent", "100"],
        },
        Server {
            node: 1,
            flags: &[],
        },
        Server {
            node: 2,
            flags: &[],
        },
    ];
    let policy = "{outlierDetection: {consecutive5xxErrors: 5, interval: 1s, baseEjectionTime: 5s, maxEjectionPercent: 100}}";
    let mesh = start_mesh_with("mesh-lb-outlier", &servers, policy, false, &[no_retries()])?;
    // Round robin: web-1 takes every third request until its fifth 503 ejects it.
    let first = count(&mesh, 30, &[])?;
    let ejected_at = Instant::now();
    let (by_server, statuses) = (tally(&first, "servers"), tally(&first, "statuses"));
    assert_eq!(
        get(&by_server, "web-1"),
        5,
        "five 503s, then ejected: {first}\n{}",
        mesh.diagnostics()
    );
    assert_eq!(get(&statuses, "503"), 5, "{first}");
    let metric = format!("mesh_waypoint_outlier_ejections_total{{host=\"{HOST}\"}}");
    assert_eq!(mesh.waypoint.metric(&metric)?, 1, "ejection counted");
    assert_eq!(
        mesh.waypoint
            .metric(&format!("mesh_waypoint_outlier_ejected{{host=\"{HOST}\"}}"))?,
        1
    );
    // While ejected, everything succeeds on the others.
    let during = count(&mesh, 100, &[])?;
    assert_eq!(
        tally(&during, "statuses"),
        BTreeMap::from([("200".to_owned(), 100)]),
        "{during}"
    );
    assert!(
        ejected_at.elapsed() < Duration::from_secs(4),
        "the check ran within the ejection"
    );
    // Back after the base ejection time (5 s, ending on a 1 s interval tick).
    let deadline = ejected_at + Duration::from_secs(10);
    loop {
        let probe = count(&mesh, 6, &[])?;
        if get(&tally(&probe, "servers"), "web-1") > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("web-1 not back within 10 s\n{}", mesh.diagnostics());
        }
        sleep(Duration::from_millis(100));
    }
    let back = ejected_at.elapsed();
    assert!(
        back >= Duration::from_millis(4_500),
        "returned early: {back:?}"
    );
    println!(
        "web-1 ejected after 5 × 503, back after {back:?} (baseEjectionTime 5 s, interval 1 s)"
    );
    Ok(())
}

#[test]
fn least_request_keeps_traffic_off_a_slow_endpoint() -> anyhow::Result<()> {
    let servers = [
        Server {
            node: 1,
            flags: &["--delay-ms", "300"],
        },
        Server {
            node: 1,
            flags: &[],
        },
        Server {
            node: 2,
            flags: &[],
        },
    ];
    let mesh = start_mesh(
        "mesh-lb-lr",
        &servers,
        "{loadBalancer: {simple: LEAST_REQUEST}}",
        false,
    )?;
    let url = format!("http://{WEB}:{PORT}/");
    let out = httpapp(&mesh.client, &["load", &url, "600", "--concurrency", "12"])?;
    let by_server = tally(&out, "servers");
    let total: u64 = by_server.values().sum();
    assert_eq!(total, 600, "{out}\n{}", mesh.diagnostics());
    let slow = 100.0 * get(&by_server, "web-1") as f64 / total as f64;
    // Round robin would give it a third; least request only a few percent.
    assert!(slow < 10.0, "slow endpoint took {slow:.1} %: {out}");
    println!(
        "least request: the 300 ms endpoint took {slow:.1} % of 600 requests at concurrency 12"
    );
    Ok(())
}

#[test]
fn consistent_hash_on_a_header_keeps_a_value_on_one_endpoint() -> anyhow::Result<()> {
    let servers = plain(&[1, 1, 2]);
    let policy = "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}";
    let mesh = start_mesh("mesh-lb-hash", &servers, policy, false)?;
    let alice = count(&mesh, 1000, &["x-user: alice"])?;
    let by_server = tally(&alice, "servers");
    assert_eq!(
        by_server.len(),
        1,
        "one endpoint for alice: {alice}\n{}",
        mesh.diagnostics()
    );
    assert_eq!(by_server.values().sum::<u64>(), 1000, "{alice}");
    // Other values land elsewhere too.
    let mut seen = std::collections::BTreeSet::new();
    for u in 0..24 {
        let h = format!("x-user: user-{u}");
        let one = count(&mesh, 3, &[&h])?;
        let s = tally(&one, "servers");
        assert_eq!(s.len(), 1, "user-{u}: {one}");
        seen.extend(s.into_keys());
    }
    assert!(seen.len() >= 2, "values spread over endpoints: {seen:?}");
    Ok(())
}

#[test]
fn locality_prefers_the_client_zone_until_it_is_ejected() -> anyhow::Result<()> {
    let servers = plain(&[1, 1, 2, 2]);
    // Outlier detection turns locality balancing on (as Istio).
    let policy = "{outlierDetection: {consecutive5xxErrors: 5, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}}";
    let mut mesh = start_mesh("mesh-lb-zone", &servers, policy, true)?;
    let local = count(&mesh, 200, &[])?;
    let s = tally(&local, "servers");
    assert_eq!(
        get(&s, "web-1") + get(&s, "web-2"),
        200,
        "zone a only: {local}\n{}",
        mesh.diagnostics()
    );
    assert!(
        get(&s, "web-1") > 50 && get(&s, "web-2") > 50,
        "both of zone a: {local}"
    );
    // Zone a fails: its endpoints are ejected, zone b takes over.
    mesh.restart(0, &["--fail-percent", "100"])?;
    mesh.restart(1, &["--fail-percent", "100"])?;
    let failing = count(&mesh, 60, &[])?;
    let f = tally(&failing, "servers");
    // At most 5 each (a request on a connection the restart closed may fail before a response).
    assert!(get(&f, "web-1") <= 5 && get(&f, "web-2") <= 5, "{failing}");
    let after = count(&mesh, 200, &[])?;
    let a = tally(&after, "servers");
    assert_eq!(
        get(&a, "web-3") + get(&a, "web-4"),
        200,
        "zone b after zone a is ejected: {after}"
    );
    assert_eq!(
        tally(&after, "statuses"),
        BTreeMap::from([("200".to_owned(), 200)]),
        "{after}"
    );
    Ok(())
}

#[test]
fn distribute_sends_80_20_across_zones() -> anyhow::Result<()> {
    let servers = plain(&[1, 1, 2, 2]);
    let policy = r#"{loadBalancer: {localityLbSetting: {enabled: true, distribute: [{from: "r1/a/*", to: {"r1/a/*": 80, "r1/b/*": 20}}]}}}"#;
    let mesh = start_mesh("mesh-lb-distribute", &servers, policy, true)?;
    let out = count(&mesh, 2000, &[])?;
    let s = tally(&out, "servers");
    let total: u64 = s.values().sum();
    assert_eq!(total, 2000, "{out}\n{}", mesh.diagnostics());
    let zone_a = 100.0 * (get(&s, "web-1") + get(&s, "web-2")) as f64 / total as f64;
    assert!(
        (zone_a - 80.0).abs() <= 4.0,
        "zone a took {zone_a:.1} %: {out}"
    );
    Ok(())
}

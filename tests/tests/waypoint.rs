//! End-to-end: the waypoint on a two-node local cluster with the real controller, one agent per
//! node and a `mesh-waypoint` instance in its own pod. Clients and servers are real HTTP, gRPC
//! and WebSocket programs (`mesh-httpapp`) and `curl`, in meshed pods; every request goes
//! client → agent → waypoint → agent → server over HBONE.
//!
//! Bookinfo's routing tasks: `end-user: jason` reaches reviews v2, others v1; a 90/10 and a
//! 50/50 split over 2,000 requests land within ±3 points. L7 authorization at the waypoint: a
//! DENY on `/admin` answers 403 `RBAC: access denied` while `/` passes, also when the client
//! dials the pod address instead of the service (the agent sends that through the waypoint too,
//! and the destination's agent admits only the waypoint). With the waypoint stopped, requests
//! fail within 1 s and none reaches the destination around it. JWT (RequestAuthentication): a
//! DENY on `/admin` decided by a token's claims, and a bad token answered 401.
//!
//! Needs root: each test fails loudly without it. Traffic stays inside the cluster's namespaces.

use std::collections::BTreeMap;
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

const REVIEWS_PORT: u16 = 9080;
const REVIEWS: &str = "198.19.0.20";
/// `apps/grpc` (tonic `echo.Echo`), port named `grpc`.
const GRPC: &str = "198.19.0.21:9090";
/// `apps/echo` (a line echo server: opaque TCP), port named `tcp-echo`.
const ECHO: &str = "198.19.0.22:7000";
const DAY: Duration = Duration::from_secs(24 * 3600);

const DESTINATION_RULE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: apps}
spec:
  host: reviews.apps.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
";

/// Bookinfo's `virtual-service-reviews-test-v2.yaml`.
const JASON_TO_V2: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: apps}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
";

fn split(v1: u32, v3: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: apps}}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: reviews, subset: v3}}, weight: {v3}}}
"
    )
}

/// `apps/client` (meshed, node 1), the waypoint `apps/waypoint` (its instance on node 1, used by
/// the whole namespace), reviews v1 (node 1), v2 and v3 (node 2) behind `apps/reviews`, and
/// `other/outsider` (node 2, not in the mesh).
struct Mesh {
    client: Pod,
    outsider: Pod,
    v1: Pod,
    waypoint: Waypoint,
    agents: Vec<Agent>,
    _controller: Controller,
    config_dir: PathBuf,
    _cluster: Cluster,
    _dir: tempfile::TempDir,
}

fn reviews_pod_yaml(pod: &Pod, node: &str, version: &str) -> String {
    pod_yaml(pod, node, "reviews").replace(
        "labels: {app: reviews}",
        &format!("labels: {{app: reviews, version: {version}}}"),
    )
}

/// `reviews-<version>`: a Service per version, as Bookinfo's Gateway API samples have (HTTPRoute
/// backends are Services, not subsets).
fn version_service(version: &str, ip: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: reviews-{version}, namespace: apps}}\nspec:\n  clusterIP: {ip}\n  selector: {{app: reviews, version: {version}}}\n  ports: [{{name: http, port: {REVIEWS_PORT}, targetPort: {REVIEWS_PORT}}}]\n")
}

/// A Gateway API HTTPRoute attached to the `reviews` Service (GAMMA): `end-user: jason` to
/// reviews-v2, the rest split `v1`/`v2` by weight.
fn http_route(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reviews, namespace: apps}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: reviews, port: {REVIEWS_PORT}}}]
  rules:
  - matches: [{{headers: [{{name: end-user, value: jason}}]}}]
    backendRefs: [{{name: reviews-v2, port: {REVIEWS_PORT}}}]
  - backendRefs:
    - {{name: reviews-v1, port: {REVIEWS_PORT}, weight: {v1}}}
    - {{name: reviews-v2, port: {REVIEWS_PORT}, weight: {v2}}}
"
    )
}

fn start_mesh(prefix: &str) -> anyhow::Result<Mesh> {
    mesh_tests::command::require_root()?;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let mut cluster = Cluster::new(2)?;
    let client = cluster.add_pod(1, "apps", "client")?;
    let waypoint_pod = cluster.add_pod(1, "apps", "waypoint")?;
    let v1 = cluster.add_pod(1, "apps", "reviews-v1")?;
    let v2 = cluster.add_pod(2, "apps", "reviews-v2")?;
    let v3 = cluster.add_pod(2, "apps", "reviews-v3")?;
    let outsider = cluster.add_pod(2, "other", "outsider")?;
    let grpc = cluster.add_pod(2, "apps", "grpc")?;
    let echo = cluster.add_pod(2, "apps", "echo")?;
    let mut cmd = grpc.command(&binary("mesh-httpapp")?.display().to_string());
    cmd.args(["grpc-serve", "9090", "grpc-1"]);
    cluster.spawn(cmd)?;
    mesh_tests::app::serve(&mut cluster, &echo, 7000, "echo")?;
    mesh_tests::command::wait_listening(&grpc, 9090)?;
    for pod in [&v1, &v2, &v3] {
        let mut cmd = pod.command(&binary("mesh-httpapp")?.display().to_string());
        cmd.args(["serve", &REVIEWS_PORT.to_string(), &pod.name]);
        cluster.spawn(cmd)?;
    }
    for pod in [&v1, &v2, &v3] {
        mesh_tests::command::wait_listening(pod, REVIEWS_PORT)?;
    }
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let base = [
        namespace_yaml("apps", true).replace(
            "labels: {istio.io/dataplane-mode: ambient}",
            "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
        ),
        namespace_yaml("other", false),
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: apps}}\nspec:\n  clusterIP: {REVIEWS}\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: {REVIEWS_PORT}, targetPort: {REVIEWS_PORT}}}]\n"),
        waypoint_yaml(&waypoint_pod, "node1", "waypoint", "all"),
        pod_yaml(&client, "node1", "client"),
        reviews_pod_yaml(&v1, "node1", "v1"),
        reviews_pod_yaml(&v2, "node2", "v2"),
        reviews_pod_yaml(&v3, "node2", "v3"),
        pod_yaml(&outsider, "node2", "outsider"),
        pod_yaml(&grpc, "node2", "grpc"),
        pod_yaml(&echo, "node2", "echo"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: grpc, namespace: apps}\nspec:\n  clusterIP: 198.19.0.21\n  selector: {app: grpc}\n  ports: [{name: grpc, port: 9090, targetPort: 9090}]\n".to_owned(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: apps}\nspec:\n  clusterIP: 198.19.0.22\n  selector: {app: echo}\n  ports: [{name: tcp-echo, port: 7000, targetPort: 7000}]\n".to_owned(),
        DESTINATION_RULE.to_owned(),
        version_service("v1", "198.19.0.31"),
        version_service("v2", "198.19.0.32"),
    ]
    .join("---\n");
    std::fs::write(config_dir.join("base.yaml"), base)?;
    std::fs::write(config_dir.join("routes.yaml"), JASON_TO_V2)?;
    let ControlledMesh { agents, controller } = ControlledMesh::start_with_waypoints(
        &cluster,
        dir.path(),
        &config_dir,
        DAY,
        8,
        &[("apps", "waypoint")],
    )?;
    agents[0].add_pod(&client, ambient(), json!({"app": "client"}))?;
    agents[0].add_pod(&v1, ambient(), json!({"app": "reviews", "version": "v1"}))?;
    agents[1].add_pod(&v2, ambient(), json!({"app": "reviews", "version": "v2"}))?;
    agents[1].add_pod(&v3, ambient(), json!({"app": "reviews", "version": "v3"}))?;
    agents[1].add_pod(&grpc, ambient(), json!({"app": "grpc"}))?;
    agents[1].add_pod(&echo, ambient(), json!({"app": "echo"}))?;
    let waypoint = Waypoint::start(&waypoint_pod, dir.path(), &controller, "waypoint")?;
    Ok(Mesh {
        client,
        outsider,
        v1,
        waypoint,
        agents,
        _controller: controller,
        config_dir,
        _cluster: cluster,
        _dir: dir,
    })
}

impl Mesh {
    /// Replaces `routes.yaml` and waits (at most 10 s) until the waypoint applied a new model.
    fn set_routes(&self, yaml: &str) -> anyhow::Result<()> {
        let before = applied_count(&self.waypoint);
        mesh_tests::config::replace_file(&self.config_dir, "routes.yaml", yaml)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while applied_count(&self.waypoint) <= before {
            if Instant::now() > deadline {
                bail!(
                    "the waypoint did not apply the new routes within 10 s:\n{}",
                    self.waypoint.logs()
                );
            }
            sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn diagnostics(&self) -> String {
        let mut out = format!("--- waypoint\n{}", self.waypoint.logs());
        for agent in &self.agents {
            out.push_str(&format!("--- agent {}\n{}", agent.node.name, agent.logs()));
        }
        out
    }
}

fn applied_count(waypoint: &Waypoint) -> usize {
    waypoint.logs().matches("config applied").count()
}

fn httpapp(pod: &Pod, args: &[&str]) -> anyhow::Result<Output> {
    pod.command(&binary("mesh-httpapp")?.display().to_string())
        .args(args)
        .output()
        .context("running mesh-httpapp")
}

/// `count` from `pod`: `n` requests on one keep-alive connection; the servers and statuses seen.
/// `headers` are `name: value` (each sent with `-H`) or flags (`--h2`).
fn count(pod: &Pod, url: &str, n: usize, headers: &[&str]) -> anyhow::Result<Value> {
    let n = n.to_string();
    let mut args = vec!["count", url, n.as_str()];
    for h in headers {
        if h.starts_with("--") {
            args.push(h);
        } else {
            args.extend(["-H", h]);
        }
    }
    let out = httpapp(pod, &args)?;
    if !out.status.success() {
        bail!("count {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("count output")
}

fn servers(counted: &Value) -> BTreeMap<String, u64> {
    counted["servers"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// One request with curl from `pod`: (status, body); status 0 when there was no HTTP answer.
fn curl(pod: &Pod, url: &str, extra: &[&str]) -> anyhow::Result<(u16, String)> {
    let out = pod
        .command("curl")
        .args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

fn share(servers: &BTreeMap<String, u64>, name: &str, total: u64) -> f64 {
    100.0 * servers.get(name).copied().unwrap_or(0) as f64 / total as f64
}

#[test]
fn routes_by_header_and_splits_by_weight() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-wp-routes")?;
    let url = format!("http://{REVIEWS}:{REVIEWS_PORT}/reviews/1");
    let jason = count(&mesh.client, &url, 200, &["end-user: jason"])?;
    let others = count(&mesh.client, &url, 200, &["end-user: alice"])?;
    let anonymous = count(&mesh.client, &url, 200, &[])?;
    let want = |name: &str| json!({name: 200});
    assert_eq!(
        jason["servers"],
        want("reviews-v2"),
        "jason: {jason}\n{}",
        mesh.diagnostics()
    );
    assert_eq!(others["servers"], want("reviews-v1"), "alice: {others}");
    assert_eq!(
        anonymous["servers"],
        want("reviews-v1"),
        "anonymous: {anonymous}"
    );

    for (v1, v3) in [(90, 10), (50, 50)] {
        mesh.set_routes(&split(v1, v3))?;
        let counted = count(&mesh.client, &url, 2000, &[])?;
        let seen = servers(&counted);
        let total: u64 = seen.values().sum();
        assert_eq!(total, 2000, "{v1}/{v3}: {counted}");
        let got = share(&seen, "reviews-v1", total);
        assert!(
            (got - f64::from(v1)).abs() <= 3.0,
            "{v1}/{v3}: v1 got {got:.1} %: {counted}"
        );
        assert_eq!(
            seen.get("reviews-v1").copied().unwrap_or(0)
                + seen.get("reviews-v3").copied().unwrap_or(0),
            2000,
            "{v1}/{v3}: only v1 and v3: {counted}"
        );
        println!("{v1}/{v3} split over 2000 requests: v1 {got:.1} %");
    }

    // The same with a Gateway API HTTPRoute on the Service.
    mesh.set_routes(&http_route(90, 10))?;
    let jason = count(&mesh.client, &url, 100, &["end-user: jason"])?;
    assert_eq!(
        jason["servers"],
        json!({"reviews-v2": 100}),
        "HTTPRoute, jason: {jason}"
    );
    let counted = count(&mesh.client, &url, 2000, &[])?;
    let seen = servers(&counted);
    let got = share(&seen, "reviews-v1", seen.values().sum());
    assert!(
        (got - 90.0).abs() <= 3.0,
        "HTTPRoute 90/10: v1 got {got:.1} %: {counted}"
    );
    println!("HTTPRoute 90/10 split over 2000 requests: v1 {got:.1} %");
    Ok(())
}

const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: apps}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/apps/sa/client]}}]
    to: [{operation: {paths: [/admin*]}}]
";

#[test]
fn l7_policy_applies_at_the_waypoint_and_cannot_be_skipped() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-wp-authz")?;
    mesh.set_routes(&format!("{JASON_TO_V2}---\n{DENY_ADMIN}"))?;
    let service = format!("http://{REVIEWS}:{REVIEWS_PORT}");
    let pod = format!("http://{}:{REVIEWS_PORT}", mesh.v1.ip4);
    for base in [&service, &pod] {
        let (code, body) = curl(&mesh.client, &format!("{base}/admin/users"), &[])?;
        assert_eq!(
            (code, body.as_str()),
            (403, "RBAC: access denied"),
            "{base}/admin\n{}",
            mesh.diagnostics()
        );
        let (code, body) = curl(&mesh.client, &format!("{base}/"), &[])?;
        assert_eq!(code, 200, "{base}/: {body}");
        let answer: Value = serde_json::from_str(&body).context("echo body")?;
        assert!(
            answer["headers"]["x-forwarded-for"]
                .as_str()
                .is_some_and(|x| x.contains(&mesh.client.ip4.to_string())),
            "x-forwarded-for names the client: {answer}"
        );
    }
    // A pod outside the mesh dialing the destination pod directly reaches no application: the
    // destination's agent admits only the waypoint.
    let (code, body) = curl(&mesh.outsider, &format!("{pod}/admin/users"), &[])?;
    assert_eq!(code, 0, "the outsider got an HTTP answer: {body}");
    Ok(())
}

/// Inbound connections the application of `workload` was given by its agent so far.
fn inbound_connections(agent: &Agent, workload: &str) -> anyhow::Result<u64> {
    let text = agent.admin_get("/metrics")?;
    let needle = format!("workload=\"{workload}\"");
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("mesh_agent_tcp_connections_opened_total{direction=\"Inbound\"")
                && l.contains(&needle)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

#[test]
fn a_stopped_waypoint_fails_closed() -> anyhow::Result<()> {
    let mut mesh = start_mesh("mesh-wp-stopped")?;
    let url = format!("http://{REVIEWS}:{REVIEWS_PORT}/");
    let (code, _) = curl(&mesh.client, &url, &[])?;
    assert_eq!(code, 200, "{}", mesh.diagnostics());
    mesh.waypoint.stop()?;
    let before = inbound_connections(&mesh.agents[0], "apps/reviews-v1")?
        + inbound_connections(&mesh.agents[1], "apps/reviews-v2")?
        + inbound_connections(&mesh.agents[1], "apps/reviews-v3")?;
    for target in [
        url.clone(),
        format!("http://{}:{REVIEWS_PORT}/", mesh.v1.ip4),
    ] {
        let started = Instant::now();
        let (code, body) = curl(&mesh.client, &target, &[])?;
        let took = started.elapsed();
        assert_eq!(code, 0, "{target}: answered without the waypoint: {body}");
        assert!(
            took < Duration::from_secs(1),
            "{target}: failed after {took:?}"
        );
    }
    let after = inbound_connections(&mesh.agents[0], "apps/reviews-v1")?
        + inbound_connections(&mesh.agents[1], "apps/reviews-v2")?
        + inbound_connections(&mesh.agents[1], "apps/reviews-v3")?;
    assert_eq!(
        after, before,
        "a request reached reviews around the waypoint"
    );
    let refused = mesh.agents[0].admin_get("/metrics")?;
    assert!(
        refused
            .lines()
            .any(|l| l.contains("reason=\"waypoint_unreachable\"")),
        "the refusal is counted:\n{refused}"
    );
    Ok(())
}

/// `mesh-httpapp <args>` from `pod`, its stdout parsed as one JSON object; fails on exit 1.
fn httpapp_json(pod: &Pod, args: &[&str]) -> anyhow::Result<Value> {
    let out = httpapp(pod, args)?;
    if !out.status.success() {
        bail!(
            "mesh-httpapp {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("mesh-httpapp {args:?} printed {text}"))
}

#[test]
fn http2_grpc_websocket_and_opaque_tcp_pass_the_waypoint() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-wp-protocols")?;
    let reviews = format!("http://{REVIEWS}:{REVIEWS_PORT}");
    // HTTP/2 from the client; the port is declared `http`, so HTTP/1.1 upstream (as Istio).
    let h2 = httpapp_json(&mesh.client, &["get", &format!("{reviews}/h2"), "--h2"])?;
    assert_eq!(h2["status"], 200, "{h2}\n{}", mesh.diagnostics());
    assert_eq!(h2["version"], "HTTP/2.0", "{h2}");
    assert_eq!(h2["body"]["server"], "reviews-v1", "{h2}");
    let counted = count(&mesh.client, &format!("{reviews}/"), 100, &["--h2"])?;
    assert_eq!(counted["statuses"], json!({"200": 100}), "{counted}");
    // gRPC: unary, server streaming, and an error status carried in the trailers.
    let say = httpapp_json(&mesh.client, &["grpc", GRPC, "say", "hello"])?;
    assert_eq!(
        say,
        json!({"reply": "grpc-1: hello"}),
        "{}",
        mesh.diagnostics()
    );
    let streamed = httpapp_json(&mesh.client, &["grpc", GRPC, "count", "20"])?;
    assert_eq!(streamed["messages"], 20, "{streamed}");
    let failed = httpapp_json(&mesh.client, &["grpc", GRPC, "say", "fail"])?;
    assert_eq!(failed["code"], "unavailable", "{failed}");
    // A WebSocket echo through the upgrade.
    let ws = httpapp_json(
        &mesh.client,
        &["ws", &format!("ws://{REVIEWS}:{REVIEWS_PORT}/ws"), "10"],
    )?;
    assert_eq!(ws["ok"], 10, "{ws}");
    // A 64 MiB upload streams through (chunked, never buffered whole).
    let uploaded = httpapp_json(
        &mesh.client,
        &["upload", &format!("{reviews}/upload"), "67108864"],
    )?;
    assert_eq!(uploaded["bytes"], 67_108_864_u64, "{uploaded}");
    // An opaque TCP protocol (a line echo) on a port declared `tcp`.
    let reply = mesh_tests::app::reply(&mesh.client, ECHO, "over the waypoint")?;
    assert!(
        reply.contains("echo") && reply.contains("says: over the waypoint"),
        "{reply}\n{}",
        mesh.diagnostics()
    );
    assert!(
        mesh.waypoint
            .metric("mesh_waypoint_connections_total{protocol=\"tcp\"}")?
            >= 1,
        "the echo connection went through the waypoint as TCP"
    );
    Ok(())
}

const FEATURES: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: apps}
spec:
  hosts: [reviews.apps.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /old/}}]
    rewrite: {uri: /new/}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {regex: '/item/([0-9]+)'}}]
    rewrite: {uriRegexRewrite: {match: '/item/([0-9]+)', rewrite: '/items?id=\1'}}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /moved}}]
    redirect: {uri: /new-home, authority: reviews.example, redirectCode: 308}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {prefix: /headers}}]
    headers:
      request: {set: {x-set: rule}, remove: [x-drop]}
      response: {add: {x-answered: rule}}
    route:
    - destination: {host: reviews, subset: v3}
      headers: {request: {add: {x-destination: v3}}}
  - match: [{uri: {prefix: /delegated}}]
    delegate: {name: reviews-delegate, namespace: apps}
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-delegate, namespace: apps}
spec:
  http:
  - match: [{uri: {prefix: /delegated/v3}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v2}}]
"#;

#[test]
fn rewrites_redirects_header_operations_direct_responses_and_delegates() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-wp-features")?;
    mesh.set_routes(FEATURES)?;
    let base = format!("http://{REVIEWS}:{REVIEWS_PORT}");
    let get = |path: &str, headers: &[&str]| -> anyhow::Result<Value> {
        let url = format!("{base}{path}");
        let mut args = vec!["get", url.as_str()];
        for h in headers {
            args.extend(["-H", h]);
        }
        httpapp_json(&mesh.client, &args)
    };
    let rewritten = get("/old/page", &[])?;
    assert_eq!(
        (&rewritten["body"]["server"], &rewritten["body"]["path"]),
        (&json!("reviews-v2"), &json!("/new/page")),
        "{rewritten}\n{}",
        mesh.diagnostics()
    );
    let regex = get("/item/42", &[])?;
    assert_eq!(regex["body"]["path"], "/items?id=42", "{regex}");
    let moved = get("/moved/x", &[])?;
    assert_eq!(moved["status"], 308, "{moved}");
    let location = moved["headers"]["location"].as_str().unwrap_or_default();
    assert!(
        location.contains("reviews.example") && location.ends_with("/new-home"),
        "{moved}"
    );
    let teapot = get("/teapot", &[])?;
    assert_eq!(
        (&teapot["status"], &teapot["body"]),
        (&json!(418), &json!("short and stout")),
        "{teapot}"
    );
    let headers = get("/headers", &["x-drop: secret", "x-set: client"])?;
    let seen = &headers["body"]["headers"];
    assert_eq!(headers["body"]["server"], "reviews-v3", "{headers}");
    assert_eq!(seen["x-set"], "rule", "{headers}");
    assert_eq!(seen["x-destination"], "v3", "{headers}");
    assert!(seen.get("x-drop").is_none(), "x-drop removed: {headers}");
    assert!(
        seen["x-request-id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "{headers}"
    );
    assert_eq!(seen["x-forwarded-proto"], "http", "{headers}");
    assert_eq!(headers["headers"]["x-answered"], "rule", "{headers}");
    let delegated = get("/delegated/v3/x", &[])?;
    assert_eq!(delegated["body"]["server"], "reviews-v3", "{delegated}");
    let delegated = get("/delegated/other", &[])?;
    assert_eq!(delegated["body"]["server"], "reviews-v2", "{delegated}");
    let default = get("/", &[])?;
    assert_eq!(default["body"]["server"], "reviews-v1", "{default}");
    Ok(())
}

#[test]
fn missing_subsets_and_hosts_answer_at_once_with_a_flag() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-wp-missing")?;
    mesh.set_routes(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: apps}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /nosubset}}]
    route: [{destination: {host: reviews, subset: v9}}]
  - match: [{uri: {prefix: /nohost}}]
    route: [{destination: {host: ghost}}]
  - match: [{uri: {prefix: /known}}]
    route: [{destination: {host: reviews, subset: v1}}]
",
    )?;
    let base = format!("http://{REVIEWS}:{REVIEWS_PORT}");
    // (path, status, body)
    let cases = [
        ("/nosubset", 503, "no healthy upstream"),
        ("/nohost", 503, ""),
        ("/unrouted", 404, ""),
    ];
    for (path, status, body) in cases {
        let started = Instant::now();
        let (code, got) = curl(&mesh.client, &format!("{base}{path}"), &[])?;
        assert_eq!(
            (code, got.as_str()),
            (status, body),
            "{path}\n{}",
            mesh.diagnostics()
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    for (series, at_least) in [
        (
            "mesh_waypoint_requests_total{response_code=\"503\",response_flags=\"UH\"}",
            1,
        ),
        (
            "mesh_waypoint_requests_total{response_code=\"503\",response_flags=\"NC\"}",
            1,
        ),
        (
            "mesh_waypoint_requests_total{response_code=\"404\",response_flags=\"NR\"}",
            1,
        ),
    ] {
        assert!(mesh.waypoint.metric(series)? >= at_least, "{series}");
    }
    Ok(())
}

#[test]
fn a_config_change_does_not_cut_a_streaming_request() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-wp-stream")?;
    let url = format!("http://{REVIEWS}:{REVIEWS_PORT}/stream?chunks=30&interval_ms=100");
    let child = mesh
        .client
        .command(&binary("mesh-httpapp")?.display().to_string())
        .args(["stream", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the streaming client")?;
    sleep(Duration::from_millis(800));
    // A new route and a new policy while the response streams.
    mesh.set_routes(&format!("{}---\n{DENY_ADMIN}", split(0, 100)))?;
    let out = child.wait_with_output().context("streaming client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("{\"done\":30}"),
        "the stream was cut: {text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mesh.diagnostics()
    );
    // New requests follow the new route.
    let counted = count(
        &mesh.client,
        &format!("http://{REVIEWS}:{REVIEWS_PORT}/"),
        20,
        &[],
    )?;
    assert_eq!(counted["servers"], json!({"reviews-v3": 20}), "{counted}");
    Ok(())
}

/// A JWT issuer of the test: an EC P-256 key, its key set, signed tokens.
struct Issuer {
    key: jsonwebtoken::EncodingKey,
}

const ISSUER: &str = "https://issuer.mesh.test";

impl Issuer {
    fn new() -> anyhow::Result<Issuer> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(Issuer {
            key: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
        })
    }

    fn jwks(&self) -> anyhow::Result<String> {
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&self.key, jsonwebtoken::Algorithm::ES256)?;
        jwk.common.key_id = Some("k1".to_owned());
        Ok(serde_json::to_string(&jsonwebtoken::jwk::JwkSet {
            keys: vec![jwk],
        })?)
    }

    fn token(&self, sub: &str, groups: &[&str], exp_from_now: i64) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".to_owned());
        Ok(jsonwebtoken::encode(
            &header,
            &json!({"iss": ISSUER, "sub": sub, "aud": "reviews", "exp": now + exp_from_now, "groups": groups}),
            &self.key,
        )?)
    }
}

#[test]
fn jwt_claims_decide_at_the_waypoint_and_a_bad_token_is_401() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-wp-jwt")?;
    let issuer = Issuer::new()?;
    let jwks = mesh
        .config_dir
        .parent()
        .context("workdir")?
        .join("jwks.json");
    std::fs::write(&jwks, issuer.jwks()?)?;
    mesh.set_routes(&format!(
        "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: apps}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  jwtRules:
  - {{issuer: \"{ISSUER}\", audiences: [reviews], jwksUri: \"file://{}\"}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: admins-only, namespace: apps}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  action: DENY
  rules:
  - to: [{{operation: {{paths: [/admin*]}}}}]
    when: [{{key: 'request.auth.claims[groups]', notValues: [admin]}}]
",
        jwks.display()
    ))?;
    let base = format!("http://{REVIEWS}:{REVIEWS_PORT}");
    let alice = issuer.token("alice", &["dev"], 3600)?;
    let bob = issuer.token("bob", &["dev", "admin"], 3600)?;
    let expired = issuer.token("bob", &["admin"], -3600)?;
    let forged = {
        let other = Issuer::new()?;
        other.token("bob", &["admin"], 3600)?
    };
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    // (case, path, token, status, body)
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("a developer on /", "/", Some(alice.clone()), 200, ""),
        (
            "a developer on /admin",
            "/admin/users",
            Some(alice),
            403,
            "RBAC: access denied",
        ),
        (
            "an admin on /admin",
            "/admin/users",
            Some(bob.clone()),
            200,
            "",
        ),
        (
            "no token on /admin",
            "/admin/users",
            None,
            403,
            "RBAC: access denied",
        ),
        ("no token on /", "/", None, 200, ""),
        (
            "an expired token",
            "/",
            Some(expired),
            401,
            "Jwt verification fails",
        ),
        (
            "a forged token",
            "/admin/users",
            Some(forged),
            401,
            "Jwt verification fails",
        ),
        (
            "not a token",
            "/",
            Some("not.a.jwt".to_owned()),
            401,
            "Jwt verification fails",
        ),
    ];
    for (case, path, token, status, body) in cases {
        let header = token.as_deref().map(bearer);
        let extra: Vec<&str> = match &header {
            Some(h) => vec!["-H", h.as_str()],
            None => Vec::new(),
        };
        let (code, got) = curl(&mesh.client, &format!("{base}{path}"), &extra)?;
        assert_eq!(code, status, "{case}: {got}\n{}", mesh.diagnostics());
        if status == 200 {
            let answer: Value = serde_json::from_str(&got).context("echo body")?;
            assert!(
                answer["headers"].get("authorization").is_none(),
                "{case}: the token is not forwarded: {answer}"
            );
        } else {
            assert_eq!(got, body, "{case}");
        }
    }
    Ok(())
}

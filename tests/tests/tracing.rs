//! End-to-end: distributed tracing through the waypoint on a one-node local cluster with the
//! real controller, an agent and a `mesh-waypoint`; `mesh-httpapp` servers in meshed pods and a
//! real trace collector (`mesh-trace-receiver`: OTLP gRPC, OTLP HTTP, Zipkin v2, built on
//! `opentelemetry-proto`) in a pod outside the mesh, named by the MeshConfig's
//! `extensionProviders` and chosen per service by `Telemetry` resources.
//!
//! client → waypoint → frontend (which calls backend, copying the trace headers) → waypoint →
//! backend: the second waypoint span's parent is the first's, the trace id is kept end to end,
//! W3C in gives W3C and B3 out, B3 in gives both; an incoming sampled flag forces a span at
//! 0% sampling, and `0` stops one at 100%; 2,000 requests at 10% give 10 ± 2.5% sampled; OTLP
//! over HTTP and Zipkin's JSON reach the collector with their attributes.
//!
//! Needs root: each test fails loudly without it.

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
use mesh_tests::trace::{Collector, ReceivedSpan};
use mesh_tests::waypoint::{waypoint_yaml, Waypoint};
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::{json, Value};

const PORT: u16 = 9080;
const DAY: Duration = Duration::from_secs(24 * 3600);
/// How long spans may take to reach the collector (the exporter batches for 200 ms).
const SPAN_WAIT: Duration = Duration::from_secs(10);

/// The servers: (pod and service name, service address, extra `serve` flags).
const SERVERS: [(&str, &str, &[&str]); 5] = [
    (
        "frontend",
        "198.19.0.20",
        &["--forward", "http://198.19.0.21:9080/"],
    ),
    ("backend", "198.19.0.21", &[]),
    ("tenth", "198.19.0.22", &[]),
    ("viahttp", "198.19.0.23", &[]),
    ("viazipkin", "198.19.0.24", &[]),
];

/// Istio's mesh configuration: the three collectors, all the one receiver pod.
const MESH_CONFIG: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    extensionProviders:
    - name: otel
      opentelemetry:
        service: otel-collector.observability.svc.cluster.local
        port: 4317
    - name: otel-http
      opentelemetry:
        service: otel-collector.observability.svc.cluster.local
        port: 4318
        http: {path: /v1/traces}
    - name: zipkin
      zipkin:
        service: otel-collector.observability.svc.cluster.local
        port: 9411
";

/// Mesh-wide OTLP/gRPC at 0% (only forced spans); `tenth` at 10%; `viahttp` over OTLP/HTTP
/// and `viazipkin` to Zipkin at 100%, with custom tags.
const TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 0
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tenth, namespace: apps}
spec:
  targetRefs: [{group: \"\", kind: Service, name: tenth}]
  tracing:
  - randomSamplingPercentage: 10
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: viahttp, namespace: apps}
spec:
  targetRefs: [{group: \"\", kind: Service, name: viahttp}]
  tracing:
  - providers: [{name: otel-http}]
    randomSamplingPercentage: 100
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: viazipkin, namespace: apps}
spec:
  targetRefs: [{group: \"\", kind: Service, name: viazipkin}]
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 100
    customTags:
      team: {literal: {value: books}}
      user: {header: {name: end-user, defaultValue: anonymous}}
";

struct Mesh {
    client: Pod,
    waypoint: Waypoint,
    collector: Collector,
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
    let collector_pod = cluster.add_pod(1, "observability", "collector")?;
    let collector = Collector::start(&collector_pod, &binary("mesh-trace-receiver")?)?;
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
        namespace_yaml("observability", false),
        namespace_yaml("istio-system", false),
        waypoint_yaml(&waypoint_pod, "node1", "waypoint", "all"),
        pod_yaml(&client, "node1", "client"),
        pod_yaml(&collector_pod, "node1", "otel-collector"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: otel-collector, namespace: observability}\nspec:\n  clusterIP: 198.19.0.90\n  selector: {app: otel-collector}\n  ports: [{name: grpc-otlp, port: 4317}, {name: http-otlp, port: 4318}, {name: http-zipkin, port: 9411}]\n".to_owned(),
    ];
    for ((name, ip, _), pod) in SERVERS.iter().zip(&servers) {
        base.push(pod_yaml(pod, "node1", name));
        base.push(format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  clusterIP: {ip}\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: {PORT}, targetPort: {PORT}}}]\n"));
    }
    std::fs::write(config_dir.join("base.yaml"), base.join("---\n"))?;
    std::fs::write(config_dir.join("mesh.yaml"), MESH_CONFIG)?;
    std::fs::write(config_dir.join("telemetry.yaml"), TELEMETRY)?;
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
    let mesh = Mesh {
        client,
        waypoint,
        collector,
        agents,
        _controller: controller,
        _config_dir: config_dir,
        _cluster: cluster,
        _dir: dir,
    };
    mesh.wait_traced()?;
    Ok(mesh)
}

/// A random id of `digits` (16 or 32) hex digits, never all zeros.
fn random_hex(digits: usize) -> String {
    let s = format!("{:032x}", fastrand::u128(1..));
    s[32 - digits.min(32)..].to_owned()
}

impl Mesh {
    fn url(&self, name: &str, path: &str) -> String {
        let ip = SERVERS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or("0.0.0.0", |(_, ip, _)| ip);
        format!("http://{ip}:{PORT}{path}")
    }

    fn diagnostics(&self) -> String {
        let mut out = format!("--- waypoint\n{}", self.waypoint.logs());
        for agent in &self.agents {
            out.push_str(&format!("--- agent {}\n{}", agent.node.name, agent.logs()));
        }
        out
    }

    /// One GET from the client with `headers`; the `get` output.
    fn get(&self, name: &str, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Value> {
        let mut args = vec!["get".to_owned(), self.url(name, path)];
        for (k, v) in headers {
            args.push("-H".into());
            args.push(format!("{k}: {v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = httpapp(&self.client, &args)?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("get output: {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// The spans of trace `trace_id`, once there are `n` (at most [`SPAN_WAIT`]).
    fn trace(&self, trace_id: &str, n: usize) -> anyhow::Result<Vec<ReceivedSpan>> {
        let spans = self
            .collector
            .store
            .wait_for(SPAN_WAIT, |all| {
                all.iter().filter(|s| s.trace_id == trace_id).count() >= n
            })
            .with_context(|| format!("trace {trace_id}\n{}", self.diagnostics()))?;
        Ok(spans
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect())
    }

    /// Waits (at most 15 s) until the waypoint traces: a forced-sampled request to `backend`
    /// gives a span (the model with the Telemetry resources applied, the collector reached).
    fn wait_traced(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let trace_id = random_hex(32);
            let parent = format!("00-{trace_id}-{}-01", random_hex(16));
            let got = self.get("backend", "/", &[("traceparent", &parent)])?;
            if got["status"] == 200 {
                let found = self
                    .collector
                    .store
                    .wait_for(Duration::from_secs(1), |all| {
                        all.iter().any(|s| s.trace_id == trace_id)
                    });
                if found.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the waypoint never traced:\n{}", self.diagnostics());
            }
            sleep(Duration::from_millis(200));
        }
    }
}

fn httpapp(pod: &Pod, args: &[&str]) -> anyhow::Result<Output> {
    pod.command(&binary("mesh-httpapp")?.display().to_string())
        .args(args)
        .output()
        .context("running mesh-httpapp")
}

/// A header as a server echoed it.
fn header<'a>(echo: &'a Value, name: &str) -> &'a str {
    echo["headers"][name].as_str().unwrap_or("")
}

/// `00-<trace>-<span>-<flags>` split.
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    match parts.as_slice() {
        ["00", trace, span, flags] => (trace.to_string(), span.to_string(), flags.to_string()),
        _ => (String::new(), String::new(), String::new()),
    }
}

fn attr<'a>(span: &'a ReceivedSpan, name: &str) -> &'a str {
    span.attributes.get(name).map_or("", String::as_str)
}

#[test]
fn spans_link_across_services_over_otlp_grpc() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-trace-grpc")?;

    // W3C in, sampled, at 0%: the caller's flag forces both spans.
    let trace_id = random_hex(32);
    let caller = random_hex(16);
    let got = mesh.get(
        "frontend",
        "/page?x=1",
        &[
            ("traceparent", &format!("00-{trace_id}-{caller}-01")),
            ("tracestate", "vendor=abc"),
            ("user-agent", "tracing-test/1"),
        ],
    )?;
    assert_eq!(got["status"], 200, "{got}\n{}", mesh.diagnostics());
    let front = &got["body"];
    let back = &got["body"]["forwarded"]["body"];
    assert_eq!(got["body"]["forwarded"]["status"], 200, "{got}");

    // What the frontend got: the waypoint's first span as parent, in both formats.
    let (t1, w1, flags1) = traceparent(header(front, "traceparent"));
    assert_eq!(t1, trace_id, "trace id kept: {front}");
    assert_ne!(w1, caller, "the waypoint's own span id");
    assert_eq!(flags1, "01");
    assert_eq!(header(front, "tracestate"), "vendor=abc", "tracestate kept");
    assert_eq!(header(front, "x-b3-traceid"), trace_id);
    assert_eq!(header(front, "x-b3-spanid"), w1);
    assert_eq!(header(front, "x-b3-parentspanid"), caller);
    assert_eq!(header(front, "x-b3-sampled"), "1");
    let request_id = header(front, "x-request-id").to_owned();
    assert_eq!(request_id.len(), 36, "x-request-id set: {front}");

    // What the backend got: the second span as parent, the first as its parent.
    let (t2, w2, _) = traceparent(header(back, "traceparent"));
    assert_eq!(t2, trace_id, "trace id kept end to end: {back}");
    assert_ne!(w2, w1);
    assert_eq!(header(back, "x-b3-spanid"), w2);
    assert_eq!(header(back, "x-b3-parentspanid"), w1);
    assert_eq!(
        header(back, "x-request-id"),
        request_id,
        "x-request-id kept"
    );

    let spans = mesh.trace(&trace_id, 2)?;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let first = spans
        .iter()
        .find(|s| s.span_id == w1)
        .context("the first span")?;
    let second = spans
        .iter()
        .find(|s| s.span_id == w2)
        .context("the second span")?;
    assert_eq!(first.parent_span_id, caller, "child of the caller");
    assert_eq!(
        second.parent_span_id, first.span_id,
        "child of the first span"
    );
    for (span, service, peer) in [
        (first, "frontend", mesh.client.ip4.to_string()),
        (second, "backend", String::new()),
    ] {
        assert_eq!(span.via, "otlp-grpc");
        assert_eq!(span.service, "waypoint.apps");
        assert_eq!(span.kind, "SERVER");
        assert!(!span.error);
        assert_eq!(
            span.name,
            format!("{service}.apps.svc.cluster.local:{PORT}/*")
        );
        assert_eq!(attr(span, "component"), "proxy");
        assert_eq!(attr(span, "http.method"), "GET");
        assert_eq!(attr(span, "http.status_code"), "200");
        assert_eq!(attr(span, "http.protocol"), "HTTP/1.1");
        assert_eq!(attr(span, "response_flags"), "-");
        assert_eq!(attr(span, "guid:x-request-id"), request_id);
        assert_eq!(attr(span, "istio.namespace"), "apps");
        assert_eq!(attr(span, "istio.canonical_service"), "waypoint");
        assert_eq!(attr(span, "istio.mesh_id"), "cluster.local");
        assert_eq!(
            attr(span, "upstream_cluster"),
            format!("outbound|{PORT}||{service}.apps.svc.cluster.local")
        );
        assert!(attr(span, "node_id").starts_with("waypoint~"), "{span:?}");
        if !peer.is_empty() {
            assert_eq!(attr(span, "peer.address"), peer);
        }
    }
    assert_eq!(
        attr(first, "http.url"),
        format!("http://198.19.0.20:{PORT}/page?x=1")
    );
    assert_eq!(attr(first, "user_agent"), "tracing-test/1");
    assert!(
        attr(first, "response_size").parse::<u64>()? > 0,
        "{first:?}"
    );

    // B3 in (sampled), at 0%: both formats out, the same links.
    let b3_trace = random_hex(32);
    let b3_caller = random_hex(16);
    let got = mesh.get(
        "frontend",
        "/",
        &[
            ("x-b3-traceid", &b3_trace),
            ("x-b3-spanid", &b3_caller),
            ("x-b3-sampled", "1"),
        ],
    )?;
    let front = &got["body"];
    let (t, w, flags) = traceparent(header(front, "traceparent"));
    assert_eq!(
        (t.as_str(), flags.as_str()),
        (b3_trace.as_str(), "01"),
        "{front}"
    );
    assert_eq!(header(front, "x-b3-traceid"), b3_trace);
    assert_eq!(header(front, "x-b3-spanid"), w);
    assert_eq!(header(front, "x-b3-parentspanid"), b3_caller);
    let back = &got["body"]["forwarded"]["body"];
    assert_eq!(traceparent(header(back, "traceparent")).0, b3_trace);
    let spans = mesh.trace(&b3_trace, 2)?;
    let first = spans.iter().find(|s| s.span_id == w).context("first")?;
    assert_eq!(first.parent_span_id, b3_caller);
    assert!(
        spans.iter().any(|s| s.parent_span_id == w),
        "the second hop's span is the first's child: {spans:?}"
    );

    // No trace headers at 0%: a new trace, not sampled, propagated with its own ids; no span.
    let got = mesh.get("frontend", "/", &[])?;
    let front = &got["body"];
    let (unsampled, _, flags) = traceparent(header(front, "traceparent"));
    assert_eq!(unsampled.len(), 32, "a new trace id: {front}");
    assert_eq!(flags, "00");
    assert_eq!(header(front, "x-b3-sampled"), "0");
    assert_eq!(header(front, "x-b3-parentspanid"), "", "a root: {front}");
    // `0` in at 100% (viazipkin): no span either. A forced request after both shows the
    // exporter got past them (one queue, in order per collector).
    let stopped = random_hex(32);
    mesh.get(
        "viazipkin",
        "/",
        &[(
            "traceparent",
            &format!("00-{stopped}-{}-00", random_hex(16)),
        )],
    )?;
    let marker = random_hex(32);
    mesh.get(
        "backend",
        "/",
        &[("traceparent", &format!("00-{marker}-{}-01", random_hex(16)))],
    )?;
    mesh.trace(&marker, 1)?;
    sleep(Duration::from_millis(500));
    let all = mesh.collector.store.all();
    assert!(
        !all.iter()
            .any(|s| s.trace_id == unsampled || s.trace_id == stopped),
        "unsampled traces exported: {all:?}"
    );
    assert_eq!(
        mesh.waypoint
            .metric("mesh_waypoint_spans_dropped_total{reason=\"queue_full\"}")?,
        0
    );
    println!("W3C and B3 in: two linked spans each over OTLP/gRPC (trace {trace_id}, {b3_trace})");
    Ok(())
}

#[test]
fn sampling_rate_over_2000_requests() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-trace-rate")?;
    let n = 2000u64;
    let out = httpapp(
        &mesh.client,
        &[
            "load",
            &mesh.url("tenth", "/"),
            &n.to_string(),
            "--concurrency",
            "8",
        ],
    )?;
    let load: Value = serde_json::from_slice(&out.stdout).context("load output")?;
    assert_eq!(load["statuses"]["200"], n, "{load}\n{}", mesh.diagnostics());
    // A forced span after the load: once it is in, every span before it is too.
    let marker = random_hex(32);
    mesh.get(
        "tenth",
        "/",
        &[("traceparent", &format!("00-{marker}-{}-01", random_hex(16)))],
    )?;
    mesh.trace(&marker, 1)?;
    let name = format!("tenth.apps.svc.cluster.local:{PORT}/*");
    let sampled: Vec<ReceivedSpan> = mesh
        .collector
        .store
        .all()
        .into_iter()
        .filter(|s| s.name == name && s.trace_id != marker)
        .collect();
    let share = 100.0 * sampled.len() as f64 / n as f64;
    assert!(
        (7.5..=12.5).contains(&share),
        "10% sampling: {share:.1}% of {n} ({} spans)",
        sampled.len()
    );
    // Each sampled request is a root span of its own trace.
    let traces: std::collections::BTreeSet<&str> =
        sampled.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), sampled.len(), "one trace per request");
    assert!(sampled.iter().all(|s| s.parent_span_id.is_empty()));
    let exported = mesh
        .waypoint
        .metric("mesh_waypoint_spans_exported_total{protocol=\"otlp_grpc\"}")?;
    assert!(
        exported > sampled.len() as u64,
        "exported counted: {exported}"
    );
    for reason in ["queue_full", "export_failed", "no_collector"] {
        let series = format!("mesh_waypoint_spans_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(mesh.waypoint.metric(&series)?, 0, "no span lost: {series}");
    }
    println!(
        "10% sampling: {} of {n} requests sampled ({share:.1}%)",
        sampled.len()
    );
    Ok(())
}

#[test]
fn otlp_http_and_zipkin_exports() -> anyhow::Result<()> {
    let mesh = start_mesh("mesh-trace-formats")?;

    // OTLP over HTTP (protobuf), at 100%, no incoming context: a root span.
    let got = mesh.get("viahttp", "/status/201", &[("x-request-id", "req-http-1")])?;
    assert_eq!(got["status"], 201);
    let (trace_id, span_id, flags) = traceparent(header(&got["body"], "traceparent"));
    assert_eq!(flags, "01", "sampled at 100%: {got}");
    let spans = mesh.trace(&trace_id, 1)?;
    let span = &spans[0];
    assert_eq!(span.via, "otlp-http");
    assert_eq!(span.span_id, span_id);
    assert_eq!(span.parent_span_id, "");
    assert_eq!(attr(span, "http.status_code"), "201");
    assert_eq!(attr(span, "guid:x-request-id"), "req-http-1");
    assert_eq!(span.service, "waypoint.apps");

    // Zipkin JSON v2, at 100%: a 5xx is an error; custom tags from a literal and a header.
    let caller = random_hex(16);
    let zipkin_trace = random_hex(32);
    let got = mesh.get(
        "viazipkin",
        "/status/503",
        &[
            ("traceparent", &format!("00-{zipkin_trace}-{caller}-01")),
            ("end-user", "jason"),
        ],
    )?;
    assert_eq!(got["status"], 503, "{got}");
    let spans = mesh.trace(&zipkin_trace, 1)?;
    let span = &spans[0];
    assert_eq!(span.via, "zipkin");
    assert_eq!(span.parent_span_id, caller);
    assert_eq!(span.kind, "SERVER");
    assert_eq!(span.service, "waypoint.apps");
    assert!(span.error, "{span:?}");
    assert_eq!(attr(span, "http.status_code"), "503");
    assert_eq!(attr(span, "error"), "true");
    assert_eq!(attr(span, "team"), "books");
    assert_eq!(attr(span, "user"), "jason");
    assert_eq!(
        span.name,
        format!("viazipkin.apps.svc.cluster.local:{PORT}/*")
    );
    let tags: BTreeMap<&str, &str> = span
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for required in [
        "http.method",
        "http.url",
        "http.protocol",
        "upstream_cluster",
        "response_flags",
        "request_size",
        "response_size",
        "guid:x-request-id",
        "user_agent",
        "peer.address",
        "istio.canonical_service",
        "istio.namespace",
        "istio.mesh_id",
        "node_id",
        "component",
    ] {
        assert!(tags.contains_key(required), "{required} missing: {tags:?}");
    }
    println!("OTLP/HTTP and Zipkin spans received with Istio's attributes");
    Ok(())
}

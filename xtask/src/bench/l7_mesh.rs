//! The waypoint rows' topology: a two-node local cluster with the controller, one agent per node,
//! a waypoint instance, nginx and HAProxy in meshed pods, and the five paths the rows compare,
//! every server a `mesh-httpapp serve` on node 2 and every client on node 1:
//!
//! | path | client | dials | hops |
//! |---|---|---|---|
//! | direct | `wpdirect/client` | `wpdirect/server` | none (neither pod captured) |
//! | L4 mesh | `wpmesh/client` | `wpmesh/server` | agent 1 → HBONE → agent 2 |
//! | waypoint | `wpmesh/client` | Service `wpway/web` (VIP) | agent 1 → HBONE → waypoint (node 1) → HBONE → agent 2 → `wpway/server` |
//! | nginx | `wpmesh/client` | `wpmesh/nginx` (node 1) | agent 1 → nginx → agent 1 → HBONE → agent 2 → `wpmesh/server` |
//! | HAProxy | `wpmesh/client` | `wpmesh/haproxy` (node 1) | the same with HAProxy |
//! | plain route | `wpmesh/client` | Service `wpway/plain` (VIP) | as the waypoint path, through a VirtualService route with retries off |
//! | resilient route | `wpmesh/client` | Service `wpway/resilient` (VIP) | the same route with a timeout, retries and outlier detection (issue 12) |
//! | bare route | `wpmesh/client` | Service `wpway/bare` (VIP) | as the waypoint path, a Telemetry turning every metric, log and span off (issue 13) |
//! | observed route | `wpmesh/client` | Service `wpway/observed` (VIP) | the same with Istio's metrics, a JSON access-log line per request to a file, and tracing at 1% |
//!
//! The Services of `wpway` select the same server. The namespace `wpway` uses the waypoint (`istio.io/use-waypoint`), so its server can be
//! reached only through it; the waypoint's pod is not enrolled with the agent. The agents'
//! kernel fast path is off for these rows, so the same-node hop into nginx or HAProxy goes
//! through agent 1 as the hop into the waypoint does (with the fast path a same-node connection
//! skips the agent after its connect). `wpdirect/server` also runs the raw echo server of the
//! baseline's mode probes. Traffic stays inside the cluster's namespaces.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::Context;
use mesh_tests::agent::{ambient, binary};
use mesh_tests::command::wait_listening;
use mesh_tests::config::{namespace_yaml, pod_yaml};
use mesh_tests::controller::Controller;
use mesh_tests::waypoint::{waypoint_yaml, Waypoint};
use mesh_tests::{Agent, Cluster, Pod};
use serde_json::json;

use super::proxies::Proxy;
use super::tools::ECHO_PORT;

/// The servers' HTTP port (HTTP/1.1 and h2c on one port).
pub const SERVER_PORT: u16 = 8080;
/// The cluster IP of `wpway/web`.
const WEB_VIP: &str = "198.19.0.40";
/// The cluster IPs of `wpway/plain` and `wpway/resilient`.
const PLAIN_VIP: &str = "198.19.0.41";
const RESILIENT_VIP: &str = "198.19.0.42";
/// The cluster IPs of `wpway/bare` and `wpway/observed`.
const BARE_VIP: &str = "198.19.0.43";
const OBSERVED_VIP: &str = "198.19.0.44";

/// The two Telemetry settings the observability rows compare (each attached to its Service),
/// and the mesh configuration's providers: an access-log file in the bench's directory and the
/// trace collector (`mesh-trace-receiver`, OTLP/gRPC, in an unmeshed pod at `collector`).
fn telemetry_yaml(access_log: &std::path::Path, collector: std::net::Ipv4Addr) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders:
    - name: bench-log
      envoyFileAccessLog: {{path: {}, logFormat: {{labels: {{}}}}}}
    - name: otel
      opentelemetry: {{service: {collector}, port: 4317}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: bare, namespace: wpway}}
spec:
  targetRefs: [{{kind: Service, name: bare}}]
  metrics: [{{overrides: [{{match: {{metric: ALL_METRICS}}, disabled: true}}]}}]
  accessLogging: [{{disabled: true}}]
  tracing: [{{disableSpanReporting: true}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: observed, namespace: wpway}}
spec:
  targetRefs: [{{kind: Service, name: observed}}]
  accessLogging: [{{providers: [{{name: bench-log}}]}}]
  tracing: [{{providers: [{{name: otel}}], randomSamplingPercentage: 1}}]
",
        access_log.display()
    )
}
/// The two routes the resilience rows compare: the same route to the same server, without and
/// with a route timeout, retries (on 5xx, connect failures and resets) and outlier detection.
/// Nothing fails, so neither retries nor ejects: the rows measure what the policies cost a
/// request that does not need them.
const ROUTES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: plain, namespace: wpway}
spec:
  hosts: [plain]
  http:
  - route: [{destination: {host: plain}}]
    retries: {attempts: 0}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: resilient, namespace: wpway}
spec:
  hosts: [resilient]
  http:
  - route: [{destination: {host: resilient}}]
    timeout: 10s
    retries: {attempts: 2, perTryTimeout: 5s, retryOn: '5xx,connect-failure,reset'}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: resilient, namespace: wpway}
spec:
  host: resilient
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}
";

/// Which of the two compared routes through the waypoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaypointRoute {
    /// The route without a timeout, retries or outlier detection.
    Plain,
    /// The same with them.
    Resilient,
    /// A route with every metric, log and span turned off.
    Bare,
    /// The same with metrics, access logs and 1% tracing.
    Observed,
}

impl WaypointRoute {
    /// Every route, in table order.
    pub const ALL: [WaypointRoute; 4] = [
        WaypointRoute::Plain,
        WaypointRoute::Resilient,
        WaypointRoute::Bare,
        WaypointRoute::Observed,
    ];
    /// The resilience rows' pair: (baseline, measured).
    pub const RESILIENCE: [WaypointRoute; 2] = [WaypointRoute::Plain, WaypointRoute::Resilient];
    /// The observability rows' pair: (baseline, measured).
    pub const OBSERVABILITY: [WaypointRoute; 2] = [WaypointRoute::Bare, WaypointRoute::Observed];

    /// Its name in the bench's lines.
    pub fn name(self) -> &'static str {
        match self {
            WaypointRoute::Plain => "plain route",
            WaypointRoute::Resilient => "resilient route",
            WaypointRoute::Bare => "bare route",
            WaypointRoute::Observed => "observed route",
        }
    }

    /// The URL of its Service.
    pub fn url(self, path: &str) -> String {
        let vip = match self {
            WaypointRoute::Plain => PLAIN_VIP,
            WaypointRoute::Resilient => RESILIENT_VIP,
            WaypointRoute::Bare => BARE_VIP,
            WaypointRoute::Observed => OBSERVED_VIP,
        };
        format!("http://{vip}:{SERVER_PORT}{path}")
    }
}

/// The agents' log level (as the L4 rows': no line per connection).
const AGENT_LOG: &str = "warn,mesh_agent=info,mesh_agent::proxy=warn";
/// The waypoint's: startup and config lines, warnings, no access log line per request (nginx
/// and HAProxy run without one too).
const WAYPOINT_LOG: &str =
    "warn,mesh_waypoint=info,mesh_waypoint::proxy=warn,mesh_waypoint::tcp=warn";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Everything the waypoint rows run on; dropping it stops the waypoint, the agents, the
/// controller, then removes the cluster (killing the servers and proxies).
#[derive(Debug)]
pub struct L7Mesh {
    /// The waypoint instance `wpway/waypoint` (node 1).
    pub waypoint: Waypoint,
    /// Client outside the mesh (node 1).
    pub direct_client: Pod,
    /// Server outside the mesh (node 2), also the echo server of the mode probes.
    pub direct_server: Pod,
    /// Meshed client (node 1).
    pub client: Pod,
    /// Meshed server without a waypoint (node 2): the L4 path's and the proxies' upstream.
    pub server: Pod,
    /// nginx's meshed pod (node 1).
    pub nginx: Pod,
    /// HAProxy's meshed pod (node 1).
    pub haproxy: Pod,
    agents: Vec<Agent>,
    controller: Controller,
    _cluster: Cluster,
    _dir: tempfile::TempDir,
}

fn serve(cluster: &mut Cluster, pod: &Pod) -> anyhow::Result<()> {
    let mut cmd = pod.command(&binary("mesh-httpapp")?.display().to_string());
    cmd.args(["serve", &SERVER_PORT.to_string(), &pod.name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cluster.spawn(cmd)?;
    wait_listening(pod, SERVER_PORT)
}

impl L7Mesh {
    /// Builds the cluster, starts every server, proxy, the controller, the agents (kernel fast
    /// path off) and the waypoint, and enrols the pods.
    pub fn start() -> anyhow::Result<L7Mesh> {
        let dir = tempfile::Builder::new().prefix("mesh-bench-l7").tempdir()?;
        let mut cluster = Cluster::new(2)?;
        let direct_client = cluster.add_pod(1, "wpdirect", "client")?;
        let direct_server = cluster.add_pod(2, "wpdirect", "server")?;
        let client = cluster.add_pod(1, "wpmesh", "client")?;
        let server = cluster.add_pod(2, "wpmesh", "server")?;
        let nginx = cluster.add_pod(1, "wpmesh", "nginx")?;
        let haproxy = cluster.add_pod(1, "wpmesh", "haproxy")?;
        let waypoint_server = cluster.add_pod(2, "wpway", "server")?;
        let waypoint_pod = cluster.add_pod(1, "wpway", "waypoint")?;
        let collector = cluster.add_pod(2, "wpdirect", "collector")?;
        let mut receiver = collector.command(&binary("mesh-trace-receiver")?.display().to_string());
        receiver
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cluster.spawn(receiver)?;
        wait_listening(&collector, 4317)?;

        for pod in [&direct_server, &server, &waypoint_server] {
            serve(&mut cluster, pod)?;
        }
        let mut echo = direct_server.command(&binary("mesh-testapp")?.display().to_string());
        echo.args(["echo", &ECHO_PORT.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cluster.spawn(echo)?;
        wait_listening(&direct_server, ECHO_PORT)?;
        let upstream = SocketAddrV4::new(server.ip4, SERVER_PORT);
        let proxies_dir = dir.path().join("proxies");
        Proxy::Nginx.start(&mut cluster, &nginx, upstream, &proxies_dir)?;
        Proxy::Haproxy.start(&mut cluster, &haproxy, upstream, &proxies_dir)?;

        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(&config_dir)?;
        let docs = [
            namespace_yaml("wpdirect", false),
            namespace_yaml("wpmesh", true),
            namespace_yaml("wpway", true).replace(
                "labels: {istio.io/dataplane-mode: ambient}",
                "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
            ),
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: wpway}}\nspec:\n  clusterIP: {WEB_VIP}\n  selector: {{app: web}}\n  ports: [{{name: http, port: {SERVER_PORT}, targetPort: {SERVER_PORT}}}]\n"),
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: plain, namespace: wpway}}\nspec:\n  clusterIP: {PLAIN_VIP}\n  selector: {{app: web}}\n  ports: [{{name: http, port: {SERVER_PORT}, targetPort: {SERVER_PORT}}}]\n"),
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: resilient, namespace: wpway}}\nspec:\n  clusterIP: {RESILIENT_VIP}\n  selector: {{app: web}}\n  ports: [{{name: http, port: {SERVER_PORT}, targetPort: {SERVER_PORT}}}]\n"),
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: bare, namespace: wpway}}\nspec:\n  clusterIP: {BARE_VIP}\n  selector: {{app: web}}\n  ports: [{{name: http, port: {SERVER_PORT}, targetPort: {SERVER_PORT}}}]\n"),
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: observed, namespace: wpway}}\nspec:\n  clusterIP: {OBSERVED_VIP}\n  selector: {{app: web}}\n  ports: [{{name: http, port: {SERVER_PORT}, targetPort: {SERVER_PORT}}}]\n"),
            ROUTES.to_owned(),
            telemetry_yaml(&dir.path().join("access.log"), collector.ip4),
            pod_yaml(&collector, "node2", "collector"),
            waypoint_yaml(&waypoint_pod, "node1", "waypoint", "service"),
            pod_yaml(&direct_client, "node1", "client"),
            pod_yaml(&direct_server, "node2", "server"),
            pod_yaml(&client, "node1", "client"),
            pod_yaml(&server, "node2", "server"),
            pod_yaml(&nginx, "node1", "nginx"),
            pod_yaml(&haproxy, "node1", "haproxy"),
            pod_yaml(&waypoint_server, "node2", "web"),
        ];
        // Every pod is a workload, the waypoint's and the unmeshed ones included.
        let workloads = 9;
        std::fs::write(config_dir.join("bench.yaml"), docs.join("---\n"))?;
        let controller = Controller::start_with_waypoints(
            &cluster,
            dir.path(),
            &config_dir,
            DAY,
            &[("wpway", "waypoint")],
        )?;
        let mut agents = Vec::new();
        for node in cluster.nodes() {
            let args = controller.agent_args(dir.path(), &node.name);
            agents.push(Agent::start_with_log(
                node,
                dir.path(),
                None,
                &args,
                AGENT_LOG,
            )?);
        }
        let needle = format!("workloads={workloads}");
        for agent in &agents {
            agent
                .wait_for_log(&["config applied", &needle], Duration::from_secs(20))
                .context("waiting for the agents to get the config")?;
            agent.admin_post("/fastpath?enabled=false")?;
        }
        let (a1, a2) = (&agents[0], &agents[1]);
        for (agent, pod, app, meshed) in [
            (a1, &client, "client", true),
            (a1, &nginx, "nginx", true),
            (a1, &haproxy, "haproxy", true),
            (a2, &server, "server", true),
            (a2, &waypoint_server, "web", true),
            (a1, &direct_client, "client", false),
            (a2, &direct_server, "server", false),
        ] {
            let ns_labels = if meshed { ambient() } else { json!({}) };
            let response = agent.add_pod(pod, ns_labels, json!({ "app": app }))?;
            if (response["captured"] == json!(true)) != meshed {
                anyhow::bail!("{}: unexpected capture state {response}", pod.uid());
            }
        }
        let waypoint = Waypoint::start_with_log(
            &waypoint_pod,
            dir.path(),
            &controller,
            "waypoint",
            WAYPOINT_LOG,
        )?;
        Ok(L7Mesh {
            waypoint,
            direct_client,
            direct_server,
            client,
            server,
            nginx,
            haproxy,
            agents,
            controller,
            _cluster: cluster,
            _dir: dir,
        })
    }

    /// The waypoint's process id.
    pub fn waypoint_pid(&self) -> anyhow::Result<u32> {
        self.waypoint.pid().context("the waypoint is not running")
    }

    /// The URL of the server behind the waypoint (its Service).
    pub fn waypoint_url(path: &str) -> String {
        format!("http://{WEB_VIP}:{SERVER_PORT}{path}")
    }

    /// The logs of the waypoint, the agents and the controller (their tails), for error reports.
    pub fn logs(&self) -> String {
        let tail = |name: &str, text: String, n: usize| {
            let lines: Vec<&str> = text.lines().rev().take(n).collect();
            let mut out = format!("--- {name} (last {n} lines)\n");
            for line in lines.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
            out
        };
        let mut out = tail("waypoint", self.waypoint.logs(), 40);
        for agent in &self.agents {
            out.push_str(&tail(
                &format!("{} agent", agent.node.name),
                agent.logs(),
                30,
            ));
        }
        out.push_str(&tail("controller", self.controller.logs(), 20));
        out
    }
}

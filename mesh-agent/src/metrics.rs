//! The agent's Prometheus metrics (served on `--metrics-addr`, default port 15020).
//!
//! Istio's standard TCP metrics (`istio_tcp_*`, `reporter="source"` on the client side and
//! `"destination"` on the server side, Istio's full label set: `mesh_common::istio_metrics`) for
//! the dashboards and alerts users have, and the agent's own series under `mesh_agent_` (how a
//! connection was carried, refusals by reason, the HBONE pool, the HTTP listeners, kernel
//! program attach failures, the config stream's state), whose label sets are kept small
//! (workloads and services, never raw addresses or ports of clients).

use std::sync::atomic::AtomicU64;
use std::time::UNIX_EPOCH;

use mesh_common::access_log::{Entry, Sinks};
use mesh_common::api::ClientStatus;
use mesh_common::http_server::ListenerMetrics;
use mesh_common::istio_metrics::{IstioMetrics, TcpHandles};
use mesh_common::kernel::names;
use mesh_common::scope_telemetry::ScopeTelemetry;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// Which way a connection goes, seen from the pod the agent serves.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    /// From an enrolled pod.
    Outbound,
    /// To an enrolled pod.
    Inbound,
}

/// How the connection is carried.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Transport {
    /// Plaintext TCP.
    Plaintext,
    /// HBONE (mTLS tunnel).
    Hbone,
    /// HBONE to a waypoint, which carries it on to the destination (outbound only: inbound, a
    /// waypoint's connection is `Hbone`).
    Waypoint,
    /// Between two captured pods of the same node, delivered by the agent without a tunnel.
    Local,
    /// Between two captured pods of the same node, decided in the kernel from an earlier verdict
    /// of the agent and spliced socket to socket (or refused at connect).
    Kernel,
}

/// Labels of the connection metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// Outbound or inbound.
    pub direction: Direction,
    /// Plaintext, HBONE, waypoint, local or kernel.
    pub transport: Transport,
    /// The enrolled pod (`namespace/name`).
    pub workload: String,
    /// The destination service (`namespace/name`) or `unknown`.
    pub destination_service: String,
}

impl ConnectionLabels {
    /// Labels of a connection into `workload` (the destination service is not known inbound).
    pub fn inbound(workload: &str, transport: Transport) -> ConnectionLabels {
        ConnectionLabels {
            direction: Direction::Inbound,
            transport,
            workload: workload.to_owned(),
            destination_service: "unknown".into(),
        }
    }
}

/// One connection's series: the agent's own labels and Istio's counters, resolved once.
#[derive(Clone, Debug)]
pub struct Conn {
    /// The `mesh_agent_tcp_*` labels.
    pub labels: ConnectionLabels,
    /// The `istio_tcp_*` counters.
    pub istio: TcpHandles,
    /// The access-log entry to complete at the end, where logging is on.
    pub log: Option<Box<ConnLog>>,
}

/// A connection's access-log entry, as known when it opened.
#[derive(Debug, Clone)]
pub struct ConnLog {
    /// Addresses, identities, start time.
    pub entry: Entry,
    /// When it opened.
    pub started: std::time::Instant,
    /// Whether the peers were authenticated (for `connection.mtls` filters).
    pub mtls: bool,
    /// The pod's Telemetry settings (the access log among them).
    pub settings: std::sync::Arc<ScopeTelemetry>,
}

/// Labels of denied connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenyLabels {
    /// The enrolled pod (`namespace/name`).
    pub workload: String,
    /// Why: `policy`, `peer_authentication`, `not_from_waypoint`, `waypoint_unreachable`, ...
    pub reason: String,
}

/// Labels of kernel program attach failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    /// The program (`mesh_connect4`, `mesh_sockops`, ...; `cgroup` when the pod's cgroup could
    /// not be opened; see `EbpfError::attach_program`).
    pub program: &'static str,
}

/// The programs attached per pod (and `mesh_sockops` to the agent's own cgroup): their attach
/// failure series exist from the start.
const ATTACHED_PROGRAMS: [&str; 4] = [
    names::CONNECT4,
    names::CONNECT6,
    names::SOCKOPS,
    names::SK_LOOKUP,
];

/// One of the agent's HTTP listeners (label value `metrics`, `readiness` or `admin`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum HttpListener {
    /// `--metrics-addr` (15020).
    Metrics,
    /// `--readiness-addr` (15021).
    Readiness,
    /// `--admin-addr` (15000, loopback).
    Admin,
}

impl HttpListener {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpListener::Metrics => "metrics",
            HttpListener::Readiness => "readiness",
            HttpListener::Admin => "admin",
        }
    }
}

impl EncodeLabelValue for HttpListener {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Which connection cap refused a connection (label value `listener` or `peer`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum HttpCap {
    /// The listener's cap.
    Listener,
    /// The per-client-address cap.
    Peer,
}

impl EncodeLabelValue for HttpCap {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let value = match self {
            HttpCap::Listener => "listener",
            HttpCap::Peer => "peer",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

/// Labels of the HTTP listener metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpListenerLabels {
    /// The listener.
    pub listener: HttpListener,
}

/// Labels of the refused HTTP connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRefusedLabels {
    /// The listener.
    pub listener: HttpListener,
    /// The cap that refused.
    pub cap: HttpCap,
}

/// The bounds of the agent's HTTP listeners, per listener.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Connections open.
    pub open: Family<HttpListenerLabels, Gauge>,
    /// Connections closed at accept over a cap.
    pub refused: Family<HttpRefusedLabels, Counter>,
    /// Connections closed for a request head not complete in time.
    pub header_read_timeouts: Family<HttpListenerLabels, Counter>,
    /// Keep-alive connections closed for idleness.
    pub idle_closes: Family<HttpListenerLabels, Counter>,
    /// Connections closed for a response not ready in time.
    pub response_timeouts: Family<HttpListenerLabels, Counter>,
    /// Requests refused for a head or body over the limits.
    pub oversized: Family<HttpListenerLabels, Counter>,
}

impl HttpMetrics {
    /// The handles the server of `listener` updates (shared with the families).
    pub fn listener(&self, listener: HttpListener) -> ListenerMetrics {
        let labels = HttpListenerLabels { listener };
        let refused = |cap| {
            self.refused
                .get_or_create(&HttpRefusedLabels { listener, cap })
                .clone()
        };
        ListenerMetrics {
            open: self.open.get_or_create(&labels).clone(),
            refused_listener_cap: refused(HttpCap::Listener),
            refused_peer_cap: refused(HttpCap::Peer),
            header_read_timeouts: self.header_read_timeouts.get_or_create(&labels).clone(),
            idle_closes: self.idle_closes.get_or_create(&labels).clone(),
            response_timeouts: self.response_timeouts.get_or_create(&labels).clone(),
            oversized: self.oversized.get_or_create(&labels).clone(),
        }
    }

    fn register(&self, sub: &mut Registry) {
        sub.register(
            "http_connections_open",
            "Connections open on the agent's HTTP listeners",
            self.open.clone(),
        );
        sub.register(
            "http_connections_refused",
            "HTTP connections closed at accept over the listener's or the client address's cap",
            self.refused.clone(),
        );
        sub.register(
            "http_header_read_timeouts",
            "HTTP connections closed because a request head was not complete in time",
            self.header_read_timeouts.clone(),
        );
        sub.register(
            "http_idle_closes",
            "HTTP keep-alive connections closed after the idle timeout",
            self.idle_closes.clone(),
        );
        sub.register(
            "http_response_timeouts",
            "HTTP connections closed because a response was not ready in time",
            self.response_timeouts.clone(),
        );
        sub.register(
            "http_oversized_requests",
            "HTTP requests refused for a head or body over the limits (431, 413)",
            self.oversized.clone(),
        );
    }
}

/// Labels of dry-run policy evaluations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DryRunLabels {
    /// The destination pod (`namespace/name`).
    pub workload: String,
    /// The dry-run policy (`namespace/name`).
    pub policy: String,
    /// What enforcing it would have done: `allow` or `deny`.
    pub decision: String,
}

/// All agent metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Istio's standard TCP metrics.
    pub istio: IstioMetrics,
    /// Access-log files and their writers.
    pub access_logs: Sinks,
    /// Connections opened.
    pub connections_opened: Family<ConnectionLabels, Counter>,
    /// Connections closed.
    pub connections_closed: Family<ConnectionLabels, Counter>,
    /// Bytes from the client side to the server side.
    pub sent_bytes: Family<ConnectionLabels, Counter>,
    /// Bytes from the server side to the client side.
    pub received_bytes: Family<ConnectionLabels, Counter>,
    /// Connections refused, by reason.
    pub denied: Family<DenyLabels, Counter>,
    /// Kernel program attachments that failed, by program.
    pub attach_failures: Family<ProgramLabels, Counter>,
    /// Pods currently captured.
    pub enrolled_pods: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Outbound TLS connections opened to HBONE peers (one carries many streams).
    pub hbone_connections_opened: Counter<u64, AtomicU64>,
    /// Outbound HBONE connection attempts that failed (TCP, TLS, identity, HTTP/2).
    pub hbone_connect_failures: Counter<u64, AtomicU64>,
    /// Outbound CONNECT streams opened.
    pub hbone_streams_opened: Counter<u64, AtomicU64>,
    /// Which refusals are logged: once per burst and kind (see [`Metrics::refuse`]).
    pub refusal_log: mesh_common::burst_log::BurstLog,
    /// Outbound HBONE connections closed and removed from the pool (idle, ended, lost).
    pub hbone_connections_closed: Counter<u64, AtomicU64>,
    /// Outbound HBONE connections closed because the peer stopped answering PINGs.
    pub hbone_connections_lost: Counter<u64, AtomicU64>,
    /// The agent's HTTP listeners.
    pub http: HttpMetrics,
    /// Would-be decisions of dry-run policies (never enforced).
    pub dry_run_decisions: Family<DryRunLabels, Counter>,
    /// Which dry-run evaluations are logged: once per burst and policy.
    pub dry_run_log: mesh_common::burst_log::BurstLog,
}

impl Metrics {
    /// Registers Istio's metrics under their names and every other under the `mesh_agent` prefix.
    pub fn register(&self, registry: &mut Registry) {
        self.istio.register(registry);
        let sub = registry.sub_registry_with_prefix("mesh_agent");
        sub.register(
            "tcp_connections_opened",
            "TCP connections opened",
            self.connections_opened.clone(),
        );
        sub.register(
            "tcp_connections_closed",
            "TCP connections closed",
            self.connections_closed.clone(),
        );
        sub.register(
            "tcp_sent_bytes",
            "Bytes sent from client to server",
            self.sent_bytes.clone(),
        );
        sub.register(
            "tcp_received_bytes",
            "Bytes sent from server to client",
            self.received_bytes.clone(),
        );
        sub.register(
            "connections_denied",
            "Connections refused, by reason (policy, peer_authentication, waypoint_unavailable, \
             agent_port, ...)",
            self.denied.clone(),
        );
        for program in ATTACHED_PROGRAMS {
            drop(
                self.attach_failures
                    .get_or_create(&ProgramLabels { program }),
            );
        }
        sub.register(
            "kernel_attach_failures",
            "Kernel program attachments that failed (to a pod, or to the agent's own cgroup)",
            self.attach_failures.clone(),
        );
        sub.register(
            "enrolled_pods",
            "Pods whose traffic is captured",
            self.enrolled_pods.clone(),
        );
        sub.register(
            "hbone_connections_opened",
            "Outbound mTLS connections opened to HBONE peers",
            self.hbone_connections_opened.clone(),
        );
        sub.register(
            "hbone_connect_failures",
            "Outbound HBONE connection attempts that failed",
            self.hbone_connect_failures.clone(),
        );
        sub.register(
            "dry_run_decisions",
            "Connections evaluated against dry-run AuthorizationPolicies, by would-be decision",
            self.dry_run_decisions.clone(),
        );
        sub.register(
            "hbone_streams_opened",
            "Outbound HBONE CONNECT streams opened",
            self.hbone_streams_opened.clone(),
        );
        sub.register(
            "hbone_connections_closed",
            "Outbound HBONE connections closed and removed from the pool",
            self.hbone_connections_closed.clone(),
        );
        sub.register(
            "hbone_connections_lost",
            "Outbound HBONE connections closed because the peer stopped answering PINGs",
            self.hbone_connections_lost.clone(),
        );
        self.http.register(sub);
    }

    /// Brings the HBONE counters up to the pool's own (called before each scrape).
    pub fn sync_pool(&self, stats: &mesh_hbone::hbone::PoolStats) {
        let catch_up = |counter: &Counter<u64, AtomicU64>, value: u64| {
            counter.inc_by(value.saturating_sub(counter.get()));
        };
        catch_up(&self.hbone_connections_opened, stats.connections_opened());
        catch_up(&self.hbone_connect_failures, stats.connect_failures());
        catch_up(&self.hbone_streams_opened, stats.streams_opened());
        catch_up(&self.hbone_connections_closed, stats.connections_closed());
        catch_up(&self.hbone_connections_lost, stats.connections_lost());
    }

    /// Counts a failed attachment of `program` (`EbpfError::attach_program`).
    pub fn attach_failed(&self, program: &'static str) {
        self.attach_failures
            .get_or_create(&ProgramLabels { program })
            .inc();
    }

    /// Reports the config stream's state (`mesh_agent_config_*`) from `status`, read at each
    /// scrape.
    pub fn register_config_stream(registry: &mut Registry, status: watch::Receiver<ClientStatus>) {
        registry
            .sub_registry_with_prefix("mesh_agent")
            .register_collector(Box::new(ConfigStream { status }));
    }

    /// Counts a connection to `workload` refused for `reason` (`policy`, `peer_authentication`).
    pub fn record_denied(&self, workload: &str, reason: &str) {
        self.record_denied_n(workload, reason, 1);
    }

    /// Counts a refused connection to `workload` under `reason`; returns `Some(n)` when the
    /// refusal is to be logged (the first of a burst of that reason; `n` earlier ones were not
    /// logged), `None` when it is only counted. Refusals a client can cause at will (hostile
    /// connections) use this instead of a log line per connection.
    pub fn refuse(&self, workload: &str, reason: &'static str) -> Option<u64> {
        self.record_denied(workload, reason);
        self.refusal_log.admit(reason, std::time::Instant::now())
    }

    /// Counts a dry-run evaluation; `Some(n)` when it is to be logged (the first of a burst for
    /// that policy and decision; `n` earlier ones were not logged).
    pub fn dry_run(&self, workload: &str, policy: &str, decision: &'static str) -> Option<u64> {
        let labels = DryRunLabels {
            workload: workload.to_owned(),
            policy: policy.to_owned(),
            decision: decision.to_owned(),
        };
        self.dry_run_decisions.get_or_create(&labels).inc();
        self.dry_run_log
            .admit(&format!("{policy} {decision}"), std::time::Instant::now())
    }

    /// Counts `n` connections to `workload` refused for `reason`.
    pub fn record_denied_n(&self, workload: &str, reason: &str, n: u64) {
        let labels = DenyLabels {
            workload: workload.to_owned(),
            reason: reason.to_owned(),
        };
        self.denied.get_or_create(&labels).inc_by(n);
    }

    /// Counts a connection opened.
    pub fn record_open(&self, conn: &Conn) {
        self.connections_opened.get_or_create(&conn.labels).inc();
        conn.istio.open();
    }

    /// Records a finished relay.
    pub fn record_relay(&self, conn: &Conn, sent: u64, received: u64) {
        let labels = &conn.labels;
        self.connections_closed.get_or_create(labels).inc();
        self.sent_bytes.get_or_create(labels).inc_by(sent);
        self.received_bytes.get_or_create(labels).inc_by(received);
        conn.istio.close(sent, received);
        if let Some(log) = &conn.log {
            if let Some(access_log) = &log.settings.access_log {
                let mut entry = log.entry.clone();
                entry.bytes_received = sent;
                entry.bytes_sent = received;
                entry.duration_ms = log.started.elapsed().as_millis() as u64;
                access_log.write(&self.access_logs, &entry, log.mtls);
            }
        }
    }
}

/// The config stream's state, read from its client at each scrape.
#[derive(Debug)]
struct ConfigStream {
    status: watch::Receiver<ClientStatus>,
}

/// Labels of the applied version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

impl Collector for ConfigStream {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.status.borrow().clone();
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        let connected = gauge(u64::from(status.connected));
        connected.encode(encoder.encode_descriptor(
            "config_connected",
            "Whether the config stream to the controller is up (1) and has delivered its first update",
            None,
            connected.metric_type(),
        )?)?;
        let one = gauge(1);
        let mut family = encoder.encode_descriptor(
            "config_version",
            "The configuration version applied (1, labelled with the version)",
            None,
            one.metric_type(),
        )?;
        if !status.version.is_empty() {
            let labels = VersionLabels {
                version: status.version.clone(),
            };
            one.encode(family.encode_family(&labels)?)?;
        }
        let applied = status
            .applied_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let applied = gauge(applied);
        applied.encode(encoder.encode_descriptor(
            "config_last_applied_timestamp_seconds",
            "When (unix time) the last update from the controller was applied (0: none yet)",
            None,
            applied.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "config_nacks",
                "Config updates rejected (answered with a Nack)",
                status.nacks,
            ),
            (
                "config_connect_attempts",
                "Config stream connection attempts (the first and every reconnect)",
                status.connections,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_counts_appear_in_the_text_format() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let labels = ConnectionLabels {
            direction: Direction::Outbound,
            transport: Transport::Plaintext,
            workload: "apps/client".into(),
            destination_service: "default/echo".into(),
        };
        let conn = Conn {
            labels,
            istio: TcpHandles::default(),
            log: None,
        };
        metrics.record_open(&conn);
        metrics.record_relay(&conn, 10, 20);
        let text = render(&registry).expect("encodes");
        assert!(text.contains("mesh_agent_tcp_connections_opened_total{direction=\"Outbound\",transport=\"Plaintext\",workload=\"apps/client\",destination_service=\"default/echo\"} 1"), "{text}");
        assert!(
            text.contains("mesh_agent_tcp_received_bytes_total{direction=\"Outbound\""),
            "{text}"
        );
        assert!(text.contains("} 20"), "{text}");
    }

    #[test]
    fn a_logged_connection_writes_one_json_line_at_its_end() {
        use mesh_common::model::{
            AccessLogFormat, AccessLogProvider, AccessLogSettings, EffectiveTelemetry,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let effective = EffectiveTelemetry {
            access_logging: AccessLogSettings {
                disabled: None,
                filter: Some("connection.mtls".into()),
                provider: Some(AccessLogProvider {
                    name: "envoy".into(),
                    path: path.display().to_string(),
                    format: AccessLogFormat::Json {
                        labels: Default::default(),
                    },
                }),
            },
            ..EffectiveTelemetry::default()
        };
        let settings = std::sync::Arc::new(ScopeTelemetry::new(&effective));
        let metrics = Metrics::default();
        let labels = ConnectionLabels {
            direction: Direction::Outbound,
            transport: Transport::Hbone,
            workload: "apps/client".into(),
            destination_service: "default/echo".into(),
        };
        let conn = |mtls: bool| Conn {
            labels: labels.clone(),
            istio: TcpHandles::default(),
            log: Some(Box::new(ConnLog {
                entry: Entry {
                    source_principal: Some("spiffe://cluster.local/ns/apps/sa/client".into()),
                    ..Entry::default()
                },
                started: std::time::Instant::now(),
                mtls,
                settings: settings.clone(),
            })),
        };
        // The filter passes mTLS connections only.
        metrics.record_relay(&conn(false), 1, 2);
        metrics.record_relay(&conn(true), 10, 20);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.ends_with('\n') || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
        assert_eq!(line["bytes_received"], 10);
        assert_eq!(line["bytes_sent"], 20);
        assert_eq!(
            line["source_principal"],
            "spiffe://cluster.local/ns/apps/sa/client"
        );
    }

    #[test]
    fn the_config_stream_state_is_read_at_each_scrape() {
        let (tx, rx) = watch::channel(ClientStatus::default());
        let mut registry = Registry::default();
        Metrics::register_config_stream(&mut registry, rx);
        let before = render(&registry).expect("encodes");
        for line in [
            "mesh_agent_config_connected 0",
            "mesh_agent_config_nacks_total 0",
            "mesh_agent_config_last_applied_timestamp_seconds 0",
        ] {
            assert!(before.contains(line), "{line} in {before}");
        }
        assert!(!before.contains("mesh_agent_config_version{"), "{before}");
        tx.send_modify(|s| {
            s.connected = true;
            s.version = "00ab".into();
            s.nacks = 2;
            s.connections = 3;
            s.applied_at = Some(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        });
        let after = render(&registry).expect("encodes");
        for line in [
            "mesh_agent_config_connected 1",
            "mesh_agent_config_version{version=\"00ab\"} 1",
            "mesh_agent_config_nacks_total 2",
            "mesh_agent_config_connect_attempts_total 3",
            "mesh_agent_config_last_applied_timestamp_seconds 1700000000",
        ] {
            assert!(after.contains(line), "{line} in {after}");
        }
    }

    #[test]
    fn attach_failures_are_counted_by_program() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.attach_failed(names::SK_LOOKUP);
        let text = render(&registry).expect("encodes");
        for line in [
            "mesh_agent_kernel_attach_failures_total{program=\"mesh_sk_lookup\"} 1",
            "mesh_agent_kernel_attach_failures_total{program=\"mesh_connect4\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn http_listener_counters_are_labelled_by_listener() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let readiness = metrics.http.listener(HttpListener::Readiness);
        readiness.open.inc();
        readiness.refused_peer_cap.inc_by(3);
        metrics
            .http
            .listener(HttpListener::Metrics)
            .idle_closes
            .inc();
        let text = render(&registry).expect("encodes");
        for line in [
            "mesh_agent_http_connections_open{listener=\"readiness\"} 1",
            "mesh_agent_http_connections_refused_total{listener=\"readiness\",cap=\"peer\"} 3",
            "mesh_agent_http_connections_refused_total{listener=\"readiness\",cap=\"listener\"} 0",
            "mesh_agent_http_idle_closes_total{listener=\"metrics\"} 1",
            "mesh_agent_http_header_read_timeouts_total{listener=\"metrics\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}

//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`, `istio_tcp_*`) with Istio's names, types,
//! buckets and labels, shared by the agent (`reporter="source"`/`"destination"`) and the
//! waypoint (`reporter="waypoint"`), and `Telemetry` metric overrides (a metric disabled, a tag
//! removed or set to a literal) applied to them.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::model::{EffectiveTelemetry, MetricName, Service, TagOverride, Workload};

/// Envoy's default histogram buckets, which Istio's duration and size histograms use.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's `source_cluster` / `destination_cluster` when no cluster id is configured.
pub const DEFAULT_CLUSTER: &str = "Kubernetes";

/// The value of a label Istio does not know.
pub const UNKNOWN: &str = "unknown";

/// Who reports (`reporter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client side's agent.
    Source,
    /// The server side's agent.
    Destination,
    /// A waypoint.
    Waypoint,
}

impl Reporter {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }

    /// Whether `Telemetry` treats the report as the client side's (`match.mode: CLIENT`).
    pub fn is_client(self) -> bool {
        self == Reporter::Source
    }
}

/// `connection_security_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Security {
    /// Authenticated peers: HBONE mTLS, or both ends known to the node's agent (same node).
    MutualTls,
    /// Plaintext from or to a workload outside the mesh.
    None,
}

impl Security {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::MutualTls => "mutual_tls",
            Security::None => "none",
        }
    }
}

/// `request_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    /// Opaque TCP.
    Tcp,
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC.
    Grpc,
}

impl RequestProtocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Tcp => "tcp",
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
        }
    }
}

/// What the labels say of one workload (`*_workload`, `*_app`, ...), built once per workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// `*_workload`.
    pub workload: Arc<str>,
    /// `*_workload_namespace`.
    pub namespace: Arc<str>,
    /// `*_app`.
    pub app: Arc<str>,
    /// `*_version`.
    pub version: Arc<str>,
    /// `*_canonical_service`.
    pub canonical_service: Arc<str>,
    /// `*_canonical_revision`.
    pub canonical_revision: Arc<str>,
}

fn or_unknown(value: &str) -> Arc<str> {
    if value.is_empty() {
        Arc::from(UNKNOWN)
    } else {
        Arc::from(value)
    }
}

impl Peer {
    /// The labels of a workload of the model.
    pub fn of(workload: &Workload) -> Peer {
        Peer {
            workload: or_unknown(workload.metrics_name()),
            namespace: or_unknown(&workload.namespace),
            app: or_unknown(workload.app()),
            version: or_unknown(workload.version()),
            canonical_service: or_unknown(workload.canonical_service()),
            canonical_revision: or_unknown(workload.canonical_revision()),
        }
    }

    /// A peer the model does not know (every label `unknown`).
    pub fn unknown() -> Arc<Peer> {
        static UNKNOWN_PEER: OnceLock<Arc<Peer>> = OnceLock::new();
        UNKNOWN_PEER
            .get_or_init(|| {
                let u: Arc<str> = Arc::from(UNKNOWN);
                Arc::new(Peer {
                    workload: u.clone(),
                    namespace: u.clone(),
                    app: u.clone(),
                    version: u.clone(),
                    canonical_service: u.clone(),
                    canonical_revision: u,
                })
            })
            .clone()
    }
}

/// `destination_service`, `destination_service_name`, `destination_service_namespace`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceLabels {
    /// The host name (`reviews.bookinfo.svc.cluster.local`).
    pub host: Arc<str>,
    /// The name.
    pub name: Arc<str>,
    /// The namespace.
    pub namespace: Arc<str>,
}

impl ServiceLabels {
    /// The labels of a service of the model (its host name, else
    /// `<name>.<namespace>.svc.cluster.local`).
    pub fn of(service: &Service) -> ServiceLabels {
        let host = if service.hostname.is_empty() {
            format!("{}.{}.svc.cluster.local", service.name, service.namespace)
        } else {
            service.hostname.clone()
        };
        ServiceLabels {
            host: Arc::from(host),
            name: or_unknown(&service.name),
            namespace: or_unknown(&service.namespace),
        }
    }

    /// A destination that is no known service: the address dialed is the host, as Istio does.
    pub fn address(address: &str) -> ServiceLabels {
        let u: Arc<str> = Arc::from(UNKNOWN);
        ServiceLabels {
            host: Arc::from(address),
            name: u.clone(),
            namespace: u,
        }
    }

    /// No service at all.
    pub fn unknown() -> Arc<ServiceLabels> {
        static UNKNOWN_SERVICE: OnceLock<Arc<ServiceLabels>> = OnceLock::new();
        UNKNOWN_SERVICE
            .get_or_init(|| Arc::new(ServiceLabels::address(UNKNOWN)))
            .clone()
    }
}

/// A tag the `Telemetry` overrides of one metric remove or set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TagEdits {
    /// Standard labels dropped.
    pub removed: Vec<String>,
    /// Labels set to a value (added, or replacing a standard one).
    pub set: Vec<(String, String)>,
}

impl TagEdits {
    /// The edits of a metric's overrides. `UPSERT` values are Istio's attribute expressions;
    /// quoted literals are applied, any other expression is returned in the error list (the
    /// caller reports it once) and the tag is set to `unknown` so the series stays visible.
    pub fn from_overrides(tags: &BTreeMap<String, TagOverride>) -> (TagEdits, Vec<String>) {
        let mut edits = TagEdits::default();
        let mut unsupported = Vec::new();
        for (name, op) in tags {
            match op {
                TagOverride::Remove => edits.removed.push(name.clone()),
                TagOverride::Upsert { value } => {
                    let literal = literal(value);
                    if literal.is_none() {
                        unsupported.push(format!("{name}: {value}"));
                    }
                    edits.removed.push(name.clone());
                    edits
                        .set
                        .push((name.clone(), literal.unwrap_or(UNKNOWN).to_owned()));
                }
            }
        }
        (edits, unsupported)
    }

    fn keeps(&self, name: &str) -> bool {
        !self.removed.iter().any(|r| r == name)
    }
}

/// A quoted string literal (`"v1"` or `'v1'`).
fn literal(expression: &str) -> Option<&str> {
    let e = expression.trim();
    ['"', '\'']
        .iter()
        .find_map(|q| e.strip_prefix(*q).and_then(|rest| rest.strip_suffix(*q)))
}

/// The labels of one series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IstioLabels {
    /// `reporter`.
    pub reporter: Reporter,
    /// The source workload.
    pub source: Arc<Peer>,
    /// `source_principal` (`spiffe://...` or `unknown`).
    pub source_principal: Arc<str>,
    /// The destination workload.
    pub destination: Arc<Peer>,
    /// `destination_principal`.
    pub destination_principal: Arc<str>,
    /// The destination service.
    pub service: Arc<ServiceLabels>,
    /// `source_cluster` and `destination_cluster` (one cluster).
    pub cluster: Arc<str>,
    /// `request_protocol`.
    pub protocol: RequestProtocol,
    /// `response_code` (requests only).
    pub response_code: Option<u16>,
    /// `grpc_response_status` (gRPC requests only).
    pub grpc_status: Option<u32>,
    /// `response_flags` (`-` when none).
    pub response_flags: &'static str,
    /// `connection_security_policy`.
    pub security: Security,
    /// `Telemetry` tag overrides of this metric.
    pub edits: Option<Arc<TagEdits>>,
}

impl IstioLabels {
    /// The labels of a connection or request before its outcome: no response code, gRPC status
    /// or flag yet, the default cluster, no overrides.
    pub fn new(
        reporter: Reporter,
        (source, source_principal): (Arc<Peer>, Arc<str>),
        (destination, destination_principal): (Arc<Peer>, Arc<str>),
        service: Arc<ServiceLabels>,
        protocol: RequestProtocol,
        security: Security,
    ) -> IstioLabels {
        static CLUSTER: OnceLock<Arc<str>> = OnceLock::new();
        IstioLabels {
            reporter,
            source,
            source_principal,
            destination,
            destination_principal,
            service,
            cluster: CLUSTER.get_or_init(|| Arc::from(DEFAULT_CLUSTER)).clone(),
            protocol,
            response_code: None,
            grpc_status: None,
            response_flags: "-",
            security,
            edits: None,
        }
    }
}

impl EncodeLabelSet for IstioLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let code = self.response_code.map(|c| c.to_string());
        let grpc = self.grpc_status.map(|c| c.to_string());
        let pairs: [(&str, Option<&str>); 25] = [
            ("reporter", Some(self.reporter.as_str())),
            ("source_workload", Some(&*self.source.workload)),
            ("source_workload_namespace", Some(&*self.source.namespace)),
            ("source_principal", Some(&*self.source_principal)),
            ("source_app", Some(&*self.source.app)),
            ("source_version", Some(&*self.source.version)),
            (
                "source_canonical_service",
                Some(&*self.source.canonical_service),
            ),
            (
                "source_canonical_revision",
                Some(&*self.source.canonical_revision),
            ),
            ("source_cluster", Some(&*self.cluster)),
            ("destination_workload", Some(&*self.destination.workload)),
            (
                "destination_workload_namespace",
                Some(&*self.destination.namespace),
            ),
            ("destination_principal", Some(&*self.destination_principal)),
            ("destination_app", Some(&*self.destination.app)),
            ("destination_version", Some(&*self.destination.version)),
            (
                "destination_canonical_service",
                Some(&*self.destination.canonical_service),
            ),
            (
                "destination_canonical_revision",
                Some(&*self.destination.canonical_revision),
            ),
            ("destination_cluster", Some(&*self.cluster)),
            ("destination_service", Some(&*self.service.host)),
            ("destination_service_name", Some(&*self.service.name)),
            (
                "destination_service_namespace",
                Some(&*self.service.namespace),
            ),
            ("request_protocol", Some(self.protocol.as_str())),
            ("response_code", code.as_deref()),
            ("grpc_response_status", grpc.as_deref()),
            ("response_flags", Some(self.response_flags)),
            ("connection_security_policy", Some(self.security.as_str())),
        ];
        for (name, value) in pairs {
            let Some(value) = value else { continue };
            if self.edits.as_ref().is_some_and(|e| !e.keeps(name)) {
                continue;
            }
            (name, value).encode(encoder.encode_label())?;
        }
        if let Some(edits) = &self.edits {
            for (name, value) in &edits.set {
                (name.as_str(), value.as_str()).encode(encoder.encode_label())?;
            }
        }
        Ok(())
    }
}

/// The standard metrics this process reports.
#[derive(Debug)]
pub struct IstioMetrics {
    /// `istio_requests_total`.
    pub requests: Family<IstioLabels, Counter>,
    /// `istio_request_duration_milliseconds`.
    pub duration: Family<IstioLabels, Histogram, fn() -> Histogram>,
    /// `istio_request_bytes`.
    pub request_bytes: Family<IstioLabels, Histogram, fn() -> Histogram>,
    /// `istio_response_bytes`.
    pub response_bytes: Family<IstioLabels, Histogram, fn() -> Histogram>,
    /// `istio_tcp_connections_opened_total`.
    pub tcp_opened: Family<IstioLabels, Counter>,
    /// `istio_tcp_connections_closed_total`.
    pub tcp_closed: Family<IstioLabels, Counter>,
    /// `istio_tcp_sent_bytes_total` (client to server).
    pub tcp_sent: Family<IstioLabels, Counter>,
    /// `istio_tcp_received_bytes_total` (server to client).
    pub tcp_received: Family<IstioLabels, Counter>,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl Default for IstioMetrics {
    fn default() -> Self {
        IstioMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(histogram),
            request_bytes: Family::new_with_constructor(histogram),
            response_bytes: Family::new_with_constructor(histogram),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
        }
    }
}

impl IstioMetrics {
    /// Registers the metrics under Istio's names (no prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "istio_requests",
            "Requests (Istio standard metric)",
            self.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds, to the last byte of the response",
            self.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request sizes (headers and body) in bytes",
            self.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response sizes (headers and body) in bytes",
            self.response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            self.tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            self.tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent from client to server on TCP connections",
            self.tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes sent from server to client on TCP connections",
            self.tcp_received.clone(),
        );
    }

    /// The TCP counters of one connection, resolved once (a disabled metric is `None`).
    pub fn tcp(&self, labels: &IstioLabels, settings: &MetricSettings) -> TcpHandles {
        let client = labels.reporter.is_client();
        let handle = |family: &Family<IstioLabels, Counter>, metric| {
            settings
                .labels_for(metric, client, labels)
                .map(|l| family.get_or_create_owned(&l))
        };
        TcpHandles {
            opened: handle(&self.tcp_opened, MetricName::TcpOpenedConnections),
            closed: handle(&self.tcp_closed, MetricName::TcpClosedConnections),
            sent: handle(&self.tcp_sent, MetricName::TcpSentBytes),
            received: handle(&self.tcp_received, MetricName::TcpReceivedBytes),
        }
    }

    /// Records one finished request.
    pub fn request(&self, labels: &IstioLabels, settings: &MetricSettings, done: &RequestDone) {
        let client = labels.reporter.is_client();
        if let Some(l) = settings.labels_for(MetricName::RequestCount, client, labels) {
            self.requests.get_or_create(&l).inc();
        }
        let observe = |family: &Family<IstioLabels, Histogram, fn() -> Histogram>, metric, v| {
            if let Some(l) = settings.labels_for(metric, client, labels) {
                family.get_or_create(&l).observe(v);
            }
        };
        observe(
            &self.duration,
            MetricName::RequestDuration,
            done.duration_ms,
        );
        observe(
            &self.request_bytes,
            MetricName::RequestSize,
            done.request_bytes as f64,
        );
        observe(
            &self.response_bytes,
            MetricName::ResponseSize,
            done.response_bytes as f64,
        );
    }
}

/// The figures of one finished request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RequestDone {
    /// Milliseconds from the request's arrival to the last byte of the response.
    pub duration_ms: f64,
    /// Request head and body bytes.
    pub request_bytes: u64,
    /// Response head and body bytes.
    pub response_bytes: u64,
}

/// The TCP counters of one connection.
#[derive(Clone, Debug, Default)]
pub struct TcpHandles {
    opened: Option<Counter>,
    closed: Option<Counter>,
    sent: Option<Counter>,
    received: Option<Counter>,
}

impl TcpHandles {
    /// Counts the connection opened.
    pub fn open(&self) {
        if let Some(c) = &self.opened {
            c.inc();
        }
    }

    /// Counts the connection closed after `sent` bytes client to server and `received` back.
    pub fn close(&self, sent: u64, received: u64) {
        if let Some(c) = &self.closed {
            c.inc();
        }
        if let Some(c) = &self.sent {
            c.inc_by(sent);
        }
        if let Some(c) = &self.received {
            c.inc_by(received);
        }
    }

    /// Adds `opened` and `closed` connections and their bytes (counts the kernel kept).
    pub fn count(&self, opened: u64, closed: u64, sent: u64, received: u64) {
        for (counter, n) in [
            (&self.opened, opened),
            (&self.closed, closed),
            (&self.sent, sent),
            (&self.received, received),
        ] {
            if let (Some(c), true) = (counter, n > 0) {
                c.inc_by(n);
            }
        }
    }
}

/// The `Telemetry` metric overrides of one scope and side, compiled for the hot path.
#[derive(Clone, Debug, Default)]
pub struct MetricSettings {
    /// The tag edits of a metric on one side (`true`: client); a metric not listed is
    /// reported with the standard labels.
    overrides: Vec<(MetricName, bool, Arc<TagEdits>)>,
    /// The metrics disabled on one side.
    disabled: Vec<(MetricName, bool)>,
    /// Tag expressions that are not applied (reported once by the caller).
    pub unsupported: Vec<String>,
}

/// Every metric a `Telemetry` override can name that this mesh reports.
const REPORTED: [MetricName; 8] = [
    MetricName::RequestCount,
    MetricName::RequestDuration,
    MetricName::RequestSize,
    MetricName::ResponseSize,
    MetricName::TcpOpenedConnections,
    MetricName::TcpClosedConnections,
    MetricName::TcpSentBytes,
    MetricName::TcpReceivedBytes,
];

impl MetricSettings {
    /// Compiles the overrides of an effective telemetry (both sides).
    pub fn new(telemetry: &EffectiveTelemetry) -> MetricSettings {
        let mut settings = MetricSettings::default();
        if telemetry.metrics.is_empty() {
            return settings;
        }
        for metric in REPORTED {
            for client in [true, false] {
                if !telemetry.metric_enabled(metric, client) {
                    settings.disabled.push((metric, client));
                    continue;
                }
                let tags = telemetry.tag_overrides(metric, client);
                if tags.is_empty() {
                    continue;
                }
                let (edits, unsupported) = TagEdits::from_overrides(&tags);
                for u in unsupported {
                    if !settings.unsupported.contains(&u) {
                        settings.unsupported.push(u);
                    }
                }
                settings.overrides.push((metric, client, Arc::new(edits)));
            }
        }
        settings
    }

    /// The labels of `metric` for a report, `None` when the metric is disabled.
    pub fn labels_for(
        &self,
        metric: MetricName,
        client: bool,
        labels: &IstioLabels,
    ) -> Option<IstioLabels> {
        if self.disabled.contains(&(metric, client)) {
            return None;
        }
        let mut labels = labels.clone();
        labels.edits = self
            .overrides
            .iter()
            .find(|(m, c, _)| *m == metric && *c == client)
            .map(|(_, _, e)| e.clone());
        Some(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MetricOverride, ReportMode};

    fn workload(name: &str, labels: &[(&str, &str)]) -> Workload {
        Workload {
            uid: format!("apps/{name}-1"),
            name: format!("{name}-1"),
            namespace: "apps".into(),
            service_account: name.into(),
            node: "node1".into(),
            addresses: vec![],
            meshed: true,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            waypoint: None,
            locality: Default::default(),
            workload_name: name.into(),
        }
    }

    fn labels() -> IstioLabels {
        let service = Service {
            name: "reviews".into(),
            namespace: "apps".into(),
            vips: vec![],
            ports: vec![],
            endpoints: vec![],
            hostname: String::new(),
            waypoint: None,
            traffic_distribution: None,
        };
        IstioLabels {
            reporter: Reporter::Waypoint,
            source: Arc::new(Peer::of(&workload(
                "productpage",
                &[("app", "productpage")],
            ))),
            source_principal: "spiffe://cluster.local/ns/apps/sa/productpage".into(),
            destination: Arc::new(Peer::of(&workload(
                "reviews-v2",
                &[("app", "reviews"), ("version", "v2")],
            ))),
            destination_principal: "spiffe://cluster.local/ns/apps/sa/reviews-v2".into(),
            service: Arc::new(ServiceLabels::of(&service)),
            cluster: DEFAULT_CLUSTER.into(),
            protocol: RequestProtocol::Http,
            response_code: Some(200),
            grpc_status: None,
            response_flags: "-",
            security: Security::MutualTls,
            edits: None,
        }
    }

    fn render(metrics: &IstioMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        out
    }

    #[test]
    fn requests_carry_istios_names_and_labels() {
        let metrics = IstioMetrics::default();
        let done = RequestDone {
            duration_ms: 3.0,
            request_bytes: 120,
            response_bytes: 4000,
        };
        metrics.request(&labels(), &MetricSettings::default(), &done);
        let text = render(&metrics);
        for want in [
            "istio_requests_total{reporter=\"waypoint\",source_workload=\"productpage\",source_workload_namespace=\"apps\",source_principal=\"spiffe://cluster.local/ns/apps/sa/productpage\",source_app=\"productpage\",source_version=\"unknown\",source_canonical_service=\"productpage\",source_canonical_revision=\"latest\",source_cluster=\"Kubernetes\",destination_workload=\"reviews-v2\",destination_workload_namespace=\"apps\",destination_principal=\"spiffe://cluster.local/ns/apps/sa/reviews-v2\",destination_app=\"reviews\",destination_version=\"v2\",destination_canonical_service=\"reviews\",destination_canonical_revision=\"v2\",destination_cluster=\"Kubernetes\",destination_service=\"reviews.apps.svc.cluster.local\",destination_service_name=\"reviews\",destination_service_namespace=\"apps\",request_protocol=\"http\",response_code=\"200\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"} 1",
            "# TYPE istio_request_duration_milliseconds histogram",
            "istio_request_bytes_sum{",
            "istio_response_bytes_bucket{",
        ] {
            assert!(text.contains(want), "{want}\nin\n{text}");
        }
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "istio_request_duration_milliseconds_bucket{{le=\"{le}\""
                    ))
                })
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        assert_eq!(bucket("1.0").as_deref(), Some("0"), "3 ms is above 1 ms");
        assert_eq!(bucket("5.0").as_deref(), Some("1"), "3 ms is within 5 ms");
    }

    #[test]
    fn overrides_disable_metrics_and_edit_tags() {
        let telemetry = EffectiveTelemetry {
            metrics: vec![
                MetricOverride {
                    metric: MetricName::RequestSize,
                    disabled: Some(true),
                    ..MetricOverride::default()
                },
                MetricOverride {
                    metric: MetricName::RequestCount,
                    mode: ReportMode::Server,
                    tags: BTreeMap::from([
                        ("source_principal".to_owned(), TagOverride::Remove),
                        (
                            "team".to_owned(),
                            TagOverride::Upsert {
                                value: "'payments'".into(),
                            },
                        ),
                        (
                            "host".to_owned(),
                            TagOverride::Upsert {
                                value: "request.host".into(),
                            },
                        ),
                    ]),
                    ..MetricOverride::default()
                },
            ],
            ..EffectiveTelemetry::default()
        };
        let settings = MetricSettings::new(&telemetry);
        assert_eq!(settings.unsupported, vec!["host: request.host".to_owned()]);
        let metrics = IstioMetrics::default();
        metrics.request(&labels(), &settings, &RequestDone::default());
        let text = render(&metrics);
        assert!(!text.contains("istio_request_bytes_count{"), "{text}");
        assert!(text.contains("istio_response_bytes_count{"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .expect("a request series");
        assert!(!line.contains("source_principal"), "{line}");
        assert!(line.contains("team=\"payments\""), "{line}");
        assert!(line.contains("host=\"unknown\""), "{line}");
    }

    #[test]
    fn tcp_handles_count_one_connection() {
        let metrics = IstioMetrics::default();
        let mut tcp = labels();
        tcp.reporter = Reporter::Source;
        tcp.protocol = RequestProtocol::Tcp;
        tcp.response_code = None;
        let handles = metrics.tcp(&tcp, &MetricSettings::default());
        handles.open();
        handles.close(10, 20);
        let text = render(&metrics);
        assert!(
            text.contains("istio_tcp_connections_opened_total{reporter=\"source\""),
            "{text}"
        );
        let sent = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_sent_bytes_total{"))
            .expect("sent");
        assert!(
            sent.ends_with("} 10") && !sent.contains("response_code"),
            "{sent}"
        );
    }
}

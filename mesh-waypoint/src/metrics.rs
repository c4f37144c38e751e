//! The waypoint's Prometheus metrics: Istio's standard ones (`reporter="waypoint"`,
//! `mesh_common::istio_metrics`) and the waypoint's own under `mesh_waypoint_`.

use mesh_common::istio_metrics::IstioMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP status sent downstream.
    pub response_code: u16,
    /// Envoy response flag (`-` when none).
    pub response_flags: &'static str,
}

/// Labels of a downstream connection (one HBONE CONNECT stream).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `http1`, `http2` or `tcp`.
    pub protocol: &'static str,
}

/// Labels of a refused CONNECT.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why.
    pub reason: &'static str,
}

/// Labels of a retry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// The `retryOn` condition that fired (`5xx`, `connect-failure`, ...).
    pub reason: &'static str,
}

/// Labels of a circuit-breaker overflow.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverflowLabels {
    /// Destination host.
    pub host: String,
    /// `connections`, `pending`, `requests`, `retries` or `mirrors`.
    pub kind: &'static str,
}

/// Labels of a mirrored request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    /// `sent`, `failed`, `dropped` (too many in flight) or `body_not_kept`.
    pub outcome: &'static str,
}

/// Labels of a destination host (outlier detection).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    /// The backend's host (service host name, or workload address).
    pub host: String,
}

/// Labels of an opaque TCP connection routed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// The TCP or TLS rule that matched (`tcp route <ns>/<name> rule <i>`), `-` when none.
    pub route: String,
}

/// Every metric of the waypoint.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Istio's standard request and TCP metrics.
    pub istio: IstioMetrics,
    /// Requests answered, by status and flag.
    pub requests: Family<RequestLabels, Counter>,
    /// Downstream connections, by detected protocol.
    pub connections: Family<ConnectionLabels, Counter>,
    /// CONNECT streams refused before any byte was carried.
    pub refused: Family<RefusalLabels, Counter>,
    /// Retries, by the condition that fired.
    pub retries: Family<RetryLabels, Counter>,
    /// Requests refused by a circuit breaker (or a refused retry), by destination and limit.
    pub overflow: Family<OverflowLabels, Counter>,
    /// Mirrored requests, by outcome.
    pub mirrors: Family<MirrorLabels, Counter>,
    /// Endpoints ejected by outlier detection, by host.
    pub outlier_ejections: Family<HostLabels, Counter>,
    /// Endpoints ejected now, by host (updated when a pick or report sees one return).
    pub outlier_ejected: Family<HostLabels, Gauge>,
    /// Opaque TCP connections routed, by the rule that matched.
    pub tcp: Family<TcpLabels, Counter>,
    /// Spans exported and dropped.
    pub tracing: crate::trace::TraceMetrics,
}

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.istio.register(registry);
        registry.register(
            "mesh_waypoint_requests",
            "HTTP requests answered by the waypoint",
            self.requests.clone(),
        );
        registry.register(
            "mesh_waypoint_connections",
            "Downstream connections (HBONE CONNECT streams) by detected protocol",
            self.connections.clone(),
        );
        registry.register(
            "mesh_waypoint_connections_refused",
            "CONNECT streams refused by the waypoint",
            self.refused.clone(),
        );
        registry.register(
            "mesh_waypoint_retries",
            "Retries of upstream requests, by retryOn condition",
            self.retries.clone(),
        );
        registry.register(
            "mesh_waypoint_upstream_overflow",
            "Requests refused by a destination's circuit breaker, by host and limit",
            self.overflow.clone(),
        );
        registry.register(
            "mesh_waypoint_mirrors",
            "Mirrored (shadow) requests, by outcome",
            self.mirrors.clone(),
        );
        registry.register(
            "mesh_waypoint_outlier_ejections",
            "Endpoints ejected by outlier detection",
            self.outlier_ejections.clone(),
        );
        registry.register(
            "mesh_waypoint_outlier_ejected",
            "Endpoints ejected by outlier detection now",
            self.outlier_ejected.clone(),
        );
        registry.register(
            "mesh_waypoint_tcp_connections",
            "Opaque TCP connections routed, by the TCP or TLS route rule that matched",
            self.tcp.clone(),
        );
        self.tracing.register(registry);
    }
}

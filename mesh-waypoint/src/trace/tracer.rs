//! The request path's side of tracing: starts a request's span with the settings of its
//! destination, and hands finished sampled spans to the export task through a bounded queue
//! that never waits (a full queue drops the span and counts it).

use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::settings::TraceSettings;
use super::span::{ActiveSpan, Node, RequestFacts, ResponseFacts, SpanRecord};
use crate::table::Target;

/// Spans waiting for the export task, at most.
pub const QUEUE_CAPACITY: usize = 4096;

/// Labels of a span not exported.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full`, `exporter_stopped`, `no_collector` (its address unknown) or
    /// `export_failed`.
    pub reason: &'static str,
}

/// Labels of exported spans.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExportLabels {
    /// `otlp_grpc`, `otlp_http` or `zipkin`.
    pub protocol: &'static str,
}

/// The tracing metrics (`mesh_waypoint_spans_*`).
#[derive(Clone, Debug, Default)]
pub struct TraceMetrics {
    /// Spans dropped, by reason.
    pub dropped: Family<DropLabels, Counter>,
    /// Spans the collector took, by protocol.
    pub exported: Family<ExportLabels, Counter>,
}

impl TraceMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "mesh_waypoint_spans_dropped",
            "Sampled spans not exported, by reason",
            self.dropped.clone(),
        );
        registry.register(
            "mesh_waypoint_spans_exported",
            "Spans the trace collector accepted, by protocol",
            self.exported.clone(),
        );
    }

    /// Counts `n` spans dropped for `reason`.
    pub fn drop_spans(&self, reason: &'static str, n: usize) {
        self.dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(n as u64);
    }
}

/// What the request path needs for tracing.
#[derive(Debug)]
pub struct Tracer {
    node: Arc<Node>,
    queue: mpsc::Sender<SpanRecord>,
    metrics: TraceMetrics,
}

impl Tracer {
    /// A tracer for `node` and the receiving end of its queue (for [`super::export::run`]).
    pub fn new(node: Node, metrics: TraceMetrics) -> (Tracer, mpsc::Receiver<SpanRecord>) {
        let (queue, spans) = mpsc::channel(QUEUE_CAPACITY);
        (
            Tracer {
                node: Arc::new(node),
                queue,
                metrics,
            },
            spans,
        )
    }

    /// The proxy's node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The metrics.
    pub fn metrics(&self) -> &TraceMetrics {
        &self.metrics
    }

    /// The span of a request to `target` with its destination's `settings` (none when they
    /// name no collector).
    pub fn start(
        &self,
        settings: &Arc<TraceSettings>,
        target: &Target,
        request: &RequestFacts<'_>,
    ) -> Option<ActiveSpan> {
        ActiveSpan::start(
            settings,
            &self.node,
            target,
            request,
            SystemTime::now(),
            &mut || fastrand::u64(1..),
            fastrand::f64(),
        )
    }

    /// Ends `span`; a sampled one is queued for export, or counted as dropped when the queue
    /// is full.
    pub fn finish(&self, span: ActiveSpan, response: &ResponseFacts<'_>) {
        let Some(record) = span.finish(response, SystemTime::now()) else {
            return;
        };
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.metrics.drop_spans("queue_full", 1),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.drop_spans("exporter_stopped", 1)
            }
        }
    }
}

//! OTLP export (the `opentelemetry` provider): the waypoint's span records as the SDK's
//! [`SpanData`], and `opentelemetry-otlp` exporters over gRPC or HTTP/protobuf for one
//! collector address, without retries (the export task bounds every export and drops what
//! fails).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{
    Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;

use super::span::{Node, SpanRecord};

/// OTLP/HTTP's default path.
pub const DEFAULT_HTTP_PATH: &str = "/v1/traces";

/// A span record as the SDK's exportable span.
pub fn span_data(record: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(record.trace_id),
            SpanId::from(record.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: record.parent_span_id.map_or(SpanId::INVALID, SpanId::from),
        parent_span_is_remote: record.parent_span_id.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(record.name.clone()),
        start_time: record.start,
        end_time: record.end,
        attributes: record
            .attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if record.error {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}

/// The resource spans are reported for: the proxy (`service.name` `<waypoint>.<namespace>`).
pub fn resource(node: &Node) -> Resource {
    Resource::builder_empty()
        .with_service_name(node.service_name.clone())
        .with_attributes([
            KeyValue::new("k8s.namespace.name", node.namespace.clone()),
            KeyValue::new("istio.canonical_service", node.canonical_service.clone()),
        ])
        .build()
}

/// The instrumentation scope of the waypoint's spans.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("mesh-waypoint")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// How to reach an OTLP collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// gRPC (`TraceService/Export`).
    Grpc,
    /// HTTP POST of protobuf.
    Http,
}

/// An OTLP exporter to one collector address.
#[derive(Debug)]
pub struct Exporter {
    inner: opentelemetry_otlp::SpanExporter,
}

impl Exporter {
    /// An exporter to `addr` (`path` for HTTP), each export within `timeout`. Needs a tokio
    /// runtime (the gRPC channel connects lazily on it).
    pub fn new(
        transport: Transport,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
        node: &Node,
    ) -> Result<Exporter, String> {
        let built = match transport {
            Transport::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{addr}"))
                .with_timeout(timeout)
                .with_retry_policy(RetryPolicy::disabled())
                .build(),
            Transport::Http => {
                let path = if path.is_empty() {
                    DEFAULT_HTTP_PATH
                } else {
                    path
                };
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(format!("http://{addr}{path}"))
                    .with_timeout(timeout)
                    .with_retry_policy(RetryPolicy::disabled())
                    .build()
            }
        };
        let mut inner = built.map_err(|e| e.to_string())?;
        inner.set_resource(&resource(node));
        Ok(Exporter { inner })
    }

    /// Sends one batch.
    pub async fn export(&self, batch: Vec<SpanData>) -> Result<(), String> {
        self.inner.export(batch).await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use mesh_common::model::{TraceProtocol, TraceProvider};

    use super::*;

    #[test]
    fn records_become_server_spans() {
        let record = SpanRecord {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x1234,
            parent_span_id: Some(0x00f067aa0ba902b7),
            name: "reviews.apps.svc.cluster.local:9080/*".into(),
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH + Duration::from_millis(3),
            attributes: vec![("http.status_code".into(), "503".into())],
            error: true,
            peer: "198.18.1.2".parse().expect("ip"),
            provider: Arc::new(TraceProvider {
                name: "otel".into(),
                protocol: TraceProtocol::OtlpGrpc,
                host: "otel".into(),
                port: 4317,
                path: String::new(),
                max_tag_length: 0,
            }),
        };
        let data = span_data(&record, &scope());
        assert_eq!(
            data.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(data.span_context.span_id().to_string(), "0000000000001234");
        assert!(data.span_context.is_sampled());
        assert_eq!(data.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(data.parent_span_is_remote);
        assert_eq!(data.span_kind, SpanKind::Server);
        assert_eq!(data.status, Status::error(""));
        assert_eq!(
            data.attributes,
            vec![KeyValue::new("http.status_code", "503")]
        );
        let root = span_data(
            &SpanRecord {
                parent_span_id: None,
                error: false,
                ..record
            },
            &scope(),
        );
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert!(!root.parent_span_is_remote);
        assert_eq!(root.status, Status::Unset);
    }
}

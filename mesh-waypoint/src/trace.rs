//! Distributed tracing in the waypoint: the trace context on the wire (W3C and B3,
//! [`context`]), the sampling decision ([`sampling`]), the settings per destination from
//! `Telemetry` ([`settings`]), the request's span and its attributes ([`span`]), the request
//! path's tracer and its bounded queue ([`tracer`]), and the export task ([`export`]) with its
//! formats: OTLP over gRPC or HTTP ([`otlp`]) and Zipkin JSON v2 ([`zipkin`]).

pub mod context;
pub mod export;
pub mod otlp;
pub mod sampling;
pub mod settings;
pub mod span;
pub mod tracer;
pub mod zipkin;

pub use settings::{SettingsIndex, TraceSettings};
pub use span::{ActiveSpan, Node, RequestFacts, ResponseFacts, SpanRecord};
pub use tracer::{TraceMetrics, Tracer};

//! The export task: drains the span queue in batches (up to [`MAX_BATCH`] spans, or what came
//! within [`LINGER`] of the first), resolves each batch's collector against the current model
//! (an IP address; a service host name: one of its endpoints; else DNS), and sends it in the
//! provider's format (OTLP gRPC, OTLP HTTP, Zipkin JSON), each export bounded by
//! [`EXPORT_TIMEOUT`]. A batch that fails is dropped and counted: the request path never
//! waits for a collector.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_common::model::{TraceProtocol, TraceProvider};
use tokio::sync::mpsc;

use super::otlp::{self, Transport};
use super::span::{Node, SpanRecord};
use super::tracer::{ExportLabels, TraceMetrics};
use super::zipkin;
use crate::route::Backend;
use crate::state::State;
use crate::table::{service_hostname, RouteTable, ServiceKey};

/// The most spans in one export.
pub const MAX_BATCH: usize = 512;
/// How long a batch waits for more spans after its first.
pub const LINGER: Duration = Duration::from_millis(200);
/// The longest one export (connect included) may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a DNS look-up of a collector may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most exporters kept (one per protocol, address and path).
const MAX_EXPORTERS: usize = 16;

/// The collector's address: an IP address as is; a service of the model (its host name, or
/// `<name>.<namespace>[.svc[.cluster.local]]`): its first endpoint at the service port's
/// target port; `None` when the model has no such service (the caller tries DNS).
pub fn model_address(table: &RouteTable, provider: &TraceProvider) -> Option<SocketAddr> {
    if let Ok(ip) = provider.host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, provider.port));
    }
    let host = provider.host.trim_end_matches('.');
    let service = [
        host.to_owned(),
        format!("{host}.svc.cluster.local"),
        format!("{host}.cluster.local"),
    ]
    .iter()
    .find_map(|h| table.service_by_host(h))?;
    let backend = Backend {
        host: service_hostname(service),
        service: Some(ServiceKey::of(service)),
        workload: None,
        subset: None,
        port: provider.port,
    };
    let mut endpoints = table.endpoints(&backend).ok()?;
    endpoints.sort_by_key(|e| e.addr);
    endpoints.first().map(|e| e.addr)
}

async fn resolve(table: &RouteTable, provider: &TraceProvider) -> Result<SocketAddr, String> {
    if let Some(addr) = model_address(table, provider) {
        return Ok(addr);
    }
    let lookup = tokio::net::lookup_host((provider.host.as_str(), provider.port));
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| format!("resolving {}: no answer in time", provider.host))?
        .map_err(|e| format!("resolving {}: {e}", provider.host))?
        .next();
    found.ok_or_else(|| format!("{} has no address", provider.host))
}

/// What one batch is sent with.
#[derive(Debug)]
enum Sender {
    Otlp(Box<otlp::Exporter>),
    Zipkin,
}

/// Exporters by (protocol, address, path).
type Exporters = HashMap<(&'static str, SocketAddr, String), Sender>;

fn protocol_label(protocol: TraceProtocol) -> &'static str {
    match protocol {
        TraceProtocol::OtlpGrpc => "otlp_grpc",
        TraceProtocol::OtlpHttp => "otlp_http",
        TraceProtocol::Zipkin => "zipkin",
        TraceProtocol::Unknown => "unknown",
    }
}

/// Splits a batch by provider (a handful at most), keeping order within each.
pub fn by_provider(batch: Vec<SpanRecord>) -> Vec<(Arc<TraceProvider>, Vec<SpanRecord>)> {
    let mut groups: Vec<(Arc<TraceProvider>, Vec<SpanRecord>)> = Vec::new();
    for record in batch {
        match groups.iter_mut().find(|(p, _)| **p == *record.provider) {
            Some((_, spans)) => spans.push(record),
            None => groups.push((record.provider.clone(), vec![record])),
        }
    }
    groups
}

/// Exports the spans `spans` receives until every sender is gone.
pub async fn run(
    mut spans: mpsc::Receiver<SpanRecord>,
    state: Arc<State>,
    node: Arc<Node>,
    metrics: TraceMetrics,
) {
    let scope = otlp::scope();
    let mut exporters: Exporters = HashMap::new();
    loop {
        let Some(first) = spans.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(record)) => batch.push(record),
                Ok(None) | Err(_) => break,
            }
        }
        let table = state.table();
        for (provider, records) in by_provider(batch) {
            let n = records.len();
            match send(&table, &provider, records, &mut exporters, &node, &scope).await {
                Ok(()) => {
                    metrics
                        .exported
                        .get_or_create(&ExportLabels {
                            protocol: protocol_label(provider.protocol),
                        })
                        .inc_by(n as u64);
                }
                Err((reason, why)) => {
                    tracing::warn!(
                        provider = provider.name,
                        host = provider.host,
                        port = provider.port,
                        spans = n,
                        error = why,
                        "spans not exported"
                    );
                    metrics.drop_spans(reason, n);
                }
            }
        }
    }
}

/// Sends one provider's records; on failure the drop reason and why.
async fn send(
    table: &RouteTable,
    provider: &TraceProvider,
    records: Vec<SpanRecord>,
    exporters: &mut Exporters,
    node: &Node,
    scope: &opentelemetry::InstrumentationScope,
) -> Result<(), (&'static str, String)> {
    let addr = resolve(table, provider)
        .await
        .map_err(|why| ("no_collector", why))?;
    let failed = |why: String| ("export_failed", why);
    let key = (
        protocol_label(provider.protocol),
        addr,
        provider.path.clone(),
    );
    if !exporters.contains_key(&key) {
        if exporters.len() >= MAX_EXPORTERS {
            exporters.clear();
        }
        let sender = match provider.protocol {
            TraceProtocol::OtlpGrpc | TraceProtocol::OtlpHttp => {
                let transport = if provider.protocol == TraceProtocol::OtlpGrpc {
                    Transport::Grpc
                } else {
                    Transport::Http
                };
                Sender::Otlp(Box::new(
                    otlp::Exporter::new(transport, addr, &provider.path, EXPORT_TIMEOUT, node)
                        .map_err(failed)?,
                ))
            }
            TraceProtocol::Zipkin => Sender::Zipkin,
            TraceProtocol::Unknown => return Err(failed("unknown protocol".into())),
        };
        exporters.insert(key.clone(), sender);
    }
    let Some(sender) = exporters.get(&key) else {
        return Err(failed("no exporter".into()));
    };
    match sender {
        Sender::Otlp(exporter) => {
            let batch = records.iter().map(|r| otlp::span_data(r, scope)).collect();
            match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
                Ok(result) => result.map_err(failed),
                Err(_) => Err(failed(format!("no answer within {EXPORT_TIMEOUT:?}"))),
            }
        }
        Sender::Zipkin => {
            let body = zipkin::body(&records, node).map_err(|e| failed(e.to_string()))?;
            let path = if provider.path.is_empty() {
                zipkin::DEFAULT_PATH
            } else {
                &provider.path
            };
            zipkin::post(addr, &provider.host, path, body, EXPORT_TIMEOUT)
                .await
                .map_err(|e| failed(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn provider(name: &str, host: &str, port: u16) -> TraceProvider {
        TraceProvider {
            name: name.into(),
            protocol: TraceProtocol::OtlpGrpc,
            host: host.into(),
            port,
            path: String::new(),
            max_tag_length: 0,
        }
    }

    #[test]
    fn collector_addresses_from_the_model() {
        let table = RouteTable::new(
            Arc::new(crate::testdata::snapshot("")),
            "cluster.local",
            ("bookinfo", "waypoint"),
        );
        // (host, port, address)
        let cases = [
            ("10.9.9.9", 4317, Some("10.9.9.9:4317")),
            ("fd00::9", 4317, Some("[fd00::9]:4317")),
            (
                "reviews.bookinfo.svc.cluster.local",
                80,
                Some("10.1.0.21:9080"),
            ),
            ("reviews.bookinfo", 9080, Some("10.1.0.21:9080")),
            ("reviews.bookinfo.svc", 9080, Some("10.1.0.21:9080")),
            (
                "productpage.bookinfo.svc.cluster.local.",
                9080,
                Some("10.1.0.10:9080"),
            ),
            ("reviews.bookinfo", 1234, None),
            ("empty.bookinfo", 80, None),
            ("jaeger.observability", 4317, None),
        ];
        for (host, port, want) in cases {
            let got = model_address(&table, &provider("p", host, port));
            assert_eq!(got, want.map(|a| a.parse().expect("addr")), "{host}:{port}");
        }
    }

    #[test]
    fn batches_split_by_provider_in_order() {
        let a = Arc::new(provider("a", "10.0.0.1", 1));
        let b = Arc::new(provider("b", "10.0.0.2", 2));
        let record = |id: u64, provider: &Arc<TraceProvider>| SpanRecord {
            trace_id: 1,
            span_id: id,
            parent_span_id: None,
            name: String::new(),
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            error: false,
            peer: "10.0.0.3".parse().expect("ip"),
            // An equal provider from another table is the same collector.
            provider: Arc::new((**provider).clone()),
        };
        let batch = vec![record(1, &a), record(2, &b), record(3, &a)];
        let got: Vec<(String, Vec<u64>)> = by_provider(batch)
            .into_iter()
            .map(|(p, spans)| (p.name.clone(), spans.iter().map(|s| s.span_id).collect()))
            .collect();
        assert_eq!(
            got,
            vec![("a".to_owned(), vec![1, 3]), ("b".to_owned(), vec![2])]
        );
    }
}

//! Trace receivers for the tests: an OTLP/gRPC one (a tonic server of `opentelemetry-proto`'s
//! `TraceService`), an OTLP/HTTP one (protobuf `POST /v1/traces`) and a Zipkin v2 one
//! (`POST /api/v2/spans`, JSON), each putting what it gets into a bounded [`SpanStore`] the test
//! waits on. [`Collector`] runs them in a pod of the local cluster (the `mesh-trace-receiver`
//! binary, which prints each span as a JSON line) and reads its spans back.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::cluster::Pod;

/// The OTLP/gRPC port.
pub const OTLP_GRPC_PORT: u16 = 4317;
/// The OTLP/HTTP port.
pub const OTLP_HTTP_PORT: u16 = 4318;
/// Zipkin's port.
pub const ZIPKIN_PORT: u16 = 9411;
/// The most spans a store keeps (the oldest go first).
pub const STORE_CAPACITY: usize = 100_000;
/// The largest request body a receiver reads.
const MAX_BODY: usize = 16 << 20;

/// One span as a receiver got it, whatever the format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSpan {
    /// `otlp-grpc`, `otlp-http` or `zipkin`.
    pub via: String,
    /// The reporter's service name (OTLP resource `service.name`, Zipkin local endpoint).
    pub service: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits; empty for a root span.
    pub parent_span_id: String,
    /// Operation name.
    pub name: String,
    /// `SERVER`, `CLIENT`, ...
    pub kind: String,
    /// Error status (OTLP status code 2; Zipkin an `error` tag).
    pub error: bool,
    /// Attributes (tags) as strings.
    pub attributes: BTreeMap<String, String>,
}

/// Spans received so far, at most [`STORE_CAPACITY`], with a wait for a condition on them.
#[derive(Debug, Default)]
pub struct SpanStore {
    spans: Mutex<VecDeque<ReceivedSpan>>,
    changed: Condvar,
    /// Print each span as a JSON line on stdout as it comes.
    echo: bool,
}

impl SpanStore {
    /// A store that prints every span it gets as a JSON line.
    pub fn echoing() -> SpanStore {
        SpanStore {
            echo: true,
            ..SpanStore::default()
        }
    }

    /// Adds spans.
    pub fn push(&self, new: Vec<ReceivedSpan>) {
        if self.echo {
            for span in &new {
                if let Ok(line) = serde_json::to_string(span) {
                    println!("{line}");
                }
            }
        }
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for span in new {
            if spans.len() >= STORE_CAPACITY {
                spans.pop_front();
            }
            spans.push_back(span);
        }
        drop(spans);
        self.changed.notify_all();
    }

    /// Every span kept.
    pub fn all(&self) -> Vec<ReceivedSpan> {
        let spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        spans.iter().cloned().collect()
    }

    /// Waits (at most `timeout`) until `done` holds for the spans kept; the spans then, or an
    /// error with how many there were.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        let deadline = Instant::now() + timeout;
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now: Vec<ReceivedSpan> = spans.iter().cloned().collect();
            if done(&now) {
                return Ok(now);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the spans never matched within {timeout:?}: {} spans",
                    now.len()
                );
            }
            spans = self
                .changed
                .wait_timeout(spans, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_string(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
            (kv.key.clone(), value_string(value))
        })
        .collect()
}

/// The spans of an OTLP export request.
pub fn otlp_spans(request: &ExportTraceServiceRequest, via: &str) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let kind = match span.kind {
                    1 => "INTERNAL",
                    2 => "SERVER",
                    3 => "CLIENT",
                    4 => "PRODUCER",
                    5 => "CONSUMER",
                    _ => "UNSPECIFIED",
                };
                out.push(ReceivedSpan {
                    via: via.to_owned(),
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: kind.to_owned(),
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    out
}

/// A Zipkin v2 span, as much of it as the tests read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    local_endpoint: Option<ZipkinEndpoint>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinEndpoint {
    #[serde(default)]
    service_name: Option<String>,
}

/// The spans of a Zipkin v2 JSON body.
pub fn zipkin_spans(body: &[u8]) -> anyhow::Result<Vec<ReceivedSpan>> {
    let spans: Vec<ZipkinSpan> = serde_json::from_slice(body).context("a Zipkin v2 JSON array")?;
    Ok(spans
        .into_iter()
        .map(|s| ReceivedSpan {
            via: "zipkin".into(),
            service: s
                .local_endpoint
                .and_then(|e| e.service_name)
                .unwrap_or_default(),
            trace_id: format!("{:0>32}", s.trace_id),
            span_id: s.id,
            parent_span_id: s.parent_id.unwrap_or_default(),
            name: s.name,
            kind: s.kind.unwrap_or_default(),
            error: s.tags.contains_key("error"),
            attributes: s.tags,
        })
        .collect())
}

struct Otlp {
    store: Arc<SpanStore>,
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.store.push(otlp_spans(request.get_ref(), "otlp-grpc"));
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves OTLP/gRPC on `listener` into `store` until the task is dropped.
pub async fn serve_otlp_grpc(listener: TcpListener, store: Arc<SpanStore>) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(10))
        .add_service(TraceServiceServer::new(Otlp { store }))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .context("OTLP/gRPC receiver")
}

type Body = http_body_util::Full<Bytes>;

/// Turns a request body into spans.
type Decoder = fn(&[u8]) -> anyhow::Result<Vec<ReceivedSpan>>;

fn answer(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Which HTTP receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpKind {
    /// OTLP/HTTP protobuf at `/v1/traces`.
    Otlp,
    /// Zipkin v2 JSON at `/api/v2/spans`.
    Zipkin,
}

async fn http_request(
    kind: HttpKind,
    request: Request<Incoming>,
    store: Arc<SpanStore>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let (path, spans_from): (&str, Decoder) = match kind {
        HttpKind::Otlp => ("/v1/traces", |body| {
            let request = ExportTraceServiceRequest::decode(body).context("OTLP protobuf")?;
            Ok(otlp_spans(&request, "otlp-http"))
        }),
        HttpKind::Zipkin => ("/api/v2/spans", zipkin_spans),
    };
    if request.method() != hyper::Method::POST || request.uri().path() != path {
        return Ok(answer(StatusCode::NOT_FOUND, Bytes::new(), "text/plain"));
    }
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        Limited::new(request.into_body(), MAX_BODY).collect(),
    )
    .await;
    let body = match read {
        Ok(Ok(body)) => body.to_bytes(),
        _ => return Ok(answer(StatusCode::BAD_REQUEST, Bytes::new(), "text/plain")),
    };
    match spans_from(&body) {
        Ok(spans) => {
            store.push(spans);
            let reply = match kind {
                HttpKind::Otlp => Bytes::from(
                    ExportTraceServiceResponse {
                        partial_success: None,
                    }
                    .encode_to_vec(),
                ),
                HttpKind::Zipkin => Bytes::new(),
            };
            let status = match kind {
                HttpKind::Otlp => StatusCode::OK,
                HttpKind::Zipkin => StatusCode::ACCEPTED,
            };
            Ok(answer(status, reply, "application/x-protobuf"))
        }
        Err(e) => Ok(answer(
            StatusCode::BAD_REQUEST,
            Bytes::from(format!("{e:#}")),
            "text/plain",
        )),
    }
}

/// Serves an HTTP receiver on `listener` into `store` until the task is dropped.
pub async fn serve_http(
    kind: HttpKind,
    listener: TcpListener,
    store: Arc<SpanStore>,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await.context("accepting")?;
        let store = store.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| http_request(kind, req, store.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The three receivers in a pod (`mesh-trace-receiver`), their spans read from its output.
#[derive(Debug)]
pub struct Collector {
    child: Child,
    /// What it received.
    pub store: Arc<SpanStore>,
}

impl Collector {
    /// Starts `mesh-trace-receiver` in `pod`; waits (at most 10 s) until it listens.
    pub fn start(pod: &Pod, binary: &Path) -> anyhow::Result<Collector> {
        let mut child = pod
            .command(&binary.display().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mesh-trace-receiver")?;
        let stdout = child.stdout.take().context("its stdout")?;
        let store = Arc::new(SpanStore::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let store = store.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if line.contains("\"listening\"") {
                        let _ = ready_tx.send(());
                        continue;
                    }
                    match serde_json::from_str::<ReceivedSpan>(&line) {
                        Ok(span) => store.push(vec![span]),
                        Err(e) => eprintln!("mesh-trace-receiver: {e}: {line}"),
                    }
                }
            });
        }
        let mut collector = Collector { child, store };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = collector.child.kill();
            bail!("mesh-trace-receiver did not listen within 10 s");
        }
        Ok(collector)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::AnyValue as Any;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(Any {
                value: Some(AnyValue::StringValue(value.into())),
            }),
            ..KeyValue::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "waypoint.apps")],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        parent_span_id: vec![0x02; 8],
                        name: "reviews:9080/*".into(),
                        kind: 2,
                        attributes: vec![kv("http.status_code", "503")],
                        status: Some(Status {
                            code: 2,
                            ..Status::default()
                        }),
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn want(via: &str) -> ReceivedSpan {
        ReceivedSpan {
            via: via.into(),
            service: "waypoint.apps".into(),
            trace_id: "ab".repeat(16),
            span_id: "01".repeat(8),
            parent_span_id: "02".repeat(8),
            name: "reviews:9080/*".into(),
            kind: "SERVER".into(),
            error: true,
            attributes: BTreeMap::from([("http.status_code".into(), "503".into())]),
        }
    }

    #[tokio::test]
    async fn receivers_store_what_they_get_on_loopback() -> anyhow::Result<()> {
        let store = Arc::new(SpanStore::default());
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let grpc_addr = grpc.local_addr()?;
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http.local_addr()?;
        let zipkin = TcpListener::bind("127.0.0.1:0").await?;
        let zipkin_addr = zipkin.local_addr()?;
        let tasks = [
            tokio::spawn(serve_otlp_grpc(grpc, store.clone())),
            tokio::spawn(serve_http(HttpKind::Otlp, http, store.clone())),
            tokio::spawn(serve_http(HttpKind::Zipkin, zipkin, store.clone())),
        ];

        let mut client = TraceServiceClient::connect(format!("http://{grpc_addr}")).await?;
        client.export(request()).await?;

        let post = |addr: std::net::SocketAddr, path: &'static str, body: Vec<u8>| async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let response = sender
                .send_request(
                    Request::post(path)
                        .header("host", "collector")
                        .body(Full::new(Bytes::from(body)))?,
                )
                .await?;
            anyhow::Ok(response.status())
        };
        assert_eq!(
            post(http_addr, "/v1/traces", request().encode_to_vec()).await?,
            StatusCode::OK
        );
        let zipkin_body = serde_json::json!([{
            "traceId": "ab".repeat(16), "id": "01".repeat(8), "parentId": "02".repeat(8),
            "name": "reviews:9080/*", "kind": "SERVER",
            "localEndpoint": {"serviceName": "waypoint.apps"},
            "tags": {"http.status_code": "503", "error": "true"}
        }]);
        assert_eq!(
            post(
                zipkin_addr,
                "/api/v2/spans",
                zipkin_body.to_string().into_bytes()
            )
            .await?,
            StatusCode::ACCEPTED
        );
        assert_eq!(
            post(zipkin_addr, "/api/v2/spans", b"not json".to_vec()).await?,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(http_addr, "/elsewhere", Vec::new()).await?,
            StatusCode::NOT_FOUND
        );

        let spans = tokio::task::spawn_blocking({
            let store = store.clone();
            move || store.wait_for(Duration::from_secs(5), |s| s.len() >= 3)
        })
        .await??;
        assert_eq!(spans[0], want("otlp-grpc"));
        assert_eq!(spans[1], want("otlp-http"));
        let mut zipkin = want("zipkin");
        zipkin.attributes.insert("error".into(), "true".into());
        assert_eq!(spans[2], zipkin);
        for task in tasks {
            task.abort();
        }
        Ok(())
    }

    #[test]
    fn the_store_is_bounded_and_waits_are_too() {
        let store = SpanStore::default();
        store.push(
            (0..STORE_CAPACITY + 5)
                .map(|i| ReceivedSpan {
                    span_id: i.to_string(),
                    ..want("x")
                })
                .collect(),
        );
        let all = store.all();
        assert_eq!(all.len(), STORE_CAPACITY);
        assert_eq!(all[0].span_id, "5", "the oldest went first");
        let started = Instant::now();
        assert!(store
            .wait_for(Duration::from_millis(100), |s| s.len() > STORE_CAPACITY)
            .is_err());
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}

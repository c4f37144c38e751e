//! Istio's standard metrics for the requests and opaque connections the waypoint carries
//! (`reporter="waypoint"`): the labels from the model (source workload at the peer address with
//! the peer's principal, destination workload of the chosen endpoint, the service dialed), and a
//! response body that records the request when its last byte has gone (duration, sizes, the
//! gRPC status from headers or trailers) or when it is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use mesh_common::identity::Identity;
use mesh_common::istio_metrics::{
    IstioLabels, Peer, Reporter, RequestDone, RequestProtocol, Security, ServiceLabels, UNKNOWN,
};
use mesh_common::model::{effective_telemetry, TelemetryScope};
use mesh_common::scope_telemetry::ScopeTelemetry;

use crate::table::{RouteTable, Target};

/// A workload's labels and principal.
type PeerLabels = (Arc<Peer>, Arc<str>);

/// The metric labels of one model, built on first use per workload, service and scope.
#[derive(Debug, Default)]
pub struct LabelIndex {
    peers: Mutex<HashMap<IpAddr, PeerLabels>>,
    services: Mutex<HashMap<String, Arc<ServiceLabels>>>,
    settings: Mutex<HashMap<String, Arc<ScopeTelemetry>>>,
    logs_anywhere: std::sync::OnceLock<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LabelIndex {
    /// The labels and principal of the workload at `ip` (`unknown` when the model has none).
    pub fn peer(&self, table: &RouteTable, ip: IpAddr) -> PeerLabels {
        if let Some(hit) = lock(&self.peers).get(&ip) {
            return hit.clone();
        }
        let built = match table.workload_at(ip) {
            Some(w) => (
                Arc::new(Peer::of(w)),
                Arc::from(w.identity(table.trust_domain()).to_string()),
            ),
            None => (Peer::unknown(), Arc::from(UNKNOWN)),
        };
        let mut peers = lock(&self.peers);
        if peers.len() < 65_536 {
            peers.insert(ip, built.clone());
        }
        built
    }

    /// The labels of the service a request was for (a workload address: the address).
    pub fn service(&self, table: &RouteTable, target: Option<&Target>) -> Arc<ServiceLabels> {
        let Some(target) = target else {
            return ServiceLabels::unknown();
        };
        let key = match target {
            Target::Service { service, .. } => service.to_string(),
            Target::Workload { address, .. } => address.to_string(),
        };
        if let Some(hit) = lock(&self.services).get(&key) {
            return hit.clone();
        }
        let built = Arc::new(match target {
            Target::Service { service, .. } => table
                .service(service)
                .map(ServiceLabels::of)
                .unwrap_or_else(|| ServiceLabels::address(&key)),
            Target::Workload { .. } => ServiceLabels::address(&key),
        });
        let mut services = lock(&self.services);
        if services.len() < 65_536 {
            services.insert(key, built.clone());
        }
        built
    }

    /// Whether any Telemetry of the model sets access logging (else requests skip taking
    /// what a log line would need).
    pub fn logs_anywhere(&self, table: &RouteTable) -> bool {
        *self.logs_anywhere.get_or_init(|| {
            table
                .snapshot()
                .telemetries
                .iter()
                .any(|t| t.access_logging.is_some())
        })
    }

    /// The `Telemetry` settings (metrics, access log, tracing) for requests to `service`
    /// (scope: the service's namespace, targets this waypoint's Gateway and the Service).
    pub fn settings(&self, table: &RouteTable, service: &ServiceLabels) -> Arc<ScopeTelemetry> {
        if table.snapshot().telemetries.is_empty() {
            static NONE: std::sync::OnceLock<Arc<ScopeTelemetry>> = std::sync::OnceLock::new();
            return NONE.get_or_init(Arc::default).clone();
        }
        let key = format!("{}/{}", service.namespace, service.name);
        if let Some(hit) = lock(&self.settings).get(&key) {
            return hit.clone();
        }
        let (wp_ns, wp_name) = table.waypoint();
        let namespace = if &*service.namespace == UNKNOWN {
            wp_ns
        } else {
            &service.namespace
        };
        let targets = [
            ("Gateway", wp_ns, wp_name),
            ("Service", &*service.namespace, &*service.name),
        ];
        let scope = TelemetryScope {
            namespace,
            labels: None,
            targets: &targets,
        };
        let effective = effective_telemetry(&table.snapshot().telemetries, &scope);
        let settings = Arc::new(ScopeTelemetry::new(&effective));
        if !settings.problems.is_empty() {
            tracing::warn!(service = %key, problems = ?settings.problems, "Telemetry settings not fully applied");
        }
        let mut all = lock(&self.settings);
        if all.len() < 65_536 {
            all.insert(key, settings.clone());
        }
        settings
    }
}

/// What a request's series need that is known when it arrives.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// When the request arrived.
    pub started: Instant,
    /// `request_protocol`.
    pub protocol: RequestProtocol,
    /// Head and body bytes read so far (the body counts itself as it is read).
    pub request_bytes: Arc<AtomicU64>,
}

/// The labels of a request answered with `status`/`flags` by `upstream` (if any was tried).
pub fn request_labels(
    table: &RouteTable,
    peer: &Identity,
    remote: IpAddr,
    target: Option<&Target>,
    upstream: Option<SocketAddr>,
    protocol: RequestProtocol,
) -> (IstioLabels, Arc<ScopeTelemetry>) {
    let index = table.label_index();
    let (source, _) = index.peer(table, remote);
    let (destination, destination_principal) = match upstream {
        Some(u) => index.peer(table, u.ip()),
        None => (Peer::unknown(), Arc::from(UNKNOWN)),
    };
    let service = index.service(table, target);
    let settings = index.settings(table, &service);
    let labels = IstioLabels::new(
        Reporter::Waypoint,
        (source, Arc::from(peer.to_string())),
        (destination, destination_principal),
        service,
        protocol,
        Security::MutualTls,
    );
    (labels, settings)
}

/// The size of a request or response head as Istio counts it (names, values, separators).
pub fn head_bytes(headers: &HeaderMap, first_line: usize) -> u64 {
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (first_line + fields + 2) as u64
}

/// The `grpc-status` of a header or trailer block.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Called once with the finished request's figures.
pub type OnDone = Box<dyn FnOnce(Finished) + Send + Sync>;

/// What is known when the response has ended.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// Duration, sizes.
    pub done: RequestDone,
    /// `grpc-status` from the response trailers, if any.
    pub grpc_status: Option<u32>,
    /// Whether the body ended (false: dropped before its end, a reset or a client gone).
    pub complete: bool,
}

/// A body that counts the bytes passing and calls `on_done` at its end or drop.
#[allow(missing_debug_implementations)] // holds a callback
pub struct Recorded<B> {
    body: B,
    started: Instant,
    request_bytes: Arc<AtomicU64>,
    response_bytes: u64,
    grpc_status: Option<u32>,
    on_done: Option<OnDone>,
}

impl<B> Recorded<B> {
    /// Wraps a response body of a request that arrived at `started`, whose head was
    /// `head_bytes` long.
    pub fn new(body: B, cx: &RequestContext, head_bytes: u64, on_done: OnDone) -> Recorded<B> {
        Recorded {
            body,
            started: cx.started,
            request_bytes: cx.request_bytes.clone(),
            response_bytes: head_bytes,
            grpc_status: None,
            on_done: Some(on_done),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(on_done) = self.on_done.take() {
            on_done(Finished {
                done: RequestDone {
                    duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
                    request_bytes: self.request_bytes.load(Ordering::Relaxed),
                    response_bytes: self.response_bytes,
                },
                grpc_status: self.grpc_status,
                complete,
            });
        }
    }
}

impl<B> Drop for Recorded<B> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl<B: Body + Unpin> Body for Recorded<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.response_bytes += data.remaining() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.grpc_status = grpc_status(trailers).or(self.grpc_status);
                }
                if self.body.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that adds the bytes read to a shared count.
#[derive(Debug)]
pub struct Counted<B> {
    body: B,
    read: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    /// Wraps `body`, counting into `read`.
    pub fn new(body: B, read: Arc<AtomicU64>) -> Counted<B> {
        Counted { body, read }
    }
}

impl<B: Body + Unpin> Body for Counted<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.read
                    .fetch_add(data.remaining() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

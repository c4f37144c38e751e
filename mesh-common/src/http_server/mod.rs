//! A small HTTP/1 server for the mesh's own endpoints (metrics, readiness, admin) with every
//! resource a client can hold bounded: connections (per listener and per peer address), the time
//! to send a request head, the time a keep-alive connection may sit idle, the time to answer,
//! the size of a request head and of a request body. Each limit is counted in
//! [`ListenerMetrics`].
//!
//! The timeouts are kept here rather than with hyper's `header_read_timeout`: hyper has one timer
//! for both the idle time between requests and the head itself, so idle closes and slow heads
//! could not be told apart in the metrics, and the idle time could not be longer than the time
//! allowed for a head.

mod admission;
mod conn;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;

pub use admission::{Admission, Refusal};
pub use conn::{deadline, Expiry, Phase};

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed for a whole request head: from the accept for the first request, from its
    /// first byte for the next ones on a keep-alive connection.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may wait, after a response, for the first byte of the next
    /// request.
    pub idle_timeout: Duration,
    /// Time allowed from a complete head to the response handed to the connection (reading the
    /// request body included).
    pub response_timeout: Duration,
    /// Connections open at once on the listener; one more is closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one peer address, so one client cannot take every place.
    pub max_connections_per_peer: usize,
    /// Largest request head (request line and headers) in bytes: a larger one gets 431.
    pub max_head_bytes: usize,
    /// Largest request body read, in bytes: a larger one gets 413 and the connection is closed.
    pub max_body_bytes: usize,
}

/// Default [`Limits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`Limits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Limits::response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// Default [`Limits::max_connections_per_peer`].
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 16;
/// Default [`Limits::max_head_bytes`].
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// Default [`Limits::max_body_bytes`] (the endpoints take their arguments in the query).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024;
/// Most headers in one request head.
const MAX_HEADERS: usize = 64;
/// hyper's smallest read buffer: the head bound is applied within it.
const MIN_READ_BUFFER: usize = 8192;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The counters of one listener (prometheus-client handles: the caller registers them, usually
/// as one member of a family labelled by listener).
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Connections closed at accept because the listener was at [`Limits::max_connections`].
    pub refused_listener_cap: Counter,
    /// Connections closed at accept because their peer was at
    /// [`Limits::max_connections_per_peer`].
    pub refused_peer_cap: Counter,
    /// Connections closed because a request head did not arrive in time.
    pub header_read_timeouts: Counter,
    /// Keep-alive connections closed after [`Limits::idle_timeout`] without a request.
    pub idle_closes: Counter,
    /// Connections closed because a response was not ready in time.
    pub response_timeouts: Counter,
    /// Requests refused for a head or body over the limits (431, 413).
    pub oversized: Counter,
}

/// What a handler returns.
pub type HttpResponse = Response<Full<Bytes>>;

/// Serves `listener` until the task is dropped or aborted: each accepted connection within the
/// caps gets its own task, each request (with its body, at most [`Limits::max_body_bytes`])
/// goes to `handler`. `name` names the listener in logs.
pub async fn serve<H, F>(
    listener: TcpListener,
    name: &'static str,
    limits: Limits,
    metrics: ListenerMetrics,
    handler: H,
) where
    H: Fn(Request<Bytes>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let admission = Arc::new(Admission::new(
        limits.max_connections,
        limits.max_connections_per_peer,
    ));
    let mut refusals = admission::RefusalLog::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or a transient error: back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                match refusal {
                    Refusal::ListenerFull => metrics.refused_listener_cap.inc(),
                    Refusal::PeerFull => metrics.refused_peer_cap.inc(),
                };
                refusals.refused(name, refusal, peer.ip());
                drop(stream);
                continue;
            }
        };
        let open = OpenConnection::new(permit, &metrics.open);
        let metrics = metrics.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            conn::drive(stream, peer, name, limits, &metrics, handler).await;
            drop(open);
        });
    }
}

/// An admitted connection: its place under the caps and its count in the gauge, both given
/// back on drop (also if its task panics).
#[derive(Debug)]
struct OpenConnection {
    _permit: admission::Permit,
    gauge: Gauge,
}

impl OpenConnection {
    fn new(permit: admission::Permit, gauge: &Gauge) -> Self {
        gauge.inc();
        OpenConnection {
            _permit: permit,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Reads the body of `request` up to `limit` bytes; `Err` with the 413 response when it is
/// larger (announced or actual).
async fn read_body(
    request: Request<hyper::body::Incoming>,
    limit: usize,
) -> Result<Request<Bytes>, HttpResponse> {
    use http_body_util::BodyExt;
    let announced = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let (parts, body) = request.into_parts();
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Request::from_parts(parts, collected.to_bytes())),
        Err(_) => Err(too_large(limit)),
    }
}

fn too_large(limit: usize) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "request body over {limit} bytes\n"
    ))));
    *response.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
    // The rest of the body is never read: the connection cannot carry another request.
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// A plain-text response.
pub fn text(status: hyper::StatusCode, body: impl Into<String>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The service type the connections run (kept here so `conn` needs no generics of its own).
type ServiceResult = Result<Response<conn::TrackedBody>, Infallible>;

#[cfg(test)]
mod tests;

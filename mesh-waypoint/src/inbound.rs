//! The waypoint's HBONE server side: each CONNECT stream from an agent is one downstream
//! connection. Its authority names the destination (a service VIP and port, or a workload
//! address and port); the verified peer certificate is the original source's identity and the
//! TCP peer address the source pod's. A destination this waypoint does not serve is refused
//! (403): the waypoint is no open proxy. The protocol comes from the service port, or is
//! detected from the first bytes; then HTTP goes to [`crate::proxy`] and anything else is
//! passed through as opaque TCP ([`crate::tcp`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_hbone::hbone::{ConnectError, ConnectHandler, ConnectRequest, HboneStream};
use tokio::io::AsyncReadExt;

use crate::detect::{self, Mode, Sniff};
use crate::io::Prefixed;
use crate::metrics::{ConnectionLabels, RefusalLabels};
use crate::proxy::{self, Downstream, Shared};

/// How long the first bytes of a connection whose protocol is not declared may take before it
/// is taken as opaque TCP (a server-first protocol, where the client waits for the server).
pub const SNIFF_TIMEOUT: Duration = Duration::from_millis(1000);

/// Time a downstream HTTP/1.1 request head may take (the first one from the first byte, the next
/// ones on a keep-alive connection likewise), as Envoy's `request_headers_timeout`.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// PING interval on downstream HTTP/2 connections, and how long an answer may take.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`HTTP2_KEEPALIVE_INTERVAL`].
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read at most to tell HTTP/1.1, HTTP/2 and opaque TCP apart (the HTTP/2 preface).
const SNIFF_BYTES: usize = 24;

/// Handles CONNECT streams for one waypoint instance.
#[derive(Debug, Clone)]
pub struct WaypointHandler {
    shared: Arc<Shared>,
}

impl WaypointHandler {
    /// A handler routing with `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        WaypointHandler { shared }
    }
}

#[async_trait]
impl ConnectHandler for WaypointHandler {
    type Upstream = Mode;

    async fn open(&self, request: &ConnectRequest) -> Result<Mode, ConnectError> {
        let table = self.shared.state.table();
        let refuse = |reason: &'static str, message: String| {
            self.shared
                .metrics
                .refused
                .get_or_create(&RefusalLabels { reason })
                .inc();
            tracing::warn!(peer = %request.peer, src = %request.remote, target = %request.target, reason, %message, "CONNECT refused");
            ConnectError::Forbidden(message)
        };
        let Some(target) = table.target(request.target) else {
            return Err(refuse(
                "unknown_destination",
                format!(
                    "{} is neither a service nor a workload of the mesh",
                    request.target
                ),
            ));
        };
        if !table.serves(&target) {
            let instance = self.shared.state.instance();
            return Err(refuse(
                "not_assigned",
                format!(
                    "{} does not use waypoint {}/{}",
                    request.target, instance.namespace, instance.name
                ),
            ));
        }
        Ok(detect::mode(table.protocol(&target)))
    }

    async fn serve(&self, request: ConnectRequest, mode: Mode, mut stream: HboneStream) {
        let (mode, prefix) = match mode {
            Mode::Sniff => match sniff(&mut stream).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(peer = %request.peer, error = %e, "downstream closed before its protocol was known");
                    return;
                }
            },
            declared => (declared, Bytes::new()),
        };
        let downstream = Arc::new(Downstream {
            peer: request.peer.clone(),
            remote: request.remote,
            authority: request.target,
        });
        let io = Prefixed::new(prefix, stream);
        let protocol = match mode {
            Mode::Http1 => "http1",
            Mode::Http2 => "http2",
            Mode::Opaque | Mode::Sniff => "tcp",
        };
        self.shared
            .metrics
            .connections
            .get_or_create(&ConnectionLabels { protocol })
            .inc();
        match mode {
            Mode::Opaque | Mode::Sniff => crate::tcp::pass(&self.shared, &downstream, io).await,
            Mode::Http1 | Mode::Http2 => {
                let shared = self.shared.clone();
                let service =
                    service_fn(move |req| proxy::handle(shared.clone(), downstream.clone(), req));
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if mode == Mode::Http1 {
                    builder = builder.http1_only();
                } else {
                    builder = builder.http2_only();
                }
                // A request head must arrive within the timeout (slow-loris clients are cut);
                // silent HTTP/2 clients are found by PINGs.
                builder
                    .http1()
                    .keep_alive(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service)
                    .await
                {
                    tracing::debug!(peer = %request.peer, error = %e, "downstream HTTP connection ended");
                }
            }
        }
    }
}

/// Reads the first bytes of `stream` (at most [`SNIFF_BYTES`], within [`SNIFF_TIMEOUT`]) and
/// says what they are; nothing within the timeout is opaque TCP. The bytes read are returned to
/// be replayed.
async fn sniff(stream: &mut HboneStream) -> std::io::Result<(Mode, Bytes)> {
    let mut buf = BytesMut::with_capacity(SNIFF_BYTES);
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    loop {
        let verdict = detect::sniff(&buf);
        let mode = match verdict {
            Sniff::Http1 => Some(Mode::Http1),
            Sniff::Http2 => Some(Mode::Http2),
            Sniff::Opaque => Some(Mode::Opaque),
            Sniff::NeedMore if buf.len() >= SNIFF_BYTES => Some(Mode::Opaque),
            Sniff::NeedMore => None,
        };
        if let Some(mode) = mode {
            return Ok((mode, buf.freeze()));
        }
        let mut chunk = [0u8; SNIFF_BYTES];
        let room = SNIFF_BYTES - buf.len();
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Err(_) => return Ok((Mode::Opaque, buf.freeze())),
            Ok(Ok(0)) if buf.is_empty() => {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(Ok(0)) => return Ok((Mode::Opaque, buf.freeze())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

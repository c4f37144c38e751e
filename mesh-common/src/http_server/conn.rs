//! One connection of the bounded server: hyper's HTTP/1 connection watched through the phase it
//! is in (reading a head, making a response, idle between requests), closed when the phase
//! outlives its limit.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{read_body, HttpResponse, Limits, ListenerMetrics, ServiceResult, MAX_HEADERS};

/// Where a connection is, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a complete request head: since the accept (first request) or since the
    /// head's first byte (later requests).
    Head(Instant),
    /// A head is complete: the body is read and the response made.
    Busy(Instant),
    /// A response was handed to the connection: waiting for the next request's first byte.
    Idle(Instant),
}

/// Which limit closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// [`Limits::header_read_timeout`].
    HeaderRead,
    /// [`Limits::response_timeout`].
    Response,
    /// [`Limits::idle_timeout`].
    Idle,
}

/// When a connection in `phase` is closed, and by which limit.
pub fn deadline(phase: Phase, limits: &Limits) -> (Expiry, Instant) {
    match phase {
        Phase::Head(since) => (Expiry::HeaderRead, since + limits.header_read_timeout),
        Phase::Busy(since) => (Expiry::Response, since + limits.response_timeout),
        Phase::Idle(since) => (Expiry::Idle, since + limits.idle_timeout),
    }
}

type PhaseTx = Arc<watch::Sender<Phase>>;

/// Serves one connection until it ends or a phase outlives its limit.
pub(super) async fn drive<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    name: &'static str,
    limits: Limits,
    metrics: &ListenerMetrics,
    handler: H,
) where
    H: Fn(Request<Bytes>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let (tx, mut phase) = watch::channel(Phase::Head(Instant::now()));
    let tx: PhaseTx = Arc::new(tx);
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        phase: tx.clone(),
    });
    let service = {
        let tx = tx.clone();
        let oversized = metrics.oversized.clone();
        hyper::service::service_fn(move |request| {
            let (tx, handler, oversized) = (tx.clone(), handler.clone(), oversized.clone());
            async move {
                tx.send_replace(Phase::Busy(Instant::now()));
                let response = match read_body(request, limits.max_body_bytes).await {
                    Ok(request) => handler(request).await,
                    Err(refused) => {
                        oversized.inc();
                        refused
                    }
                };
                ServiceResult::Ok(response.map(|inner| TrackedBody { inner, phase: tx }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(limits.max_head_bytes.max(super::MIN_READ_BUFFER))
        .max_header_size(limits.max_head_bytes)
        .max_headers(MAX_HEADERS)
        // The timeouts are this module's (see the module documentation).
        .header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    loop {
        let (expiry, at) = deadline(*phase.borrow_and_update(), &limits);
        tokio::select! {
            result = &mut connection => {
                if let Err(e) = result {
                    if e.is_parse_too_large() {
                        metrics.oversized.inc();
                    }
                    tracing::debug!(listener = name, %peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            // The sender lives in `tx` (held here) so this never ends in an error loop.
            _ = phase.changed() => {}
            () = tokio::time::sleep_until(at) => {
                match expiry {
                    Expiry::HeaderRead => metrics.header_read_timeouts.inc(),
                    Expiry::Response => metrics.response_timeouts.inc(),
                    Expiry::Idle => metrics.idle_closes.inc(),
                };
                tracing::debug!(listener = name, %peer, ?expiry, "HTTP connection closed by its limit");
                // Dropping the connection closes the socket.
                return;
            }
        }
    }
}

/// The socket, telling the phase when the first byte of a request arrives on an idle
/// connection.
struct TrackedIo {
    inner: TcpStream,
    phase: PhaseTx,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.send_if_modified(|phase| match phase {
                Phase::Idle(_) => {
                    *phase = Phase::Head(Instant::now());
                    true
                }
                _ => false,
            });
        }
        result
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that turns the connection idle once hyper is done with it (hyper drops a
/// body when it has taken its last frame, so a client that reads slowly is still bounded: by
/// the response timeout until the body is taken, by the idle timeout after).
pub(super) struct TrackedBody {
    inner: Full<Bytes>,
    phase: PhaseTx,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Idle(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_phase_expires_by_its_own_limit() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            ..Limits::default()
        };
        let t = Instant::now();
        let cases = [
            (Phase::Head(t), Expiry::HeaderRead, 5),
            (Phase::Busy(t), Expiry::Response, 10),
            (Phase::Idle(t), Expiry::Idle, 30),
        ];
        for (phase, expiry, secs) in cases {
            assert_eq!(
                deadline(phase, &limits),
                (expiry, t + Duration::from_secs(secs)),
                "{phase:?}"
            );
        }
    }
}

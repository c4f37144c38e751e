//! The server side: a listener that hands tonic only connections whose TLS handshake succeeded;
//! plaintext and failed handshakes are refused, counted and logged before any gRPC is read.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{HANDSHAKE_TIMEOUT, MAX_CONCURRENT_HANDSHAKES};
use crate::tls::TlsError;

/// Connections a control-plane server refused before gRPC, by reason (the admin endpoint and
/// tests read them).
#[derive(Debug, Default)]
pub struct HandshakeStats {
    /// TLS handshakes completed.
    pub accepted: AtomicU64,
    /// Connections that did not speak TLS (plaintext gRPC, HTTP/1, garbage).
    pub not_tls: AtomicU64,
    /// Handshakes that did not finish within [`HANDSHAKE_TIMEOUT`].
    pub timed_out: AtomicU64,
    /// Other handshake failures (the client refused our certificate, protocol errors, resets).
    pub failed: AtomicU64,
}

impl HandshakeStats {
    /// Total refused connections.
    pub fn refused(&self) -> u64 {
        self.not_tls.load(Ordering::Relaxed)
            + self.timed_out.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
    }
}

/// A TLS connection accepted by [`tls_incoming`], as tonic serves it (its `remote_addr` is the
/// TCP peer).
#[derive(Debug)]
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The TLS connections of a listener, for `serve_with_incoming`: accepting stops when it is
/// dropped.
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<Result<TlsConn, std::io::Error>>,
    task: JoinHandle<()>,
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = Result<TlsConn, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Accepts on `listener` and performs each TLS handshake (at most
/// [`MAX_CONCURRENT_HANDSHAKES`] at once, each within [`HANDSHAKE_TIMEOUT`]) off the accept
/// loop; only completed handshakes reach the server. Refusals are logged (at most one line per
/// second per server, with the count) and counted in `stats`. `what` names the server in logs.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    what: &'static str,
    stats: Arc<HandshakeStats>,
) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(config),
        what,
        stats,
        tx,
    ));
    TlsIncoming { rx, task }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    what: &'static str,
    stats: Arc<HandshakeStats>,
    tx: mpsc::Sender<Result<TlsConn, std::io::Error>>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let limiter = Arc::new(LogLimiter::default());
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(server = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let stats = stats.clone();
        let limiter = limiter.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let local = tcp.local_addr().ok();
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(inner)) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let conn = TlsConn {
                        inner,
                        info: TcpConnectInfo {
                            local_addr: local,
                            remote_addr: Some(peer),
                        },
                    };
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Err(e)) => {
                    let reason = TlsError::from_handshake(&e);
                    let counter = match reason {
                        TlsError::NotTls => &stats.not_tls,
                        _ => &stats.failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    limiter.refused(what, peer, &reason);
                }
                Err(_) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    limiter.refused(what, peer, &TlsError::HandshakeTimeout);
                }
            }
        });
    }
}

/// One refusal log line per second at most, with how many were not logged.
#[derive(Debug, Default)]
struct LogLimiter {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    fn refused(&self, what: &str, peer: SocketAddr, reason: &TlsError) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let last = self.last_second.swap(now, Ordering::Relaxed);
        if last == now {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            server = what,
            %peer,
            reason = reason.kind(),
            error = %reason,
            suppressed,
            "refused a control-plane connection: no TLS handshake (plaintext clients are not served)"
        );
    }
}

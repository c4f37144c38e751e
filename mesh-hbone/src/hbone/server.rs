//! The HBONE server: accepts mTLS connections, learns each client's SPIFFE identity from its
//! certificate, and hands every CONNECT stream to a [`ConnectHandler`].
//!
//! Nothing a peer sends can panic the server: a connection that fails TLS (not TLS at all, an
//! untrusted, expired or non-SPIFFE certificate) is logged with its reason, counted, and closed;
//! a malformed CONNECT is answered with a 4xx status on its stream only.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Method, Request, Response, StatusCode};
use mesh_common::burst_log::BurstLog;
use mesh_common::identity::Identity;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::liveness::{self, Liveness};
use super::stream::HboneStream;
use super::{
    HboneError, DEFAULT_CONNECTION_WINDOW, DEFAULT_MAX_FRAME_SIZE, DEFAULT_STREAM_WINDOW,
    MAX_HEADER_LIST_SIZE,
};
use crate::tls::{peer_identity, TlsError};

/// Settings of an [`HboneServer`].
#[derive(Debug, Clone)]
pub struct HboneServerConfig {
    /// Per-stream flow-control window.
    pub stream_window: u32,
    /// Per-connection flow-control window.
    pub connection_window: u32,
    /// Largest HTTP/2 frame accepted.
    pub max_frame_size: u32,
    /// Most concurrent streams a client may open on one connection.
    pub max_concurrent_streams: u32,
    /// Time allowed for the TLS and HTTP/2 handshakes.
    pub handshake_timeout: Duration,
    /// On shutdown, how long in-flight streams may go on before they are cut.
    pub drain_grace: Duration,
    /// PINGs and TCP keepalive: a client that stops answering is closed with its streams.
    pub liveness: Liveness,
}

impl Default for HboneServerConfig {
    fn default() -> Self {
        HboneServerConfig {
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_concurrent_streams: 1000,
            handshake_timeout: Duration::from_secs(10),
            drain_grace: Duration::from_secs(5),
            liveness: Liveness::default(),
        }
    }
}

/// One CONNECT request, as the handler sees it.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The client's identity, from its verified certificate.
    pub peer: Identity,
    /// The target of the CONNECT (its authority).
    pub target: SocketAddr,
    /// The TCP address the HBONE connection came from.
    pub remote: SocketAddr,
    /// The local address it arrived on.
    pub local: SocketAddr,
}

/// Why a handler refused a CONNECT; each maps to the HTTP status sent back.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Not allowed (policy): 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The upstream refused or is unreachable: 503.
    #[error("upstream unreachable: {0}")]
    Unreachable(std::io::Error),
    /// The upstream did not answer in time: 504.
    #[error("upstream connect timed out")]
    Timeout,
}

impl ConnectError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ConnectError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConnectError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConnectError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// What the server does with each CONNECT: first [`open`](Self::open) decides (authorization,
/// upstream connect) so a refusal becomes a status; after the 200 is sent,
/// [`serve`](Self::serve) gets the tunnelled byte stream.
#[async_trait]
pub trait ConnectHandler: Send + Sync + 'static {
    /// What `open` produces for `serve` (typically the upstream connection).
    type Upstream: Send + 'static;

    /// Authorizes the request and prepares the upstream; an error is answered with its status.
    async fn open(&self, request: &ConnectRequest) -> Result<Self::Upstream, ConnectError>;

    /// Carries the stream (the 200 has been sent). Returning closes the stream.
    async fn serve(&self, request: ConnectRequest, upstream: Self::Upstream, stream: HboneStream);
}

/// A handler that connects to the CONNECT target over TCP and copies bytes both ways.
///
/// It applies no policy and forwards to any target the client names: a proxy wraps it (or writes
/// its own handler) to check the peer identity and to keep targets to the workloads it serves.
#[derive(Debug, Clone)]
pub struct TcpForwarder {
    /// Upstream connect timeout (504 when it passes).
    pub connect_timeout: Duration,
}

impl Default for TcpForwarder {
    fn default() -> Self {
        TcpForwarder {
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[async_trait]
impl ConnectHandler for TcpForwarder {
    type Upstream = TcpStream;

    async fn open(&self, request: &ConnectRequest) -> Result<TcpStream, ConnectError> {
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(request.target)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                Ok(tcp)
            }
            Ok(Err(e)) => Err(ConnectError::Unreachable(e)),
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    async fn serve(&self, request: ConnectRequest, upstream: TcpStream, stream: HboneStream) {
        let relayed = crate::relay::tcp_hbone(upstream, stream).await;
        tracing::debug!(
            peer = %request.peer,
            target = %request.target,
            up = relayed.backward,
            down = relayed.forward,
            result = ?relayed.result,
            "stream done"
        );
    }
}

/// Counters of an [`HboneServer`], for metrics and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    accepted: AtomicU64,
    lost: AtomicU64,
    streams: AtomicU64,
    refusals: Mutex<HashMap<&'static str, u64>>,
    /// Refusals are logged once per burst of a kind: a client can cause them at will.
    refusal_log: BurstLog,
}

impl ServerStats {
    /// Connections that completed the mTLS handshake.
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed because the client stopped answering PINGs.
    pub fn connections_lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// CONNECT streams received.
    pub fn streams(&self) -> u64 {
        self.streams.load(Ordering::Relaxed)
    }

    /// Connections refused for the given reason ([`TlsError::kind`]).
    pub fn refusals(&self, kind: &str) -> u64 {
        self.refusals_map().get(kind).copied().unwrap_or(0)
    }

    /// All refused connections.
    pub fn refusals_total(&self) -> u64 {
        self.refusals_map().values().sum()
    }

    fn refusals_map(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, u64>> {
        self.refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refused(&self, err: &TlsError) {
        *self.refusals_map().entry(err.kind()).or_default() += 1;
    }
}

/// An HBONE listener.
pub struct HboneServer<H: ConnectHandler> {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handler: Arc<H>,
    config: HboneServerConfig,
    stats: Arc<ServerStats>,
}

impl<H: ConnectHandler> std::fmt::Debug for HboneServer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneServer")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl<H: ConnectHandler> HboneServer<H> {
    /// A server on `listener` (typically bound to port [`super::HBONE_PORT`]), with a TLS
    /// configuration from [`crate::tls::server_config`].
    pub fn new(
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        handler: H,
        config: HboneServerConfig,
    ) -> Self {
        HboneServer {
            listener,
            acceptor: TlsAcceptor::from(tls),
            handler: Arc::new(handler),
            config,
            stats: Arc::default(),
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's counters (a live handle).
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets in-flight streams finish for
    /// at most `drain_grace` (clients get a GOAWAY), and cuts what is left.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), HboneError> {
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, remote)) => {
                        let conn = Conn {
                            acceptor: self.acceptor.clone(),
                            handler: self.handler.clone(),
                            config: self.config.clone(),
                            stats: self.stats.clone(),
                            drain: drain_rx.clone(),
                        };
                        conns.spawn(conn.run(tcp, remote));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: keep serving after a short pause.
                        tracing::warn!(error = %e, "HBONE accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        let _ = drain_tx.send(true);
        tracing::info!(connections = conns.len(), grace = ?self.config.drain_grace, "HBONE server draining");
        let drained = tokio::time::timeout(self.config.drain_grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = conns.len(),
                "drain grace over: closing remaining connections"
            );
            conns.shutdown().await;
        }
        Ok(())
    }
}

/// What one connection task needs.
struct Conn<H: ConnectHandler> {
    acceptor: TlsAcceptor,
    handler: Arc<H>,
    config: HboneServerConfig,
    stats: Arc<ServerStats>,
    drain: watch::Receiver<bool>,
}

impl<H: ConnectHandler> Conn<H> {
    async fn run(mut self, tcp: TcpStream, remote: SocketAddr) {
        let local = match tcp.local_addr() {
            Ok(a) => a,
            Err(e) => return tracing::debug!(%remote, error = %e, "connection gone before TLS"),
        };
        let _ = tcp.set_nodelay(true);
        self.config.liveness.tune(&tcp);
        let handshake =
            tokio::time::timeout(self.config.handshake_timeout, self.acceptor.accept(tcp));
        let tls = match handshake.await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return self.refuse(remote, TlsError::from_handshake(&e)),
            Err(_) => return self.refuse(remote, TlsError::HandshakeTimeout),
        };
        let peer = match peer_identity(tls.get_ref().1) {
            Ok(peer) => peer,
            Err(e) => return self.refuse(remote, e),
        };
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%remote, %peer, "HBONE connection accepted");

        let h2 = h2::server::Builder::new()
            .initial_window_size(self.config.stream_window)
            .initial_connection_window_size(self.config.connection_window)
            .max_frame_size(self.config.max_frame_size)
            .max_concurrent_streams(self.config.max_concurrent_streams)
            .max_send_buffer_size(self.config.stream_window as usize)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .handshake::<_, Bytes>(tls);
        let mut conn = match tokio::time::timeout(self.config.handshake_timeout, h2).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return tracing::info!(%remote, %peer, error = %e, "HTTP/2 handshake failed")
            }
            Err(_) => return tracing::info!(%remote, %peer, "HTTP/2 handshake timed out"),
        };

        let pings = liveness::until_unanswered(conn.ping_pong(), self.config.liveness);
        tokio::pin!(pings);
        let mut streams = JoinSet::new();
        let mut draining = *self.drain.borrow();
        if draining {
            conn.graceful_shutdown();
        }
        loop {
            tokio::select! {
                next = conn.accept() => match next {
                    Some(Ok((request, respond))) => {
                        self.stats.streams.fetch_add(1, Ordering::Relaxed);
                        let ctx = StreamCtx { handler: self.handler.clone(), peer: peer.clone(), remote, local };
                        streams.spawn(ctx.handle(request, respond));
                    }
                    Some(Err(e)) => {
                        if !e.is_go_away() && !e.is_io() {
                            tracing::info!(%remote, %peer, error = %e, "HBONE connection error");
                        }
                        break;
                    }
                    None => break,
                },
                Some(_) = streams.join_next(), if !streams.is_empty() => {}
                () = &mut pings => {
                    self.stats.lost.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%remote, %peer, timeout = ?self.config.liveness.ping_timeout, "HBONE client lost: it did not answer a PING; closing the connection");
                    break;
                }
                changed = self.drain.changed(), if !draining => {
                    if changed.is_err() || *self.drain.borrow() {
                        draining = true;
                        conn.graceful_shutdown();
                    }
                }
            }
        }
        // The connection is closed: streams still running can no longer move bytes.
        streams.shutdown().await;
    }

    fn refuse(&self, remote: SocketAddr, reason: TlsError) {
        self.stats.refused(&reason);
        if let Some(unlogged) = self
            .stats
            .refusal_log
            .admit(reason.kind(), std::time::Instant::now())
        {
            tracing::warn!(%remote, reason = %reason, kind = reason.kind(), unlogged, "HBONE connection refused (logged once per burst)");
        }
    }
}

/// What one stream task needs.
struct StreamCtx<H: ConnectHandler> {
    handler: Arc<H>,
    peer: Identity,
    remote: SocketAddr,
    local: SocketAddr,
}

impl<H: ConnectHandler> StreamCtx<H> {
    async fn handle(self, request: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let target = match parse_connect(&request) {
            Ok(target) => target,
            Err((status, why)) => {
                tracing::info!(remote = %self.remote, peer = %self.peer, %why, "bad CONNECT request");
                return send_status(&mut respond, status);
            }
        };
        let req = ConnectRequest {
            peer: self.peer,
            target,
            remote: self.remote,
            local: self.local,
        };
        let upstream = match self.handler.open(&req).await {
            Ok(upstream) => upstream,
            Err(e) => {
                // The handler logs its refusals (once per burst); a line per stream here would let
                // a client flood the log.
                tracing::debug!(peer = %req.peer, target = %req.target, error = %e, "CONNECT refused");
                return send_status(&mut respond, e.status());
            }
        };
        let response = match Response::builder().status(StatusCode::OK).body(()) {
            Ok(r) => r,
            Err(_) => return,
        };
        let send = match respond.send_response(response, false) {
            Ok(send) => send,
            Err(e) => {
                return tracing::debug!(peer = %req.peer, error = %e, "client left before 200")
            }
        };
        let stream = HboneStream::new(send, request.into_body(), None);
        self.handler.serve(req, upstream, stream).await;
    }
}

/// The target of a well-formed CONNECT, or the status for a bad one.
fn parse_connect(request: &Request<RecvStream>) -> Result<SocketAddr, (StatusCode, String)> {
    if request.method() != Method::CONNECT {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {}", request.method()),
        ));
    }
    let authority = request.uri().authority().ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            "CONNECT without authority".to_owned(),
        )
    })?;
    authority.as_str().parse::<SocketAddr>().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            format!("authority {authority:?} is not ip:port"),
        )
    })
}

fn send_status(respond: &mut SendResponse<Bytes>, status: StatusCode) {
    if let Ok(response) = Response::builder().status(status).body(()) {
        let _ = respond.send_response(response, true);
    }
}

//! The HBONE client side of one connection: TCP, mTLS that must prove the expected identity,
//! HTTP/2, then any number of CONNECT streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use super::connector::{Connector, DirectConnector};
use super::liveness::{self, Liveness};
use super::stream::{HboneStream, OnDrop};
use super::{
    HboneError, Step, DEFAULT_CONNECTION_WINDOW, DEFAULT_MAX_FRAME_SIZE, DEFAULT_STREAM_WINDOW,
    MAX_HEADER_LIST_SIZE,
};
use crate::tls::TlsError;

/// Default limit on the TCP connect to a peer: a peer that does not answer a SYN and two
/// retransmissions (at 1 s and 3 s) is unreachable; a new connection fails fast instead of hanging.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default limit on the TLS and HTTP/2 handshakes once TCP is up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on the peer's answer to a CONNECT; longer than the servers' own upstream connect
/// limits (5 s), so a slow upstream is reported by the server (504) rather than guessed at here.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of HBONE client connections (and of the pool that holds them).
#[derive(Debug, Clone)]
pub struct HboneClientConfig {
    /// Per-stream flow-control window.
    pub stream_window: u32,
    /// Per-connection flow-control window.
    pub connection_window: u32,
    /// Largest HTTP/2 frame accepted.
    pub max_frame_size: u32,
    /// Streams carried by one connection before the pool opens another (the server's own
    /// limit applies too, whichever is lower).
    pub max_streams_per_connection: usize,
    /// A pooled connection with no stream for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
    /// Time allowed for the TLS and HTTP/2 handshakes, once TCP is connected.
    pub handshake_timeout: Duration,
    /// Time allowed for the peer's answer to a CONNECT.
    pub response_timeout: Duration,
    /// PINGs and TCP keepalive: how a silent peer is found dead.
    pub liveness: Liveness,
}

impl Default for HboneClientConfig {
    fn default() -> Self {
        HboneClientConfig {
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_streams_per_connection: 100,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            liveness: Liveness::default(),
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Takes new streams.
    Open,
    /// The peer is going away (GOAWAY, or it refused a stream unprocessed): streams already
    /// open go on, new ones go elsewhere.
    Refusing,
    /// Ended (closed by either side, or an error).
    Closed,
    /// Closed because the peer stopped answering PINGs.
    Lost,
}

/// One established HBONE connection. Cheap to clone; the connection closes when every clone and
/// every stream is dropped, or the peer closes it, or it stops answering PINGs.
#[derive(Debug, Clone)]
pub struct HboneConnection {
    send: SendRequest<Bytes>,
    peer: SocketAddr,
    state: Arc<watch::Sender<ConnState>>,
    response_timeout: Duration,
}

impl HboneConnection {
    /// Connects to `peer` (an HBONE endpoint, `ip:15008`) from this process's network
    /// namespace, with `tls` from [`crate::tls::client_config`], which decides the identity the
    /// peer must prove.
    pub async fn dial(
        peer: SocketAddr,
        tls: Arc<ClientConfig>,
        config: &HboneClientConfig,
    ) -> Result<HboneConnection, HboneError> {
        Self::dial_with(&DirectConnector, peer, tls, config).await
    }

    /// Like [`dial`](Self::dial), with the TCP connection made by `connector`.
    pub async fn dial_with(
        connector: &dyn Connector,
        peer: SocketAddr,
        tls: Arc<ClientConfig>,
        config: &HboneClientConfig,
    ) -> Result<HboneConnection, HboneError> {
        let timeout = |step, after| HboneError::Timeout { step, peer, after };
        let tcp = tokio::time::timeout(config.connect_timeout, connector.connect(peer))
            .await
            .map_err(|_| timeout(Step::TcpConnect, config.connect_timeout))?
            .map_err(|source| HboneError::Connect { peer, source })?;
        let _ = tcp.set_nodelay(true);
        config.liveness.tune(&tcp);
        let handshake = Self::handshake(tcp, peer, tls, config);
        let (send, mut conn) = tokio::time::timeout(config.handshake_timeout, handshake)
            .await
            .map_err(|_| timeout(Step::Handshake, config.handshake_timeout))??;
        let state = Arc::new(watch::Sender::new(ConnState::Open));
        let driver_state = state.clone();
        let liveness = config.liveness;
        let pings = conn.ping_pong();
        tokio::spawn(async move {
            let end = tokio::select! {
                ended = &mut conn => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "HBONE connection ended");
                    }
                    ConnState::Closed
                }
                () = liveness::until_unanswered(pings, liveness) => {
                    tracing::warn!(%peer, timeout = ?liveness.ping_timeout, "HBONE connection lost: the peer did not answer a PING; closing it");
                    ConnState::Lost
                }
            };
            // State first, so a stream failing below knows why; dropping the connection (on a
            // lost peer) then fails its streams at once.
            driver_state.send_replace(end);
            drop(conn);
        });
        Ok(HboneConnection {
            send,
            peer,
            state,
            response_timeout: config.response_timeout,
        })
    }

    async fn handshake(
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        tls: Arc<ClientConfig>,
        config: &HboneClientConfig,
    ) -> Result<
        (
            SendRequest<Bytes>,
            h2::client::Connection<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Bytes>,
        ),
        HboneError,
    > {
        // SPIFFE verification ignores the name; the IP only fills the TLS API.
        let name = ServerName::IpAddress(peer.ip().into());
        let tls = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| HboneError::Tls(TlsError::from_handshake(&e)))?;
        h2::client::Builder::new()
            .initial_window_size(config.stream_window)
            .initial_connection_window_size(config.connection_window)
            .max_frame_size(config.max_frame_size)
            .max_send_buffer_size(config.stream_window as usize)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(classify_h2)
    }

    /// The peer address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection takes no more streams (ended, lost, or the peer going away).
    pub fn is_closed(&self) -> bool {
        self.state() != ConnState::Open
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> ConnState {
        *self.state.borrow()
    }

    /// Follows [`state`](Self::state) without keeping the connection open.
    pub(crate) fn watch_state(&self) -> watch::Receiver<ConnState> {
        self.state.subscribe()
    }

    /// The most streams the peer lets this connection have open at once.
    pub fn max_concurrent_streams(&self) -> usize {
        self.send.current_max_send_streams()
    }

    /// Opens a CONNECT stream to `target` through the peer.
    pub async fn connect(&self, target: SocketAddr) -> Result<HboneStream, HboneError> {
        self.connect_authority(&target.to_string()).await
    }

    /// Opens a CONNECT stream with a raw authority (`connect` is the typed form; this one exists
    /// for tools and tests that need to send what a well-behaved client would not).
    pub async fn connect_authority(&self, authority: &str) -> Result<HboneStream, HboneError> {
        self.open(authority, None).await
    }

    pub(crate) async fn open(
        &self,
        authority: &str,
        on_drop: Option<OnDrop>,
    ) -> Result<HboneStream, HboneError> {
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(())
            .map_err(|e| HboneError::BadRequest(e.to_string()))?;
        let result = async {
            let mut send = self.send.clone().ready().await?;
            let (response, stream_send) = send.send_request(request, false)?;
            Ok::<_, h2::Error>((response.await?, stream_send))
        };
        // On timeout the request's handles are dropped: h2 resets the stream.
        let (response, stream_send) =
            match tokio::time::timeout(self.response_timeout, result).await {
                Ok(Ok(ok)) => ok,
                Ok(Err(_)) if self.state() == ConnState::Lost => {
                    return Err(HboneError::PeerLost(self.peer))
                }
                Ok(Err(e)) => {
                    if is_refused(&e) {
                        // The peer is going away (GOAWAY) or refused the stream unprocessed: this
                        // connection takes no more streams.
                        self.state.send_if_modified(|state| {
                            let open = *state == ConnState::Open;
                            if open {
                                *state = ConnState::Refusing;
                            }
                            open
                        });
                    }
                    return Err(HboneError::H2(e));
                }
                Err(_) => {
                    return Err(HboneError::Timeout {
                        step: Step::ConnectResponse,
                        peer: self.peer,
                        after: self.response_timeout,
                    })
                }
            };
        if response.status() != StatusCode::OK {
            return Err(HboneError::Status(response.status()));
        }
        Ok(HboneStream::new(stream_send, response.into_body(), on_drop))
    }
}

/// Whether the peer refused a stream without processing it, so it is safe to retry elsewhere.
pub(crate) fn is_refused(err: &h2::Error) -> bool {
    err.is_go_away() || err.reason() == Some(h2::Reason::REFUSED_STREAM)
}

/// A failure right after TLS is most often the server refusing our certificate (TLS 1.3 sends
/// that alert after the client considers the handshake done).
fn classify_h2(err: h2::Error) -> HboneError {
    if err.is_io() {
        if let Some(io) = err.get_io() {
            if let Some(rustls_err) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return HboneError::Tls(TlsError::from_rustls(rustls_err));
            }
        }
    }
    HboneError::H2(err)
}

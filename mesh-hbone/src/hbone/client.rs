//! The HBONE client side of one connection: TCP, mTLS that must prove the expected identity,
//! HTTP/2, then any number of CONNECT streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::stream::{HboneStream, OnDrop};
use super::{
    HboneError, DEFAULT_CONNECTION_WINDOW, DEFAULT_MAX_FRAME_SIZE, DEFAULT_STREAM_WINDOW,
    MAX_HEADER_LIST_SIZE,
};
use crate::tls::TlsError;

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
    /// Time allowed for TCP connect + TLS + HTTP/2 handshakes.
    pub connect_timeout: Duration,
}

impl Default for HboneClientConfig {
    fn default() -> Self {
        HboneClientConfig {
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_streams_per_connection: 100,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// One established HBONE connection. Cheap to clone; the connection closes when every clone and
/// every stream is dropped, or the peer closes it.
#[derive(Debug, Clone)]
pub struct HboneConnection {
    send: SendRequest<Bytes>,
    peer: SocketAddr,
    closed: Arc<AtomicBool>,
}

impl HboneConnection {
    /// Connects to `peer` (an HBONE endpoint, `ip:15008`) with `tls` from
    /// [`crate::tls::client_config`], which decides the identity the peer must prove.
    pub async fn dial(
        peer: SocketAddr,
        tls: Arc<ClientConfig>,
        config: &HboneClientConfig,
    ) -> Result<HboneConnection, HboneError> {
        match tokio::time::timeout(config.connect_timeout, Self::dial_inner(peer, tls, config))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(HboneError::ConnectTimeout(peer)),
        }
    }

    async fn dial_inner(
        peer: SocketAddr,
        tls: Arc<ClientConfig>,
        config: &HboneClientConfig,
    ) -> Result<HboneConnection, HboneError> {
        let tcp = TcpStream::connect(peer)
            .await
            .map_err(|source| HboneError::Connect { peer, source })?;
        let _ = tcp.set_nodelay(true);
        // SPIFFE verification ignores the name; the IP only fills the TLS API.
        let name = ServerName::IpAddress(peer.ip().into());
        let tls = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| HboneError::Tls(TlsError::from_handshake(&e)))?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(config.stream_window)
            .initial_connection_window_size(config.connection_window)
            .max_frame_size(config.max_frame_size)
            .max_send_buffer_size(config.stream_window as usize)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(classify_h2)?;
        let closed = Arc::new(AtomicBool::new(false));
        let closed_flag = closed.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HBONE connection ended");
            }
            closed_flag.store(true, Ordering::Release);
        });
        Ok(HboneConnection { send, peer, closed })
    }

    /// The peer address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
        }
        .await;
        let (response, stream_send) = match result {
            Ok(ok) => ok,
            Err(e) => {
                if is_refused(&e) {
                    // The peer is going away (GOAWAY) or refused the stream unprocessed: this
                    // connection takes no more streams.
                    self.closed.store(true, Ordering::Release);
                }
                return Err(HboneError::H2(e));
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

//! gRPC over the control plane's TLS ([`crate::tls::control`]) for tonic: the client connector
//! (TCP, then TLS verified against the pinned roots and the host dialed), the config-stream
//! transport of agents ([`ControlPlaneTransport`]), and the servers' listener that hands tonic
//! only connections whose TLS handshake succeeded ([`tls_incoming`]): plaintext and failed
//! handshakes are refused, logged and counted before any gRPC is read.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::metadata::MetadataMap;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use super::credential::Credential;
use super::CaClientError;
use crate::ca::TrustBundle;
use crate::tls::{control, TlsError};

/// Longest a TLS handshake may take, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes a server runs at once; further connections wait in the kernel's backlog.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// Why a control-plane URL or channel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// An `http://` URL: the control plane speaks TLS only.
    #[error(
        "{0}: plaintext http:// is refused: the control plane is served over TLS only (the \
         node's bearer token would cross the network in clear); use https://"
    )]
    Plaintext(String),
    /// Not a URL of the form `https://host:port`.
    #[error("{url}: {reason} (expected https://host:port)")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The TLS client configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A parsed control-plane URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneUrl {
    /// The URL, normalised (`https://host:port`).
    pub uri: String,
    /// The host as dialed: a DNS name or an IP address (without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl ControlPlaneUrl {
    /// The name the serving certificate must be valid for.
    pub fn server_name(&self) -> Result<ServerName<'static>, TransportError> {
        ServerName::try_from(self.host.clone()).map_err(|_| TransportError::BadUrl {
            url: self.uri.clone(),
            reason: "the host is neither a DNS name nor an IP address",
        })
    }
}

/// Parses `https://host:port` (no path other than `/`); refuses `http://` with a clear error.
pub fn parse_url(url: &str) -> Result<ControlPlaneUrl, TransportError> {
    let bad = |reason| TransportError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => return Err(TransportError::Plaintext(url.to_owned())),
        Some(_) => return Err(bad("unsupported scheme")),
        None => return Err(bad("no scheme")),
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or(bad("no host"))?;
    let port = uri.port_u16().ok_or(bad("no port"))?;
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(bad("a path or query is not expected"));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let parsed = ControlPlaneUrl {
        uri: match host.contains(':') {
            true => format!("https://[{host}]:{port}"),
            false => format!("https://{host}:{port}"),
        },
        host,
        port,
    };
    parsed.server_name()?;
    Ok(parsed)
}

/// The tonic connector of control-plane clients: TCP to the URL's host and port, then a TLS
/// handshake verified against the pinned roots for that host.
#[derive(Clone)]
pub struct ControlPlaneConnector {
    url: ControlPlaneUrl,
    server_name: ServerName<'static>,
    tls: TlsConnector,
}

impl std::fmt::Debug for ControlPlaneConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneConnector")
            .field("url", &self.url.uri)
            .finish_non_exhaustive()
    }
}

impl ControlPlaneConnector {
    /// A connector to `url` trusting the roots of `pinned` (a live handle).
    pub fn new(url: &str, pinned: TrustBundle) -> Result<Self, TransportError> {
        let url = parse_url(url)?;
        let server_name = url.server_name()?;
        let tls = TlsConnector::from(control::client_config(pinned)?);
        Ok(ControlPlaneConnector {
            url,
            server_name,
            tls,
        })
    }

    /// The URL it dials.
    pub fn url(&self) -> &ControlPlaneUrl {
        &self.url
    }

    /// One TLS connection. The URI tonic passes is the endpoint's own, which is this URL.
    async fn dial(
        self,
    ) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, std::io::Error> {
        let tcp = TcpStream::connect((self.url.host.as_str(), self.url.port)).await?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, TlsError::HandshakeTimeout))?
        .map_err(|e| {
            // Keep the reason readable in the client's logs (unknown issuer, wrong name, ...).
            let reason = TlsError::from_handshake(&e);
            std::io::Error::new(e.kind(), reason)
        })?;
        Ok(TokioIo::new(tls))
    }
}

impl tower_service::Service<http::Uri> for ControlPlaneConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().dial())
    }
}

/// A lazily connecting channel to `url` over the control plane's TLS.
pub(crate) fn lazy_channel(url: &str, pinned: TrustBundle) -> Result<Channel, TransportError> {
    let connector = ControlPlaneConnector::new(url, pinned)?;
    let endpoint = endpoint(connector.url())?.connect_timeout(HANDSHAKE_TIMEOUT);
    Ok(endpoint.connect_with_connector_lazy(connector))
}

fn endpoint(url: &ControlPlaneUrl) -> Result<Endpoint, TransportError> {
    Endpoint::from_shared(url.uri.clone()).map_err(|_| TransportError::BadUrl {
        url: url.uri.clone(),
        reason: "not a valid endpoint",
    })
}

/// The config stream's transport for a node: TLS with the pinned roots, and the same bearer
/// credential as the certificate service.
#[derive(Debug, Clone)]
pub struct ControlPlaneTransport {
    connector: ControlPlaneConnector,
    credential: Credential,
}

impl ControlPlaneTransport {
    /// To `url`, trusting `pinned`, as `node` with the token in `token_file` (re-read at every
    /// connection).
    pub fn with_token_file(
        url: &str,
        pinned: TrustBundle,
        node: &str,
        token_file: &Path,
    ) -> Result<Self, CaClientError> {
        Ok(ControlPlaneTransport {
            connector: ControlPlaneConnector::new(url, pinned)?,
            credential: Credential::file(node, token_file)?,
        })
    }

    /// To `url`, trusting `pinned`, as `node` with a fixed `token`.
    pub fn with_token(
        url: &str,
        pinned: TrustBundle,
        node: &str,
        token: &str,
    ) -> Result<Self, CaClientError> {
        Ok(ControlPlaneTransport {
            connector: ControlPlaneConnector::new(url, pinned)?,
            credential: Credential::fixed(node, token)?,
        })
    }
}

#[tonic::async_trait]
impl mesh_common::api::Transport for ControlPlaneTransport {
    fn uri(&self) -> &str {
        &self.connector.url.uri
    }

    async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        endpoint
            .connect_with_connector(self.connector.clone())
            .await
    }

    async fn authorize(&self, metadata: &mut MetadataMap) -> Result<(), String> {
        self.credential
            .authorize(metadata)
            .await
            .map_err(|e| e.to_string())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_host_and_port_only() {
        let ok = |url: &str, host: &str, port: u16, uri: &str| {
            assert_eq!(
                parse_url(url),
                Ok(ControlPlaneUrl {
                    uri: uri.to_owned(),
                    host: host.to_owned(),
                    port
                }),
                "{url}"
            );
        };
        ok(
            "https://198.18.0.254:15012",
            "198.18.0.254",
            15012,
            "https://198.18.0.254:15012",
        );
        ok(
            "https://mesh-controller.mesh-system.svc:15010/",
            "mesh-controller.mesh-system.svc",
            15010,
            "https://mesh-controller.mesh-system.svc:15010",
        );
        ok(
            "https://[fd18::1]:15012",
            "fd18::1",
            15012,
            "https://[fd18::1]:15012",
        );
        for (url, plaintext) in [
            ("http://198.18.0.254:15012", true),
            ("http://controller:15010", true),
            ("https://198.18.0.254", false),
            ("198.18.0.254:15012", false),
            ("grpc://198.18.0.254:15012", false),
            ("https://198.18.0.254:15012/x", false),
            ("https://:15012", false),
            ("", false),
        ] {
            let err = parse_url(url).expect_err(url);
            assert_eq!(
                matches!(err, TransportError::Plaintext(_)),
                plaintext,
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn the_plaintext_refusal_says_why_and_what_to_use() {
        let err = parse_url("http://198.18.0.254:15012").expect_err("plaintext");
        let text = err.to_string();
        assert!(
            text.contains("refused") && text.contains("https://"),
            "{text}"
        );
    }
}

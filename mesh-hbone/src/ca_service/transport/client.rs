//! The client side: the tonic connector (TCP, then TLS verified against the pinned roots and the
//! host dialed) and the config stream's transport of a node.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use super::{parse_url, ControlPlaneUrl, TransportError, HANDSHAKE_TIMEOUT};
use crate::ca::TrustBundle;
use crate::ca_service::credential::Credential;
use crate::ca_service::CaClientError;
use crate::tls::{control, TlsError};

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
        &self.connector.url().uri
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

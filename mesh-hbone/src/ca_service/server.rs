//! The service side: authenticate the node, authorize the identity, sign the CSR.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use mesh_common::identity::Identity;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::auth::{authenticate_metadata, NodeAuthenticator};
use super::proto::certificate_service_server::{CertificateService, CertificateServiceServer};
use super::proto::{CreateCertificateRequest, CreateCertificateResponse};
use super::transport::{tls_incoming, HandshakeStats};
use crate::ca::{CaError, CertificateAuthority};

/// Decides which identities a node's agent (or another principal the authenticator proves, such
/// as the controller's `waypoint/<namespace>/<name>`) may hold certificates for.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// Whether the principal `node` may hold a certificate for `identity` (for a node: a
    /// workload with that identity is enrolled on it).
    async fn is_on_node(&self, node: &str, identity: &Identity) -> bool;
}

/// The certificate service.
pub struct CaService<A: Authorizer> {
    ca: Arc<CertificateAuthority>,
    authenticator: Box<dyn NodeAuthenticator>,
    authorizer: A,
}

impl<A: Authorizer> std::fmt::Debug for CaService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService").finish_non_exhaustive()
    }
}

impl<A: Authorizer> CaService<A> {
    /// A service signing with `ca` for the nodes `authenticator` accepts (for example
    /// [`NodeTokens`](super::NodeTokens), or an `Arc<dyn NodeAuthenticator>`), within what
    /// `authorizer` allows.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        authenticator: impl NodeAuthenticator,
        authorizer: A,
    ) -> Self {
        CaService {
            ca,
            authenticator: Box::new(authenticator),
            authorizer,
        }
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn into_server(self) -> CertificateServiceServer<Self> {
        CertificateServiceServer::new(self)
    }
}

#[async_trait]
impl<A: Authorizer> CertificateService for CaService<A> {
    async fn create_certificate(
        &self,
        request: Request<CreateCertificateRequest>,
    ) -> Result<Response<CreateCertificateResponse>, Status> {
        let node = authenticate_metadata(
            self.authenticator.as_ref(),
            request.metadata(),
            "certificate service",
        )
        .await?;
        let body = request.into_inner();
        let identity: Identity = body
            .identity
            .parse()
            .map_err(|e| Status::invalid_argument(format!("identity: {e}")))?;
        if !self.authorizer.is_on_node(&node, &identity).await {
            tracing::warn!(node, %identity, "refused a certificate for an identity the caller does not hold");
            return Err(Status::permission_denied(format!(
                "{identity} is not an identity of {node} (a workload on the node, or an instance \
                 of the waypoint)"
            )));
        }
        let issued = self
            .ca
            .sign_csr_der(&identity, &body.csr_der)
            .map_err(|e| match e {
                CaError::BadCsr(_) | CaError::WrongTrustDomain { .. } => {
                    Status::invalid_argument(e.to_string())
                }
                other => Status::internal(other.to_string()),
            })?;
        tracing::info!(node, %identity, "issued workload certificate");
        Ok(Response::new(CreateCertificateResponse {
            cert_chain_der: issued.chain.iter().map(|c| c.to_vec()).collect(),
            trust_bundle_der: self
                .ca
                .trust_bundle()
                .roots()
                .iter()
                .map(|c| c.to_vec())
                .collect(),
        }))
    }
}

/// Serves `service` on `listener` over TLS with `tls` (a
/// [`crate::tls::control::server_config`]) until `shutdown` completes. Connections that do not
/// complete a TLS handshake never reach gRPC; they are counted in `stats` and logged.
pub async fn serve<A: Authorizer>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    stats: Arc<HandshakeStats>,
    service: CaService<A>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            tls_incoming(listener, tls, "certificate service", stats),
            shutdown,
        )
        .await
}

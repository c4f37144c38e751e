//! The service side: authenticate the node, authorize the identity, sign the CSR; each outcome
//! is reported to the service's [`SigningObserver`] (the controller's metrics).

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

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

/// Why a certificate request was not signed (a bounded set: the label of a metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningFailure {
    /// The caller's credential did not prove a node (missing, unknown, bad token).
    Unauthenticated,
    /// The credential could not be checked now (e.g. the Kubernetes API is unreachable).
    AuthUnavailable,
    /// The identity asked for is not a SPIFFE identity.
    BadIdentity,
    /// The caller may not hold the identity (no such workload on its node).
    NotAuthorized,
    /// The CSR did not parse or verify, or names another trust domain.
    BadCsr,
    /// The CA failed to sign.
    Internal,
}

impl SigningFailure {
    /// Every failure.
    pub const ALL: [SigningFailure; 6] = [
        SigningFailure::Unauthenticated,
        SigningFailure::AuthUnavailable,
        SigningFailure::BadIdentity,
        SigningFailure::NotAuthorized,
        SigningFailure::BadCsr,
        SigningFailure::Internal,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningFailure::Unauthenticated => "unauthenticated",
            SigningFailure::AuthUnavailable => "auth_unavailable",
            SigningFailure::BadIdentity => "bad_identity",
            SigningFailure::NotAuthorized => "not_authorized",
            SigningFailure::BadCsr => "bad_csr",
            SigningFailure::Internal => "internal",
        }
    }

    /// The failure an authentication refusal (from [`authenticate_metadata`]) stands for: the
    /// credential could not be checked (`Unavailable`), or it did not prove a node (any other).
    pub fn of_authentication(status: &Status) -> SigningFailure {
        match status.code() {
            tonic::Code::Unavailable => SigningFailure::AuthUnavailable,
            _ => SigningFailure::Unauthenticated,
        }
    }

    /// The failure a signing error stands for: the request's fault, or the CA's.
    pub fn of_signing(error: &CaError) -> SigningFailure {
        match error {
            CaError::BadCsr(_) | CaError::WrongTrustDomain { .. } => SigningFailure::BadCsr,
            _ => SigningFailure::Internal,
        }
    }
}

/// Told the outcome of every certificate request (for metrics); called on the request's task,
/// so implementations must be quick and must not block.
pub trait SigningObserver: Send + Sync + 'static {
    /// A certificate for `identity`, valid until `not_after`, was issued.
    fn signed(&self, identity: &Identity, not_after: SystemTime);
    /// A request was refused or failed.
    fn failed(&self, failure: SigningFailure);
}

/// The certificate service.
pub struct CaService<A: Authorizer> {
    ca: Arc<CertificateAuthority>,
    authenticator: Box<dyn NodeAuthenticator>,
    authorizer: A,
    observer: Option<Arc<dyn SigningObserver>>,
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
            observer: None,
        }
    }

    /// The same service, reporting every outcome to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn SigningObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn failed(&self, failure: SigningFailure) {
        if let Some(observer) = &self.observer {
            observer.failed(failure);
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
        .await
        .inspect_err(|status| self.failed(SigningFailure::of_authentication(status)))?;
        let body = request.into_inner();
        let identity: Identity = body.identity.parse().map_err(|e| {
            self.failed(SigningFailure::BadIdentity);
            Status::invalid_argument(format!("identity: {e}"))
        })?;
        if !self.authorizer.is_on_node(&node, &identity).await {
            tracing::warn!(node, %identity, "refused a certificate for an identity the caller does not hold");
            self.failed(SigningFailure::NotAuthorized);
            return Err(Status::permission_denied(format!(
                "{identity} is not an identity of {node} (a workload on the node, or an instance \
                 of the waypoint)"
            )));
        }
        let issued = self
            .ca
            .sign_csr_der(&identity, &body.csr_der)
            .map_err(|e| {
                let failure = SigningFailure::of_signing(&e);
                self.failed(failure);
                match failure {
                    SigningFailure::BadCsr => Status::invalid_argument(e.to_string()),
                    _ => Status::internal(e.to_string()),
                }
            })?;
        if let Some(observer) = &self.observer {
            observer.signed(&identity, issued.not_after);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_what_went_wrong() {
        // (case, failure, label)
        let cases = [
            (
                "no credential",
                SigningFailure::of_authentication(&Status::unauthenticated("missing")),
                "unauthenticated",
            ),
            (
                "the credential could not be checked",
                SigningFailure::of_authentication(&Status::unavailable("api down")),
                "auth_unavailable",
            ),
            (
                "a bad CSR",
                SigningFailure::of_signing(&CaError::BadCsr("garbage".into())),
                "bad_csr",
            ),
            (
                "another trust domain",
                SigningFailure::of_signing(&CaError::WrongTrustDomain {
                    identity: "spiffe://other.td/ns/a/sa/b".parse().expect("identity"),
                    trust_domain: "cluster.local".into(),
                }),
                "bad_csr",
            ),
            (
                "the CA failed",
                SigningFailure::of_signing(&CaError::BadValidity),
                "internal",
            ),
        ];
        for (case, failure, label) in cases {
            assert_eq!(failure.as_str(), label, "{case}");
        }
    }
}

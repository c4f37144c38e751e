//! The service side: authenticate the node, authorize the identity, sign the CSR.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use mesh_common::identity::Identity;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::proto::certificate_service_server::{CertificateService, CertificateServiceServer};
use super::proto::{CreateCertificateRequest, CreateCertificateResponse};
use super::NODE_METADATA;
use crate::ca::{CaError, CertificateAuthority};

/// Decides which identities a node's agent may hold certificates for.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// Whether a workload with `identity` is enrolled on `node`.
    async fn is_on_node(&self, node: &str, identity: &Identity) -> bool;
}

/// The per-node bootstrap tokens. Cheap to clone (a shared, updatable handle).
#[derive(Clone, Default)]
pub struct NodeTokens {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

impl std::fmt::Debug for NodeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        let nodes: Vec<String> = self.read().keys().cloned().collect();
        f.debug_struct("NodeTokens").field("nodes", &nodes).finish()
    }
}

impl NodeTokens {
    /// No node can authenticate yet.
    pub fn new() -> Self {
        NodeTokens::default()
    }

    /// Sets `node`'s token.
    pub fn insert(&self, node: &str, token: &str) {
        self.write().insert(node.to_owned(), token.to_owned());
    }

    /// Generates, stores and returns a fresh random token for `node` (256 bits, hex).
    pub fn generate(&self, node: &str) -> Result<String, CaError> {
        let mut bytes = [0u8; 32];
        rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| CaError::Random)?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.insert(node, &token);
        Ok(token)
    }

    /// Revokes `node`'s token.
    pub fn remove(&self, node: &str) {
        self.write().remove(node);
    }

    /// Whether `token` is `node`'s token (compared in constant time).
    pub fn check(&self, node: &str, token: &str) -> bool {
        match self.read().get(node) {
            Some(expected) => constant_time_eq(expected.as_bytes(), token.as_bytes()),
            None => false,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, String>> {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, String>> {
        self.tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The certificate service.
pub struct CaService<A: Authorizer> {
    ca: Arc<CertificateAuthority>,
    tokens: NodeTokens,
    authorizer: A,
}

impl<A: Authorizer> std::fmt::Debug for CaService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl<A: Authorizer> CaService<A> {
    /// A service signing with `ca` for nodes holding one of `tokens`, within what `authorizer`
    /// allows.
    pub fn new(ca: Arc<CertificateAuthority>, tokens: NodeTokens, authorizer: A) -> Self {
        CaService {
            ca,
            tokens,
            authorizer,
        }
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn into_server(self) -> CertificateServiceServer<Self> {
        CertificateServiceServer::new(self)
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let meta = request.metadata();
        let node = meta
            .get(NODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("missing x-mesh-node"))?;
        let token = meta
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        if !self.tokens.check(node, token) {
            tracing::warn!(node, "certificate request with a bad node token");
            return Err(Status::unauthenticated("bad node token"));
        }
        Ok(node.to_owned())
    }
}

#[async_trait]
impl<A: Authorizer> CertificateService for CaService<A> {
    async fn create_certificate(
        &self,
        request: Request<CreateCertificateRequest>,
    ) -> Result<Response<CreateCertificateResponse>, Status> {
        let node = self.authenticate(&request)?;
        let body = request.into_inner();
        let identity: Identity = body
            .identity
            .parse()
            .map_err(|e| Status::invalid_argument(format!("identity: {e}")))?;
        if !self.authorizer.is_on_node(&node, &identity).await {
            tracing::warn!(node, %identity, "refused a certificate for a workload not on the node");
            return Err(Status::permission_denied(format!(
                "{identity} is not on node {node}"
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

/// Serves `service` on `listener` until `shutdown` completes.
pub async fn serve<A: Authorizer>(
    listener: TcpListener,
    service: CaService<A>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

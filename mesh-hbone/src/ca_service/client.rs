//! The agent side: a [`CertificateSigner`] that asks the certificate service over TLS verified
//! against the node's pinned roots, and applies the roots the service returns to that same
//! trust bundle only as a rotation overlap ([`crate::tls::control::accept_roots`]).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use mesh_common::identity::Identity;
use rustls_pki_types::CertificateDer;
use tonic::transport::Channel;

use super::credential::Credential;
use super::proto::certificate_service_client::CertificateServiceClient;
use super::proto::CreateCertificateRequest;
use super::transport::{lazy_channel, TransportError};
use crate::ca::TrustBundle;
use crate::certs::{CertificateSigner, SignError};
use crate::tls::control::{apply_ca_roots, RootUpdate};

/// Why a [`CaClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    /// The node name or token cannot travel as gRPC metadata.
    #[error("node name or token is not valid gRPC metadata")]
    BadMetadata,
    /// The endpoint address is invalid, or not `https://`.
    #[error(transparent)]
    BadEndpoint(#[from] TransportError),
    /// The token file cannot be read or holds no token.
    #[error("token file {path}: {message}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A client of the certificate service, authenticated as one node.
#[derive(Debug, Clone)]
pub struct CaClient {
    client: CertificateServiceClient<Channel>,
    credential: Credential,
    pinned: TrustBundle,
}

impl CaClient {
    /// A client for the service at `endpoint` (`https://host:port`), which must present a
    /// certificate chaining to a root of `pinned` and valid for `host`; as `node` with its
    /// bootstrap `token`. Connects lazily, so it can be built before the controller is up.
    /// `pinned` follows the CA's root rotations (see the module docs).
    pub fn lazy(
        endpoint: &str,
        pinned: TrustBundle,
        node: &str,
        token: &str,
    ) -> Result<Self, CaClientError> {
        Self::build(endpoint, pinned, Credential::fixed(node, token)?)
    }

    /// [`lazy`](Self::lazy), with the token re-read from `token_file` at every request, so a
    /// rotated token (a projected service-account token) is picked up. The file must hold a
    /// token now.
    pub fn lazy_with_token_file(
        endpoint: &str,
        pinned: TrustBundle,
        node: &str,
        token_file: &Path,
    ) -> Result<Self, CaClientError> {
        Self::build(endpoint, pinned, Credential::file(node, token_file)?)
    }

    fn build(
        endpoint: &str,
        pinned: TrustBundle,
        credential: Credential,
    ) -> Result<Self, CaClientError> {
        let channel = lazy_channel(endpoint, pinned.clone())?;
        Ok(CaClient {
            client: CertificateServiceClient::new(channel),
            credential,
            pinned,
        })
    }

    /// The trust bundle the client verifies the service with and keeps in step with the CA.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.pinned
    }
}

#[async_trait]
impl CertificateSigner for CaClient {
    async fn sign(
        &self,
        identity: &Identity,
        csr_der: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, SignError> {
        let mut request = tonic::Request::new(CreateCertificateRequest {
            identity: identity.to_string(),
            csr_der: csr_der.to_vec(),
        });
        self.credential
            .authorize(request.metadata_mut())
            .await
            .map_err(|e| SignError(e.to_string()))?;
        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await
            .map_err(|status| SignError(format!("{:?}: {}", status.code(), status.message())))?
            .into_inner();
        let roots = response
            .trust_bundle_der
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        // Fail closed: a certificate that comes with roots we refuse is not used either, since
        // it may chain to them.
        match apply_ca_roots(&self.pinned, roots) {
            Ok(RootUpdate::Unchanged) => {}
            Ok(RootUpdate::Rotated { added, removed }) => {
                tracing::info!(
                    added,
                    removed,
                    "trust bundle follows the CA's root rotation"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, %identity, "refused the roots the certificate service returned");
                return Err(SignError(format!("trust bundle: {e}")));
            }
        }
        Ok(response
            .cert_chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect())
    }
}

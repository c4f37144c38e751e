//! The agent side: a [`CertificateSigner`] that asks the certificate service, and keeps a trust
//! bundle in step with the roots the service returns.

use async_trait::async_trait;
use mesh_common::identity::Identity;
use rustls_pki_types::CertificateDer;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::proto::certificate_service_client::CertificateServiceClient;
use super::proto::CreateCertificateRequest;
use super::NODE_METADATA;
use crate::ca::TrustBundle;
use crate::certs::{CertificateSigner, SignError};

/// Why a [`CaClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    /// The node name or token cannot travel as gRPC metadata.
    #[error("node name or token is not valid gRPC metadata")]
    BadMetadata,
    /// The endpoint address is invalid.
    #[error("invalid certificate service endpoint: {0}")]
    BadEndpoint(String),
}

/// A client of the certificate service, authenticated as one node.
#[derive(Debug, Clone)]
pub struct CaClient {
    client: CertificateServiceClient<Channel>,
    node: MetadataValue<Ascii>,
    authorization: MetadataValue<Ascii>,
    bundle: Option<TrustBundle>,
}

impl CaClient {
    /// A client over `channel`, as `node` with its bootstrap `token`.
    pub fn new(channel: Channel, node: &str, token: &str) -> Result<Self, CaClientError> {
        Ok(CaClient {
            client: CertificateServiceClient::new(channel),
            node: node.parse().map_err(|_| CaClientError::BadMetadata)?,
            authorization: format!("Bearer {token}")
                .parse()
                .map_err(|_| CaClientError::BadMetadata)?,
            bundle: None,
        })
    }

    /// A client for the service at `endpoint` (e.g. `http://10.0.0.1:15012`); connects lazily,
    /// so it can be built before the controller is up.
    pub fn lazy(endpoint: &str, node: &str, token: &str) -> Result<Self, CaClientError> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| CaClientError::BadEndpoint(e.to_string()))?
            .connect_lazy();
        Self::new(channel, node, token)
    }

    /// Keeps `bundle` set to the roots the service returns with every certificate.
    pub fn with_trust_bundle(mut self, bundle: TrustBundle) -> Self {
        self.bundle = Some(bundle);
        self
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
        request
            .metadata_mut()
            .insert(NODE_METADATA, self.node.clone());
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await
            .map_err(|status| SignError(format!("{:?}: {}", status.code(), status.message())))?
            .into_inner();
        if let Some(bundle) = &self.bundle {
            let roots = response
                .trust_bundle_der
                .into_iter()
                .map(CertificateDer::from)
                .collect();
            bundle
                .set_roots(roots)
                .map_err(|e| SignError(format!("trust bundle: {e}")))?;
        }
        Ok(response
            .cert_chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect())
    }
}

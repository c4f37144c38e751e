//! The agent side: a [`CertificateSigner`] that asks the certificate service, and keeps a trust
//! bundle in step with the roots the service returns. The bearer token is either fixed (a
//! bootstrap token) or re-read from a file at every request (a projected Kubernetes
//! service-account token, which the kubelet rotates in place).

use std::path::{Path, PathBuf};

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
    /// The token file cannot be read or holds no token.
    #[error("token file {path}: {message}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
enum Credential {
    /// Always this `authorization` value.
    Fixed(MetadataValue<Ascii>),
    /// Read from this file at every request.
    File(PathBuf),
}

impl Credential {
    async fn authorization(&self) -> Result<MetadataValue<Ascii>, CaClientError> {
        match self {
            Credential::Fixed(value) => Ok(value.clone()),
            Credential::File(path) => {
                let token = tokio::fs::read_to_string(path).await.map_err(|e| {
                    CaClientError::TokenFile {
                        path: path.clone(),
                        message: e.to_string(),
                    }
                })?;
                bearer(token.trim()).map_err(|message| CaClientError::TokenFile {
                    path: path.clone(),
                    message,
                })
            }
        }
    }
}

/// The `authorization` value for `token`.
fn bearer(token: &str) -> Result<MetadataValue<Ascii>, String> {
    if token.is_empty() {
        return Err("empty token".to_owned());
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|_| "token is not valid gRPC metadata".to_owned())
}

/// A client of the certificate service, authenticated as one node.
#[derive(Debug, Clone)]
pub struct CaClient {
    client: CertificateServiceClient<Channel>,
    node: MetadataValue<Ascii>,
    credential: Credential,
    bundle: Option<TrustBundle>,
}

impl CaClient {
    /// A client over `channel`, as `node` with its bootstrap `token`.
    pub fn new(channel: Channel, node: &str, token: &str) -> Result<Self, CaClientError> {
        let authorization = bearer(token).map_err(|_| CaClientError::BadMetadata)?;
        Self::with_credential(channel, node, Credential::Fixed(authorization))
    }

    /// A client over `channel`, as `node`, sending the token held in `token_file`, re-read at
    /// every request so a rotated token (a projected service-account token) is picked up. The
    /// file must hold a token now.
    pub fn with_token_file(
        channel: Channel,
        node: &str,
        token_file: &Path,
    ) -> Result<Self, CaClientError> {
        let token = std::fs::read_to_string(token_file).map_err(|e| CaClientError::TokenFile {
            path: token_file.to_owned(),
            message: e.to_string(),
        })?;
        bearer(token.trim()).map_err(|message| CaClientError::TokenFile {
            path: token_file.to_owned(),
            message,
        })?;
        Self::with_credential(channel, node, Credential::File(token_file.to_owned()))
    }

    fn with_credential(
        channel: Channel,
        node: &str,
        credential: Credential,
    ) -> Result<Self, CaClientError> {
        Ok(CaClient {
            client: CertificateServiceClient::new(channel),
            node: node.parse().map_err(|_| CaClientError::BadMetadata)?,
            credential,
            bundle: None,
        })
    }

    /// A client for the service at `endpoint` (e.g. `http://10.0.0.1:15012`); connects lazily,
    /// so it can be built before the controller is up.
    pub fn lazy(endpoint: &str, node: &str, token: &str) -> Result<Self, CaClientError> {
        Self::new(lazy_channel(endpoint)?, node, token)
    }

    /// [`lazy`](Self::lazy), with the token re-read from `token_file` at every request
    /// ([`with_token_file`](Self::with_token_file)).
    pub fn lazy_with_token_file(
        endpoint: &str,
        node: &str,
        token_file: &Path,
    ) -> Result<Self, CaClientError> {
        Self::with_token_file(lazy_channel(endpoint)?, node, token_file)
    }

    /// Keeps `bundle` set to the roots the service returns with every certificate.
    pub fn with_trust_bundle(mut self, bundle: TrustBundle) -> Self {
        self.bundle = Some(bundle);
        self
    }
}

fn lazy_channel(endpoint: &str) -> Result<Channel, CaClientError> {
    Ok(Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| CaClientError::BadEndpoint(e.to_string()))?
        .connect_lazy())
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
        let authorization = self
            .credential
            .authorization()
            .await
            .map_err(|e| SignError(e.to_string()))?;
        request
            .metadata_mut()
            .insert("authorization", authorization);
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

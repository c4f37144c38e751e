//! How the certificate manager obtains certificates: the [`CertificateSigner`] trait, implemented
//! in-process by the [`CertificateAuthority`] (the controller, tests) and by a gRPC client (agents).

use std::sync::Arc;

use async_trait::async_trait;
use mesh_common::identity::Identity;
use rustls_pki_types::CertificateDer;

use crate::ca::CertificateAuthority;

/// Why a signing request failed (the manager retries with backoff).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SignError(pub String);

/// Something that turns a CSR for an identity into a certificate chain.
#[async_trait]
pub trait CertificateSigner: Send + Sync + 'static {
    /// Signs `csr_der` (DER PKCS#10) for `identity`; returns the chain, leaf first.
    async fn sign(
        &self,
        identity: &Identity,
        csr_der: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, SignError>;
}

#[async_trait]
impl CertificateSigner for CertificateAuthority {
    async fn sign(
        &self,
        identity: &Identity,
        csr_der: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, SignError> {
        self.sign_csr_der(identity, csr_der)
            .map(|issued| issued.chain)
            .map_err(|e| SignError(e.to_string()))
    }
}

#[async_trait]
impl<T: CertificateSigner + ?Sized> CertificateSigner for Arc<T> {
    async fn sign(
        &self,
        identity: &Identity,
        csr_der: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, SignError> {
        (**self).sign(identity, csr_der).await
    }
}

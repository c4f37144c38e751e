//! rustls certificate resolvers backed by the [`CertManager`], so every handshake presents the
//! identity's current certificate.

use std::sync::Arc;

use mesh_common::identity::Identity;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::CertManager;

/// Presents the current certificate of one identity; `None` (the handshake fails) when there is
/// no valid one, so an expired certificate is never presented.
#[derive(Debug, Clone)]
pub struct ManagedCert {
    manager: CertManager,
    identity: Identity,
}

impl ManagedCert {
    pub(super) fn new(manager: CertManager, identity: Identity) -> Self {
        ManagedCert { manager, identity }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let cert = self.manager.current(&self.identity);
        if cert.is_none() {
            tracing::warn!(identity = %self.identity, "no valid certificate to present");
        }
        cert.map(|c| c.certified_key())
    }
}

impl ResolvesServerCert for ManagedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for ManagedCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

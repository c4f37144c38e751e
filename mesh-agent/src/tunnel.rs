//! The agent's zero-trust tunnel: workload certificates from the control plane's CA, the HBONE
//! client pool for outbound (dialed from inside each source pod), and the TLS configuration of
//! each pod's inbound HBONE server.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mesh_common::identity::Identity;
use mesh_hbone::ca::TrustBundle;
use mesh_hbone::ca_service::CaClient;
use mesh_hbone::certs::{CertManager, CertManagerConfig};
use mesh_hbone::hbone::{HboneClientConfig, HboneError, HbonePool, HboneStream, Origin};
use mesh_hbone::tls;

use crate::netns::Netns;

/// CONNECT streams one pooled connection carries before another is opened (the HBONE server
/// allows 1000): one TLS connection between two pods serves a busy client.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1000;

/// Errors setting up the tunnel.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The certificate service address is invalid, or the token file cannot be read.
    #[error("certificate service {addr}: {message}")]
    Endpoint { addr: String, message: String },
    /// A TLS configuration cannot be built.
    #[error(transparent)]
    Tls(#[from] mesh_hbone::tls::TlsError),
}

/// Certificates, trust bundle and outbound pool, shared by all pods of the node.
#[derive(Debug)]
pub struct Tunnel {
    /// Workload certificates, fetched on demand and renewed at half-life.
    pub certs: CertManager,
    /// Trusted roots, kept in step with the CA.
    pub bundle: TrustBundle,
    /// Outbound HBONE connections, pooled by (source pod, source identity, destination, peer).
    pub pool: HbonePool,
}

impl Tunnel {
    /// Connects (lazily) to the certificate service at `addr` as `node`, over TLS verified
    /// against `bundle` (the roots the node was installed with, which then follow the CA's
    /// rotations); the same bundle verifies peers' workload certificates.
    pub fn new(
        addr: &str,
        node: &str,
        token_file: &Path,
        bundle: TrustBundle,
    ) -> Result<Tunnel, TunnelError> {
        // The token file is re-read at every request: in Kubernetes it is a projected
        // service-account token that the kubelet rotates in place.
        let signer = CaClient::lazy_with_token_file(addr, bundle.clone(), node, token_file)
            .map_err(|e| TunnelError::Endpoint {
                addr: addr.to_owned(),
                message: e.to_string(),
            })?;
        let certs = CertManager::new(Arc::new(signer), CertManagerConfig::default());
        let pool = HbonePool::new(
            certs.clone(),
            bundle.clone(),
            HboneClientConfig {
                max_streams_per_connection: MAX_STREAMS_PER_CONNECTION,
                ..HboneClientConfig::default()
            },
        );
        Ok(Tunnel {
            certs,
            bundle,
            pool,
        })
    }

    /// Opens a CONNECT stream to `target` through `peer` for the pod whose namespace is `netns`,
    /// presenting `source` and requiring `destination`. The TCP connection is dialed from inside
    /// the pod (the destination sees the pod's address) and shared only by that pod's streams:
    /// two pods with one identity never share a connection carrying the other's address.
    pub async fn connect_from_pod(
        &self,
        netns: &Arc<Netns>,
        source: &Identity,
        destination: &Identity,
        peer: SocketAddr,
        target: SocketAddr,
    ) -> Result<HboneStream, HboneError> {
        let origin = Origin::new(netns.cookie(), netns.clone());
        self.pool
            .connect_from(&origin, source, destination, peer, target)
            .await
    }

    /// The TLS configuration of a pod's inbound HBONE server (its certificate, renewed in place).
    pub fn server_tls(
        &self,
        identity: &Identity,
    ) -> Result<Arc<rustls::ServerConfig>, TunnelError> {
        Ok(tls::server_config(
            self.certs.resolver(identity),
            self.bundle.clone(),
        )?)
    }
}

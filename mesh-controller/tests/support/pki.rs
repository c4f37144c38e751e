//! The control plane's TLS and node credentials for in-process tests: a CA, a serving
//! certificate for 127.0.0.1, per-node bootstrap tokens, and agents' transports pinning a copy
//! of the CA's root.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_common::api::Transport;
use mesh_controller::run::ControlPlaneSecurity;
use mesh_hbone::ca::{CaConfig, CertificateAuthority, ServingName, TrustBundle};
use mesh_hbone::ca_service::{ControlPlaneTransport, HandshakeStats, NodeTokens};
use mesh_hbone::tls::control::{server_config, ServingCert};

/// One control plane's keys and tokens.
pub struct Pki {
    pub ca: Arc<CertificateAuthority>,
    pub tokens: NodeTokens,
    pub handshakes: Arc<HandshakeStats>,
    tls: Arc<rustls::ServerConfig>,
}

impl Pki {
    /// A CA, a serving certificate for 127.0.0.1 and a token for each of `nodes`.
    pub fn new(nodes: &[&str]) -> Pki {
        let ca =
            Arc::new(CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA"));
        let serving = ServingCert::issue(
            ca.clone(),
            vec![ServingName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))],
            Duration::from_secs(3600),
        )
        .expect("serving certificate");
        let tokens = NodeTokens::new();
        for node in nodes {
            tokens.insert(node, &token_of(node));
        }
        Pki {
            ca,
            tokens,
            handshakes: Arc::new(HandshakeStats::default()),
            tls: server_config(serving).expect("server config"),
        }
    }

    /// What the config server is given.
    pub fn security(&self) -> ControlPlaneSecurity {
        ControlPlaneSecurity {
            tls: self.tls.clone(),
            authenticator: Arc::new(self.tokens.clone()),
            handshakes: self.handshakes.clone(),
        }
    }

    /// The server's TLS configuration.
    pub fn tls(&self) -> Arc<rustls::ServerConfig> {
        self.tls.clone()
    }

    /// A copy of the CA's roots, as an agent is installed with.
    pub fn pinned(&self) -> TrustBundle {
        TrustBundle::from_pem("cluster.local", &self.ca.trust_bundle().to_pem()).expect("roots")
    }

    /// `node`'s transport to `addr`, with its own token.
    pub fn transport(&self, addr: SocketAddr, node: &str) -> Arc<dyn Transport> {
        self.transport_with(addr, node, &token_of(node))
    }

    /// A transport to `addr` as `node` with `token`.
    pub fn transport_with(&self, addr: SocketAddr, node: &str, token: &str) -> Arc<dyn Transport> {
        Arc::new(
            ControlPlaneTransport::with_token(
                &format!("https://{addr}"),
                self.pinned(),
                node,
                token,
            )
            .expect("transport"),
        )
    }
}

/// The token the fixture gives `node`.
pub fn token_of(node: &str) -> String {
    format!("{node}-token-0123456789abcdef")
}

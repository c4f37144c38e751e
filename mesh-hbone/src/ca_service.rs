//! The certificate service over gRPC (tonic): the controller serves it in front of its
//! [`CertificateAuthority`](crate::ca::CertificateAuthority); node agents call it through
//! [`CaClient`], a [`CertificateSigner`](crate::certs::CertificateSigner) for their
//! [`CertManager`](crate::certs::CertManager).
//!
//! An agent sends its node name (`x-mesh-node`) and a bearer token; the service's
//! [`NodeAuthenticator`] decides whether the token proves that node ([`NodeTokens`], per-node
//! bootstrap tokens, in the local cluster; the controller's Kubernetes `TokenReview` in a real
//! cluster), and the agent gets certificates only for identities that the service's
//! [`Authorizer`] places on its node. The channel is TLS only ([`transport`],
//! [`crate::tls::control`]): the server presents a certificate from the same CA, the agent
//! verifies it against the roots it was installed with, and the token never crosses the
//! network in clear. The config stream uses the same transport and credential.

mod auth;
mod client;
mod credential;
mod server;
pub mod transport;

pub use auth::{authenticate_metadata, AuthError, NodeAuthenticator, NodeTokens};
pub use client::{CaClient, CaClientError};
pub use credential::Credential;
pub use server::{serve, Authorizer, CaService, SigningFailure, SigningObserver};
pub use transport::{ControlPlaneTransport, HandshakeStats, TransportError};

/// Metadata key carrying the caller's node name.
pub const NODE_METADATA: &str = "x-mesh-node";

/// Generated protobuf messages and tonic services (`mesh.ca.v1`).
#[allow(
    missing_docs,
    clippy::all,
    reason = "generated code: lints vary with the generator"
)]
pub mod proto {
    tonic::include_proto!("mesh.ca.v1");
}

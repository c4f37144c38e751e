//! The certificate service over gRPC (tonic): the controller serves it in front of its
//! [`CertificateAuthority`](crate::ca::CertificateAuthority); node agents call it through
//! [`CaClient`], a [`CertificateSigner`](crate::certs::CertificateSigner) for their
//! [`CertManager`](crate::certs::CertManager).
//!
//! An agent sends its node name (`x-mesh-node`) and a bearer token; the service's
//! [`NodeAuthenticator`] decides whether the token proves that node ([`NodeTokens`], per-node
//! bootstrap tokens, in the local cluster; the controller's Kubernetes `TokenReview` in a real
//! cluster), and the agent gets certificates only for identities that the service's
//! [`Authorizer`] places on its node. The channel itself should be TLS in production (the token
//! is a bearer secret); the tests run it in plaintext on loopback.

mod auth;
mod client;
mod server;

pub use auth::{AuthError, NodeAuthenticator, NodeTokens};
pub use client::{CaClient, CaClientError};
pub use server::{serve, Authorizer, CaService};

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

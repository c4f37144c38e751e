//! The certificate service over gRPC (tonic): the controller serves it in front of its
//! [`CertificateAuthority`](crate::ca::CertificateAuthority); node agents call it through
//! [`CaClient`], a [`CertificateSigner`](crate::certs::CertificateSigner) for their
//! [`CertManager`](crate::certs::CertManager).
//!
//! An agent authenticates with its node name and that node's bootstrap token, and gets
//! certificates only for identities that the service's [`Authorizer`] places on its node.
//! The channel itself should be TLS in production (the token is a bearer secret); the tests run
//! it in plaintext on loopback.

mod client;
mod server;

pub use client::{CaClient, CaClientError};
pub use server::{serve, Authorizer, CaService, NodeTokens};

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

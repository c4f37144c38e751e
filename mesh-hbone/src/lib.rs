//! Workload identity certificates, SPIFFE-verifying mTLS and the HBONE tunnel.
//!
//! The pieces, bottom up:
//! - [`ca`]: a certificate authority (rcgen) that issues SPIFFE leaf certificates from CSRs, and the
//!   [`ca::TrustBundle`] of roots that verifiers trust (several at once, so roots rotate with overlap);
//! - [`tls`]: rustls (aws-lc-rs, TLS 1.3 only) client and server configurations for mutual TLS whose
//!   verifiers check the chain against the bundle *and* the peer's SPIFFE identity;
//! - [`certs`]: a per-identity certificate manager that fetches through a pluggable
//!   [`certs::CertificateSigner`], renews at half-life with jittered backoff, and feeds rustls
//!   resolvers so renewed certificates are used without restarting anything;
//! - [`hbone`]: HTTP/2 CONNECT over that mTLS on port 15008: a server that hands each CONNECT stream
//!   to a [`hbone::ConnectHandler`], and a pooled client;
//! - [`relay`]: TCP ↔ HBONE and TCP ↔ TCP relays that hold no buffer while a connection is idle;
//! - `ca_service` (feature `ca-service`, on by default): the CA over gRPC, where node agents
//!   authenticate through a pluggable `NodeAuthenticator` (per-node bootstrap tokens here; the
//!   controller adds Kubernetes TokenReview) and get certificates only for workloads on their node;
//!   its `transport` carries it and the config stream over the control plane's TLS
//!   ([`tls::control`]: a serving certificate from the CA, clients pinning their installed roots).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ca;
#[cfg(feature = "ca-service")]
pub mod ca_service;
pub mod certs;
pub mod hbone;
pub mod relay;
pub mod tls;

pub use mesh_common::identity::Identity;

//! rustls configurations for mesh mTLS: aws-lc-rs, TLS 1.3 only, ALPN `h2`, SPIFFE verification on
//! both sides, certificates taken from a resolver so renewals need no rebuild.

pub mod control;
mod verify;

use std::sync::Arc;

use mesh_common::identity::Identity;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

pub use verify::{identity_of, verify_chain, SpiffeClientVerifier, SpiffeServerVerifier};
/// Which usage (client or server authentication) [`verify_chain`] checks a certificate for.
pub use webpki::KeyUsage;

use crate::ca::TrustBundle;
use crate::certs::WorkloadCert;

/// The one ALPN protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Why a TLS peer or configuration was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    /// The peer's identity is valid but not the one expected for this destination.
    #[error("peer identity is {actual}, expected {expected}")]
    WrongIdentity {
        /// The identity the destination should have.
        expected: Box<Identity>,
        /// The identity the peer's certificate carries.
        actual: Box<Identity>,
    },
    /// The peer's identity belongs to another trust domain.
    #[error("peer identity {actual} is outside trust domain {expected}")]
    WrongTrustDomain {
        /// Our trust domain.
        expected: String,
        /// The identity the peer's certificate carries.
        actual: Identity,
    },
    /// The control plane's certificate is not valid for the name or address dialed.
    #[error("server certificate is not valid for {0}")]
    WrongServerName(String),
    /// The certificate has no URI subject alternative name.
    #[error("peer certificate has no URI SAN (no SPIFFE identity)")]
    NoUriSan,
    /// The certificate has more than one URI SAN.
    #[error("peer certificate has several URI SANs")]
    SeveralUriSans,
    /// The URI SAN is not a SPIFFE workload identity.
    #[error("peer certificate URI SAN is not a SPIFFE workload identity: {0}")]
    NotSpiffe(String),
    /// The certificate's validity ended.
    #[error("peer certificate has expired")]
    Expired,
    /// The certificate's validity has not started.
    #[error("peer certificate is not valid yet")]
    NotYetValid,
    /// The chain does not lead to a root of the trust bundle.
    #[error("peer certificate is not issued by a trusted root")]
    UnknownIssuer,
    /// The certificate is malformed or otherwise unacceptable.
    #[error("bad peer certificate: {0}")]
    BadCertificate(String),
    /// The peer presented no certificate.
    #[error("peer presented no certificate")]
    NoCertificate,
    /// The bytes received are not a TLS handshake.
    #[error("peer did not speak TLS")]
    NotTls,
    /// The peer did not finish the handshake in time.
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    /// Any other handshake failure (I/O error, alert from the peer, protocol error).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    /// A short stable name of the reason, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            TlsError::WrongIdentity { .. } => "wrong_identity",
            TlsError::WrongTrustDomain { .. } => "wrong_trust_domain",
            TlsError::WrongServerName(_) => "wrong_server_name",
            TlsError::NoUriSan => "no_uri_san",
            TlsError::SeveralUriSans => "several_uri_sans",
            TlsError::NotSpiffe(_) => "not_spiffe",
            TlsError::Expired => "expired",
            TlsError::NotYetValid => "not_yet_valid",
            TlsError::UnknownIssuer => "unknown_issuer",
            TlsError::BadCertificate(_) => "bad_certificate",
            TlsError::NoCertificate => "no_certificate",
            TlsError::NotTls => "not_tls",
            TlsError::HandshakeTimeout => "handshake_timeout",
            TlsError::Handshake(_) => "handshake",
            TlsError::Config(_) => "config",
        }
    }

    /// Classifies the `io::Error` a tokio-rustls handshake failed with.
    pub fn from_handshake(err: &std::io::Error) -> TlsError {
        let Some(rustls_err) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return TlsError::Handshake(err.to_string());
        };
        TlsError::from_rustls(rustls_err)
    }

    /// Classifies a rustls error, recovering our own verifier errors.
    pub fn from_rustls(err: &rustls::Error) -> TlsError {
        use rustls::CertificateError as C;
        match err {
            rustls::Error::InvalidCertificate(cert_err) => match cert_err {
                C::Expired | C::ExpiredContext { .. } => TlsError::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => TlsError::NotYetValid,
                C::UnknownIssuer => TlsError::UnknownIssuer,
                C::Other(other) => match other.0.downcast_ref::<TlsError>() {
                    Some(ours) => ours.clone(),
                    None => TlsError::BadCertificate(other.to_string()),
                },
                other => TlsError::BadCertificate(format!("{other:?}")),
            },
            rustls::Error::NoCertificatesPresented => TlsError::NoCertificate,
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateHandshakeMessage { .. } => TlsError::NotTls,
            rustls::Error::InappropriateMessage { .. } => TlsError::NotTls,
            other => TlsError::Handshake(other.to_string()),
        }
    }
}

/// The crypto provider used everywhere in the mesh: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration that presents the certificate from `cert` and accepts only a server
/// proving `expected` with a chain to `bundle`.
pub fn client_config(
    cert: Arc<dyn ResolvesClientCert>,
    bundle: TrustBundle,
    expected: Identity,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(bundle, expected)))
        .with_client_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration that presents the certificate from `cert` and requires a client
/// certificate with a SPIFFE identity chaining to `bundle`.
pub fn server_config(
    cert: Arc<dyn ResolvesServerCert>,
    bundle: TrustBundle,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(bundle)))
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Session resumption would skip the client certificate check on later connections: keep every
    // connection fully authenticated, since certificates rotate quickly.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The SPIFFE identity of the peer of an established connection (its certificate was verified
/// during the handshake).
pub fn peer_identity(conn: &rustls::CommonState) -> Result<Identity, TlsError> {
    let certs = conn.peer_certificates().ok_or(TlsError::NoCertificate)?;
    let leaf = certs.first().ok_or(TlsError::NoCertificate)?;
    identity_of(leaf)
}

/// A resolver that always presents the same certificate (tests, tools; a proxy uses
/// [`crate::certs::CertManager::resolver`] instead so renewals are picked up).
#[derive(Debug, Clone)]
pub struct StaticCert {
    key: Arc<CertifiedKey>,
}

impl StaticCert {
    /// Presents `cert`, even after it expires (peers will refuse it then).
    pub fn new(cert: &WorkloadCert) -> Arc<Self> {
        Arc::new(StaticCert {
            key: cert.certified_key(),
        })
    }
}

impl ResolvesServerCert for StaticCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.clone())
    }
}

impl ResolvesClientCert for StaticCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests;

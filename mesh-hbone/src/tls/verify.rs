//! SPIFFE certificate verification: the chain against the trust bundle, then the URI SAN.

use std::sync::Arc;

use mesh_common::identity::Identity;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DistinguishedName, OtherError};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::{provider, TlsError};
use crate::ca::TrustBundle;

/// Reads the SPIFFE identity of a certificate: its one URI SAN (no signature or validity check).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, TlsError> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let mut uris = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let uri = uris.next().ok_or(TlsError::NoUriSan)?;
    if uris.next().is_some() {
        // SPIFFE: an SVID carries exactly one URI SAN.
        return Err(TlsError::SeveralUriSans);
    }
    uri.parse::<Identity>()
        .map_err(|e| TlsError::NotSpiffe(e.to_string()))
}

/// Verifies `end_entity` (with `intermediates`) against the roots of `bundle` in force at `now`,
/// for the given usage, and returns its SPIFFE identity, which must be in the bundle's trust domain.
pub fn verify_chain(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<Identity, TlsError> {
    let anchors = bundle.anchors_at(now);
    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| TlsError::BadCertificate(format!("{e:?}")))?;
    cert.verify_for_usage(
        algorithms().all,
        &anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => TlsError::Expired,
        webpki::Error::CertNotValidYet { .. } => TlsError::NotYetValid,
        webpki::Error::UnknownIssuer => TlsError::UnknownIssuer,
        other => TlsError::BadCertificate(format!("{other:?}")),
    })?;
    let identity = identity_of(end_entity)?;
    if identity.trust_domain != bundle.trust_domain() {
        return Err(TlsError::WrongTrustDomain {
            expected: bundle.trust_domain().to_owned(),
            actual: identity,
        });
    }
    Ok(identity)
}

/// The signature checks of a TLS 1.3-only verifier, the same in every verifier of this crate:
/// TLS 1.2 refused, TLS 1.3 signatures checked with the provider's algorithms.
macro_rules! tls13_only_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &rustls::pki_types::CertificateDer<'_>,
            _dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            // Configurations built here are TLS 1.3 only.
            Err(rustls::Error::General("TLS 1.2 is not supported".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &$crate::tls::verify::algorithms(),
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            $crate::tls::verify::algorithms().supported_schemes()
        }
    };
}
pub(crate) use tls13_only_signatures;

pub(crate) fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// Turns our verification error into the rustls error that aborts the handshake, keeping the
/// standard variants (so the right TLS alert is sent) and our own text for the rest.
pub(crate) fn to_rustls(err: TlsError) -> rustls::Error {
    let cert_err = match err {
        TlsError::Expired => CertificateError::Expired,
        TlsError::NotYetValid => CertificateError::NotValidYet,
        TlsError::UnknownIssuer => CertificateError::UnknownIssuer,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_err)
}

/// Client side: verifies that the server is the identity expected for the destination.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    bundle: TrustBundle,
    expected: Identity,
}

impl SpiffeServerVerifier {
    /// A verifier that accepts only `expected`, with a chain to a root of `bundle`.
    pub fn new(bundle: TrustBundle, expected: Identity) -> Self {
        SpiffeServerVerifier { bundle, expected }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = verify_chain(
            &self.bundle,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map_err(to_rustls)?;
        if actual != self.expected {
            return Err(to_rustls(TlsError::WrongIdentity {
                expected: Box::new(self.expected.clone()),
                actual: Box::new(actual),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    tls13_only_signatures!();
}

/// Server side: requires a client certificate chaining to the bundle with a SPIFFE identity in
/// the trust domain; which identities may do what is decided later (authorization).
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundle: TrustBundle,
}

impl SpiffeClientVerifier {
    /// A verifier of client certificates against `bundle`.
    pub fn new(bundle: TrustBundle) -> Self {
        SpiffeClientVerifier { bundle }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_chain(
            &self.bundle,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    tls13_only_signatures!();
}

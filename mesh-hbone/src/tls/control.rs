//! TLS of the control plane (the config stream and the certificate service): the serving
//! certificate the controller's own CA issues for it and renews, the server configuration, and
//! the client side that trusts only the roots the agent was installed with (pinned) and the DNS
//! name or IP address it dialed. Nodes authenticate inside the channel with their bearer token,
//! so the server asks for no client certificate.
//!
//! Which new roots a client accepts from the CA ([`accept_roots`]): the CA's answer arrives over
//! a channel verified against the trusted roots, and its root set replaces the trusted one only
//! if it still contains a root trusted now (the overlap of a rotation, when the CA trusts both
//! its old and its new root). A set with no trusted root in it is refused whole and the trusted
//! set is left as it was: trust never jumps to roots that nothing already trusted vouches for.
//! Roots the CA no longer returns (retired at the end of their overlap) stop being trusted, so a
//! rotated-out root does not stay trusted on nodes forever.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use super::verify::tls13_only_signatures;
use super::verify::to_rustls;
use super::{provider, TlsError, ALPN_H2};
use crate::ca::{CaError, CertificateAuthority, ServingName, TrustBundle};

/// The controller's serving certificate, issued by its CA for `names` and renewed in place at
/// half-life by [`keep_renewed`](Self::keep_renewed); a rustls resolver, so connections opened
/// after a renewal present the new certificate without rebuilding anything.
pub struct ServingCert {
    ca: Arc<CertificateAuthority>,
    names: Vec<ServingName>,
    lifetime: Duration,
    current: RwLock<Issued>,
}

#[derive(Clone)]
struct Issued {
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("names", &self.names)
            .field("not_after", &self.read().not_after)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Issues a first certificate for `names`, valid for `lifetime`.
    pub fn issue(
        ca: Arc<CertificateAuthority>,
        names: Vec<ServingName>,
        lifetime: Duration,
    ) -> Result<Arc<Self>, TlsError> {
        let issued = issue(&ca, &names, lifetime)?;
        Ok(Arc::new(ServingCert {
            ca,
            names,
            lifetime,
            current: RwLock::new(issued),
        }))
    }

    /// Issues a fresh certificate (new key) and presents it from now on.
    pub fn renew(&self) -> Result<(), TlsError> {
        let issued = issue(&self.ca, &self.names, self.lifetime)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = issued;
        Ok(())
    }

    /// The names the certificate is valid for.
    pub fn names(&self) -> &[ServingName] {
        &self.names
    }

    /// The chain presented now (leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.read().key.cert.clone()
    }

    /// End of validity of the certificate presented now.
    pub fn not_after(&self) -> SystemTime {
        self.read().not_after
    }

    /// When the certificate presented now should be renewed: at half of its lifetime, so a
    /// failed renewal has the other half to be retried.
    pub fn renew_at(&self) -> SystemTime {
        let issued = self.read();
        let life = issued
            .not_after
            .duration_since(issued.not_before)
            .unwrap_or_default();
        issued.not_before + life / 2
    }

    /// Renews the certificate at half-life, forever (retrying a failed renewal every
    /// `retry`, well within the remaining half). Spawn it next to the servers.
    pub async fn keep_renewed(self: Arc<Self>, retry: Duration) {
        loop {
            let wait = self
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            match self.renew() {
                Ok(()) => {
                    tracing::info!(names = ?self.names, not_after = ?self.not_after(), "control-plane serving certificate renewed");
                }
                Err(e) => {
                    tracing::error!(error = %e, "control-plane serving certificate renewal failed; retrying");
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Issued> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().key.clone())
    }
}

fn issue(
    ca: &CertificateAuthority,
    names: &[ServingName],
    lifetime: Duration,
) -> Result<Issued, TlsError> {
    let (cert, key) = ca
        .issue_serving_cert(names, lifetime)
        .map_err(|e| TlsError::Config(format!("serving certificate: {e}")))?;
    let key = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
        .map_err(|e| TlsError::Config(format!("serving key: {e}")))?;
    Ok(Issued {
        key: Arc::new(CertifiedKey::new(cert.chain, key)),
        not_before: cert.not_before,
        not_after: cert.not_after,
    })
}

/// The control plane's server configuration: TLS 1.3, ALPN `h2`, `cert` presented, no client
/// certificate (nodes authenticate with their bearer token inside the channel).
pub fn server_config(cert: Arc<ServingCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration for the control plane: TLS 1.3, ALPN `h2`, the server's certificate
/// must chain to a root of `pinned` and name the host dialed ([`PinnedRootVerifier`]).
pub fn client_config(pinned: TrustBundle) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedRootVerifier::new(pinned)))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Verifies the control plane's serving certificate: a chain to the roots trusted now in the
/// pinned bundle (a live handle: accepted rotations apply to the next handshake), for server
/// authentication, valid for the DNS name or IP address the client dialed. No web PKI root is
/// ever consulted.
#[derive(Debug)]
pub struct PinnedRootVerifier {
    pinned: TrustBundle,
}

impl PinnedRootVerifier {
    /// A verifier trusting the roots of `pinned`.
    pub fn new(pinned: TrustBundle) -> Self {
        PinnedRootVerifier { pinned }
    }
}

/// Checks `end_entity` against `pinned` for `server_name` at `now` (the verifier's decision,
/// callable without a handshake).
pub fn verify_serving_cert(
    pinned: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), TlsError> {
    let anchors = pinned.anchors_at(now);
    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| TlsError::BadCertificate(format!("{e:?}")))?;
    cert.verify_for_usage(
        provider().signature_verification_algorithms.all,
        &anchors,
        intermediates,
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => TlsError::Expired,
        webpki::Error::CertNotValidYet { .. } => TlsError::NotYetValid,
        webpki::Error::UnknownIssuer => TlsError::UnknownIssuer,
        other => TlsError::BadCertificate(format!("{other:?}")),
    })?;
    cert.verify_is_valid_for_subject_name(server_name)
        .map_err(|_| TlsError::WrongServerName(server_name.to_str().into_owned()))
}

impl ServerCertVerifier for PinnedRootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_serving_cert(&self.pinned, end_entity, intermediates, server_name, now)
            .map_err(to_rustls)?;
        Ok(ServerCertVerified::assertion())
    }

    tls13_only_signatures!();
}

/// What a client does with the roots a CA answer carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootUpdate {
    /// The answer's set is the trusted set already.
    Unchanged,
    /// The answer's set becomes the trusted set: `added` roots newly trusted, `removed` no
    /// longer (the CA retired them).
    Rotated {
        /// Roots trusted from now on that were not before.
        added: usize,
        /// Roots trusted before that the CA no longer returns.
        removed: usize,
    },
}

/// Why the roots of a CA answer were refused (the trusted set stays as it was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootUpdateError {
    /// The answer carried no root at all.
    #[error("the CA returned no root")]
    Empty,
    /// None of the returned roots is trusted now: not a rotation overlap.
    #[error(
        "the CA returned {returned} root(s), none of them trusted now: refusing to trust them \
         (a root rotation must keep a trusted root in the set until nodes have the new one)"
    )]
    NoOverlap {
        /// How many roots the answer carried.
        returned: usize,
    },
    /// A returned root is not a usable trust anchor.
    #[error("the CA returned an invalid root: {0}")]
    BadRoot(String),
}

/// The decision on a CA answer's roots, on DER bytes (see the module docs): `returned` replaces
/// `trusted` only if it shares a root with it.
pub fn accept_roots(
    trusted: &[CertificateDer<'_>],
    returned: &[CertificateDer<'_>],
) -> Result<RootUpdate, RootUpdateError> {
    if returned.is_empty() {
        return Err(RootUpdateError::Empty);
    }
    let is_trusted = |r: &CertificateDer<'_>| trusted.iter().any(|t| t.as_ref() == r.as_ref());
    if !returned.iter().any(is_trusted) {
        return Err(RootUpdateError::NoOverlap {
            returned: returned.len(),
        });
    }
    let added = returned
        .iter()
        .enumerate()
        // Count each new root once even if the answer repeats it.
        .filter(|(i, r)| !is_trusted(r) && !returned[..*i].iter().any(|p| p.as_ref() == r.as_ref()))
        .count();
    let removed = trusted
        .iter()
        .filter(|t| !returned.iter().any(|r| r.as_ref() == t.as_ref()))
        .count();
    Ok(if added == 0 && removed == 0 {
        RootUpdate::Unchanged
    } else {
        RootUpdate::Rotated { added, removed }
    })
}

/// Applies [`accept_roots`] to `pinned` (the roots trusted now) and, if accepted, makes
/// `returned` the trusted set.
pub fn apply_ca_roots(
    pinned: &TrustBundle,
    returned: Vec<CertificateDer<'static>>,
) -> Result<RootUpdate, RootUpdateError> {
    let decision = accept_roots(&pinned.roots(), &returned)?;
    if decision != RootUpdate::Unchanged {
        let mut unique: Vec<CertificateDer<'static>> = Vec::with_capacity(returned.len());
        for root in returned {
            if !unique.iter().any(|u| u.as_ref() == root.as_ref()) {
                unique.push(root);
            }
        }
        pinned.set_roots(unique).map_err(|e| match e {
            CaError::BadRoot(m) => RootUpdateError::BadRoot(m),
            other => RootUpdateError::BadRoot(other.to_string()),
        })?;
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaConfig;

    fn der(bytes: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from(bytes.to_vec())
    }

    #[test]
    fn roots_are_accepted_only_when_they_overlap_the_trusted_set() {
        let (a, b, c) = (der(b"root-a"), der(b"root-b"), der(b"root-c"));
        let rotated = |added, removed| Ok(RootUpdate::Rotated { added, removed });
        let cases: Vec<(Vec<_>, Vec<_>, Result<RootUpdate, RootUpdateError>)> = vec![
            (vec![a.clone()], vec![a.clone()], Ok(RootUpdate::Unchanged)),
            (
                vec![a.clone()],
                vec![a.clone(), a.clone()],
                Ok(RootUpdate::Unchanged),
            ),
            // The rotation overlap: old and new returned.
            (vec![a.clone()], vec![a.clone(), b.clone()], rotated(1, 0)),
            (
                vec![a.clone()],
                vec![b.clone(), a.clone(), b.clone()],
                rotated(1, 0),
            ),
            // The end of the overlap: the old root is dropped.
            (vec![a.clone(), b.clone()], vec![b.clone()], rotated(0, 1)),
            // A set sharing nothing with the trusted one: refused whole.
            (
                vec![a.clone()],
                vec![b.clone()],
                Err(RootUpdateError::NoOverlap { returned: 1 }),
            ),
            (
                vec![a.clone(), b.clone()],
                vec![c.clone(), c.clone()],
                Err(RootUpdateError::NoOverlap { returned: 2 }),
            ),
            (
                vec![],
                vec![a.clone()],
                Err(RootUpdateError::NoOverlap { returned: 1 }),
            ),
            (vec![a.clone()], vec![], Err(RootUpdateError::Empty)),
        ];
        for (trusted, returned, expected) in cases {
            assert_eq!(
                accept_roots(&trusted, &returned),
                expected,
                "{trusted:?} {returned:?}"
            );
        }
    }

    #[test]
    fn the_serving_certificate_verifies_for_its_names_and_pinned_root_only() {
        let ca =
            Arc::new(CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA"));
        let names = vec![
            ServingName::Dns("mesh-controller.mesh-system.svc".into()),
            ServingName::Ip("198.18.0.254".parse().expect("ip")),
        ];
        let serving =
            ServingCert::issue(ca.clone(), names, Duration::from_secs(600)).expect("issue");
        let chain = serving.chain();
        let pinned =
            TrustBundle::from_pem("cluster.local", &ca.trust_bundle().to_pem()).expect("pin");
        let other = CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA");
        let name = |s: &str| ServerName::try_from(s.to_owned()).expect("name");
        let check = |bundle: &TrustBundle, host: &str| {
            verify_serving_cert(bundle, &chain[0], &[], &name(host), UnixTime::now())
        };
        assert_eq!(check(&pinned, "mesh-controller.mesh-system.svc"), Ok(()));
        assert_eq!(check(&pinned, "198.18.0.254"), Ok(()));
        assert_eq!(
            check(&pinned, "198.18.0.253"),
            Err(TlsError::WrongServerName("198.18.0.253".into()))
        );
        assert_eq!(
            check(&pinned, "evil.mesh-system.svc"),
            Err(TlsError::WrongServerName("evil.mesh-system.svc".into()))
        );
        assert_eq!(
            check(&other.trust_bundle(), "198.18.0.254"),
            Err(TlsError::UnknownIssuer)
        );
        // Renewal: a new certificate and key, half-life scheduling.
        let before = serving.chain();
        serving.renew().expect("renew");
        assert_ne!(before, serving.chain());
        let half = serving
            .not_after()
            .duration_since(serving.renew_at())
            .expect("order");
        assert!(
            half >= Duration::from_secs(290) && half <= Duration::from_secs(330),
            "{half:?}"
        );
    }

    #[test]
    fn a_workload_certificate_is_no_serving_certificate() {
        // Workload certificates chain to the same root but carry only a SPIFFE URI: a node
        // holding one cannot pose as the control plane.
        let ca = CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA");
        let identity: mesh_common::identity::Identity = "spiffe://cluster.local/ns/default/sa/web"
            .parse()
            .expect("id");
        let (_key, csr) = crate::certs::new_key_and_csr(&identity).expect("csr");
        let leaf = ca.sign_csr_der(&identity, &csr).expect("leaf");
        let name = ServerName::try_from("198.18.0.254".to_owned()).expect("name");
        assert_eq!(
            verify_serving_cert(
                &ca.trust_bundle(),
                &leaf.chain[0],
                &[],
                &name,
                UnixTime::now()
            ),
            Err(TlsError::WrongServerName("198.18.0.254".into()))
        );
    }
}

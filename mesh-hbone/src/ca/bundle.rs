//! The trust bundle: the set of root certificates that verifiers accept, shared and updatable.
//!
//! A bundle holds several roots so that a root can rotate: the new root is added, and the old one
//! stays trusted until the end of its overlap period, so that leaves it issued keep verifying
//! until they have all been renewed under the new root.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};

use super::CaError;

/// One trusted root.
#[derive(Debug, Clone)]
struct BundleRoot {
    der: CertificateDer<'static>,
    anchor: TrustAnchor<'static>,
    /// When the root stops being trusted (the end of its rotation overlap); `None`: no end set.
    retire_at: Option<SystemTime>,
}

/// A shared, updatable set of trusted roots for one trust domain.
///
/// Cloning gives another handle on the same set: verifiers built from a clone see roots that are
/// added or retired later, so TLS configurations never need rebuilding when roots rotate.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: Arc<str>,
    roots: Arc<RwLock<Vec<BundleRoot>>>,
}

impl TrustBundle {
    /// An empty bundle for `trust_domain` (trusts nothing until a root is added).
    pub fn new(trust_domain: &str) -> Self {
        TrustBundle {
            trust_domain: Arc::from(trust_domain),
            roots: Arc::new(RwLock::new(Vec::new())),
        }
    }

    /// A bundle of the roots in a PEM text (one or more `CERTIFICATE` blocks).
    pub fn from_pem(trust_domain: &str, pem: &str) -> Result<Self, CaError> {
        let bundle = TrustBundle::new(trust_domain);
        let mut found = false;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| CaError::Pem(e.to_string()))?;
            bundle.add_root(cert)?;
            found = true;
        }
        if !found {
            return Err(CaError::Pem(
                "no CERTIFICATE block in the trust bundle".into(),
            ));
        }
        Ok(bundle)
    }

    /// The trust domain whose identities this bundle vouches for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Adds a trusted root (DER); adding a root that is already present is a no-op, and clears
    /// any retirement set on it.
    pub fn add_root(&self, der: CertificateDer<'static>) -> Result<(), CaError> {
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| CaError::BadRoot(format!("{e:?}")))?
            .to_owned();
        let mut roots = self.write();
        if let Some(existing) = roots.iter_mut().find(|r| r.der == der) {
            existing.retire_at = None;
        } else {
            roots.push(BundleRoot {
                der,
                anchor,
                retire_at: None,
            });
        }
        Ok(())
    }

    /// Keeps `der` trusted only until `at` (the end of its rotation overlap). Returns whether the
    /// root was in the bundle.
    pub fn retire_root_at(&self, der: &CertificateDer<'_>, at: SystemTime) -> bool {
        let mut roots = self.write();
        match roots.iter_mut().find(|r| r.der.as_ref() == der.as_ref()) {
            Some(root) => {
                root.retire_at = Some(at);
                true
            }
            None => false,
        }
    }

    /// Replaces the whole set with the roots of `other` (for an agent that receives a new bundle
    /// from the control plane).
    pub fn replace_with(&self, other: &TrustBundle) {
        let new_roots = other.read().clone();
        *self.write() = new_roots;
    }

    /// Makes `roots` the exact trusted set (for an agent applying the set the CA sent).
    pub fn set_roots(&self, roots: Vec<CertificateDer<'static>>) -> Result<(), CaError> {
        let mut new_roots = Vec::with_capacity(roots.len());
        for der in roots {
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| CaError::BadRoot(format!("{e:?}")))?
                .to_owned();
            new_roots.push(BundleRoot {
                der,
                anchor,
                retire_at: None,
            });
        }
        *self.write() = new_roots;
        Ok(())
    }

    /// The roots trusted now, in DER.
    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        let now = SystemTime::now();
        self.read()
            .iter()
            .filter(|r| trusted_at(r, now))
            .map(|r| r.der.clone())
            .collect()
    }

    /// The roots trusted now, as one PEM text (what the control plane distributes).
    pub fn to_pem(&self) -> String {
        self.roots().iter().map(der_to_pem).collect()
    }

    /// The trust anchors in force at `now` (roots past their retirement are left out, and pruned).
    pub fn anchors_at(&self, now: UnixTime) -> Vec<TrustAnchor<'static>> {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs());
        self.read()
            .iter()
            .filter(|r| trusted_at(r, now))
            .map(|r| r.anchor.clone())
            .collect()
    }

    /// How many roots the bundle holds, retired or not (for tests and metrics).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the bundle holds no root.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Drops the roots whose overlap has ended.
    pub fn prune(&self) {
        let now = SystemTime::now();
        self.write().retain(|r| trusted_at(r, now));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<BundleRoot>> {
        // A panic while holding the lock cannot leave the Vec half-updated (every write is a
        // single push/assign), so a poisoned lock is still consistent.
        self.roots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<BundleRoot>> {
        self.roots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn trusted_at(root: &BundleRoot, now: SystemTime) -> bool {
    root.retire_at.is_none_or(|t| now < t)
}

/// PEM text of one DER certificate.
pub(crate) fn der_to_pem(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref()))
}

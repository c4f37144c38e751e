//! A workload certificate: the chain, the private key, the identity it proves and its validity.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_common::identity::Identity;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::FromDer;

use super::CertError;
use crate::tls::{identity_of, provider};

/// A certificate with its key, ready to present in TLS.
#[derive(Debug, Clone)]
pub struct WorkloadCert {
    identity: Identity,
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl WorkloadCert {
    /// Builds a workload certificate from a chain (leaf first) and the leaf's private key,
    /// checking that the leaf carries exactly `identity` and matches the key.
    pub fn new(
        identity: &Identity,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertError> {
        let leaf = chain
            .first()
            .ok_or_else(|| CertError::BadCertificate("empty chain".into()))?;
        let actual = identity_of(leaf).map_err(|e| CertError::BadCertificate(e.to_string()))?;
        if &actual != identity {
            return Err(CertError::WrongIdentity {
                requested: Box::new(identity.clone()),
                issued: Box::new(actual),
            });
        }
        let (not_before, not_after) = validity(leaf)?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::BadCertificate(format!("private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified
            .keys_match()
            .map_err(|e| CertError::BadCertificate(format!("key does not match leaf: {e}")))?;
        Ok(WorkloadCert {
            identity: actual,
            key: Arc::new(certified),
            not_before,
            not_after,
        })
    }

    /// The identity the certificate proves.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    /// The chain and key in rustls form.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.key.clone()
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether the certificate is outside its validity at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// Whether the certificate has expired now.
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(SystemTime::now())
    }

    /// How long from `now` until the certificate should be renewed: `fraction` of the time
    /// left (0.5 renews at half-life, counted from when it was received).
    pub fn renew_in(&self, now: SystemTime, fraction: f64) -> Duration {
        let left = self.not_after.duration_since(now).unwrap_or(Duration::ZERO);
        left.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

fn validity(leaf: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), CertError> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    let v = parsed.validity();
    Ok((
        to_system(v.not_before.timestamp()),
        to_system(v.not_after.timestamp()),
    ))
}

fn to_system(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

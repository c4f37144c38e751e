//! The certificate manager: one certificate per local identity, fetched on demand through a
//! [`CertificateSigner`], cached, renewed in the background at half-life (jittered exponential
//! backoff on failure), and never handed out once expired.
//!
//! Each identity has a background task that owns its renewal loop and publishes every new
//! certificate on a `watch` channel; [`CertManager::get`] waits on it and the rustls resolvers of
//! [`CertManager::resolver`] read it synchronously, so TLS picks up renewals without a restart.

mod backoff;
mod resolver;
mod signer;
mod workload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_common::identity::Identity;
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub use backoff::{Backoff, BackoffConfig};
pub use resolver::ManagedCert;
pub use signer::{CertificateSigner, SignError};
pub use workload::WorkloadCert;

/// Why no certificate could be handed out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The signer refused or failed (the manager keeps retrying in the background).
    #[error("certificate request for {identity} failed: {reason}")]
    Signing {
        /// The identity asked for.
        identity: Identity,
        /// The signer's error.
        reason: String,
    },
    /// The cached certificate expired and renewing it has failed so far.
    #[error("certificate for {identity} expired and could not be renewed: {reason}")]
    Expired {
        /// The identity asked for.
        identity: Identity,
        /// The last renewal error.
        reason: String,
    },
    /// No certificate arrived within the fetch timeout.
    #[error("no certificate for {0} within the fetch timeout")]
    Timeout(Identity),
    /// The signer returned a certificate for another identity.
    #[error("asked for a certificate for {requested}, got one for {issued}")]
    WrongIdentity {
        /// The identity asked for.
        requested: Box<Identity>,
        /// The identity in the returned certificate.
        issued: Box<Identity>,
    },
    /// The signer returned something that is not a usable certificate.
    #[error("unusable certificate: {0}")]
    BadCertificate(String),
    /// Generating the key or the CSR failed.
    #[error("key or CSR generation failed: {0}")]
    KeyGeneration(String),
    /// The manager was shut down.
    #[error("certificate manager stopped")]
    Stopped,
}

/// Settings of a [`CertManager`].
#[derive(Debug, Clone, Copy)]
pub struct CertManagerConfig {
    /// Fraction of the remaining lifetime after which a certificate is renewed (0.5: half-life).
    pub renew_fraction: f64,
    /// Retry backoff after a failed request.
    pub backoff: BackoffConfig,
    /// How long [`CertManager::get`] waits for a first certificate.
    pub fetch_timeout: Duration,
}

impl Default for CertManagerConfig {
    fn default() -> Self {
        CertManagerConfig {
            renew_fraction: 0.5,
            backoff: BackoffConfig::default(),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// What a renewal task publishes for its identity.
#[derive(Debug, Clone, Default)]
struct CertState {
    cert: Option<Arc<WorkloadCert>>,
    /// The last attempt's error, cleared by a success.
    last_error: Option<String>,
    /// Certificates received so far (for tests and metrics).
    issued: u64,
}

#[derive(Debug)]
struct Entry {
    state: watch::Receiver<CertState>,
    task: AbortHandle,
}

#[derive(Debug)]
struct Inner {
    signer: Arc<dyn CertificateSigner>,
    config: CertManagerConfig,
    entries: Mutex<HashMap<Identity, Entry>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for entry in self
            .entries
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            entry.task.abort();
        }
    }
}

impl std::fmt::Debug for dyn CertificateSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateSigner")
    }
}

/// Certificates for local identities, kept fresh. Cheap to clone (a shared handle).
#[derive(Debug, Clone)]
pub struct CertManager {
    inner: Arc<Inner>,
}

impl CertManager {
    /// A manager that obtains certificates from `signer`.
    pub fn new(signer: Arc<dyn CertificateSigner>, config: CertManagerConfig) -> Self {
        CertManager {
            inner: Arc::new(Inner {
                signer,
                config,
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A valid certificate for `identity`: the cached one, or one requested now (the first call
    /// for an identity starts its renewal task; must run inside a Tokio runtime).
    ///
    /// Never returns an expired certificate: if the cached one expired and renewal keeps failing,
    /// this is an error.
    pub async fn get(&self, identity: &Identity) -> Result<Arc<WorkloadCert>, CertError> {
        let mut rx = self.watch(identity);
        let wait = async {
            loop {
                {
                    let state = rx.borrow_and_update();
                    if let Some(cert) = state.cert.as_ref().filter(|c| !c.is_expired()) {
                        return Ok(cert.clone());
                    }
                    if let Some(reason) = &state.last_error {
                        let reason = reason.clone();
                        return Err(match state.cert {
                            Some(_) => CertError::Expired {
                                identity: identity.clone(),
                                reason,
                            },
                            None => CertError::Signing {
                                identity: identity.clone(),
                                reason,
                            },
                        });
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(CertError::Stopped);
                }
            }
        };
        match tokio::time::timeout(self.inner.config.fetch_timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(CertError::Timeout(identity.clone())),
        }
    }

    /// The current valid certificate for `identity` without waiting (`None` if none was fetched
    /// yet, or it expired).
    pub fn current(&self, identity: &Identity) -> Option<Arc<WorkloadCert>> {
        let entries = self.lock();
        let state = entries.get(identity)?.state.borrow();
        state.cert.as_ref().filter(|c| !c.is_expired()).cloned()
    }

    /// How many certificates were received for `identity` so far (renewals included).
    pub fn issued_count(&self, identity: &Identity) -> u64 {
        self.lock()
            .get(identity)
            .map_or(0, |e| e.state.borrow().issued)
    }

    /// A rustls resolver presenting the current certificate of `identity` (server and client
    /// side); renewals are picked up by the next handshake. Call [`Self::get`] first so a
    /// certificate exists.
    pub fn resolver(&self, identity: &Identity) -> Arc<ManagedCert> {
        Arc::new(ManagedCert::new(self.clone(), identity.clone()))
    }

    /// Stops renewing `identity` (e.g. its last pod left the node) and drops its certificate.
    pub fn forget(&self, identity: &Identity) {
        if let Some(entry) = self.lock().remove(identity) {
            entry.task.abort();
        }
    }

    /// The identities currently managed.
    pub fn identities(&self) -> Vec<Identity> {
        self.lock().keys().cloned().collect()
    }

    fn watch(&self, identity: &Identity) -> watch::Receiver<CertState> {
        let mut entries = self.lock();
        if let Some(entry) = entries.get(identity) {
            return entry.state.clone();
        }
        let (tx, rx) = watch::channel(CertState::default());
        let task = tokio::spawn(renew_loop(
            self.inner.signer.clone(),
            self.inner.config,
            identity.clone(),
            tx,
        ));
        entries.insert(
            identity.clone(),
            Entry {
                state: rx.clone(),
                task: task.abort_handle(),
            },
        );
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, Entry>> {
        // Entries are inserted and removed whole, so a poisoned map is still consistent.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Fetches, publishes, sleeps until renewal time; on failure publishes the error and retries after
/// a jittered exponential backoff (never later than the current certificate's renewal time would
/// allow: retries continue until one succeeds).
async fn renew_loop(
    signer: Arc<dyn CertificateSigner>,
    config: CertManagerConfig,
    identity: Identity,
    tx: watch::Sender<CertState>,
) {
    let mut backoff = Backoff::new(config.backoff);
    loop {
        match fetch(signer.as_ref(), &identity).await {
            Ok(cert) => {
                backoff.reset();
                let wait = cert.renew_in(SystemTime::now(), config.renew_fraction);
                tracing::debug!(%identity, renew_in = ?wait, "certificate issued");
                tx.send_modify(|s| {
                    s.cert = Some(Arc::new(cert));
                    s.last_error = None;
                    s.issued += 1;
                });
                tokio::time::sleep(wait).await;
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(%identity, error = %err, retry_in = ?delay, "certificate request failed");
                tx.send_modify(|s| s.last_error = Some(err.to_string()));
                tokio::time::sleep(delay).await;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// A fresh P-256 private key and a DER CSR for it naming `identity` (the CA decides what the
/// certificate really says; the name is informative).
pub fn new_key_and_csr(
    identity: &Identity,
) -> Result<(PrivateKeyDer<'static>, Vec<u8>), CertError> {
    let key = KeyPair::generate().map_err(|e| CertError::KeyGeneration(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Ok(uri) = identity.to_string().try_into() {
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    }
    let csr = params
        .serialize_request(&key)
        .map_err(|e| CertError::KeyGeneration(e.to_string()))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((key_der, csr.der().to_vec()))
}

/// One request: a new key, a CSR for it, the signer's chain, checked.
async fn fetch(
    signer: &dyn CertificateSigner,
    identity: &Identity,
) -> Result<WorkloadCert, CertError> {
    let (key, csr) = new_key_and_csr(identity)?;
    let chain = signer
        .sign(identity, &csr)
        .await
        .map_err(|e| CertError::Signing {
            identity: identity.clone(),
            reason: e.0,
        })?;
    let cert = WorkloadCert::new(identity, chain, key)?;
    if cert.is_expired() {
        return Err(CertError::BadCertificate(
            "the signer returned an expired certificate".into(),
        ));
    }
    Ok(cert)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests;

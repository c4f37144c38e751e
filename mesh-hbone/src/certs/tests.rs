use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;

use super::*;
use crate::ca::{CaConfig, CertificateAuthority};

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "default", sa)
}

/// A CA-backed signer that fails its first `fail_first` calls (or all after `fail_after`), hands
/// out certificates of `lifetime`, and records when it was called (Tokio time).
struct Scripted {
    ca: CertificateAuthority,
    lifetime: Duration,
    fail_first: usize,
    fail_after: usize,
    calls: Mutex<Vec<Instant>>,
    count: AtomicUsize,
}

impl Scripted {
    fn new(lifetime: Duration, fail_first: usize, fail_after: usize) -> Arc<Self> {
        Arc::new(Scripted {
            ca: CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap(),
            lifetime,
            fail_first,
            fail_after,
            calls: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl CertificateSigner for Scripted {
    async fn sign(
        &self,
        identity: &Identity,
        csr: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, SignError> {
        self.calls.lock().unwrap().push(Instant::now());
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first || n >= self.fail_after {
            return Err(SignError(format!("scripted failure {n}")));
        }
        let issued = self
            .ca
            .sign_csr_with_lifetime(identity, csr, self.lifetime)
            .unwrap();
        Ok(issued.chain)
    }
}

fn manager(signer: Arc<Scripted>) -> CertManager {
    let config = CertManagerConfig {
        backoff: BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
        },
        ..CertManagerConfig::default()
    };
    CertManager::new(signer, config)
}

#[tokio::test(start_paused = true)]
async fn fetches_once_caches_and_renews_at_half_life() {
    let signer = Scripted::new(Duration::from_secs(100), 0, usize::MAX);
    let certs = manager(signer.clone());
    let web = id("web");
    let (a, b) = tokio::join!(certs.get(&web), certs.get(&web));
    assert_eq!(a.unwrap().not_after(), b.unwrap().not_after());
    assert_eq!(signer.calls().len(), 1, "concurrent gets share one request");
    assert!(certs.current(&id("web")).is_some());

    tokio::time::sleep(Duration::from_secs(120)).await;
    let calls = signer.calls();
    assert!(
        calls.len() >= 3,
        "renewed at ~50 s and ~100 s: {} calls",
        calls.len()
    );
    let first_gap = (calls[1] - calls[0]).as_secs_f64();
    // Half of the ~100 s left when it arrived (the X.509 second resolution takes up to 1 s off).
    assert!(
        (48.0..=51.0).contains(&first_gap),
        "renewed after {first_gap} s"
    );
    assert_eq!(certs.issued_count(&id("web")), calls.len() as u64);
}

#[tokio::test(start_paused = true)]
async fn failed_requests_retry_with_jittered_exponential_backoff() {
    let signer = Scripted::new(Duration::from_secs(3600), 3, usize::MAX);
    let certs = manager(signer.clone());
    // The first attempt fails: the caller gets the error at once, not a hang.
    match certs.get(&id("web")).await {
        Err(CertError::Signing { reason, .. }) => assert!(reason.contains("scripted failure 0")),
        other => panic!("expected a signing error, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let calls = signer.calls();
    assert_eq!(calls.len(), 4, "three failures then a success");
    for (i, base) in [1.0, 2.0, 4.0].iter().enumerate() {
        let gap = (calls[i + 1] - calls[i]).as_secs_f64();
        assert!(
            gap >= base * 0.8 - 0.01 && gap <= base * 1.2 + 0.01,
            "gap {i}: {gap} s vs {base} s"
        );
    }
    certs.get(&id("web")).await.unwrap();
}

#[tokio::test]
async fn never_hands_out_an_expired_certificate() {
    // Real time: validity is wall-clock. 2 s certificates, and every renewal fails.
    let signer = Scripted::new(Duration::from_secs(2), 0, 1);
    let config = CertManagerConfig {
        backoff: BackoffConfig {
            initial: Duration::from_millis(100),
            ..BackoffConfig::default()
        },
        ..CertManagerConfig::default()
    };
    let certs = CertManager::new(signer.clone(), config);
    let cert = certs.get(&id("web")).await.unwrap();
    let resolver = certs.resolver(&id("web"));
    assert!(rustls::client::ResolvesClientCert::resolve(&*resolver, &[], &[]).is_some());
    let left = cert
        .not_after()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(200)).await;
    match certs.get(&id("web")).await {
        Err(CertError::Expired { .. }) => {}
        other => panic!("expected Expired, got {other:?}"),
    }
    assert!(certs.current(&id("web")).is_none());
    assert!(rustls::client::ResolvesClientCert::resolve(&*resolver, &[], &[]).is_none());
    assert!(signer.calls().len() >= 2, "renewal was attempted");
}

/// A signer that answers for the wrong identity.
struct Liar(CertificateAuthority);

#[async_trait]
impl CertificateSigner for Liar {
    async fn sign(
        &self,
        _identity: &Identity,
        csr: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, SignError> {
        Ok(self.0.sign_csr_der(&id("admin"), csr).unwrap().chain)
    }
}

#[tokio::test(start_paused = true)]
async fn refuses_a_certificate_for_another_identity() {
    let ca = CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap();
    let certs = CertManager::new(Arc::new(Liar(ca)), CertManagerConfig::default());
    match certs.get(&id("web")).await {
        Err(CertError::Signing { reason, .. }) => assert!(reason.contains("admin"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    certs.forget(&id("web"));
    assert!(certs.identities().is_empty());
}

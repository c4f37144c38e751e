use std::os::unix::fs::PermissionsExt;

use rcgen::{CertificateParams, KeyPair, SanType};
use rustls_pki_types::UnixTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::*;
use crate::tls::{verify_chain, TlsError};

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "default", sa)
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap()
}

/// A CSR that asks for more than it should: another identity and a DNS name.
fn greedy_csr() -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::URI(
            "spiffe://cluster.local/ns/kube-system/sa/admin"
                .try_into()
                .unwrap(),
        ),
        SanType::DnsName("kubernetes.default.svc".try_into().unwrap()),
    ];
    let csr = params.serialize_request(&key).unwrap();
    (key, csr.der().to_vec())
}

fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
}

#[test]
fn issues_exactly_the_san_it_chose_ignoring_the_csr() {
    let ca = ca();
    let (_key, csr) = greedy_csr();
    let issued = ca.sign_csr_der(&id("web"), &csr).unwrap();
    assert_eq!(issued.chain.len(), 1);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&issued.chain[0]).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("uri:{u}"),
            other => format!("other:{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        vec!["uri:spiffe://cluster.local/ns/default/sa/web".to_owned()]
    );
    assert!(!cert.is_ca(), "a leaf must not be a CA");
    let lifetime = issued.not_after.duration_since(issued.not_before).unwrap();
    // 24 h plus the (capped) backdating for clock skew.
    assert!(lifetime >= DEFAULT_LEAF_LIFETIME && lifetime <= DEFAULT_LEAF_LIFETIME + MAX_BACKDATE);
    // And it verifies, as a client and as a server certificate.
    let bundle = ca.trust_bundle();
    let now = UnixTime::now();
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        assert_eq!(
            verify_chain(&bundle, &issued.chain[0], &[], now, usage).unwrap(),
            id("web")
        );
    }
}

#[test]
fn signs_pem_csrs_with_a_configured_lifetime() {
    let mut config = CaConfig::new("cluster.local");
    config.leaf_lifetime = Duration::from_secs(5);
    let ca = CertificateAuthority::generate(config).unwrap();
    let key = KeyPair::generate().unwrap();
    let csr_pem = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let issued = ca.sign_csr_pem(&id("api"), &csr_pem).unwrap();
    let lifetime = issued.not_after.duration_since(issued.not_before).unwrap();
    assert!(lifetime <= Duration::from_secs(6), "{lifetime:?}");
    assert!(issued
        .chain_pem()
        .starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn refuses_what_it_must_and_only_that() {
    let ca = ca();
    let (_key, csr) = greedy_csr();
    // Another trust domain.
    let foreign = Identity::new("evil.example", "default", "web");
    assert!(matches!(
        ca.sign_csr_der(&foreign, &csr),
        Err(CaError::WrongTrustDomain { .. })
    ));
    // Garbage, and a CSR whose signature does not match its content.
    assert!(matches!(
        ca.sign_csr_der(&id("web"), b"not a csr"),
        Err(CaError::BadCsr(_))
    ));
    let mut tampered = csr.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert!(matches!(
        ca.sign_csr_der(&id("web"), &tampered),
        Err(CaError::BadCsr(_))
    ));
    // An inverted validity.
    let now = SystemTime::now();
    assert!(matches!(
        ca.sign_csr_with_validity(&id("web"), &csr, now, now - Duration::from_secs(1)),
        Err(CaError::BadValidity)
    ));
    // Everything else in the trust domain is signed.
    for sa in ["web", "db", "a.b-c_d"] {
        ca.sign_csr_der(&id(sa), &csr).unwrap();
    }
    ca.sign_csr_der(&Identity::new("cluster.local", "other-ns", "default"), &csr)
        .unwrap();
}

#[test]
fn persists_root_with_private_key_mode_0600_and_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca");
    let first =
        CertificateAuthority::load_or_generate(&path, CaConfig::new("cluster.local")).unwrap();
    let mode = std::fs::metadata(path.join(persist::ROOT_KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let second =
        CertificateAuthority::load_or_generate(&path, CaConfig::new("cluster.local")).unwrap();
    assert_eq!(first.root_certificate(), second.root_certificate());
    // A leaf from the reloaded CA verifies against the first one's bundle.
    let (_key, csr) = greedy_csr();
    let issued = second.sign_csr_der(&id("web"), &csr).unwrap();
    let usage = webpki::KeyUsage::client_auth();
    verify_chain(
        &first.trust_bundle(),
        &issued.chain[0],
        &[],
        UnixTime::now(),
        usage,
    )
    .unwrap();
    // Half a CA is an error, not a silent regeneration.
    std::fs::remove_file(path.join(persist::ROOT_CERT_FILE)).unwrap();
    assert!(matches!(
        CertificateAuthority::load_or_generate(&path, CaConfig::new("cluster.local")),
        Err(CaError::Io { .. })
    ));
}

#[test]
fn root_rotation_keeps_old_leaves_valid_during_the_overlap_only() {
    let mut config = CaConfig::new("cluster.local");
    config.root_overlap = Duration::from_secs(3600);
    let ca = CertificateAuthority::generate(config).unwrap();
    let bundle = ca.trust_bundle();
    let (_key, csr) = greedy_csr();
    let old_leaf = ca.sign_csr_der(&id("web"), &csr).unwrap().chain.remove(0);
    let old_root = ca.root_certificate();

    ca.rotate_root().unwrap();
    assert_ne!(ca.root_certificate(), old_root);
    assert_eq!(bundle.len(), 2, "both roots during the overlap");
    let new_leaf = ca.sign_csr_der(&id("web"), &csr).unwrap().chain.remove(0);
    let usage = webpki::KeyUsage::client_auth();

    let now = SystemTime::now();
    verify_chain(&bundle, &old_leaf, &[], unix(now), usage).unwrap();
    verify_chain(&bundle, &new_leaf, &[], unix(now), usage).unwrap();
    // The bundle handed out before the rotation is the same live set: PEM has both roots.
    assert_eq!(
        TrustBundle::from_pem("cluster.local", &bundle.to_pem())
            .unwrap()
            .len(),
        2
    );

    let after_overlap = unix(now + Duration::from_secs(3601));
    assert_eq!(
        verify_chain(&bundle, &old_leaf, &[], after_overlap, usage),
        Err(TlsError::UnknownIssuer)
    );
    verify_chain(&bundle, &new_leaf, &[], after_overlap, usage).unwrap();
}

#[test]
fn bundle_from_pem_rejects_empty_and_garbage() {
    assert!(TrustBundle::from_pem("cluster.local", "").is_err());
    assert!(TrustBundle::from_pem(
        "cluster.local",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    .is_err());
}

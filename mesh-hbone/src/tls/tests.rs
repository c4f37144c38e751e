use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, UnixTime};

use super::*;
use crate::ca::{CaConfig, CertificateAuthority};
use crate::certs::new_key_and_csr;

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "default", sa)
}

fn leaf(
    ca: &CertificateAuthority,
    who: &Identity,
    from: SystemTime,
    to: SystemTime,
) -> CertificateDer<'static> {
    let (_key, csr) = new_key_and_csr(who).unwrap();
    ca.sign_csr_with_validity(who, &csr, from, to)
        .unwrap()
        .chain
        .remove(0)
}

#[test]
fn rejects_expired_not_yet_valid_untrusted_and_foreign_domain() {
    let ca = CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap();
    let bundle = ca.trust_bundle();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let usage = webpki::KeyUsage::client_auth();
    let check =
        |cert: &CertificateDer<'_>| verify_chain(&bundle, cert, &[], UnixTime::now(), usage);

    assert_eq!(
        check(&leaf(&ca, &id("a"), now - 2 * hour, now - hour)),
        Err(TlsError::Expired)
    );
    assert_eq!(
        check(&leaf(&ca, &id("a"), now + hour, now + 2 * hour)),
        Err(TlsError::NotYetValid)
    );

    let other = CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap();
    assert_eq!(
        check(&leaf(&other, &id("a"), now, now + hour)),
        Err(TlsError::UnknownIssuer)
    );

    // A root of another trust domain slipped into our bundle still cannot vouch for its domain.
    let foreign = CertificateAuthority::generate(CaConfig::new("evil.example")).unwrap();
    bundle.add_root(foreign.root_certificate()).unwrap();
    let evil = Identity::new("evil.example", "default", "a");
    assert!(matches!(
        check(&leaf(&foreign, &evil, now, now + hour)),
        Err(TlsError::WrongTrustDomain { .. })
    ));
    // Garbage is a bad certificate, not a panic.
    assert!(matches!(
        check(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
        Err(TlsError::BadCertificate(_))
    ));
}

#[test]
fn error_kinds_survive_the_trip_through_rustls() {
    let wrong = TlsError::WrongIdentity {
        expected: Box::new(id("a")),
        actual: Box::new(id("b")),
    };
    for err in [
        wrong,
        TlsError::Expired,
        TlsError::NotYetValid,
        TlsError::UnknownIssuer,
        TlsError::NoUriSan,
    ] {
        assert_eq!(TlsError::from_rustls(&verify::to_rustls(err.clone())), err);
    }
}

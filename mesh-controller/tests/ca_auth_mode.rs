//! Which node authentication the controller's CA flags select, and which combinations are
//! refused with a clear error instead of silently ignoring a flag.

use std::path::PathBuf;
use std::time::Duration;

use mesh_controller::ca::auth_mode::{OFF, TOKENS};
use mesh_controller::ca::{
    CaAuth, CaAuthError, CaAuthFlags, CaAuthKind, ServiceAccount, TokenReviewOptions,
};

fn tokens_file() -> Option<PathBuf> {
    Some(PathBuf::from("/etc/mesh/bootstrap-tokens"))
}

#[test]
fn defaults_follow_the_sources() {
    // Nothing: no certificate service.
    assert_eq!(CaAuthFlags::default().resolve(), Ok(CaAuth::Off));
    // Bootstrap tokens win, with or without Kubernetes.
    for kubernetes in [false, true] {
        let flags = CaAuthFlags {
            bootstrap_tokens: tokens_file(),
            kubernetes,
            ..CaAuthFlags::default()
        };
        assert_eq!(
            flags.resolve(),
            Ok(CaAuth::Tokens(PathBuf::from("/etc/mesh/bootstrap-tokens")))
        );
    }
    // Kubernetes without bootstrap tokens: TokenReview with the defaults.
    let flags = CaAuthFlags {
        kubernetes: true,
        ..CaAuthFlags::default()
    };
    let Ok(CaAuth::Kubernetes(options)) = flags.resolve() else {
        panic!("expected TokenReview");
    };
    assert_eq!(options, TokenReviewOptions::default());
    assert_eq!(options.audience, "mesh-ca");
    assert_eq!(
        options.service_account.username(),
        "system:serviceaccount:mesh-system:mesh-agent"
    );
    assert_eq!(options.cache_ttl, Duration::from_secs(60));
}

#[test]
fn kubernetes_settings_are_applied() {
    let flags = CaAuthFlags {
        ca_auth: Some(CaAuthKind::Kubernetes),
        kubernetes: true,
        token_audience: Some("istio-ca".to_owned()),
        agent_service_account: Some("kube-system/node-agent".parse().expect("sa")),
        token_cache_secs: Some(0),
        ..CaAuthFlags::default()
    };
    let Ok(CaAuth::Kubernetes(options)) = flags.resolve() else {
        panic!("expected TokenReview");
    };
    assert_eq!(options.audience, "istio-ca");
    assert_eq!(
        options.service_account,
        ServiceAccount {
            namespace: "kube-system".to_owned(),
            name: "node-agent".to_owned()
        }
    );
    assert_eq!(options.cache_ttl, Duration::ZERO);
}

#[test]
fn contradictory_flags_are_errors() {
    let sa: ServiceAccount = "mesh-system/mesh-agent".parse().expect("sa");
    let cases = [
        (
            CaAuthFlags {
                ca_auth: Some(CaAuthKind::Tokens),
                kubernetes: true,
                ..CaAuthFlags::default()
            },
            CaAuthError::TokensWithoutFile,
        ),
        (
            CaAuthFlags {
                ca_auth: Some(CaAuthKind::Kubernetes),
                kubernetes: true,
                bootstrap_tokens: tokens_file(),
                ..CaAuthFlags::default()
            },
            CaAuthError::TokensWithKubernetes,
        ),
        (
            CaAuthFlags {
                ca_auth: Some(CaAuthKind::Kubernetes),
                ..CaAuthFlags::default()
            },
            CaAuthError::KubernetesWithoutApi,
        ),
        (
            CaAuthFlags {
                kubernetes: true,
                token_audience: Some(" ".to_owned()),
                ..CaAuthFlags::default()
            },
            CaAuthError::EmptyAudience,
        ),
        (
            CaAuthFlags {
                bootstrap_tokens: tokens_file(),
                agent_service_account: Some(sa),
                ..CaAuthFlags::default()
            },
            CaAuthError::Ignored {
                flag: "--agent-service-account",
                mode: TOKENS,
            },
        ),
        (
            CaAuthFlags {
                token_audience: Some("mesh-ca".to_owned()),
                ..CaAuthFlags::default()
            },
            CaAuthError::Ignored {
                flag: "--ca-token-audience",
                mode: OFF,
            },
        ),
        (
            CaAuthFlags {
                bootstrap_tokens: tokens_file(),
                kubernetes: true,
                token_cache_secs: Some(5),
                ..CaAuthFlags::default()
            },
            CaAuthError::Ignored {
                flag: "--ca-token-cache-secs",
                mode: TOKENS,
            },
        ),
    ];
    for (flags, expected) in cases {
        assert_eq!(flags.resolve(), Err(expected), "{flags:?}");
    }
    // The messages name the flags to fix.
    assert!(CaAuthError::TokensWithoutFile
        .to_string()
        .contains("--bootstrap-tokens"));
    let ignored = CaAuthError::Ignored {
        flag: "--ca-token-audience",
        mode: OFF,
    };
    assert_eq!(
        ignored.to_string(),
        "--ca-token-audience only applies to --ca-auth kubernetes (the certificate service is off)"
    );
    assert!(CaAuthError::KubernetesWithoutApi
        .to_string()
        .contains("--kubernetes"));
}

#[test]
fn ca_auth_values_parse() {
    assert_eq!("tokens".parse(), Ok(CaAuthKind::Tokens));
    assert_eq!("kubernetes".parse(), Ok(CaAuthKind::Kubernetes));
    let err = "k8s".parse::<CaAuthKind>().expect_err("unknown value");
    assert!(err.contains("tokens or kubernetes"), "{err}");
}

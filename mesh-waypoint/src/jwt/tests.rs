//! JWT verification with real keys: an EC P-256 and an RSA 2048 key pair generated per test run,
//! their key set as the model carries it, tokens signed with `jsonwebtoken`.

use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mesh_common::model::{
    ClaimToHeader, JwtHeader, JwtRule, PolicyTargetRef, RequestAuthentication,
};
use serde_json::{json, Value};

use super::*;
use crate::testdata::{self, Req};

const REVIEWS: &str = "10.96.0.20:9080";
const RATINGS: &str = "10.96.0.30:9080";
const ISSUER: &str = "https://issuer.example";

/// Test support: key pairs, their JWKS, and tokens signed with them. An e2e test can do the
/// same: generate the keys with `rcgen`, write `Signer::jwks()` into a file named by a
/// `file://` `jwksUri` (or inline as `jwks`), and send `Authorization: Bearer <token>`.
pub(crate) struct Signer {
    ec: EncodingKey,
    rsa: EncodingKey,
    /// Another EC key, not in the key set (forged signatures).
    other: EncodingKey,
}

fn ec_key() -> EncodingKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
    EncodingKey::from_ec_der(&pair.serialize_der())
}

impl Signer {
    pub(crate) fn new() -> Signer {
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        Signer {
            ec: ec_key(),
            rsa: EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).expect("RSA PEM"),
            other: ec_key(),
        }
    }

    /// The public keys: `ec` (ES256) and `rsa` (RS256).
    pub(crate) fn jwks(&self) -> String {
        let jwk = |key: &EncodingKey, alg, kid: &str| {
            let mut jwk = Jwk::from_encoding_key(key, alg).expect("jwk");
            jwk.common.key_id = Some(kid.to_owned());
            jwk
        };
        let set = JwkSet {
            keys: vec![
                jwk(&self.ec, Algorithm::ES256, "ec"),
                jwk(&self.rsa, Algorithm::RS256, "rsa"),
            ],
        };
        serde_json::to_string(&set).expect("jwks json")
    }

    /// A token with `claims`, signed by key `kid` (`ec`, `rsa`, or `other`: not in the set,
    /// but named `ec`).
    pub(crate) fn token(&self, kid: &str, claims: &Value) -> String {
        let (key, alg, kid) = match kid {
            "rsa" => (&self.rsa, Algorithm::RS256, "rsa"),
            "other" => (&self.other, Algorithm::ES256, "ec"),
            "unknown" => (&self.ec, Algorithm::ES256, "nope"),
            _ => (&self.ec, Algorithm::ES256, "ec"),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).expect("sign")
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims of a valid token for `alice`, audience `reviews`, with `extra` merged in.
fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISSUER, "sub": "alice", "aud": "reviews", "exp": now() + 3600,
        "groups": ["dev", "admin"], "org": {"team": "books"}, "azp": "web-app"});
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    c
}

fn gateway() -> PolicyTargetRef {
    PolicyTargetRef {
        group: "gateway.networking.k8s.io".to_owned(),
        kind: "Gateway".to_owned(),
        name: "waypoint".to_owned(),
        namespace: "bookinfo".to_owned(),
    }
}

fn service(name: &str) -> PolicyTargetRef {
    PolicyTargetRef {
        group: String::new(),
        kind: "Service".to_owned(),
        name: name.to_owned(),
        namespace: "bookinfo".to_owned(),
    }
}

fn rule(jwks: &str) -> JwtRule {
    JwtRule {
        issuer: ISSUER.to_owned(),
        audiences: vec!["reviews".to_owned(), "ratings".to_owned()],
        jwks: Some(jwks.to_owned()),
        ..JwtRule::default()
    }
}

/// The Bookinfo tables with these request authentications and `policies` (YAML list or empty).
fn table_with(authns: Vec<RequestAuthentication>, policies: &str) -> RouteTable {
    let extra = if policies.is_empty() {
        String::new()
    } else {
        format!("authorizationPolicies:\n{policies}")
    };
    let mut snapshot = testdata::snapshot(&extra);
    snapshot.request_authentications = authns;
    RouteTable::new(
        Arc::new(snapshot),
        "cluster.local",
        ("bookinfo", "waypoint"),
    )
}

fn authn(target: PolicyTargetRef, rules: Vec<JwtRule>) -> RequestAuthentication {
    RequestAuthentication {
        name: "jwt".to_owned(),
        namespace: "bookinfo".to_owned(),
        target_refs: vec![target],
        jwt_rules: rules,
    }
}

/// `anon`, `ok <principal>` or `401`.
fn outcome(
    t: &RouteTable,
    target: &'static str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> String {
    let target = Req::get(target, "/").target_in(t);
    match t.authenticate(&target, headers, query) {
        Ok(Authn { jwt: None, .. }) => "anon".to_owned(),
        Ok(Authn { jwt: Some(j), .. }) => format!("ok {}", j.principal),
        Err(e) => {
            assert_eq!(e.response_parts().1, "Jwt verification fails");
            format!("{}", e.status.as_u16())
        }
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    h
}

#[test]
fn tokens_verify_or_are_refused_with_401() {
    let s = Signer::new();
    let t = table_with(vec![authn(gateway(), vec![rule(&s.jwks())])], "");
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    let ok = "ok https://issuer.example/alice";
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa".to_owned());
        let key = EncodingKey::from_secret(b"the public modulus, say").expect("key");
        jsonwebtoken::encode(&header, &claims(json!({})), &key).expect("sign")
    };
    // (case, headers, expected)
    #[rustfmt::skip]
    let cases: Vec<(&str, HeaderMap, &str)> = vec![
        ("no token: unauthenticated", HeaderMap::new(), "anon"),
        ("another scheme is no token", {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, "Basic YWxpY2U6cHc=".parse().expect("h"));
            h
        }, "anon"),
        ("valid ES256", bearer(&s.token("ec", &claims(json!({})))), ok),
        ("valid RS256", bearer(&s.token("rsa", &claims(json!({})))), ok),
        ("scheme is case-insensitive", {
            let mut h = HeaderMap::new();
            let token = s.token("ec", &claims(json!({})));
            h.insert(http::header::AUTHORIZATION, format!("bearer {token}").parse().expect("h"));
            h
        }, ok),
        ("second accepted audience", bearer(&s.token("ec", &claims(json!({"aud": "ratings"})))), ok),
        ("audience list with an accepted one", bearer(&s.token("ec", &claims(json!({"aud": ["x", "reviews"]})))), ok),
        ("no exp: accepted (as Envoy)", bearer(&s.token("ec", &claims(json!({"exp": null})))), ok),
        ("expired within the leeway", bearer(&s.token("ec", &claims(json!({"exp": now() - 30})))), ok),
        ("expired", bearer(&s.token("ec", &claims(json!({"exp": now() - 3600})))), "401"),
        ("not yet valid", bearer(&s.token("ec", &claims(json!({"nbf": now() + 3600})))), "401"),
        ("wrong issuer", bearer(&s.token("ec", &claims(json!({"iss": "https://evil.example"})))), "401"),
        ("no issuer", bearer(&s.token("ec", &claims(json!({"iss": null})))), "401"),
        ("wrong audience", bearer(&s.token("ec", &claims(json!({"aud": "details"})))), "401"),
        ("no audience", bearer(&s.token("ec", &claims(json!({"aud": null})))), "401"),
        ("bad signature", bearer(&s.token("other", &claims(json!({})))), "401"),
        ("unknown kid", bearer(&s.token("unknown", &claims(json!({})))), "401"),
        ("HS256 against a public key", bearer(&hs256), "401"),
        ("malformed", bearer("not.a.jwt"), "401"),
        ("alg none", bearer("eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIn0."), "401"),
        ("tampered payload", {
            let token = s.token("ec", &claims(json!({})));
            let forged = base64url(&claims(json!({"sub": "root"})));
            let parts: Vec<&str> = token.split('.').collect();
            bearer(&format!("{}.{forged}.{}", parts[0], parts[2]))
        }, "401"),
    ];
    for (case, headers, want) in cases {
        assert_eq!(outcome(&t, REVIEWS, &headers, None), want, "{case}");
    }
}

fn base64url(v: &Value) -> String {
    // The payload segment of an unsigned token with these claims.
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        v,
        &EncodingKey::from_secret(b"x").expect("key"),
    )
    .expect("encode");
    token.split('.').nth(1).unwrap_or_default().to_owned()
}

#[test]
fn rules_apply_by_target_and_locations_are_configurable() {
    let s = Signer::new();
    let token = s.token("ec", &claims(json!({})));
    let custom = JwtRule {
        from_headers: vec![JwtHeader {
            name: "x-token".to_owned(),
            prefix: String::new(),
        }],
        from_params: vec!["access_token".to_owned()],
        from_cookies: vec!["session".to_owned()],
        ..rule(&s.jwks())
    };
    let t = table_with(vec![authn(service("ratings"), vec![custom])], "");
    let header = |name: &str, value: String| {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
        h
    };
    let ok = "ok https://issuer.example/alice";
    let query = format!("a=1&access_token={token}");
    // (case, target, headers, query, expected)
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, HeaderMap, Option<&str>, &str)> = vec![
        ("another service: no rule applies, a bad token passes", REVIEWS, bearer("garbage"), None, "anon"),
        ("custom header", RATINGS, header("x-token", token.clone()), None, ok),
        ("query parameter", RATINGS, HeaderMap::new(), Some(&query), ok),
        ("cookie", RATINGS, header("cookie", format!("a=b; session={token}")), None, ok),
        ("the default location is not read when others are given", RATINGS, bearer("garbage"), None, "anon"),
        ("bad token in the custom header", RATINGS, header("x-token", "garbage".to_owned()), None, "401"),
        ("the pod address is authenticated as its services", "10.1.0.30:9081", header("x-token", "garbage".to_owned()), None, "401"),
    ];
    for (case, target, headers, query, want) in cases {
        assert_eq!(outcome(&t, target, &headers, query), want, "{case}");
    }
}

#[test]
fn two_issuers_each_verify_their_own_tokens() {
    let s = Signer::new();
    let other = JwtRule {
        issuer: "other-issuer".to_owned(),
        audiences: vec![],
        ..rule(&s.jwks())
    };
    let t = table_with(vec![authn(gateway(), vec![rule(&s.jwks()), other])], "");
    let token = |c| bearer(&s.token("ec", &claims(c)));
    assert_eq!(
        outcome(&t, REVIEWS, &token(json!({})), None),
        "ok https://issuer.example/alice"
    );
    assert_eq!(
        outcome(
            &t,
            REVIEWS,
            &token(json!({"iss": "other-issuer", "aud": "any"})),
            None
        ),
        "ok other-issuer/alice"
    );
    assert_eq!(
        outcome(&t, REVIEWS, &token(json!({"iss": "third"})), None),
        "401"
    );
}

#[test]
fn header_changes_of_a_verified_token() {
    let s = Signer::new();
    let token = s.token("ec", &claims(json!({})));
    let outputs = JwtRule {
        output_payload_to_header: Some("x-jwt-payload".to_owned()),
        output_claim_to_headers: vec![
            ClaimToHeader {
                header: "x-sub".to_owned(),
                claim: "sub".to_owned(),
            },
            ClaimToHeader {
                header: "x-groups".to_owned(),
                claim: "groups".to_owned(),
            },
        ],
        ..rule(&s.jwks())
    };
    let forwarding = JwtRule {
        forward_original_token: true,
        ..rule(&s.jwks())
    };
    let apply = |rule: JwtRule, mut headers: HeaderMap| {
        let t = table_with(vec![authn(gateway(), vec![rule])], "");
        let target = Req::get(REVIEWS, "/").target_in(&t);
        let authn = t
            .authenticate(&target, &headers, None)
            .expect("authenticated");
        authn.apply(&mut headers);
        let mut out: Vec<String> = headers
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
            .collect();
        out.sort();
        out
    };
    let payload = token.split('.').nth(1).expect("payload");
    let mut spoofed = bearer(&token);
    spoofed.insert("x-sub", "root".parse().expect("h"));
    assert_eq!(
        apply(outputs.clone(), spoofed),
        [
            "x-groups=dev,admin".to_owned(),
            format!("x-jwt-payload={payload}"),
            "x-sub=alice".to_owned(),
        ],
        "token removed, outputs set, the client's x-sub replaced"
    );
    let mut anonymous = HeaderMap::new();
    anonymous.insert("x-sub", "root".parse().expect("h"));
    assert_eq!(
        apply(outputs, anonymous),
        Vec::<String>::new(),
        "without a token, an output header the client sent is removed"
    );
    assert_eq!(
        apply(forwarding, bearer(&token)),
        [format!("authorization=Bearer {token}")],
        "forwardOriginalToken keeps the token"
    );
}

#[test]
fn key_sets_from_files_and_urls() {
    let s = Signer::new();
    let path = std::env::temp_dir().join(format!("mesh-waypoint-jwks-{}.json", std::process::id()));
    std::fs::write(&path, s.jwks()).expect("write jwks");
    let from = |uri: String| JwtRule {
        jwks: None,
        jwks_uri: Some(uri),
        ..rule("")
    };
    let token = bearer(&s.token("rsa", &claims(json!({}))));
    let file = table_with(
        vec![authn(
            gateway(),
            vec![from(format!("file://{}", path.display()))],
        )],
        "",
    );
    assert!(file.warnings().is_empty(), "{:?}", file.warnings());
    assert_eq!(
        outcome(&file, REVIEWS, &token, None),
        "ok https://issuer.example/alice"
    );
    let _ = std::fs::remove_file(&path);
    // (case, uri, warning)
    let cases = [
        (
            "missing file",
            format!("file://{}", path.display()),
            "No such file",
        ),
        (
            "http: not fetched",
            "http://keys.bookinfo:8080/jwks".to_owned(),
            "is not fetched",
        ),
    ];
    for (case, uri, warning) in cases {
        let t = table_with(vec![authn(gateway(), vec![from(uri)])], "");
        let warnings: Vec<String> = t.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{case}: {warnings:?}");
        assert!(
            warnings[0].contains(warning) && warnings[0].contains("its tokens are rejected"),
            "{case}: {warnings:?}"
        );
        assert_eq!(outcome(&t, REVIEWS, &token, None), "401", "{case}");
        assert_eq!(
            outcome(&t, REVIEWS, &HeaderMap::new(), None),
            "anon",
            "{case}"
        );
    }
    let broken = r#"{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"},{"kty":"XYZ"}]}"#;
    let t = table_with(vec![authn(gateway(), vec![rule(broken)])], "");
    assert_eq!(t.warnings().len(), 2, "{:?}", t.warnings());
}

#[test]
fn verified_tokens_feed_authorization() {
    let s = Signer::new();
    const GW: &str =
        "{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint, namespace: bookinfo}";
    let policies = format!(
        r#"- {{name: need-jwt, namespace: bookinfo, targetRefs: [{GW}], action: ALLOW, rules: [{{from: [{{requestPrincipals: ["{ISSUER}/*"]}}]}}]}}
- {{name: admin, namespace: bookinfo, targetRefs: [{GW}], action: DENY, rules: [{{to: [{{paths: ["/admin*"]}}], when: [{{key: "request.auth.claims[groups]", notValues: [admin]}}]}}]}}
"#
    );
    let t = table_with(vec![authn(gateway(), vec![rule(&s.jwks())])], &policies);
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    let decide = |path: &'static str, headers: HeaderMap| -> String {
        let req = Req::get(REVIEWS, path);
        let target = req.target_in(&t);
        let source = req.source_in(&t);
        let authn = match t.authenticate(&target, &headers, None) {
            Ok(a) => a,
            Err(e) => return e.status.as_u16().to_string(),
        };
        let view = crate::route::RequestView {
            method: &req.method,
            path_and_query: path,
            authority: req.host,
            headers: &headers,
            target: &target,
            source: &source,
            jwt: authn.jwt.as_ref(),
        };
        match t.authorize(&view).error() {
            Some(e) => e.status.as_u16().to_string(),
            None => "200".to_owned(),
        }
    };
    let admin = bearer(&s.token("ec", &claims(json!({}))));
    let dev = bearer(&s.token("ec", &claims(json!({"groups": ["dev"]}))));
    // (case, path, headers, status)
    #[rustfmt::skip]
    let cases = [
        ("no token: no request principal, not allowed", "/", HeaderMap::new(), "403"),
        ("bad token", "/", bearer("x.y.z"), "401"),
        ("token: allowed", "/", dev.clone(), "200"),
        ("admin path without the admin group", "/admin", dev, "403"),
        ("admin path with it", "/admin", admin, "200"),
    ];
    for (case, path, headers, want) in cases {
        assert_eq!(decide(path, headers), want, "{case}");
    }
}

#[test]
fn a_fetched_key_set_applies_once_the_table_is_rebuilt() {
    let s = Signer::new();
    let uri = "http://keys.bookinfo:8080/jwks";
    let state = crate::state::State::new(crate::config::Instance {
        namespace: "bookinfo".to_owned(),
        name: "waypoint".to_owned(),
        identity: mesh_common::identity::Identity::new("cluster.local", "bookinfo", "waypoint"),
    });
    let mut snapshot = testdata::snapshot("");
    snapshot.version = "1".to_owned();
    snapshot.request_authentications = vec![authn(
        gateway(),
        vec![JwtRule {
            jwks: None,
            jwks_uri: Some(uri.to_owned()),
            ..rule("")
        }],
    )];
    let token = bearer(&s.token("ec", &claims(json!({}))));
    state.apply(Arc::new(snapshot));
    assert_eq!(
        outcome(&state.table(), REVIEWS, &token, None),
        "401",
        "not fetched yet"
    );
    assert!(state.key_sets().put(uri, &s.jwks()));
    state.reapply();
    assert!(
        state.table().warnings().is_empty(),
        "{:?}",
        state.table().warnings()
    );
    assert_eq!(
        outcome(&state.table(), REVIEWS, &token, None),
        "ok https://issuer.example/alice"
    );
}

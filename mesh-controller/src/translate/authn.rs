//! Istio RequestAuthentication in the compact model: the JWT rules waypoints apply, for the
//! policies attached with `targetRefs` (a waypoint's Gateway, the class `istio-waypoint`, or a
//! Service). One with a `selector` (or neither) is for sidecars and gateways: reported and not
//! applied, as the mesh applies RequestAuthentication at waypoints only. Key sets: `jwks` inline,
//! a `file://` URI the waypoint reads, or an in-mesh `http://` URL the waypoint fetches (the
//! controller fetches nothing); an `https://` URL is kept and reported (not fetched by this
//! release, so the issuer's tokens are rejected with 401: fail closed).

use mesh_common::model as m;

use super::field::opt_duration;
use super::security::{target_refs, Field};
use super::Context;
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::istio_security as sec;

/// Why a policy without targets is not applied.
pub(super) const WAYPOINT_ONLY: &str = "not applied: the mesh applies RequestAuthentication at waypoints only (attach it with targetRefs to a waypoint's Gateway or to a Service that uses a waypoint)";

pub(super) fn request_authentications(cx: &mut Context<'_>) -> Vec<m::RequestAuthentication> {
    let mut out = Vec::new();
    for (key, object) in cx.objects(Kind::RequestAuthentication) {
        let Object::RequestAuthentication(ra) = &*object else {
            continue;
        };
        let mut warnings = Vec::new();
        match request_authentication(&key, &ra.spec, &mut warnings) {
            Ok(Some(policy)) => out.push(policy),
            Ok(None) => {}
            Err((path, message)) => cx.error(&key, &path, message),
        }
        for (path, message) in warnings {
            cx.warn(&key, &path, message);
        }
    }
    out
}

fn request_authentication(
    key: &ObjectKey,
    spec: &sec::RequestAuthenticationSpec,
    warnings: &mut Vec<(String, String)>,
) -> Field<Option<m::RequestAuthentication>> {
    let targets = target_refs(key, spec.target_ref.as_ref(), &spec.target_refs)?;
    if spec.selector.is_some() && !targets.is_empty() {
        return Err((
            "spec.selector".to_owned(),
            "selector and targetRefs are mutually exclusive".to_owned(),
        ));
    }
    let mut jwt_rules = Vec::new();
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        jwt_rules.push(jwt_rule(&format!("spec.jwtRules[{i}]"), rule, warnings)?);
    }
    if targets.is_empty() {
        let path = if spec.selector.is_some() {
            "spec.selector"
        } else {
            "spec.targetRefs"
        };
        warnings.push((path.to_owned(), WAYPOINT_ONLY.to_owned()));
        return Ok(None);
    }
    Ok(Some(m::RequestAuthentication {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        target_refs: targets,
        jwt_rules,
    }))
}

/// An HTTP header name (RFC 9110 token), lower-cased as HTTP/2 carries it.
fn header_name(path: &str, name: &str) -> Field<String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err((path.to_owned(), format!("invalid header name {name:?}")));
    }
    Ok(name.to_ascii_lowercase())
}

fn jwt_rule(
    path: &str,
    rule: &sec::JwtRule,
    warnings: &mut Vec<(String, String)>,
) -> Field<m::JwtRule> {
    if rule.issuer.is_empty() {
        return Err((format!("{path}.issuer"), "must not be empty".to_owned()));
    }
    for (j, aud) in rule.audiences.iter().enumerate() {
        if aud.is_empty() {
            return Err((
                format!("{path}.audiences[{j}]"),
                "must not be empty".to_owned(),
            ));
        }
    }
    if let Some(jwks) = &rule.jwks {
        check_jwks(jwks).map_err(|e| (format!("{path}.jwks"), e))?;
    }
    let issuer = &rule.issuer;
    match (&rule.jwks, &rule.jwks_uri) {
        (Some(_), Some(_)) => warnings.push((
            format!("{path}.jwksUri"),
            "not used: jwks is given inline".to_owned(),
        )),
        (None, Some(uri)) => {
            if let Some(file) = uri.strip_prefix("file://") {
                if !file.starts_with('/') {
                    return Err((
                        format!("{path}.jwksUri"),
                        format!("{uri:?}: a file:// URI needs an absolute path"),
                    ));
                }
            } else if uri.starts_with("https://") {
                warnings.push((
                    format!("{path}.jwksUri"),
                    format!("{uri:?}: https is not fetched yet: tokens of issuer {issuer:?} are rejected (401); give the key set in jwks, a file:// URI or an in-mesh http:// URL"),
                ));
            } else if !uri.starts_with("http://") {
                return Err((
                    format!("{path}.jwksUri"),
                    format!("{uri:?}: expected an http://, https:// or file:// URI"),
                ));
            }
        }
        (None, None) => warnings.push((
            format!("{path}.jwksUri"),
            format!("neither jwks nor jwksUri given, and OpenID discovery is not supported: tokens of issuer {issuer:?} are rejected (401)"),
        )),
        (Some(_), None) => {}
    }
    let mut from_headers = Vec::new();
    for (j, h) in rule.from_headers.iter().enumerate() {
        from_headers.push(m::JwtHeader {
            name: header_name(&format!("{path}.fromHeaders[{j}].name"), &h.name)?,
            prefix: h.prefix.clone().unwrap_or_default(),
        });
    }
    for (field, items) in [
        ("fromParams", &rule.from_params),
        ("fromCookies", &rule.from_cookies),
    ] {
        if let Some(j) = items.iter().position(String::is_empty) {
            return Err((
                format!("{path}.{field}[{j}]"),
                "must not be empty".to_owned(),
            ));
        }
    }
    let output_payload_to_header = rule
        .output_payload_to_header
        .as_deref()
        .map(|h| header_name(&format!("{path}.outputPayloadToHeader"), h))
        .transpose()?;
    let mut output_claim_to_headers = Vec::new();
    for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
        let at = format!("{path}.outputClaimToHeaders[{j}]");
        if c.claim.is_empty() {
            return Err((format!("{at}.claim"), "must not be empty".to_owned()));
        }
        output_claim_to_headers.push(m::ClaimToHeader {
            header: header_name(&format!("{at}.header"), &c.header)?,
            claim: c.claim.clone(),
        });
    }
    Ok(m::JwtRule {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        jwks: rule.jwks.clone(),
        jwks_uri: rule.jwks_uri.clone(),
        from_headers,
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        output_payload_to_header,
        forward_original_token: rule.forward_original_token.unwrap_or(false),
        output_claim_to_headers,
        timeout_ms: opt_duration(&format!("{path}.timeout"), rule.timeout.as_ref())?,
    })
}

/// A key set must be a JSON object with a `keys` list of objects (the waypoint checks each key).
fn check_jwks(text: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = value
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("not a JSON Web Key Set (no \"keys\" list)")?;
    if keys.iter().any(|k| !k.is_object()) {
        return Err("every entry of \"keys\" must be an object".to_owned());
    }
    Ok(())
}

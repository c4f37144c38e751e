//! JWT request authentication at the waypoint (Istio RequestAuthentication, Envoy's
//! `jwt_authn`): the rules attached to this waypoint's Gateway, the class `istio-waypoint`, or
//! the target Service, indexed once per model with their key sets parsed. A request without a
//! token passes unauthenticated (Istio's semantics: policies decide); a token that does not
//! verify (malformed, bad signature, no matching key, expired, not yet valid, an issuer or
//! audience not accepted) is refused with 401 `Jwt verification fails`. A verified token gives
//! the request principal `<iss>/<sub>` and the claims authorization reads.
//!
//! Key sets: `jwks` inline, a `file://` URI read when the model is applied (at most
//! [`MAX_JWKS_BYTES`]), or an in-mesh `http://` URL the waypoint fetches itself
//! ([`crate::jwks_fetch`]); until that set is fetched, and for an `https://` URL (not fetched by
//! this release), the issuer's tokens never verify (fail closed, with a warning).

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use mesh_common::model::{JwtRule, Snapshot, WAYPOINT_CLASS};
use serde_json::{Map, Value};

use crate::error::ProxyError;
use crate::rules::Warning;
use crate::table::{RouteTable, ServiceKey, Target};

/// Largest key set file read.
pub const MAX_JWKS_BYTES: u64 = 256 * 1024;
/// Clock skew allowed on `exp` and `nbf` (Envoy's default).
pub const LEEWAY_SECS: u64 = 60;

/// A verified token.
#[derive(Clone, Debug, PartialEq)]
pub struct Jwt {
    /// `<iss>/<sub>`, what `requestPrincipals` match.
    pub principal: String,
    /// The payload's claims.
    pub claims: Map<String, Value>,
}

impl Jwt {
    /// A token with these claims (principal from `iss` and `sub`).
    pub fn new(claims: Map<String, Value>) -> Jwt {
        let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default();
        Jwt {
            principal: format!("{}/{}", text("iss"), text("sub")),
            claims,
        }
    }

    /// The claim at `path` (`["a", "b"]` is `claims[a][b]`).
    pub fn claim(&self, path: &[&str]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.claims.get(*first)?;
        for segment in rest {
            value = value.get(*segment)?;
        }
        Some(value)
    }

    /// A claim as strings: a string is one, a list its string (and scalar) items, a number or
    /// boolean its text; anything else (or nothing) none.
    pub fn claim_strings(&self, path: &[&str]) -> Vec<String> {
        match self.claim(path) {
            Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
            Some(v) => scalar(v).into_iter().collect(),
            None => Vec::new(),
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What authentication decided for a request: the verified token, if any, and the header
/// changes to make before the request goes on.
#[derive(Clone, Debug, Default)]
pub struct Authn {
    /// The verified token; `None`: unauthenticated (no token, or no rule applies).
    pub jwt: Option<Jwt>,
    /// Headers removed: the token's (unless forwarded) and the output headers as the client
    /// sent them (a client never sets what the waypoint vouches for).
    pub remove: Vec<HeaderName>,
    /// Headers set from the verified token.
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl Authn {
    /// Applies the header changes.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Where a rule reads tokens.
#[derive(Debug)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// One public key of a key set.
struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// A JWT rule ready to verify with.
#[derive(Debug)]
struct Rule {
    /// `namespace/name` of its policy, for the log.
    policy: String,
    issuer: String,
    audiences: Vec<String>,
    keys: Vec<Key>,
    locations: Vec<Location>,
    forward: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
}

/// The JWT rules that apply at this waypoint, by what their policies target.
#[derive(Debug, Default)]
pub(crate) struct JwtIndex {
    rules: Vec<Rule>,
    /// Rules (indexes into `rules`) of policies attached to this waypoint.
    waypoint: Vec<usize>,
    /// Rules of policies attached to a service.
    by_service: HashMap<ServiceKey, Vec<usize>>,
}

/// The key sets fetched from `http://` URLs, by URL.
pub type Fetched<'a> = &'a dyn Fn(&str) -> Option<std::sync::Arc<str>>;

/// Reads a key set (`jwks` inline, else a `file://` URI, else a fetched `http://` one) as JSON
/// text.
fn jwks_text(rule: &JwtRule, fetched: Fetched<'_>) -> Result<String, String> {
    if let Some(inline) = &rule.jwks {
        return Ok(inline.clone());
    }
    let Some(uri) = &rule.jwks_uri else {
        return Err("no jwks or jwksUri".to_owned());
    };
    if uri.starts_with("http://") {
        return fetched(uri)
            .map(|text| text.to_string())
            .ok_or_else(|| format!("jwksUri {uri:?} is not fetched (yet)"));
    }
    let Some(path) = uri.strip_prefix("file://") else {
        return Err(format!("jwksUri {uri:?} is not fetched by this release"));
    };
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("reading {path}: {e}"))?;
    let mut text = String::new();
    file.take(MAX_JWKS_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading {path}: {e}"))?;
    if text.len() as u64 > MAX_JWKS_BYTES {
        return Err(format!("{path} is larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(text)
}

/// Parses a key set; keys that cannot be used are reported and left out.
fn parse_jwks(text: &str, warn: &mut dyn FnMut(String)) -> Result<Vec<Key>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("key set: {e}"))?;
    let entries = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("key set has no \"keys\" list")?;
    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let parsed = serde_json::from_value::<Jwk>(entry.clone())
            .map_err(|e| e.to_string())
            .and_then(|jwk| key(&jwk));
        match parsed {
            Ok(k) => keys.push(k),
            Err(e) => warn(format!("key {i} of the key set is not used: {e}")),
        }
    }
    Ok(keys)
}

fn key(jwk: &Jwk) -> Result<Key, String> {
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
        AlgorithmParameters::OctetKey(_) => AlgorithmFamily::Hmac,
        AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
        _ => return Err("unsupported key type".to_owned()),
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(
            a.to_string()
                .parse::<Algorithm>()
                .map_err(|_| format!("unsupported algorithm {a}"))?,
        ),
    };
    if alg.is_some_and(|a| a.family() != family) {
        return Err("algorithm and key type do not match".to_owned());
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        family,
        key,
    })
}

fn header_name(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.as_bytes()).ok()
}

fn compile(
    policy: String,
    rule: &JwtRule,
    fetched: Fetched<'_>,
    warn: &mut dyn FnMut(String),
) -> Rule {
    let keys = match jwks_text(rule, fetched).and_then(|text| parse_jwks(&text, &mut *warn)) {
        Ok(keys) => keys,
        Err(e) => {
            warn(format!(
                "issuer {:?}: {e}; its tokens are rejected",
                rule.issuer
            ));
            Vec::new()
        }
    };
    let mut locations = Vec::new();
    for h in &rule.from_headers {
        match header_name(&h.name) {
            Some(name) => locations.push(Location::Header {
                name,
                prefix: h.prefix.clone(),
            }),
            None => warn(format!("fromHeaders {:?} is no header name", h.name)),
        }
    }
    locations.extend(rule.from_params.iter().cloned().map(Location::Param));
    locations.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
    if rule.from_headers.is_empty() && rule.from_params.is_empty() && rule.from_cookies.is_empty() {
        locations.push(Location::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".to_owned(),
        });
    }
    let mut claim_headers = Vec::new();
    for c in &rule.output_claim_to_headers {
        match header_name(&c.header) {
            Some(name) => claim_headers.push((name, c.claim.clone())),
            None => warn(format!(
                "outputClaimToHeaders {:?} is no header name",
                c.header
            )),
        }
    }
    let payload_header = rule.output_payload_to_header.as_deref().and_then(|h| {
        let name = header_name(h);
        if name.is_none() {
            warn(format!("outputPayloadToHeader {h:?} is no header name"));
        }
        name
    });
    Rule {
        policy,
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        keys,
        locations,
        forward: rule.forward_original_token,
        payload_header,
        claim_headers,
    }
}

impl JwtIndex {
    pub(crate) fn new(
        snapshot: &Snapshot,
        waypoint: (&str, &str),
        fetched: Fetched<'_>,
        warn: &mut dyn FnMut(Warning),
    ) -> JwtIndex {
        let mut out = JwtIndex::default();
        for policy in &snapshot.request_authentications {
            let name = format!("{}/{}", policy.namespace, policy.name);
            let first = out.rules.len();
            for rule in &policy.jwt_rules {
                let mut report = |message: String| {
                    warn(Warning {
                        object: format!("request authentication {name}"),
                        message,
                    })
                };
                out.rules
                    .push(compile(name.clone(), rule, fetched, &mut report));
            }
            let ids = first..out.rules.len();
            for t in &policy.target_refs {
                match t.kind.as_str() {
                    "Gateway" if t.namespace == waypoint.0 && t.name == waypoint.1 => {
                        out.waypoint.extend(ids.clone())
                    }
                    "GatewayClass" if t.name == WAYPOINT_CLASS => out.waypoint.extend(ids.clone()),
                    "Service" | "ServiceEntry" => {
                        let key = ServiceKey {
                            namespace: t.namespace.clone(),
                            name: t.name.clone(),
                        };
                        out.by_service.entry(key).or_default().extend(ids.clone());
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

/// A token found in one of a rule's locations.
struct Found<'a> {
    rule: &'a Rule,
    header: Option<&'a HeaderName>,
    token: &'a str,
}

fn extract<'a>(rule: &'a Rule, headers: &'a HeaderMap, query: Option<&'a str>) -> Vec<Found<'a>> {
    let mut out = Vec::new();
    for location in &rule.locations {
        match location {
            Location::Header { name, prefix } => {
                for value in headers.get_all(name) {
                    let Ok(value) = value.to_str() else { continue };
                    let token = if prefix.is_empty() {
                        Some(value)
                    } else {
                        value
                            .get(..prefix.len())
                            .filter(|p| p.eq_ignore_ascii_case(prefix))
                            .map(|_| &value[prefix.len()..])
                    };
                    if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
                        out.push(Found {
                            rule,
                            header: Some(name),
                            token,
                        });
                    }
                }
            }
            Location::Param(param) => {
                let pairs = query.into_iter().flat_map(|q| q.split('&'));
                for (k, v) in pairs.filter_map(|p| p.split_once('=')) {
                    if k == param && !v.is_empty() {
                        out.push(Found {
                            rule,
                            header: None,
                            token: v,
                        });
                    }
                }
            }
            Location::Cookie(cookie) => {
                let values = headers.get_all(http::header::COOKIE).into_iter();
                let pairs = values
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .filter_map(|p| p.trim().split_once('='));
                for (k, v) in pairs {
                    if k == cookie && !v.is_empty() {
                        out.push(Found {
                            rule,
                            header: None,
                            token: v,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Why a token was refused (logged; the client sees only `Jwt verification fails`).
fn verify(rule: &Rule, token: &str) -> Result<Map<String, Value>, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed: {e}"))?;
    let unverified = jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token)
        .map_err(|e| format!("malformed: {e}"))?;
    let issuer = unverified.get("iss").and_then(Value::as_str);
    if issuer != Some(rule.issuer.as_str()) {
        return Err(format!("issuer {issuer:?} is not {:?}", rule.issuer));
    }
    let alg = header.alg;
    let candidates = rule.keys.iter().filter(|k| {
        let kid = match (&header.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        kid && k.alg.is_none_or(|a| a == alg) && k.family == alg.family()
    });
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.required_spec_claims.clear();
    validation.set_issuer(&[&rule.issuer]);
    if rule.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&rule.audiences);
        validation.required_spec_claims.insert("aud".to_owned());
    }
    let mut last = None;
    for k in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => last = Some(e.to_string()),
        }
    }
    Err(last.unwrap_or_else(|| {
        format!(
            "no key of issuer {:?} matches kid {:?} and alg {alg:?}",
            rule.issuer, header.kid
        )
    }))
}

/// The header changes of a verified token.
fn outputs(found: &Found<'_>, jwt: &Jwt, authn: &mut Authn) {
    let rule = found.rule;
    if !rule.forward {
        if let Some(name) = found.header {
            authn.remove.push(name.clone());
        }
    }
    if let Some(name) = &rule.payload_header {
        let payload = found.token.split('.').nth(1).unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(payload) {
            authn.set.push((name.clone(), value));
        }
    }
    for (name, claim) in &rule.claim_headers {
        let text = jwt.claim_strings(&[claim]).join(",");
        if text.is_empty() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&text) {
            authn.set.push((name.clone(), value));
        }
    }
}

impl RouteTable {
    /// Authenticates a request to `target`: `Ok` with the verified token (or none: no token,
    /// or no rule applies) and the header changes; `Err` (401) when a token is present and
    /// none verifies with the rules that apply.
    pub fn authenticate(
        &self,
        target: &Target,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Authn, ProxyError> {
        let index = &self.jwt;
        if index.rules.is_empty() {
            return Ok(Authn::default());
        }
        let ids = self.attached(&index.waypoint, &index.by_service, target);
        let mut authn = Authn::default();
        if ids.is_empty() {
            return Ok(authn);
        }
        let rules: Vec<&Rule> = ids.iter().map(|i| &index.rules[*i]).collect();
        for rule in &rules {
            authn.remove.extend(rule.payload_header.iter().cloned());
            authn
                .remove
                .extend(rule.claim_headers.iter().map(|(h, _)| h.clone()));
        }
        let found: Vec<Found<'_>> = rules
            .iter()
            .flat_map(|r| extract(r, headers, query))
            .collect();
        if found.is_empty() {
            return Ok(authn);
        }
        let mut failures = Vec::new();
        for f in &found {
            match verify(f.rule, f.token) {
                Ok(claims) => {
                    let jwt = Jwt::new(claims);
                    outputs(f, &jwt, &mut authn);
                    authn.jwt = Some(jwt);
                    return Ok(authn);
                }
                Err(e) => failures.push(format!("{}: {e}", f.rule.policy)),
            }
        }
        Err(ProxyError::jwt_verification_failed(failures.join("; ")))
    }
}

#[cfg(test)]
pub(crate) mod tests;

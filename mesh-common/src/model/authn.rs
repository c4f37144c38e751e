//! Request authentication in the compact model: JWT rules (from Istio RequestAuthentication)
//! that waypoints apply to the requests of the services and waypoints they are attached to.

use super::PolicyTargetRef;

/// A request authentication policy (from an Istio RequestAuthentication attached with
/// `targetRefs`; waypoints only).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthentication {
    /// Policy name.
    pub name: String,
    /// Policy namespace.
    pub namespace: String,
    /// Waypoints or services the policy is attached to.
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetRef>,
    /// JWT issuers accepted; a request may carry a token of any of them.
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

/// One accepted JWT issuer and where its tokens and keys are.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtRule {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// Accepted `aud` values; empty: any audience (or none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The JSON Web Key Set inline (JSON text); wins over `jwks_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Where the waypoint reads the key set: `file:///path`, or an in-mesh `http://` URL it
    /// fetches; an `https://` URL is kept but not fetched by this release (tokens of the issuer
    /// are then rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Headers carrying the token; with `from_params` and `from_cookies` all empty, the token is
    /// read from `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters carrying the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies carrying the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Header to set to the verified token's payload (base64url, as Envoy sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Keep the token in the request sent upstream (default: its header is removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    /// Headers to set to claims of the verified token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Timeout for fetching the key set, milliseconds (when it is fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A header a token is read from, with the prefix before the token (e.g. `Bearer `).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Prefix before the token; empty: the whole value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// A claim copied to a request header.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimToHeader {
    /// Header name.
    pub header: String,
    /// Claim name (top level).
    pub claim: String,
}

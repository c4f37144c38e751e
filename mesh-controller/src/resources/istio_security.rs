//! `security.istio.io/v1`: AuthorizationPolicy, PeerAuthentication and RequestAuthentication,
//! with Istio's field names.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::istio_networking::spec_type;
use super::{PolicyTargetReference, WorkloadSelector};

/// AuthorizationPolicy: ALLOW/DENY/AUDIT/CUSTOM rules for workloads or waypoints.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "AuthorizationPolicy",
    plural = "authorizationpolicies",
    shortname = "ap",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Workloads the policy applies to; absent selects the whole namespace.
    pub selector: Option<WorkloadSelector>,
    /// Single attachment target (waypoint Gateway or Service).
    pub target_ref: Option<PolicyTargetReference>,
    /// Attachment targets.
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Rules; any may match.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// ALLOW (default), DENY, AUDIT or CUSTOM.
    pub action: Option<Action>,
    /// Extension provider for CUSTOM.
    pub provider: Option<Provider>,
}

/// Policy action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow matching requests.
    Allow,
    /// Deny matching requests.
    Deny,
    /// Audit matching requests.
    Audit,
    /// Delegate to an external authorizer.
    Custom,
}

spec_type! {
    /// CUSTOM action provider.
    pub struct Provider {
        /// Provider name from the mesh config.
        pub name: String,
    }
}

spec_type! {
    /// A rule: from, to and when must all match.
    pub struct Rule {
        /// Sources.
        #[serde(default)]
        pub from: Vec<RuleFrom>,
        /// Operations.
        #[serde(default)]
        pub to: Vec<RuleTo>,
        /// Conditions.
        #[serde(default)]
        pub when: Vec<Condition>,
    }
}

spec_type! {
    /// `from: [{source: ...}]`.
    pub struct RuleFrom {
        /// The source.
        pub source: Source,
    }
}

spec_type! {
    /// `to: [{operation: ...}]`.
    pub struct RuleTo {
        /// The operation.
        pub operation: Operation,
    }
}

spec_type! {
    /// Source attributes; all given fields must match.
    pub struct Source {
        /// Peer identities (`<trust-domain>/ns/<ns>/sa/<sa>`).
        #[serde(default)]
        pub principals: Vec<String>,
        /// Negated principals.
        #[serde(default)]
        pub not_principals: Vec<String>,
        /// JWT principals.
        #[serde(default)]
        pub request_principals: Vec<String>,
        /// Negated JWT principals.
        #[serde(default)]
        pub not_request_principals: Vec<String>,
        /// Source namespaces.
        #[serde(default)]
        pub namespaces: Vec<String>,
        /// Negated namespaces.
        #[serde(default)]
        pub not_namespaces: Vec<String>,
        /// Source IPs/CIDRs.
        #[serde(default)]
        pub ip_blocks: Vec<String>,
        /// Negated IPs/CIDRs.
        #[serde(default)]
        pub not_ip_blocks: Vec<String>,
        /// Original client IPs (X-Forwarded-For).
        #[serde(default)]
        pub remote_ip_blocks: Vec<String>,
        /// Negated original client IPs.
        #[serde(default)]
        pub not_remote_ip_blocks: Vec<String>,
        /// Service accounts (`<ns>/<sa>`).
        #[serde(default)]
        pub service_accounts: Vec<String>,
        /// Negated service accounts.
        #[serde(default)]
        pub not_service_accounts: Vec<String>,
    }
}

spec_type! {
    /// Operation attributes; all given fields must match.
    pub struct Operation {
        /// Hosts.
        #[serde(default)]
        pub hosts: Vec<String>,
        /// Negated hosts.
        #[serde(default)]
        pub not_hosts: Vec<String>,
        /// Destination ports, as strings.
        #[serde(default)]
        pub ports: Vec<String>,
        /// Negated ports.
        #[serde(default)]
        pub not_ports: Vec<String>,
        /// Methods.
        #[serde(default)]
        pub methods: Vec<String>,
        /// Negated methods.
        #[serde(default)]
        pub not_methods: Vec<String>,
        /// Paths.
        #[serde(default)]
        pub paths: Vec<String>,
        /// Negated paths.
        #[serde(default)]
        pub not_paths: Vec<String>,
    }
}

spec_type! {
    /// A `when` condition.
    pub struct Condition {
        /// Attribute.
        pub key: String,
        /// Allowed values.
        #[serde(default)]
        pub values: Vec<String>,
        /// Forbidden values.
        #[serde(default)]
        pub not_values: Vec<String>,
    }
}

/// PeerAuthentication: which connections a workload accepts (mTLS mode).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    plural = "peerauthentications",
    shortname = "pa",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Workloads; absent selects the namespace (or the mesh, in the root namespace).
    pub selector: Option<WorkloadSelector>,
    /// Mode for all ports.
    pub mtls: Option<MutualTls>,
    /// Per-port modes, keyed by port number.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

spec_type! {
    /// `mtls: {mode: STRICT}`.
    pub struct MutualTls {
        /// UNSET, DISABLE, PERMISSIVE or STRICT.
        pub mode: Option<MtlsMode>,
    }
}

/// mTLS mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit.
    Unset,
    /// Plaintext.
    Disable,
    /// Both.
    Permissive,
    /// mTLS only.
    Strict,
}

/// RequestAuthentication: which JWTs a workload or waypoint accepts (istio/api
/// `security/v1/request_authentication.proto`).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "RequestAuthentication",
    plural = "requestauthentications",
    shortname = "ra",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// Workloads (sidecars, gateways); the mesh applies RequestAuthentication at waypoints only.
    pub selector: Option<WorkloadSelector>,
    /// Single attachment target (waypoint Gateway or Service).
    pub target_ref: Option<PolicyTargetReference>,
    /// Attachment targets.
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Accepted issuers.
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

spec_type! {
    /// One accepted issuer (`JWTRule`).
    pub struct JwtRule {
        /// The token's `iss`.
        pub issuer: String,
        /// Accepted `aud` values.
        #[serde(default)]
        pub audiences: Vec<String>,
        /// URL of the JSON Web Key Set.
        pub jwks_uri: Option<String>,
        /// The JSON Web Key Set inline.
        pub jwks: Option<String>,
        /// Headers carrying the token.
        #[serde(default)]
        pub from_headers: Vec<JwtHeader>,
        /// Query parameters carrying the token.
        #[serde(default)]
        pub from_params: Vec<String>,
        /// Cookies carrying the token.
        #[serde(default)]
        pub from_cookies: Vec<String>,
        /// Header for the verified payload (base64url).
        pub output_payload_to_header: Option<String>,
        /// Forward the token upstream.
        pub forward_original_token: Option<bool>,
        /// Claims copied to headers.
        #[serde(default)]
        pub output_claim_to_headers: Vec<ClaimToHeader>,
        /// Timeout for fetching the key set (e.g. `5s`).
        pub timeout: Option<String>,
    }
}

spec_type! {
    /// A header carrying the token.
    pub struct JwtHeader {
        /// Header name.
        pub name: String,
        /// Prefix before the token, e.g. `Bearer `.
        pub prefix: Option<String>,
    }
}

spec_type! {
    /// A claim copied to a header.
    pub struct ClaimToHeader {
        /// Header name.
        pub header: String,
        /// Claim name.
        pub claim: String,
    }
}

//! `gateway.networking.k8s.io`: Gateway and HTTPRoute (`v1`), TCPRoute and TLSRoute
//! (experimental), with the Gateway API's field names.
//! A Gateway of class `istio-waypoint` is a waypoint.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::istio_networking::spec_type;
use super::Opaque;

/// The gateway class that makes a Gateway a waypoint.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// Gateway API Gateway (for the mesh: waypoints and ingress).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Class, e.g. `istio-waypoint`.
    pub gateway_class_name: String,
    /// Listeners.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Requested addresses.
    #[serde(default)]
    pub addresses: Vec<Opaque>,
    /// Infrastructure labels/annotations.
    pub infrastructure: Option<Opaque>,
    /// Backend TLS.
    pub backend_tls: Option<Opaque>,
    /// Allowed listener sets.
    pub allowed_listeners: Option<Opaque>,
    /// Gateway-level TLS (frontend validation, backend client certificate).
    pub tls: Option<Opaque>,
    /// Whether routes asking for default gateways attach (`All`, `None`).
    pub default_scope: Option<String>,
}

spec_type! {
    /// A listener.
    pub struct Listener {
        /// Name.
        pub name: String,
        /// Host name.
        pub hostname: Option<String>,
        /// Port.
        pub port: u32,
        /// Protocol, e.g. HTTP, HBONE.
        pub protocol: String,
        /// TLS.
        pub tls: Option<Opaque>,
        /// Which routes may attach.
        pub allowed_routes: Option<Opaque>,
    }
}

/// Gateway API HTTPRoute.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HTTPRouteSpec {
    /// Gateways or Services the route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Host names.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
    /// Attach to the default gateways (`All`, `None`).
    pub use_default_gateways: Option<String>,
}

spec_type! {
    /// A parent (Gateway or Service for mesh routes).
    pub struct ParentReference {
        /// API group (`gateway.networking.k8s.io` or empty for Service).
        pub group: Option<String>,
        /// Kind (Gateway or Service).
        pub kind: Option<String>,
        /// Namespace.
        pub namespace: Option<String>,
        /// Name.
        pub name: String,
        /// Listener name.
        pub section_name: Option<String>,
        /// Port.
        pub port: Option<u32>,
    }
}

spec_type! {
    /// A rule.
    pub struct HttpRouteRule {
        /// Rule name.
        pub name: Option<String>,
        /// Matches.
        #[serde(default)]
        pub matches: Vec<HttpRouteMatch>,
        /// Filters.
        #[serde(default)]
        pub filters: Vec<HttpRouteFilter>,
        /// Backends.
        #[serde(default)]
        pub backend_refs: Vec<HttpBackendRef>,
        /// Timeouts.
        pub timeouts: Option<HttpRouteTimeouts>,
        /// Retries.
        pub retry: Option<HttpRouteRetry>,
        /// Session persistence.
        pub session_persistence: Option<Opaque>,
    }
}

spec_type! {
    /// A match.
    pub struct HttpRouteMatch {
        /// Path.
        pub path: Option<HttpPathMatch>,
        /// Headers.
        #[serde(default)]
        pub headers: Vec<HttpNameMatch>,
        /// Query parameters.
        #[serde(default)]
        pub query_params: Vec<HttpNameMatch>,
        /// Method.
        pub method: Option<String>,
    }
}

spec_type! {
    /// Path match.
    pub struct HttpPathMatch {
        /// Exact, PathPrefix (default) or RegularExpression.
        #[serde(rename = "type")]
        pub match_type: Option<String>,
        /// Value (default `/`).
        pub value: Option<String>,
    }
}

spec_type! {
    /// Header or query parameter match.
    pub struct HttpNameMatch {
        /// Exact (default) or RegularExpression.
        #[serde(rename = "type")]
        pub match_type: Option<String>,
        /// Name.
        pub name: String,
        /// Value.
        pub value: String,
    }
}

spec_type! {
    /// A filter.
    pub struct HttpRouteFilter {
        /// Filter type.
        #[serde(rename = "type")]
        pub filter_type: String,
        /// Request headers.
        pub request_header_modifier: Option<HeaderModifier>,
        /// Response headers.
        pub response_header_modifier: Option<HeaderModifier>,
        /// Mirror.
        pub request_mirror: Option<RequestMirror>,
        /// Redirect.
        pub request_redirect: Option<RequestRedirect>,
        /// Rewrite.
        pub url_rewrite: Option<UrlRewrite>,
        /// CORS.
        pub cors: Option<Opaque>,
        /// External authorization.
        pub external_auth: Option<Opaque>,
        /// Extension.
        pub extension_ref: Option<Opaque>,
    }
}

spec_type! {
    /// Header modifier.
    pub struct HeaderModifier {
        /// Overwrite.
        #[serde(default)]
        pub set: Vec<HttpHeader>,
        /// Append.
        #[serde(default)]
        pub add: Vec<HttpHeader>,
        /// Remove.
        #[serde(default)]
        pub remove: Vec<String>,
    }
}

spec_type! {
    /// A header.
    pub struct HttpHeader {
        /// Name.
        pub name: String,
        /// Value.
        pub value: String,
    }
}

spec_type! {
    /// Mirror.
    pub struct RequestMirror {
        /// Backend.
        pub backend_ref: BackendObjectReference,
        /// Percent.
        pub percent: Option<u32>,
        /// Fraction.
        pub fraction: Option<Opaque>,
    }
}

spec_type! {
    /// Redirect.
    pub struct RequestRedirect {
        /// Scheme.
        pub scheme: Option<String>,
        /// Host name.
        pub hostname: Option<String>,
        /// Path.
        pub path: Option<PathModifier>,
        /// Port.
        pub port: Option<u32>,
        /// Status code.
        pub status_code: Option<u32>,
    }
}

spec_type! {
    /// Rewrite.
    pub struct UrlRewrite {
        /// Host name.
        pub hostname: Option<String>,
        /// Path.
        pub path: Option<PathModifier>,
    }
}

spec_type! {
    /// Path modifier.
    pub struct PathModifier {
        /// ReplaceFullPath or ReplacePrefixMatch.
        #[serde(rename = "type")]
        pub modifier_type: String,
        /// Full path.
        pub replace_full_path: Option<String>,
        /// Prefix replacement.
        pub replace_prefix_match: Option<String>,
    }
}

spec_type! {
    /// A backend reference.
    pub struct BackendObjectReference {
        /// Group (empty for Service).
        pub group: Option<String>,
        /// Kind (default Service).
        pub kind: Option<String>,
        /// Name.
        pub name: String,
        /// Namespace.
        pub namespace: Option<String>,
        /// Port.
        pub port: Option<u32>,
    }
}

spec_type! {
    /// A weighted backend.
    pub struct HttpBackendRef {
        /// Group.
        pub group: Option<String>,
        /// Kind.
        pub kind: Option<String>,
        /// Name.
        pub name: String,
        /// Namespace.
        pub namespace: Option<String>,
        /// Port.
        pub port: Option<u32>,
        /// Weight (default 1).
        pub weight: Option<u32>,
        /// Backend filters.
        #[serde(default)]
        pub filters: Vec<HttpRouteFilter>,
    }
}

spec_type! {
    /// Timeouts.
    pub struct HttpRouteTimeouts {
        /// Whole request.
        pub request: Option<String>,
        /// Each backend request.
        pub backend_request: Option<String>,
    }
}

spec_type! {
    /// Retries.
    pub struct HttpRouteRetry {
        /// Status codes.
        #[serde(default)]
        pub codes: Vec<u32>,
        /// Attempts.
        pub attempts: Option<u32>,
        /// Backoff.
        pub backoff: Option<String>,
    }
}

/// Gateway API TCPRoute (experimental channel, `v1alpha2`).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1alpha2",
    kind = "TCPRoute",
    plural = "tcproutes",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TCPRouteSpec {
    /// Gateways or Services the route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<L4RouteRule>,
    /// Attach to the default gateways (`All`, `None`).
    pub use_default_gateways: Option<String>,
}

/// Gateway API TLSRoute (experimental channel, `v1alpha2`; `v1alpha3` has the same fields).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1alpha2",
    kind = "TLSRoute",
    plural = "tlsroutes",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TLSRouteSpec {
    /// Gateways or Services the route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// SNI host names (may start with `*.`).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<L4RouteRule>,
    /// Attach to the default gateways (`All`, `None`).
    pub use_default_gateways: Option<String>,
}

spec_type! {
    /// A TCPRoute or TLSRoute rule.
    pub struct L4RouteRule {
        /// Rule name.
        pub name: Option<String>,
        /// Backends.
        #[serde(default)]
        pub backend_refs: Vec<BackendRef>,
    }
}

spec_type! {
    /// A weighted backend without filters.
    pub struct BackendRef {
        /// Group.
        pub group: Option<String>,
        /// Kind.
        pub kind: Option<String>,
        /// Name.
        pub name: String,
        /// Namespace.
        pub namespace: Option<String>,
        /// Port.
        pub port: Option<u32>,
        /// Weight (default 1).
        pub weight: Option<u32>,
    }
}

//! `networking.istio.io/v1`: VirtualService, DestinationRule, ServiceEntry and Gateway, with the
//! field names of Istio's API. Durations stay strings here (`"1.5s"`) and are checked when
//! translated.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Opaque, WorkloadSelector};

/// Shorthand for the derive list every spec type uses.
macro_rules! spec_type {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name { $($body)* }
    };
}
pub(crate) use spec_type;

/// VirtualService: HTTP/TCP/TLS routing for a set of hosts.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    plural = "virtualservices",
    shortname = "vs",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Destination hosts the rules apply to.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways the rules apply to (`mesh` for sidecars/waypoints).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Namespaces the service is exported to.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// HTTP routes.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// TCP routes.
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    /// TLS (SNI) routes.
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
}

spec_type! {
    /// One HTTP rule.
    pub struct HttpRoute {
        /// Name for logs.
        pub name: Option<String>,
        /// Conditions, any of which selects this rule.
        #[serde(default, rename = "match")]
        pub matches: Vec<HttpMatchRequest>,
        /// Weighted destinations.
        #[serde(default)]
        pub route: Vec<HttpRouteDestination>,
        /// Redirect.
        pub redirect: Option<HttpRedirect>,
        /// Fixed response.
        pub direct_response: Option<HttpDirectResponse>,
        /// Delegate to another VirtualService.
        pub delegate: Option<Delegate>,
        /// Rewrite.
        pub rewrite: Option<HttpRewrite>,
        /// Request timeout, e.g. `10s`.
        pub timeout: Option<String>,
        /// Retry policy.
        pub retries: Option<HttpRetry>,
        /// Fault injection.
        pub fault: Option<HttpFaultInjection>,
        /// Mirror destination.
        pub mirror: Option<Destination>,
        /// Share mirrored.
        pub mirror_percentage: Option<Percent>,
        /// Legacy integer mirror share.
        pub mirror_percent: Option<u32>,
        /// Several mirrors.
        #[serde(default)]
        pub mirrors: Vec<HttpMirrorPolicy>,
        /// CORS policy.
        pub cors_policy: Option<Opaque>,
        /// Header manipulation.
        pub headers: Option<Headers>,
    }
}

spec_type! {
    /// A response the proxy gives itself.
    pub struct HttpDirectResponse {
        /// Status code (200-599).
        pub status: u32,
        /// Body.
        pub body: Option<HttpBody>,
    }
}

spec_type! {
    /// A direct response body: one of `string` or `bytes` (base64).
    pub struct HttpBody {
        /// Text body.
        pub string: Option<String>,
        /// Binary body, base64-encoded.
        pub bytes: Option<String>,
    }
}

spec_type! {
    /// The VirtualService a rule delegates to.
    pub struct Delegate {
        /// Name of the delegate VirtualService.
        pub name: String,
        /// Its namespace (default: the root's).
        pub namespace: Option<String>,
    }
}

spec_type! {
    /// A request match.
    pub struct HttpMatchRequest {
        /// Name of the match.
        pub name: Option<String>,
        /// Path.
        pub uri: Option<StringMatch>,
        /// Scheme.
        pub scheme: Option<StringMatch>,
        /// Method.
        pub method: Option<StringMatch>,
        /// Authority.
        pub authority: Option<StringMatch>,
        /// Headers.
        #[serde(default)]
        pub headers: BTreeMap<String, StringMatch>,
        /// Headers that must be absent or differ.
        #[serde(default)]
        pub without_headers: BTreeMap<String, StringMatch>,
        /// Destination port.
        pub port: Option<u32>,
        /// Source workload labels.
        #[serde(default)]
        pub source_labels: BTreeMap<String, String>,
        /// Gateways.
        #[serde(default)]
        pub gateways: Vec<String>,
        /// Query parameters.
        #[serde(default)]
        pub query_params: BTreeMap<String, StringMatch>,
        /// Case-insensitive path match.
        pub ignore_uri_case: Option<bool>,
        /// Source namespace.
        pub source_namespace: Option<String>,
        /// Stat prefix.
        pub stat_prefix: Option<String>,
    }
}

spec_type! {
    /// Exactly one of exact, prefix or regex.
    pub struct StringMatch {
        /// Exact value.
        pub exact: Option<String>,
        /// Prefix.
        pub prefix: Option<String>,
        /// RE2 regex.
        pub regex: Option<String>,
    }
}

spec_type! {
    /// A weighted destination of an HTTP rule.
    pub struct HttpRouteDestination {
        /// Where to send.
        pub destination: Destination,
        /// Relative weight (0-100).
        pub weight: Option<i32>,
        /// Header manipulation for this destination.
        pub headers: Option<Headers>,
    }
}

spec_type! {
    /// A destination host, optionally a subset and port.
    pub struct Destination {
        /// Service host (short, namespace-qualified or FQDN).
        pub host: String,
        /// Subset from a DestinationRule.
        pub subset: Option<String>,
        /// Port.
        pub port: Option<PortSelector>,
    }
}

spec_type! {
    /// `port: {number: 9080}`.
    pub struct PortSelector {
        /// Port number.
        pub number: u32,
    }
}

spec_type! {
    /// A redirect.
    pub struct HttpRedirect {
        /// New path.
        pub uri: Option<String>,
        /// New authority.
        pub authority: Option<String>,
        /// New port.
        pub port: Option<u32>,
        /// Derive the port from the scheme.
        pub derive_port: Option<String>,
        /// New scheme.
        pub scheme: Option<String>,
        /// Status code.
        pub redirect_code: Option<u32>,
    }
}

spec_type! {
    /// A rewrite.
    pub struct HttpRewrite {
        /// New path prefix.
        pub uri: Option<String>,
        /// New authority.
        pub authority: Option<String>,
        /// Regex rewrite.
        pub uri_regex_rewrite: Option<RegexRewrite>,
    }
}

spec_type! {
    /// A regex substitution of the path.
    pub struct RegexRewrite {
        /// RE2 pattern.
        #[serde(rename = "match")]
        pub pattern: String,
        /// Replacement (`\\1` for groups).
        pub rewrite: String,
    }
}

spec_type! {
    /// Retries.
    pub struct HttpRetry {
        /// Number of retries.
        pub attempts: Option<i32>,
        /// Timeout per try.
        pub per_try_timeout: Option<String>,
        /// Comma-separated conditions.
        pub retry_on: Option<String>,
        /// Retry on other localities.
        pub retry_remote_localities: Option<bool>,
        /// Retry backoff base interval.
        pub backoff: Option<String>,
        /// Avoid hosts already tried.
        pub retry_ignore_previous_hosts: Option<bool>,
    }
}

spec_type! {
    /// Fault injection.
    pub struct HttpFaultInjection {
        /// Delay.
        pub delay: Option<FaultDelay>,
        /// Abort.
        pub abort: Option<FaultAbort>,
    }
}

spec_type! {
    /// Injected delay.
    pub struct FaultDelay {
        /// Delay, e.g. `5s`.
        pub fixed_delay: Option<String>,
        /// Share of requests delayed.
        pub percentage: Option<Percent>,
        /// Legacy integer share.
        pub percent: Option<i32>,
        /// Exponential delay (hidden in Istio's docs).
        pub exponential_delay: Option<String>,
    }
}

spec_type! {
    /// Injected abort.
    pub struct FaultAbort {
        /// HTTP status.
        pub http_status: Option<i32>,
        /// gRPC status.
        pub grpc_status: Option<String>,
        /// HTTP/2 error.
        pub http2_error: Option<String>,
        /// Share of requests aborted.
        pub percentage: Option<Percent>,
    }
}

spec_type! {
    /// `percentage: {value: 10.0}`.
    pub struct Percent {
        /// 0 to 100.
        pub value: f64,
    }
}

spec_type! {
    /// One of several mirrors.
    pub struct HttpMirrorPolicy {
        /// Where copies go.
        pub destination: Destination,
        /// Share mirrored.
        pub percentage: Option<Percent>,
    }
}

spec_type! {
    /// Request and response header manipulation.
    pub struct Headers {
        /// Request headers.
        pub request: Option<HeaderOperations>,
        /// Response headers.
        pub response: Option<HeaderOperations>,
    }
}

spec_type! {
    /// Set, add, remove.
    pub struct HeaderOperations {
        /// Overwrite.
        #[serde(default)]
        pub set: BTreeMap<String, String>,
        /// Append.
        #[serde(default)]
        pub add: BTreeMap<String, String>,
        /// Remove.
        #[serde(default)]
        pub remove: Vec<String>,
    }
}

spec_type! {
    /// A TCP rule.
    pub struct TcpRoute {
        /// Conditions.
        #[serde(default, rename = "match")]
        pub matches: Vec<L4MatchAttributes>,
        /// Destinations.
        #[serde(default)]
        pub route: Vec<RouteDestination>,
    }
}

spec_type! {
    /// A TLS rule.
    pub struct TlsRoute {
        /// Conditions.
        #[serde(default, rename = "match")]
        pub matches: Vec<TlsMatchAttributes>,
        /// Destinations.
        #[serde(default)]
        pub route: Vec<RouteDestination>,
    }
}

spec_type! {
    /// L4 match.
    pub struct L4MatchAttributes {
        /// Destination subnets.
        #[serde(default)]
        pub destination_subnets: Vec<String>,
        /// Port.
        pub port: Option<u32>,
        /// Source labels.
        #[serde(default)]
        pub source_labels: BTreeMap<String, String>,
        /// Gateways.
        #[serde(default)]
        pub gateways: Vec<String>,
        /// Source namespace.
        pub source_namespace: Option<String>,
        /// Source subnet (hidden in Istio's docs).
        pub source_subnet: Option<String>,
    }
}

spec_type! {
    /// TLS match.
    pub struct TlsMatchAttributes {
        /// SNI hosts.
        #[serde(default)]
        pub sni_hosts: Vec<String>,
        /// Destination subnets.
        #[serde(default)]
        pub destination_subnets: Vec<String>,
        /// Port.
        pub port: Option<u32>,
        /// Source labels.
        #[serde(default)]
        pub source_labels: BTreeMap<String, String>,
        /// Gateways.
        #[serde(default)]
        pub gateways: Vec<String>,
        /// Source namespace.
        pub source_namespace: Option<String>,
    }
}

spec_type! {
    /// A weighted L4 destination.
    pub struct RouteDestination {
        /// Where to send.
        pub destination: Destination,
        /// Relative weight.
        pub weight: Option<i32>,
    }
}

/// DestinationRule: traffic policy and subsets for a host.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    plural = "destinationrules",
    shortname = "dr",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// Service host.
    pub host: String,
    /// Policy for the whole host.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Namespaces the rule is exported to.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Workloads the rule applies to.
    pub workload_selector: Option<WorkloadSelector>,
}

spec_type! {
    /// Traffic policy.
    pub struct TrafficPolicy {
        /// Load balancing.
        pub load_balancer: Option<LoadBalancerSettings>,
        /// Connection limits.
        pub connection_pool: Option<ConnectionPoolSettings>,
        /// Ejection of failing endpoints.
        pub outlier_detection: Option<OutlierDetection>,
        /// Upstream TLS.
        pub tls: Option<Opaque>,
        /// Per-port overrides.
        #[serde(default)]
        pub port_level_settings: Vec<PortTrafficPolicy>,
        /// Tunnel settings.
        pub tunnel: Option<Opaque>,
        /// PROXY protocol.
        pub proxy_protocol: Option<Opaque>,
    }
}

spec_type! {
    /// A traffic policy for one port.
    pub struct PortTrafficPolicy {
        /// The port.
        pub port: Option<PortSelector>,
        /// Load balancing.
        pub load_balancer: Option<LoadBalancerSettings>,
        /// Connection limits.
        pub connection_pool: Option<ConnectionPoolSettings>,
        /// Ejection of failing endpoints.
        pub outlier_detection: Option<OutlierDetection>,
        /// Upstream TLS.
        pub tls: Option<Opaque>,
    }
}

spec_type! {
    /// Locality-aware load balancing.
    pub struct LocalityLbSetting {
        /// Weighted spread by source locality.
        #[serde(default)]
        pub distribute: Vec<LocalityDistribute>,
        /// Region failover.
        #[serde(default)]
        pub failover: Vec<LocalityFailover>,
        /// Labels ordering failover priority.
        #[serde(default)]
        pub failover_priority: Vec<String>,
        /// On or off.
        pub enabled: Option<bool>,
    }
}

spec_type! {
    /// A `distribute` entry.
    pub struct LocalityDistribute {
        /// Source locality.
        #[serde(default)]
        pub from: String,
        /// Destination locality to weight.
        #[serde(default)]
        pub to: BTreeMap<String, u32>,
    }
}

spec_type! {
    /// A `failover` entry.
    pub struct LocalityFailover {
        /// Source region.
        #[serde(default)]
        pub from: String,
        /// Failover region.
        #[serde(default)]
        pub to: String,
    }
}

spec_type! {
    /// A cookie to hash on.
    pub struct HttpCookie {
        /// Name.
        #[serde(default)]
        pub name: String,
        /// Path.
        pub path: Option<String>,
        /// Lifetime.
        pub ttl: Option<String>,
        /// Further attributes.
        #[serde(default)]
        pub attributes: Vec<Opaque>,
    }
}

spec_type! {
    /// Ring hash settings.
    pub struct RingHash {
        /// Minimum ring size.
        pub minimum_ring_size: Option<u64>,
    }
}

spec_type! {
    /// Maglev settings.
    pub struct MagLev {
        /// Lookup table size.
        pub table_size: Option<u64>,
    }
}

spec_type! {
    /// TCP keepalive.
    pub struct TcpKeepalive {
        /// Probes.
        pub probes: Option<u32>,
        /// Idle time before the first probe.
        pub time: Option<String>,
        /// Time between probes.
        pub interval: Option<String>,
    }
}

spec_type! {
    /// A subset.
    pub struct Subset {
        /// Name used by routes.
        pub name: String,
        /// Endpoint labels.
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
        /// Policy override.
        pub traffic_policy: Option<TrafficPolicy>,
    }
}

spec_type! {
    /// Load balancer settings.
    pub struct LoadBalancerSettings {
        /// ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM, PASSTHROUGH, UNSPECIFIED.
        pub simple: Option<String>,
        /// Consistent hashing.
        pub consistent_hash: Option<ConsistentHash>,
        /// Locality settings.
        pub locality_lb_setting: Option<LocalityLbSetting>,
        /// Warm-up duration.
        pub warmup_duration_secs: Option<String>,
        /// Warm-up settings.
        pub warmup: Option<Opaque>,
    }
}

spec_type! {
    /// Consistent hash settings.
    pub struct ConsistentHash {
        /// Hash on a header.
        pub http_header_name: Option<String>,
        /// Hash on a cookie.
        pub http_cookie: Option<HttpCookie>,
        /// Hash on the source IP.
        pub use_source_ip: Option<bool>,
        /// Hash on a query parameter.
        pub http_query_parameter_name: Option<String>,
        /// Ring hash.
        pub ring_hash: Option<RingHash>,
        /// Maglev.
        pub maglev: Option<MagLev>,
        /// Legacy ring size.
        pub minimum_ring_size: Option<u64>,
    }
}

spec_type! {
    /// Connection pool settings.
    pub struct ConnectionPoolSettings {
        /// TCP limits.
        pub tcp: Option<TcpSettings>,
        /// HTTP limits.
        pub http: Option<HttpSettings>,
    }
}

spec_type! {
    /// TCP limits.
    pub struct TcpSettings {
        /// Maximum connections.
        pub max_connections: Option<i32>,
        /// Connect timeout.
        pub connect_timeout: Option<String>,
        /// Keep-alive.
        pub tcp_keepalive: Option<TcpKeepalive>,
        /// Maximum connection lifetime.
        pub max_connection_duration: Option<String>,
        /// Idle timeout.
        pub idle_timeout: Option<String>,
    }
}

spec_type! {
    /// HTTP limits.
    pub struct HttpSettings {
        /// Pending HTTP/1 requests.
        pub http1_max_pending_requests: Option<i32>,
        /// Concurrent HTTP/2 requests.
        pub http2_max_requests: Option<i32>,
        /// Requests per connection.
        pub max_requests_per_connection: Option<i32>,
        /// Concurrent retries.
        pub max_retries: Option<i32>,
        /// Idle timeout.
        pub idle_timeout: Option<String>,
        /// HTTP/2 upgrade.
        pub h2_upgrade_policy: Option<String>,
        /// Keep the client's protocol.
        pub use_client_protocol: Option<bool>,
        /// Concurrent streams per connection.
        pub max_concurrent_streams: Option<i32>,
    }
}

spec_type! {
    /// Outlier detection.
    pub struct OutlierDetection {
        /// Deprecated alias of consecutive5xxErrors.
        pub consecutive_errors: Option<i32>,
        /// 5xx errors before ejection.
        #[serde(rename = "consecutive5xxErrors")]
        pub consecutive_5xx_errors: Option<u32>,
        /// 502/503/504 errors before ejection.
        pub consecutive_gateway_errors: Option<u32>,
        /// Local-origin failures before ejection.
        pub consecutive_local_origin_failures: Option<u32>,
        /// Count local-origin errors separately.
        pub split_external_local_origin_errors: Option<bool>,
        /// Scan interval.
        pub interval: Option<String>,
        /// Minimum ejection time.
        pub base_ejection_time: Option<String>,
        /// Maximum share ejected.
        pub max_ejection_percent: Option<i32>,
        /// Minimum healthy share for detection to apply.
        pub min_health_percent: Option<i32>,
    }
}

/// ServiceEntry: adds hosts (often external) to the mesh's registry.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    plural = "serviceentries",
    shortname = "se",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// Hosts.
    pub hosts: Vec<String>,
    /// Virtual IPs.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// MESH_EXTERNAL or MESH_INTERNAL.
    pub location: Option<String>,
    /// NONE, STATIC, DNS, DNS_ROUND_ROBIN.
    pub resolution: Option<String>,
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Workloads backing the entry.
    pub workload_selector: Option<Opaque>,
    /// Namespaces the entry is exported to.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Server SANs.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

spec_type! {
    /// A port of a ServiceEntry or Gateway server.
    pub struct ServicePort {
        /// Port number.
        pub number: u32,
        /// Protocol, e.g. HTTP, TCP, TLS.
        pub protocol: Option<String>,
        /// Port name.
        pub name: Option<String>,
        /// Endpoint port.
        pub target_port: Option<u32>,
    }
}

spec_type! {
    /// An inline endpoint of a ServiceEntry.
    pub struct WorkloadEntrySpec {
        /// Address (IP or host name).
        pub address: Option<String>,
        /// Port name to endpoint port.
        #[serde(default)]
        pub ports: BTreeMap<String, u32>,
        /// Labels.
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
        /// Network.
        pub network: Option<String>,
        /// Locality.
        pub locality: Option<String>,
        /// Weight.
        pub weight: Option<u32>,
        /// Service account.
        pub service_account: Option<String>,
    }
}

/// Istio Gateway: a load balancer at the edge of the mesh.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    shortname = "gw",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Gateway pods, by labels.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Servers.
    #[serde(default)]
    pub servers: Vec<Server>,
}

spec_type! {
    /// A server of an Istio Gateway.
    pub struct Server {
        /// Listening port.
        pub port: ServicePort,
        /// Bind address.
        pub bind: Option<String>,
        /// Hosts exposed.
        #[serde(default)]
        pub hosts: Vec<String>,
        /// TLS settings.
        pub tls: Option<Opaque>,
        /// Server name.
        pub name: Option<String>,
        /// Default endpoint.
        pub default_endpoint: Option<String>,
    }
}

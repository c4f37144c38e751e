//! L7 traffic rules in the compact model, for waypoints: routes (from Istio VirtualServices and
//! Gateway API HTTPRoutes) and destination policies (from Istio DestinationRules). Durations are
//! milliseconds; host names are fully qualified.

use std::collections::BTreeMap;

use super::compat::Skip;

/// Where a route came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteKind {
    /// networking.istio.io VirtualService.
    #[default]
    VirtualService,
    /// gateway.networking.k8s.io HTTPRoute.
    HttpRoute,
    /// gateway.networking.k8s.io TCPRoute.
    TcpRoute,
    /// gateway.networking.k8s.io TLSRoute.
    TlsRoute,
    /// A source kind this build does not know (from a newer controller); informational only.
    #[serde(other)]
    Unknown,
}

/// HTTP routing for a set of hosts.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Name of the source object.
    pub name: String,
    /// Namespace of the source object.
    pub namespace: String,
    /// Source kind.
    #[serde(default)]
    pub kind: RouteKind,
    /// Hosts the route applies to (fully qualified; may start with `*.`).
    pub hosts: Vec<String>,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
    /// Opaque TCP rules (VirtualService `tcp`, TCPRoute), first match wins; for connections the
    /// waypoint passes through unparsed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<L4Rule>,
    /// TLS rules (VirtualService `tls`, TLSRoute), matched on the ClientHello's SNI, first match
    /// wins; the TLS is passed through, never terminated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<L4Rule>,
    /// Namespaces whose waypoints apply the route (Istio `exportTo`: a name, or `*` for all);
    /// empty: all. The controller sends a waypoint only the routes its namespace sees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// Whether something exported to `export_to` (`*` or namespace names; empty: everywhere) is
/// visible in `namespace`.
pub fn exported_to(export_to: &[String], namespace: &str) -> bool {
    export_to.is_empty() || export_to.iter().any(|n| n == "*" || n == namespace)
}

/// One rule: matches, then where and how to send the request.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    /// Rule name, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Matches, any of which may match; empty matches every request.
    #[serde(default)]
    pub matches: Vec<HttpMatch>,
    /// Weighted destinations.
    #[serde(default)]
    pub destinations: Vec<RouteDestination>,
    /// Redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Path/authority rewrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Overall request timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// Fault injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Traffic mirroring: each request is copied to every mirror (in its percentage).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// Request header changes.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    /// Response header changes.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    /// Answer directly instead of forwarding (VirtualService `directResponse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
}

/// A response the waypoint gives itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A request match; every present field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// Path match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Method match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Authority match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header matches (lower-case names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Query parameter matches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Headers that must be absent or not match (Istio `withoutHeaders`; lower-case names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Labels the source workload must carry (Istio `sourceLabels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Namespace of the source workload (Istio `sourceNamespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Match `uri` case-insensitively (Istio `ignoreUriCase`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
}

/// A string match (`{"exact": "…"}`, `{"prefix": "…"}`, `{"regex": "…"}` or
/// `{"present": true}`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// RE2 regular expression, matched against the whole value.
    Regex(String),
    /// Any value, as long as it is there (an Istio header match with no value).
    Present(bool),
    /// A kind of match this build does not know (from a newer controller), with its tag: it
    /// never matches, so the rule holding it is not taken.
    Unknown(String),
}

impl<'de> serde::Deserialize<'de> for StringMatch {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct MatchVisitor;
        impl<'de> serde::de::Visitor<'de> for MatchVisitor {
            type Value = StringMatch;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string match: one of exact, prefix, regex")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StringMatch, A::Error> {
                let Some(tag) = map.next_key::<String>()? else {
                    return Err(serde::de::Error::invalid_length(0, &self));
                };
                let value = match tag.as_str() {
                    "exact" => StringMatch::Exact(map.next_value()?),
                    "prefix" => StringMatch::Prefix(map.next_value()?),
                    "regex" => StringMatch::Regex(map.next_value()?),
                    "present" => StringMatch::Present(map.next_value()?),
                    _ => {
                        map.next_value::<Skip>()?;
                        StringMatch::Unknown(tag)
                    }
                };
                if map.next_key::<Skip>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(2, &self));
                }
                Ok(value)
            }
        }
        de.deserialize_map(MatchVisitor)
    }
}

/// A weighted destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    /// Fully qualified host.
    pub host: String,
    /// Subset (DestinationRule) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Port, when the host has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Relative weight; destinations of a rule are picked in proportion.
    pub weight: u32,
    /// Request header changes for this destination only (after the rule's).
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    /// Response header changes for this destination only (after the rule's).
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

/// An HTTP redirect.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// New scheme (`http`, `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Replace only the matched path prefix with `uri` (Gateway API `ReplacePrefixMatch`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_prefix: bool,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// New authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Status code (default 301).
    pub code: u16,
}

/// A rewrite before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    /// Replacement for the matched path prefix (or the whole path when the match was exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Regex rewrite of the whole path (Istio `uriRegexRewrite`, RE2 syntax, `\1` groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<RegexRewrite>,
    /// Replace the whole path with `uri` (Gateway API `ReplaceFullPath`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_path: bool,
    /// New authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// A regex substitution.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Replacement, with `\N` capture groups.
    pub rewrite: String,
}

/// Retries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Number of retries.
    pub attempts: u32,
    /// Timeout per try in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Conditions, e.g. `5xx`, `connect-failure`, `gateway-error`, or status codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    /// Retry on endpoints in other localities too (Istio `retryRemoteLocalities`; default
    /// false: retries stay in the locality of the first try while it has endpoints).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_remote_localities: bool,
    /// Whether a retry avoids the endpoints already tried (Istio `retryIgnorePreviousHosts`;
    /// `None`: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval of the jittered exponential backoff between tries, in milliseconds
    /// (`None`: 25 ms, Envoy's default; the maximum is 10 times the base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base_ms: Option<u64>,
}

/// Fault injection.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Delay some requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Abort some requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// Injected delay.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// Delay in milliseconds.
    pub fixed_delay_ms: u64,
    /// Share of requests delayed, 0 to 100.
    pub percentage: f64,
}

/// Injected abort.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    /// HTTP status returned (0 when `grpc_status` is set instead).
    #[serde(default)]
    pub http_status: u16,
    /// gRPC status returned instead, by its canonical name (`UNAVAILABLE`, ...) as Istio's
    /// `grpcStatus` has it: the response is HTTP 200 with `grpc-status` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Share of requests aborted, 0 to 100.
    pub percentage: f64,
}

/// Mirroring.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Where copies go (weight unused).
    pub destination: RouteDestination,
    /// Share of requests mirrored, 0 to 100.
    pub percentage: f64,
}

/// An opaque TCP or TLS rule: matches, then weighted destinations.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4Rule {
    /// Rule name, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Matches, any of which may match; empty matches every connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<L4Match>,
    /// Weighted destinations (header operations unused).
    #[serde(default)]
    pub destinations: Vec<RouteDestination>,
}

/// A connection match; every present field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4Match {
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// SNI host names of the ClientHello (TLS rules only; may start with `*.`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Labels the source workload must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Namespace of the source workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// Header changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOps {
    /// Set (overwrite).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Add (append).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Traffic policy and subsets for one host (from a DestinationRule).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationPolicy {
    /// Name of the DestinationRule.
    pub name: String,
    /// Namespace of the DestinationRule.
    pub namespace: String,
    /// Fully qualified host.
    pub host: String,
    /// Policy for the whole host.
    #[serde(default)]
    pub traffic_policy: TrafficPolicy,
    /// Named subsets.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Namespaces whose waypoints apply the policy (Istio `exportTo`, as [`Route::export_to`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// A named subset of a host's endpoints, selected by labels.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// Subset name.
    pub name: String,
    /// Endpoint labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Overrides of the host policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Load balancing, connection limits and outlier detection.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// Connection pool limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Outlier detection (ejection of failing endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Slow start: a new endpoint's share of traffic grows linearly over this many
    /// milliseconds (Istio `warmupDurationSecs`; round robin and least request only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ms: Option<u64>,
    /// Locality-aware balancing (Istio `localityLbSetting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb: Option<LocalityLb>,
    /// Overrides for single ports of the host (Istio `portLevelSettings`); each replaces the
    /// fields it sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_policies: Vec<PortTrafficPolicy>,
}

/// A traffic policy for one port of a host.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// Service port.
    pub port: u16,
    /// Load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// Connection pool limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Outlier detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

/// Locality-aware load balancing. Localities are `region/zone/subzone` (a prefix such as
/// `region` or `region/zone`, or with a trailing `/*`, covers every locality under it).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalityLb {
    /// Whether locality balancing is on (`None`: on when outlier detection is set, as Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Weighted spread of traffic from a source locality over destination localities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// Where traffic goes when the source region has no healthy endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Label names ordering failover priority: endpoints matching the source on more of the
    /// leading labels are preferred (Istio `failoverPriority`; `topology.kubernetes.io/region`,
    /// `topology.kubernetes.io/zone` and `topology.istio.io/subzone` mean the locality parts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
}

/// A `distribute` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalityDistribute {
    /// Source locality (prefix or `*` wildcard).
    pub from: String,
    /// Destination locality (prefix or wildcard) → weight (they sum to 100).
    pub to: BTreeMap<String, u32>,
}

/// A `failover` entry: from a source region to another region.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalityFailover {
    /// Source region.
    pub from: String,
    /// Failover region.
    pub to: String,
}

/// Load balancer algorithm (`"roundRobin"`, …, or `{"consistentHash": {…}}`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancer {
    /// Round robin.
    RoundRobin,
    /// Fewest active requests (power of two random choices).
    LeastRequest,
    /// Random.
    Random,
    /// Pass-through to the original destination.
    Passthrough,
    /// Consistent hash on a request property.
    ConsistentHash(ConsistentHash),
    /// An algorithm this build does not know (from a newer controller), with its tag: round
    /// robin is used.
    Unknown(String),
}

/// What a consistent-hash balancer hashes, and how. Exactly one key is set; none set hashes the
/// source address.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    /// Hash this request header (lower-case name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Hash this cookie, issued with the response when the request has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HashCookie>,
    /// Hash the source address (Istio `useSourceIp`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_ip: bool,
    /// Hash this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
    /// Maglev with this table size instead of a ring (Istio `maglev.tableSize`; `Some(0)`:
    /// the default 65,537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u64>,
    /// Minimum ring size of the ring hash (Istio `ringHash.minimumRingSize`; default 1,024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// A cookie to hash on.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HashCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie path, when issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of an issued cookie in milliseconds (`None`: a session cookie, never issued by
    /// the waypoint, as Envoy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl<'de> serde::Deserialize<'de> for LoadBalancer {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        fn unit(tag: &str) -> LoadBalancer {
            match tag {
                "roundRobin" => LoadBalancer::RoundRobin,
                "leastRequest" => LoadBalancer::LeastRequest,
                "random" => LoadBalancer::Random,
                "passthrough" => LoadBalancer::Passthrough,
                other => LoadBalancer::Unknown(other.to_owned()),
            }
        }
        struct BalancerVisitor;
        impl<'de> serde::de::Visitor<'de> for BalancerVisitor {
            type Value = LoadBalancer;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a load balancer name or {consistentHash: {...}}")
            }

            fn visit_str<E: serde::de::Error>(self, tag: &str) -> Result<LoadBalancer, E> {
                Ok(unit(tag))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LoadBalancer, A::Error> {
                let Some(tag) = map.next_key::<String>()? else {
                    return Err(serde::de::Error::invalid_length(0, &self));
                };
                let value = if tag == "consistentHash" {
                    LoadBalancer::ConsistentHash(map.next_value()?)
                } else {
                    // A unit variant in map form (`{"random": null}`), as some encoders write,
                    // or an algorithm this build does not know (its value skipped unreported:
                    // the tag is reported as an unknown value instead).
                    map.next_value::<Skip>()?;
                    unit(&tag)
                };
                if map.next_key::<Skip>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(2, &self));
                }
                Ok(value)
            }
        }
        de.deserialize_any(BalancerVisitor)
    }
}

/// Connection pool limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    /// Maximum TCP connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// TCP connect timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Maximum pending HTTP requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    /// Maximum concurrent HTTP/2 requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    /// Maximum requests per connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Maximum retries outstanding at once to the host (all its endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Close an upstream connection idle this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Maximum concurrent streams on one HTTP/2 upstream connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// TCP keepalive on upstream connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// TCP keepalive settings (unset fields: the kernel's).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// Time between probes, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
}

/// Outlier detection.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive 5xx errors before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Consecutive gateway errors (502/503/504) before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Scan interval in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Minimum ejection time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time_ms: Option<u64>,
    /// Maximum share of endpoints ejected, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Consecutive locally originated failures (connect failure, reset, timeout) before
    /// ejection; counted apart from 5xx only when `split_external_local_origin_errors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Count local-origin failures apart from the upstream's 5xx responses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split_external_local_origin_errors: bool,
    /// Outlier detection stops ejecting while fewer than this share of endpoints, 0 to 100, are
    /// healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<u32>,
}

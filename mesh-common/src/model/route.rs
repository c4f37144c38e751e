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
    /// Traffic mirroring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
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
    /// HTTP status returned.
    pub http_status: u16,
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
}

/// Load balancer algorithm (`"roundRobin"`, …, or `{"consistentHash": {"header": …}}`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancer {
    /// Round robin.
    RoundRobin,
    /// Fewest active requests.
    LeastRequest,
    /// Random.
    Random,
    /// Pass-through to the original destination.
    Passthrough,
    /// Consistent hash on a header (or the source address when `None`).
    ConsistentHash {
        /// Header name.
        header: Option<String>,
    },
    /// An algorithm this build does not know (from a newer controller), with its tag: round
    /// robin is used.
    Unknown(String),
}

impl<'de> serde::Deserialize<'de> for LoadBalancer {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct ConsistentHash {
            #[serde(default)]
            header: Option<String>,
        }
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
                f.write_str("a load balancer name or {consistentHash: {header}}")
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
                    let hash: ConsistentHash = map.next_value()?;
                    LoadBalancer::ConsistentHash {
                        header: hash.header,
                    }
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
}

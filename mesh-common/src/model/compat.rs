//! Version skew: a model value written by a newer controller may carry fields and enum values
//! this build does not know. Over the config stream they are tolerated and reported, never
//! fatal (an agent one release older keeps applying updates during a rolling upgrade), and every
//! unknown enum value has a documented meaning that fails closed where it decides security.
//! Hand-written files (`mesh-agent --local-config`) turn the same reports into errors, so a typo
//! is still caught.
//!
//! Unknown enum values and what they mean here:
//!
//! | enum | unknown value means |
//! |---|---|
//! | `AuthorizationAction` | the policy denies every connection to the workloads it applies to, whatever its rules (it might be a stricter action; never taken as ALLOW) |
//! | `PeerAuthMode` | STRICT (refuse plaintext) |
//! | `StringMatch` | the match never matches (waypoints: the rule is not taken) |
//! | `LoadBalancer` | round robin |
//! | `RouteKind` | nothing (it only records where a route came from) |
//! | `TrafficDistribution` | no preference (any endpoint) |
//!
//! Unknown resource *kinds* are not tolerated: a kind this build does not know could carry
//! policy, so the update is rejected (Nack) rather than applied without it. So a kind is added
//! only for clients of the release that knows it: `RequestAuthentication` goes to waypoints only
//! (agents never receive it); a waypoint one release older rejects an update carrying one and
//! keeps its last good model, rather than letting tokens through unchecked.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{
    AuthorizationAction, AuthorizationPolicy, DestinationPolicy, LoadBalancer, PeerAuthMode,
    PeerAuthentication, RequestAuthentication, Route, Service, Snapshot, StringMatch, Telemetry,
    TrafficPolicy, Workload,
};

/// Deserializes a value from `de`, tolerating fields the model does not know; returns the value
/// and the path of every such field (`services.0.vipz`), in input order.
pub fn deserialize_reporting<'de, D, T>(de: D) -> Result<(T, Vec<String>), D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut unknown = Vec::new();
    let value = serde_ignored::deserialize(de, |path| unknown.push(path_text(&path)))?;
    Ok((value, unknown))
}

/// A path as text: map keys and sequence indexes joined with `.`; `Option` and newtype levels
/// (which serde_ignored shows as `?`) are left out, so the path reads like the JSON it points at.
pub fn path_text(path: &serde_ignored::Path<'_>) -> String {
    fn segments(path: &serde_ignored::Path<'_>, out: &mut Vec<String>) {
        use serde_ignored::Path;
        match path {
            Path::Root => {}
            Path::Seq { parent, index } => {
                segments(parent, out);
                out.push(index.to_string());
            }
            Path::Map { parent, key } => {
                segments(parent, out);
                out.push(key.clone());
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => segments(parent, out),
        }
    }
    let mut out = Vec::new();
    segments(path, &mut out);
    out.join(".")
}

/// An enum value this build does not know, where it is, and what it is taken to mean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// Path of the value, e.g. `action` or `portLevelMtls.8080`.
    pub path: String,
    /// The value, when the model kept it (data-carrying enums keep their tag).
    pub value: Option<String>,
    /// What this build does with it.
    pub meaning: &'static str,
}

impl std::fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}: unknown value {v:?} ({})", self.path, self.meaning),
            None => write!(f, "{}: unknown value ({})", self.path, self.meaning),
        }
    }
}

/// Meaning of an unknown authorization action.
pub const UNKNOWN_ACTION: &str =
    "the policy denies every connection to the workloads it applies to";
/// Meaning of an unknown peer authentication mode.
pub const UNKNOWN_MODE: &str = "taken as STRICT";
const UNKNOWN_MATCH: &str = "the match never matches";
const UNKNOWN_BALANCER: &str = "round robin";
const UNKNOWN_ROUTE_KIND: &str = "ignored";
const UNKNOWN_TRAFFIC_DISTRIBUTION: &str = "no preference";

/// Model values that can hold enum values this build does not know.
pub trait UnknownValues {
    /// Appends the unknown values found in `self`, their paths prefixed with `prefix`.
    fn unknown_values_into(&self, prefix: &str, out: &mut Vec<UnknownValue>);

    /// The unknown values found in `self`.
    fn unknown_values(&self) -> Vec<UnknownValue> {
        let mut out = Vec::new();
        self.unknown_values_into("", &mut out);
        out
    }
}

fn join(prefix: &str, segment: impl std::fmt::Display) -> String {
    if prefix.is_empty() {
        segment.to_string()
    } else {
        format!("{prefix}.{segment}")
    }
}

fn push(out: &mut Vec<UnknownValue>, path: String, value: Option<&str>, meaning: &'static str) {
    out.push(UnknownValue {
        path,
        value: value.map(str::to_owned),
        meaning,
    });
}

impl UnknownValues for Workload {
    fn unknown_values_into(&self, _: &str, _: &mut Vec<UnknownValue>) {}
}

impl UnknownValues for Service {
    fn unknown_values_into(&self, prefix: &str, out: &mut Vec<UnknownValue>) {
        if self.traffic_distribution == Some(super::TrafficDistribution::Unknown) {
            push(
                out,
                join(prefix, "trafficDistribution"),
                None,
                UNKNOWN_TRAFFIC_DISTRIBUTION,
            );
        }
    }
}

impl UnknownValues for RequestAuthentication {
    fn unknown_values_into(&self, _: &str, _: &mut Vec<UnknownValue>) {}
}

impl UnknownValues for AuthorizationPolicy {
    fn unknown_values_into(&self, prefix: &str, out: &mut Vec<UnknownValue>) {
        if self.action == AuthorizationAction::Unknown {
            push(out, join(prefix, "action"), None, UNKNOWN_ACTION);
        }
    }
}

impl UnknownValues for PeerAuthentication {
    fn unknown_values_into(&self, prefix: &str, out: &mut Vec<UnknownValue>) {
        if self.mode == PeerAuthMode::Unknown {
            push(out, join(prefix, "mode"), None, UNKNOWN_MODE);
        }
        for (port, mode) in &self.port_level_mtls {
            if *mode == PeerAuthMode::Unknown {
                let path = join(&join(prefix, "portLevelMtls"), port);
                push(out, path, None, UNKNOWN_MODE);
            }
        }
    }
}

impl UnknownValues for Route {
    fn unknown_values_into(&self, prefix: &str, out: &mut Vec<UnknownValue>) {
        if self.kind == super::RouteKind::Unknown {
            push(out, join(prefix, "kind"), None, UNKNOWN_ROUTE_KIND);
        }
        let mut string_match = |path: String, m: &StringMatch| {
            if let StringMatch::Unknown(tag) = m {
                push(out, path, Some(tag), UNKNOWN_MATCH);
            }
        };
        for (r, rule) in self.rules.iter().enumerate() {
            let rule_path = join(&join(prefix, "rules"), r);
            for (i, m) in rule.matches.iter().enumerate() {
                let at = join(&join(&rule_path, "matches"), i);
                for (field, value) in [("uri", &m.uri), ("method", &m.method)]
                    .into_iter()
                    .chain([("authority", &m.authority)])
                {
                    if let Some(value) = value {
                        string_match(join(&at, field), value);
                    }
                }
                for (field, map) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
                    for (name, value) in map {
                        string_match(join(&join(&at, field), name), value);
                    }
                }
            }
        }
    }
}

fn traffic_policy(prefix: &str, policy: &TrafficPolicy, out: &mut Vec<UnknownValue>) {
    balancer(prefix, policy.load_balancer.as_ref(), out);
    for (i, port) in policy.port_policies.iter().enumerate() {
        let at = join(&join(prefix, "portPolicies"), i);
        balancer(&at, port.load_balancer.as_ref(), out);
    }
}

fn balancer(prefix: &str, balancer: Option<&LoadBalancer>, out: &mut Vec<UnknownValue>) {
    if let Some(LoadBalancer::Unknown(tag)) = balancer {
        push(
            out,
            join(prefix, "loadBalancer"),
            Some(tag),
            UNKNOWN_BALANCER,
        );
    }
}

impl UnknownValues for DestinationPolicy {
    fn unknown_values_into(&self, prefix: &str, out: &mut Vec<UnknownValue>) {
        traffic_policy(&join(prefix, "trafficPolicy"), &self.traffic_policy, out);
        for (i, subset) in self.subsets.iter().enumerate() {
            if let Some(policy) = &subset.traffic_policy {
                let at = join(&join(&join(prefix, "subsets"), i), "trafficPolicy");
                traffic_policy(&at, policy, out);
            }
        }
    }
}

fn each<T: UnknownValues>(prefix: &str, field: &str, items: &[T], out: &mut Vec<UnknownValue>) {
    for (i, item) in items.iter().enumerate() {
        item.unknown_values_into(&join(&join(prefix, field), i), out);
    }
}

impl UnknownValues for Snapshot {
    fn unknown_values_into(&self, prefix: &str, out: &mut Vec<UnknownValue>) {
        each(prefix, "workloads", &self.workloads, out);
        each(prefix, "services", &self.services, out);
        each(
            prefix,
            "authorizationPolicies",
            &self.authorization_policies,
            out,
        );
        each(
            prefix,
            "peerAuthentications",
            &self.peer_authentications,
            out,
        );
        each(prefix, "routes", &self.routes, out);
        each(
            prefix,
            "destinationPolicies",
            &self.destination_policies,
            out,
        );
        each(
            prefix,
            "requestAuthentications",
            &self.request_authentications,
            out,
        );
        each(prefix, "telemetries", &self.telemetries, out);
    }
}

const UNKNOWN_METRIC: &str = "the override applies to no metric";
const UNKNOWN_REPORT_MODE: &str = "the override applies to neither side";
const UNKNOWN_TRACE_PROTOCOL: &str = "spans are not sent";

impl UnknownValues for Telemetry {
    fn unknown_values_into(&self, prefix: &str, out: &mut Vec<UnknownValue>) {
        for (i, o) in self.metrics.iter().enumerate() {
            let path = join(&join(prefix, "metrics"), i);
            if o.metric == super::MetricName::Unknown {
                push(out, join(&path, "metric"), None, UNKNOWN_METRIC);
            }
            if o.mode == super::ReportMode::Unknown {
                push(out, join(&path, "mode"), None, UNKNOWN_REPORT_MODE);
            }
        }
        let provider = self.tracing.as_ref().and_then(|t| t.provider.as_ref());
        if provider.is_some_and(|p| p.protocol == super::TraceProtocol::Unknown) {
            let path = join(prefix, "tracing.provider.protocol");
            push(out, path, None, UNKNOWN_TRACE_PROTOCOL);
        }
    }
}

/// Consumes any value without reporting it as an unknown field: the unknown variant of a
/// data-carrying enum is reported once, as an unknown value with its tag, not also as fields.
pub(super) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Skip, D::Error> {
        de.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Skip, D::Error> {
        Skip::deserialize(de)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Skip, D::Error> {
        Skip::deserialize(de)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Skip, A::Error> {
        use de::VariantAccess;
        let (Skip, variant) = data.variant::<Skip>()?;
        variant.newtype_variant::<Skip>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> (Snapshot, Vec<String>, Vec<String>) {
        let mut de = serde_json::Deserializer::from_str(json);
        let (snapshot, fields): (Snapshot, _) = deserialize_reporting(&mut de).expect("tolerated");
        let values = snapshot
            .unknown_values()
            .iter()
            .map(ToString::to_string)
            .collect();
        (snapshot, fields, values)
    }

    #[test]
    fn unknown_fields_and_values_are_collected_with_their_paths() {
        // (what, JSON, unknown field paths, unknown values)
        let cases: &[(&str, &str, &[&str], &[&str])] = &[
            ("nothing unknown", r#"{"services":[{"name":"a","namespace":"b"}]}"#, &[], &[]),
            (
                "top-level field",
                r#"{"waypoints":[{"name":"w"}],"services":[]}"#,
                &["waypoints"],
                &[],
            ),
            (
                "field of a list item",
                r#"{"services":[{"name":"a","namespace":"b"},{"name":"c","namespace":"d","vipz":[]}]}"#,
                &["services.1.vipz"],
                &[],
            ),
            (
                "field inside an Option (no `?` in the path)",
                r#"{"workloads":[{"uid":"u","name":"n","namespace":"s","addresses":[],"waypoint":{"name":"w","namespace":"s","hbone":true}}]}"#,
                &["workloads.0.waypoint.hbone"],
                &[],
            ),
            (
                "two fields, input order",
                r#"{"authorizationPolicies":[{"name":"p","namespace":"s","rules":[{"from":[{"principals":["x"],"serviceAccounts":["y"]}],"to":[{"ports":[1],"portRanges":[]}]}]}]}"#,
                &[
                    "authorizationPolicies.0.rules.0.from.0.serviceAccounts",
                    "authorizationPolicies.0.rules.0.to.0.portRanges",
                ],
                &[],
            ),
            (
                "unknown authorization action",
                r#"{"authorizationPolicies":[{"name":"p","namespace":"s","action":"CUSTOM"}]}"#,
                &[],
                &["authorizationPolicies.0.action: unknown value (the policy denies every connection to the workloads it applies to)"],
            ),
            (
                "unknown peer authentication modes",
                r#"{"peerAuthentications":[{"name":"p","namespace":"s","mode":"OPTIONAL_MUTUAL","portLevelMtls":{"8080":"STRICT","9090":"NEWER"}}]}"#,
                &[],
                &[
                    "peerAuthentications.0.mode: unknown value (taken as STRICT)",
                    "peerAuthentications.0.portLevelMtls.9090: unknown value (taken as STRICT)",
                ],
            ),
            (
                "unknown string match: reported once, as a value, not as fields",
                r#"{"routes":[{"name":"r","namespace":"s","hosts":["h"],"rules":[{"matches":[{"uri":{"suffix":{"value":"x"}},"headers":{"v":{"exact":"1"}}}]}]}]}"#,
                &[],
                &["routes.0.rules.0.matches.0.uri: unknown value \"suffix\" (the match never matches)"],
            ),
            (
                "unknown load balancer, string and map forms, and a field of a known one",
                r#"{"destinationPolicies":[{"name":"d","namespace":"s","host":"h","trafficPolicy":{"loadBalancer":"ringHash"},"subsets":[{"name":"v1","trafficPolicy":{"loadBalancer":{"maglev":{"tableSize":7}}}},{"name":"v2","trafficPolicy":{"loadBalancer":{"consistentHash":{"header":"x","hashFunction":"xx"}}}}]}]}"#,
                &["destinationPolicies.0.subsets.1.trafficPolicy.loadBalancer.consistentHash.hashFunction"],
                &[
                    "destinationPolicies.0.trafficPolicy.loadBalancer: unknown value \"ringHash\" (round robin)",
                    "destinationPolicies.0.subsets.0.trafficPolicy.loadBalancer: unknown value \"maglev\" (round robin)",
                ],
            ),
            (
                "unknown route kind",
                r#"{"routes":[{"name":"r","namespace":"s","hosts":["h"],"kind":"grpcRoute"}]}"#,
                &[],
                &["routes.0.kind: unknown value (ignored)"],
            ),
        ];
        for (what, json, fields, values) in cases {
            let (_, got_fields, got_values) = decode(json);
            assert_eq!(&got_fields, fields, "{what}: fields");
            assert_eq!(&got_values, values, "{what}: values");
        }
    }

    #[test]
    fn known_values_keep_their_meaning() {
        let (s, fields, values) = decode(
            r#"{"authorizationPolicies":[{"name":"p","namespace":"s","action":"DENY"}],
                "peerAuthentications":[{"name":"q","namespace":"s","mode":"PERMISSIVE"}],
                "destinationPolicies":[{"name":"d","namespace":"s","host":"h","trafficPolicy":{"loadBalancer":{"consistentHash":{"header":"x"}}}}],
                "routes":[{"name":"r","namespace":"s","hosts":["h"],"kind":"httpRoute","rules":[{"matches":[{"uri":{"prefix":"/a"}}]}]}]}"#,
        );
        assert!(
            fields.is_empty() && values.is_empty(),
            "{fields:?} {values:?}"
        );
        assert_eq!(
            s.authorization_policies[0].action,
            AuthorizationAction::Deny
        );
        assert_eq!(s.peer_authentications[0].mode, PeerAuthMode::Permissive);
        assert_eq!(
            s.destination_policies[0].traffic_policy.load_balancer,
            Some(LoadBalancer::ConsistentHash(super::super::ConsistentHash {
                header: Some("x".to_owned()),
                ..Default::default()
            }))
        );
        assert_eq!(s.routes[0].kind, super::super::RouteKind::HttpRoute);
        assert_eq!(
            s.routes[0].rules[0].matches[0].uri,
            Some(StringMatch::Prefix("/a".to_owned()))
        );
    }

    #[test]
    fn malformed_values_are_still_errors() {
        for (what, json) in [
            ("wrong type", r#"{"services":[{"name":1,"namespace":"b"}]}"#),
            ("missing required field", r#"{"services":[{"name":"a"}]}"#),
            (
                "action not a string",
                r#"{"authorizationPolicies":[{"name":"p","namespace":"s","action":{"x":1}}]}"#,
            ),
            (
                "two match kinds",
                r#"{"routes":[{"name":"r","namespace":"s","hosts":["h"],"rules":[{"matches":[{"uri":{"exact":"a","prefix":"b"}}]}]}]}"#,
            ),
        ] {
            let mut de = serde_json::Deserializer::from_str(json);
            let result: Result<(Snapshot, _), _> = deserialize_reporting(&mut de);
            assert!(result.is_err(), "{what}");
        }
    }
}

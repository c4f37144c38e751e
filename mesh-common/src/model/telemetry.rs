//! Telemetry settings in the compact model (Istio `Telemetry`, `telemetry.istio.io/v1`, and the
//! MeshConfig providers it names), and the pure resolution of the settings that apply to one
//! scope: mesh-wide (root namespace), then namespace, then workload or target, each level
//! overriding only the fields it sets, as Istio merges them.

use std::collections::BTreeMap;

use super::PolicyTargetRef;

/// One Telemetry resource, translated (providers resolved against the mesh configuration).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// Resource name (`mesh-config` for the settings of the mesh configuration itself).
    pub name: String,
    /// Resource namespace.
    pub namespace: String,
    /// True when the resource is in the root namespace without selector or targets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mesh_wide: bool,
    /// Workload label selector (`selector.matchLabels`); `None`: the whole namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// Gateways (waypoints) or services the resource is attached to (`targetRefs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetRef>,
    /// Metric overrides (`metrics[].overrides`, Prometheus provider), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricOverride>,
    /// Tracing (`tracing[0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSettings>,
    /// Access logging (`accessLogging[0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_logging: Option<AccessLogSettings>,
}

/// Which side's reports a setting applies to (`match.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportMode {
    /// Both sides (the default).
    #[default]
    ClientAndServer,
    /// Client side (`reporter="source"`).
    Client,
    /// Server side (`reporter="destination"`; a waypoint reports as a server).
    Server,
    /// A mode this build does not know (from a newer controller): applies to neither side.
    #[serde(other)]
    Unknown,
}

impl ReportMode {
    /// Whether a setting with this mode applies to a report from the client side (`client`) or
    /// the server side.
    pub fn applies(self, client: bool) -> bool {
        match self {
            ReportMode::ClientAndServer => true,
            ReportMode::Client => client,
            ReportMode::Server => !client,
            ReportMode::Unknown => false,
        }
    }
}

/// Istio's standard metrics, as `Telemetry` names them (`match.metric`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MetricName {
    /// Every metric (the default).
    #[default]
    AllMetrics,
    /// `istio_requests_total`.
    RequestCount,
    /// `istio_request_duration_milliseconds`.
    RequestDuration,
    /// `istio_request_bytes`.
    RequestSize,
    /// `istio_response_bytes`.
    ResponseSize,
    /// `istio_tcp_connections_opened_total`.
    TcpOpenedConnections,
    /// `istio_tcp_connections_closed_total`.
    TcpClosedConnections,
    /// `istio_tcp_sent_bytes_total`.
    TcpSentBytes,
    /// `istio_tcp_received_bytes_total`.
    TcpReceivedBytes,
    /// `istio_request_messages_total` (gRPC streaming; not reported by this mesh yet).
    GrpcRequestMessages,
    /// `istio_response_messages_total` (gRPC streaming; not reported by this mesh yet).
    GrpcResponseMessages,
    /// A metric this build does not know: the override applies to nothing.
    #[serde(other)]
    Unknown,
}

impl MetricName {
    /// Whether an override naming `self` applies to `metric`.
    pub fn covers(self, metric: MetricName) -> bool {
        self == MetricName::AllMetrics || self == metric
    }
}

/// One metric override (`metrics[].overrides[]`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricOverride {
    /// The metric (`match.metric`; `ALL_METRICS` when absent).
    #[serde(default)]
    pub metric: MetricName,
    /// The side (`match.mode`).
    #[serde(default)]
    pub mode: ReportMode,
    /// `disabled`: `Some(true)` stops the metric, `Some(false)` turns it back on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// `tagOverrides`: a label removed, or added / replaced with a value expression.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, TagOverride>,
}

/// One `tagOverrides` entry.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "operation")]
pub enum TagOverride {
    /// `operation: REMOVE`: the label is dropped.
    Remove,
    /// `operation: UPSERT`: the label is set to the value of an attribute expression (Istio's
    /// CEL subset: a quoted literal, `request.host`, `request.method`, `request.path`,
    /// `request.headers['name']`, `source.*`/`destination.*` labels...).
    Upsert {
        /// The expression.
        value: String,
    },
}

/// Tracing settings (`tracing[0]`); each field `None` when the resource does not set it, so a
/// less specific level's value stays.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracingSettings {
    /// Where spans go (`providers[0]`, resolved from MeshConfig `extensionProviders`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<TraceProvider>,
    /// `randomSamplingPercentage` (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    /// `disableSpanReporting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// `customTags`: span attributes added to every span.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
}

/// A `customTags` entry.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CustomTag {
    /// `literal.value`.
    Literal {
        /// The value.
        value: String,
    },
    /// `header.name`, with `defaultValue` when the request lacks it.
    Header {
        /// Request header name.
        name: String,
        /// Value when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_value: Option<String>,
    },
    /// `environment.name` of the proxy, with `defaultValue`.
    Environment {
        /// Environment variable name.
        name: String,
        /// Value when unset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_value: Option<String>,
    },
}

/// A trace collector (MeshConfig `extensionProviders[]` entry of kind `opentelemetry` or
/// `zipkin`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceProvider {
    /// Provider name.
    pub name: String,
    /// Wire format.
    pub protocol: TraceProtocol,
    /// Collector host: a service host name, or an IP address.
    pub host: String,
    /// Collector port.
    pub port: u16,
    /// HTTP path (OTLP/HTTP: `/v1/traces`; Zipkin: `/api/v2/spans`); unused for OTLP/gRPC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Longest attribute value sent (`maxTagLength`); 0: the default (256).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_tag_length: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How spans are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TraceProtocol {
    /// OTLP over gRPC (`opentelemetry` provider, the default).
    OtlpGrpc,
    /// OTLP over HTTP, protobuf body (`opentelemetry` provider with `http`).
    OtlpHttp,
    /// Zipkin JSON v2 over HTTP (`zipkin` provider).
    Zipkin,
    /// A protocol this build does not know: spans are not sent.
    #[serde(other)]
    Unknown,
}

/// Access-log settings (`accessLogging[0]`); fields `None` when not set at this level.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogSettings {
    /// `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// `filter.expression` (CEL subset on `response.code`, `response.flags`,
    /// `connection.mtls`...): only matching entries are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Where and how (`providers[0]`, resolved from MeshConfig).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<AccessLogProvider>,
}

/// An access-log sink (MeshConfig `envoyFileAccessLog` provider, or `accessLogFile`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogProvider {
    /// Provider name (`envoy` is Istio's built-in one).
    pub name: String,
    /// File written (`/dev/stdout` by default).
    #[serde(default = "default_log_path")]
    pub path: String,
    /// Line format.
    #[serde(default)]
    pub format: AccessLogFormat,
}

fn default_log_path() -> String {
    "/dev/stdout".to_owned()
}

/// An access-log line format.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccessLogFormat {
    /// Envoy's text format: Istio's default when `template` is `None`, else an Envoy format
    /// string (`%START_TIME% %RESPONSE_CODE% ...`).
    Text {
        /// The format string.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
    },
    /// One JSON object per line: Istio's default fields when `labels` is empty, else the
    /// given names with Envoy format operators as values.
    Json {
        /// Field name to format operator.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
    },
    /// Istio's default text format.
    #[default]
    DefaultText,
}

/// Where a report comes from, for picking the Telemetry resources that apply.
#[derive(Clone, Copy, Debug)]
pub struct TelemetryScope<'a> {
    /// The namespace of the workload (or of the service, for a waypoint's request).
    pub namespace: &'a str,
    /// The workload's labels, when the scope is a workload.
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// Targets the scope is (a waypoint's Gateway, a destination Service): matched against
    /// `targetRefs` as `(kind, namespace, name)`.
    pub targets: &'a [(&'a str, &'a str, &'a str)],
}

/// The settings that apply to one scope, every level merged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EffectiveTelemetry {
    /// Metric overrides, least specific first (a later one wins for the same metric and tag).
    pub metrics: Vec<MetricOverride>,
    /// Tracing, merged.
    pub tracing: TracingSettings,
    /// Access logging, merged.
    pub access_logging: AccessLogSettings,
}

/// Istio's default sampling percentage when nothing sets one.
pub const DEFAULT_SAMPLING_PERCENTAGE: f64 = 1.0;

impl EffectiveTelemetry {
    /// Whether access logs are written: a provider is set and no level disabled them last.
    pub fn access_log_enabled(&self) -> bool {
        self.access_logging.provider.is_some() && self.access_logging.disabled != Some(true)
    }

    /// The sampling percentage (Istio's 1% when unset), clamped to 0-100.
    pub fn sampling_percentage(&self) -> f64 {
        self.tracing
            .random_sampling_percentage
            .unwrap_or(DEFAULT_SAMPLING_PERCENTAGE)
            .clamp(0.0, 100.0)
    }

    /// The trace collector spans go to, unless reporting is off.
    pub fn trace_provider(&self) -> Option<&TraceProvider> {
        if self.tracing.disable_span_reporting == Some(true) {
            return None;
        }
        self.tracing.provider.as_ref()
    }

    /// Whether `metric` is reported from the client side (`client`) or the server side: the
    /// last override covering it decides; reported when none does.
    pub fn metric_enabled(&self, metric: MetricName, client: bool) -> bool {
        self.metrics
            .iter()
            .filter(|o| o.metric.covers(metric) && o.mode.applies(client))
            .filter_map(|o| o.disabled)
            .next_back()
            .is_none_or(|disabled| !disabled)
    }

    /// The tag overrides for `metric` on one side, the more specific winning per tag.
    pub fn tag_overrides(&self, metric: MetricName, client: bool) -> BTreeMap<String, TagOverride> {
        let mut tags = BTreeMap::new();
        for o in self
            .metrics
            .iter()
            .filter(|o| o.metric.covers(metric) && o.mode.applies(client))
        {
            for (name, op) in &o.tags {
                tags.insert(name.clone(), op.clone());
            }
        }
        tags
    }
}

/// How specific a resource is for a scope; `None` when it does not apply.
fn specificity(t: &Telemetry, scope: &TelemetryScope<'_>) -> Option<u8> {
    if !t.target_refs.is_empty() {
        let hit = t.target_refs.iter().any(|r| {
            scope
                .targets
                .iter()
                .any(|(kind, ns, name)| r.kind == *kind && r.namespace == *ns && r.name == *name)
        });
        return hit.then_some(3);
    }
    if let Some(selector) = &t.selector {
        if t.namespace != scope.namespace {
            return None;
        }
        let labels = scope.labels?;
        let hit = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        return hit.then_some(2);
    }
    if t.mesh_wide {
        return Some(0);
    }
    (t.namespace == scope.namespace).then_some(1)
}

/// The settings for `scope`: every applying resource, least specific first (mesh, namespace,
/// workload, target; within a level by name, so the result does not depend on arrival order),
/// each overriding the fields it sets.
pub fn effective_telemetry(
    telemetries: &[Telemetry],
    scope: &TelemetryScope<'_>,
) -> EffectiveTelemetry {
    let mut applying: Vec<(u8, &Telemetry)> = telemetries
        .iter()
        .filter_map(|t| specificity(t, scope).map(|s| (s, t)))
        .collect();
    applying
        .sort_by(|a, b| (a.0, &a.1.namespace, &a.1.name).cmp(&(b.0, &b.1.namespace, &b.1.name)));
    let mut out = EffectiveTelemetry::default();
    for (_, t) in applying {
        out.metrics.extend(t.metrics.iter().cloned());
        if let Some(tracing) = &t.tracing {
            merge_tracing(&mut out.tracing, tracing);
        }
        if let Some(logging) = &t.access_logging {
            merge_access_logging(&mut out.access_logging, logging);
        }
    }
    out
}

fn merge_tracing(into: &mut TracingSettings, from: &TracingSettings) {
    if from.provider.is_some() {
        into.provider.clone_from(&from.provider);
    }
    if from.random_sampling_percentage.is_some() {
        into.random_sampling_percentage = from.random_sampling_percentage;
    }
    if from.disable_span_reporting.is_some() {
        into.disable_span_reporting = from.disable_span_reporting;
    }
    for (k, v) in &from.custom_tags {
        into.custom_tags.insert(k.clone(), v.clone());
    }
}

fn merge_access_logging(into: &mut AccessLogSettings, from: &AccessLogSettings) {
    if from.disabled.is_some() {
        into.disabled = from.disabled;
    }
    if from.filter.is_some() {
        into.filter.clone_from(&from.filter);
    }
    if from.provider.is_some() {
        into.provider.clone_from(&from.provider);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envoy() -> AccessLogProvider {
        AccessLogProvider {
            name: "envoy".into(),
            path: default_log_path(),
            format: AccessLogFormat::DefaultText,
        }
    }

    fn telemetry(namespace: &str, name: &str) -> Telemetry {
        Telemetry {
            name: name.into(),
            namespace: namespace.into(),
            ..Telemetry::default()
        }
    }

    fn logging(
        disabled: Option<bool>,
        provider: Option<AccessLogProvider>,
    ) -> Option<AccessLogSettings> {
        Some(AccessLogSettings {
            disabled,
            filter: None,
            provider,
        })
    }

    #[test]
    fn levels_override_only_what_they_set() {
        let mut mesh = telemetry("istio-system", "mesh-default");
        mesh.mesh_wide = true;
        mesh.access_logging = logging(None, Some(envoy()));
        mesh.tracing = Some(TracingSettings {
            random_sampling_percentage: Some(10.0),
            ..TracingSettings::default()
        });
        let mut quiet = telemetry("quiet", "no-logs");
        quiet.access_logging = logging(Some(true), None);
        let mut loud_pod = telemetry("quiet", "pod-logs");
        loud_pod.selector = Some(BTreeMap::from([("app".to_owned(), "loud".to_owned())]));
        loud_pod.access_logging = logging(Some(false), None);
        let all = [loud_pod, quiet, mesh];
        let loud = BTreeMap::from([("app".to_owned(), "loud".to_owned())]);
        let other = BTreeMap::from([("app".to_owned(), "other".to_owned())]);
        // (namespace, labels, logs written)
        type Labels = BTreeMap<String, String>;
        let cases: [(&str, Option<&Labels>, bool); 4] = [
            ("apps", None, true),
            ("quiet", None, false),
            ("quiet", Some(&other), false),
            ("quiet", Some(&loud), true),
        ];
        for (namespace, labels, logs) in cases {
            let scope = TelemetryScope {
                namespace,
                labels,
                targets: &[],
            };
            let eff = effective_telemetry(&all, &scope);
            assert_eq!(eff.access_log_enabled(), logs, "{namespace} {labels:?}");
            assert_eq!(eff.sampling_percentage(), 10.0, "{namespace}: inherited");
        }
    }

    #[test]
    fn target_refs_apply_only_to_their_target() {
        let mut waypoint = telemetry("apps", "waypoint-tracing");
        waypoint.target_refs = vec![PolicyTargetRef {
            group: "gateway.networking.k8s.io".into(),
            kind: "Gateway".into(),
            name: "waypoint".into(),
            namespace: "apps".into(),
        }];
        waypoint.tracing = Some(TracingSettings {
            random_sampling_percentage: Some(50.0),
            ..TracingSettings::default()
        });
        let all = [waypoint];
        let hit = [("Gateway", "apps", "waypoint")];
        let miss = [("Gateway", "apps", "other")];
        for (targets, want) in [(&hit[..], 50.0), (&miss[..], DEFAULT_SAMPLING_PERCENTAGE)] {
            let scope = TelemetryScope {
                namespace: "apps",
                labels: None,
                targets,
            };
            let eff = effective_telemetry(&all, &scope);
            assert_eq!(eff.sampling_percentage(), want, "{targets:?}");
        }
    }

    #[test]
    fn the_last_override_covering_a_metric_decides() {
        let eff = EffectiveTelemetry {
            metrics: vec![
                MetricOverride {
                    metric: MetricName::AllMetrics,
                    disabled: Some(true),
                    ..MetricOverride::default()
                },
                MetricOverride {
                    metric: MetricName::RequestCount,
                    mode: ReportMode::Server,
                    disabled: Some(false),
                    ..MetricOverride::default()
                },
            ],
            ..EffectiveTelemetry::default()
        };
        // (metric, client side, reported)
        let cases = [
            (MetricName::RequestCount, false, true),
            (MetricName::RequestCount, true, false),
            (MetricName::TcpSentBytes, false, false),
        ];
        for (metric, client, want) in cases {
            assert_eq!(
                eff.metric_enabled(metric, client),
                want,
                "{metric:?} {client}"
            );
        }
        assert!(EffectiveTelemetry::default().metric_enabled(MetricName::RequestSize, true));
    }
}

//! `telemetry.istio.io/v1` Telemetry (v1alpha1 accepted), with Istio's field names: metric
//! overrides, tracing and access logging for the mesh, a namespace, a workload or a target.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::istio_networking::spec_type;
use super::{PolicyTargetReference, WorkloadSelector};

/// Telemetry: how the mesh reports metrics, traces and access logs for the workloads it
/// selects.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "telemetry.istio.io",
    version = "v1",
    kind = "Telemetry",
    plural = "telemetries",
    shortname = "telemetry",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    /// Workloads; absent selects the namespace (or the mesh, in the root namespace).
    pub selector: Option<WorkloadSelector>,
    /// Single attachment target (waypoint Gateway or Service).
    pub target_ref: Option<PolicyTargetReference>,
    /// Attachment targets.
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Tracing settings.
    #[serde(default)]
    pub tracing: Vec<Tracing>,
    /// Metric settings.
    #[serde(default)]
    pub metrics: Vec<Metrics>,
    /// Access-log settings.
    #[serde(default)]
    pub access_logging: Vec<AccessLogging>,
}

spec_type! {
    /// A provider reference (`providers: [{name}]`), resolved against MeshConfig.
    pub struct ProviderRef {
        /// Provider name (`extensionProviders[].name`, or a built-in: `envoy`, `prometheus`).
        pub name: String,
    }
}

spec_type! {
    /// `match.mode` for tracing and access logging.
    pub struct ModeMatch {
        /// CLIENT_AND_SERVER (default), CLIENT or SERVER.
        pub mode: Option<String>,
    }
}

spec_type! {
    /// One `tracing` entry.
    pub struct Tracing {
        /// Which side.
        #[serde(rename = "match")]
        pub match_: Option<ModeMatch>,
        /// Where spans go.
        #[serde(default)]
        pub providers: Vec<ProviderRef>,
        /// Percentage of requests sampled (0-100).
        pub random_sampling_percentage: Option<f64>,
        /// Whether spans are not reported.
        pub disable_span_reporting: Option<bool>,
        /// Span attributes added to every span.
        #[serde(default)]
        pub custom_tags: BTreeMap<String, CustomTag>,
        /// Sample by the `x-request-id` (not supported: random sampling).
        pub use_request_id_for_trace_sampling: Option<bool>,
        /// Istio's own span tags (always added).
        pub enable_istio_tags: Option<bool>,
    }
}

spec_type! {
    /// One `customTags` value: exactly one of the three.
    pub struct CustomTag {
        /// A fixed value.
        pub literal: Option<LiteralTag>,
        /// An environment variable of the proxy.
        pub environment: Option<EnvironmentTag>,
        /// A request header.
        pub header: Option<HeaderTag>,
    }
}

spec_type! {
    /// `literal`.
    pub struct LiteralTag {
        /// The value.
        pub value: String,
    }
}

spec_type! {
    /// `environment`.
    pub struct EnvironmentTag {
        /// Variable name.
        pub name: String,
        /// Value when unset.
        pub default_value: Option<String>,
    }
}

spec_type! {
    /// `header`.
    pub struct HeaderTag {
        /// Header name.
        pub name: String,
        /// Value when absent.
        pub default_value: Option<String>,
    }
}

spec_type! {
    /// One `metrics` entry.
    pub struct Metrics {
        /// Metric providers (`prometheus` is the only one this mesh has).
        #[serde(default)]
        pub providers: Vec<ProviderRef>,
        /// Overrides, in order.
        #[serde(default)]
        pub overrides: Vec<MetricsOverride>,
        /// How often metrics are reported (Prometheus scrapes; not applicable).
        pub reporting_interval: Option<String>,
    }
}

spec_type! {
    /// One metric override.
    pub struct MetricsOverride {
        /// Which metric and side.
        #[serde(rename = "match")]
        pub match_: Option<MetricSelector>,
        /// Whether the metric is off.
        pub disabled: Option<bool>,
        /// Label changes.
        #[serde(default)]
        pub tag_overrides: BTreeMap<String, TagOverride>,
    }
}

spec_type! {
    /// `match` of a metric override.
    pub struct MetricSelector {
        /// A standard metric name (`REQUEST_COUNT`, ..., `ALL_METRICS`).
        pub metric: Option<String>,
        /// A custom metric name (not supported).
        pub custom_metric: Option<String>,
        /// CLIENT_AND_SERVER (default), CLIENT or SERVER.
        pub mode: Option<String>,
    }
}

spec_type! {
    /// One `tagOverrides` value.
    pub struct TagOverride {
        /// UPSERT (default) or REMOVE.
        pub operation: Option<String>,
        /// The value expression, for UPSERT.
        pub value: Option<String>,
    }
}

spec_type! {
    /// One `accessLogging` entry.
    pub struct AccessLogging {
        /// Which side.
        #[serde(rename = "match")]
        pub match_: Option<ModeMatch>,
        /// Where logs go.
        #[serde(default)]
        pub providers: Vec<ProviderRef>,
        /// Whether logging is off.
        pub disabled: Option<bool>,
        /// Which entries are logged.
        pub filter: Option<AccessLogFilter>,
    }
}

spec_type! {
    /// `filter`.
    pub struct AccessLogFilter {
        /// A CEL expression, e.g. `response.code >= 400`.
        pub expression: String,
    }
}

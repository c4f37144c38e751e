//! Istio's mesh configuration (`MeshConfig`), as the YAML under the key `mesh` of the ConfigMap
//! `istio` in the root namespace: the telemetry fields the mesh applies (access-log file and
//! format, default providers, extension providers, default trace sampling). MeshConfig has many
//! more fields; each one present is kept in `other` so the translation can name it in a warning
//! instead of dropping it silently.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Name of the ConfigMap that holds the mesh configuration.
pub const MESH_CONFIG_MAP: &str = "istio";
/// Key of the mesh configuration in that ConfigMap.
pub const MESH_CONFIG_KEY: &str = "mesh";

/// Fields not modelled, by name, for warnings.
pub type Other = BTreeMap<String, Value>;

/// The mesh configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// File every proxy writes access logs to (`/dev/stdout`); empty: off.
    pub access_log_file: Option<String>,
    /// `TEXT` (default) or `JSON`.
    pub access_log_encoding: Option<String>,
    /// Envoy format string (TEXT) or JSON template; empty: Istio's default.
    pub access_log_format: Option<String>,
    /// Whether tracing is on (legacy switch; providers decide here).
    pub enable_tracing: Option<bool>,
    /// Proxy defaults (`defaultConfig`): only `tracing` is read.
    pub default_config: Option<ProxyConfig>,
    /// Providers used when a Telemetry names none, and mesh-wide.
    pub default_providers: Option<DefaultProviders>,
    /// Named providers Telemetry resources refer to.
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Other,
}

/// `defaultConfig`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// Legacy tracing settings.
    pub tracing: Option<LegacyTracing>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Other,
}

/// `defaultConfig.tracing`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyTracing {
    /// Sampling percentage (0-100); Istio's default is 1.
    pub sampling: Option<f64>,
    /// Legacy Zipkin collector.
    pub zipkin: Option<LegacyZipkin>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Other,
}

/// `defaultConfig.tracing.zipkin`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyZipkin {
    /// `host:port`.
    pub address: Option<String>,
}

/// `defaultProviders`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultProviders {
    /// Trace providers.
    #[serde(default)]
    pub tracing: Vec<String>,
    /// Metric providers.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// Access-log providers.
    #[serde(default)]
    pub access_logging: Vec<String>,
}

/// One `extensionProviders` entry: a name and one provider kind.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// Name Telemetry resources use.
    pub name: String,
    /// File access log.
    pub envoy_file_access_log: Option<FileAccessLog>,
    /// OpenTelemetry collector (OTLP).
    pub opentelemetry: Option<OpenTelemetry>,
    /// Zipkin collector.
    pub zipkin: Option<Zipkin>,
    /// Prometheus (metrics; the mesh's only metrics provider).
    pub prometheus: Option<Value>,
    /// Every other provider kind (not supported).
    #[serde(flatten)]
    pub other: Other,
}

/// `envoyFileAccessLog`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileAccessLog {
    /// File path.
    pub path: Option<String>,
    /// Line format.
    pub log_format: Option<LogFormat>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Other,
}

/// `logFormat`: `text` or `labels` (JSON).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFormat {
    /// Envoy format string.
    pub text: Option<String>,
    /// JSON fields: name to format operator.
    pub labels: Option<BTreeMap<String, String>>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Other,
}

/// `opentelemetry`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenTelemetry {
    /// Collector host (`name.namespace.svc.cluster.local`, `namespace/host`, or an address).
    pub service: String,
    /// Collector port.
    pub port: u16,
    /// Longest attribute value.
    pub max_tag_length: Option<u32>,
    /// OTLP over HTTP instead of gRPC.
    pub http: Option<OtlpHttp>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Other,
}

/// `opentelemetry.http`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtlpHttp {
    /// Request path (default `/v1/traces`).
    pub path: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Other,
}

/// `zipkin`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Zipkin {
    /// Collector host.
    pub service: String,
    /// Collector port.
    pub port: u16,
    /// Longest attribute value.
    pub max_tag_length: Option<u32>,
    /// Request path (default `/api/v2/spans`).
    pub path: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Other,
}

/// Parses the `mesh` value of the ConfigMap.
pub fn parse(text: &str) -> Result<MeshConfig, String> {
    let value: Value = yaml_serde::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    if value.is_null() {
        return Ok(MeshConfig::default());
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.into_inner())
    })
}

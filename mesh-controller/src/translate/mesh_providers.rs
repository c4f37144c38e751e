//! The telemetry providers of the mesh configuration (ConfigMap `istio` in the root namespace,
//! key `mesh`): the named `extensionProviders` plus Istio's built-in `envoy` (file access log)
//! and `prometheus`, and the mesh-wide settings (`accessLogFile`, `defaultProviders`,
//! `defaultConfig.tracing.sampling`) as a synthetic mesh-wide Telemetry, the least specific
//! level every Telemetry resource overrides. Fields the mesh does not apply are warnings naming
//! the ConfigMap and the field.

use std::collections::BTreeMap;

use mesh_common::model as m;

use super::field::Notes;
use super::Context;
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::mesh_config::{self as mc, MeshConfig, MESH_CONFIG_KEY, MESH_CONFIG_MAP};

/// Name of the synthetic Telemetry holding the mesh configuration's settings.
pub const MESH_CONFIG_TELEMETRY: &str = "mesh-config";
/// Istio's built-in file access-log provider.
pub const ENVOY_PROVIDER: &str = "envoy";
/// Istio's built-in metrics provider.
pub const PROMETHEUS_PROVIDER: &str = "prometheus";
/// Default OTLP/HTTP path.
const OTLP_HTTP_PATH: &str = "/v1/traces";
/// Default Zipkin path.
const ZIPKIN_PATH: &str = "/api/v2/spans";

/// A resolved provider.
#[derive(Clone, Debug, PartialEq)]
pub enum Provider {
    /// A file access log.
    AccessLog(m::AccessLogProvider),
    /// A trace collector.
    Trace(m::TraceProvider),
    /// Prometheus (metrics are always scraped).
    Prometheus,
    /// A provider kind the mesh does not support, e.g. `envoyOtelAls`.
    Unsupported(String),
}

/// The providers by name and the mesh-wide defaults.
#[derive(Clone, Debug, Default)]
pub struct MeshProviders {
    /// Every provider by name (built-ins included).
    pub by_name: BTreeMap<String, Provider>,
    /// `defaultProviders`.
    pub defaults: mc::DefaultProviders,
    /// The synthetic mesh-wide Telemetry, when the mesh configuration sets anything.
    pub mesh_wide: Option<m::Telemetry>,
}

/// Reads the mesh configuration from the store (defaults when there is none).
pub(super) fn mesh_providers(cx: &mut Context<'_>) -> MeshProviders {
    let key = ObjectKey {
        kind: Kind::ConfigMap,
        namespace: cx.options.root_namespace.clone(),
        name: MESH_CONFIG_MAP.to_owned(),
    };
    let text = match cx.store.get(&key).map(|e| e.object.clone()) {
        Some(object) => match &*object {
            Object::ConfigMap(map) => map
                .data
                .as_ref()
                .and_then(|d| d.get(MESH_CONFIG_KEY))
                .cloned(),
            _ => None,
        },
        None => None,
    };
    let config = match text.as_deref().map(mc::parse) {
        Some(Ok(config)) => config,
        Some(Err(message)) => {
            cx.error(&key, &format!("data.{MESH_CONFIG_KEY}"), message);
            MeshConfig::default()
        }
        None => MeshConfig::default(),
    };
    let mut notes = Notes::default();
    let providers = resolve(&config, &mut notes);
    notes.report(cx, &key);
    providers
}

/// The providers and mesh-wide settings of a parsed mesh configuration; what is not applied
/// goes to `notes` (paths relative to the ConfigMap).
pub fn resolve(config: &MeshConfig, notes: &mut Notes) -> MeshProviders {
    let base = format!("data.{MESH_CONFIG_KEY}");
    for field in config.other.keys() {
        notes.warn(
            &format!("{base}.{field}"),
            "not applied by this mesh (only the telemetry fields of the mesh configuration are read)",
        );
    }
    if let Some(proxy) = &config.default_config {
        unread(notes, &format!("{base}.defaultConfig"), &proxy.other);
    }
    let mut by_name = BTreeMap::new();
    by_name.insert(
        ENVOY_PROVIDER.to_owned(),
        Provider::AccessLog(builtin_envoy(config, &base, notes)),
    );
    by_name.insert(PROMETHEUS_PROVIDER.to_owned(), Provider::Prometheus);
    for (i, p) in config.extension_providers.iter().enumerate() {
        let path = format!("{base}.extensionProviders[{i}]");
        by_name.insert(p.name.clone(), extension_provider(p, &path, notes));
    }
    let defaults = config.default_providers.clone().unwrap_or_default();
    let mesh_wide = mesh_wide(config, &by_name, &defaults, &base, notes);
    MeshProviders {
        by_name,
        defaults,
        mesh_wide,
    }
}

/// `envoy`: `accessLogFile` (default `/dev/stdout`) in `accessLogEncoding` / `accessLogFormat`.
fn builtin_envoy(config: &MeshConfig, base: &str, notes: &mut Notes) -> m::AccessLogProvider {
    let path = config
        .access_log_file
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/dev/stdout".to_owned());
    let template = config.access_log_format.clone().filter(|f| !f.is_empty());
    let format = match config.access_log_encoding.as_deref() {
        None | Some("TEXT") => m::AccessLogFormat::Text { template },
        Some("JSON") => match template {
            None => m::AccessLogFormat::Json {
                labels: BTreeMap::new(),
            },
            Some(t) => match serde_json::from_str::<BTreeMap<String, String>>(&t) {
                Ok(labels) => m::AccessLogFormat::Json { labels },
                Err(e) => {
                    notes.warn(
                        &format!("{base}.accessLogFormat"),
                        format!("not a JSON object of strings ({e}); Istio's default JSON fields are written"),
                    );
                    m::AccessLogFormat::Json {
                        labels: BTreeMap::new(),
                    }
                }
            },
        },
        Some(other) => {
            notes.warn(
                &format!("{base}.accessLogEncoding"),
                format!("unknown encoding {other:?} (TEXT or JSON); TEXT is used"),
            );
            m::AccessLogFormat::Text { template }
        }
    };
    m::AccessLogProvider {
        name: ENVOY_PROVIDER.to_owned(),
        path,
        format,
    }
}

/// Warns about every field of `other` (fields at `path` the mesh does not read).
fn unread(notes: &mut Notes, path: &str, other: &mc::Other) {
    for field in other.keys() {
        notes.warn(&format!("{path}.{field}"), "not applied by this mesh");
    }
}

/// A collector host as the mesh dials it: `namespace/host` loses its namespace prefix.
fn collector_host(service: &str) -> String {
    service
        .rsplit_once('/')
        .map_or(service, |(_, host)| host)
        .to_owned()
}

fn extension_provider(p: &mc::ExtensionProvider, path: &str, notes: &mut Notes) -> Provider {
    let mut chosen = Vec::new();
    if let Some(file) = &p.envoy_file_access_log {
        unread(notes, &format!("{path}.envoyFileAccessLog"), &file.other);
        let format = match &file.log_format {
            None => m::AccessLogFormat::DefaultText,
            Some(f) => {
                unread(
                    notes,
                    &format!("{path}.envoyFileAccessLog.logFormat"),
                    &f.other,
                );
                match (&f.text, &f.labels) {
                    (_, Some(labels)) => m::AccessLogFormat::Json {
                        labels: labels.clone(),
                    },
                    (Some(text), None) => m::AccessLogFormat::Text {
                        template: Some(text.clone()),
                    },
                    (None, None) => m::AccessLogFormat::DefaultText,
                }
            }
        };
        chosen.push(Provider::AccessLog(m::AccessLogProvider {
            name: p.name.clone(),
            path: file
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/dev/stdout".to_owned()),
            format,
        }));
    }
    if let Some(otel) = &p.opentelemetry {
        unread(notes, &format!("{path}.opentelemetry"), &otel.other);
        let (protocol, trace_path) = match &otel.http {
            Some(http) => {
                unread(notes, &format!("{path}.opentelemetry.http"), &http.other);
                (
                    m::TraceProtocol::OtlpHttp,
                    http.path
                        .clone()
                        .unwrap_or_else(|| OTLP_HTTP_PATH.to_owned()),
                )
            }
            None => (m::TraceProtocol::OtlpGrpc, String::new()),
        };
        chosen.push(Provider::Trace(m::TraceProvider {
            name: p.name.clone(),
            protocol,
            host: collector_host(&otel.service),
            port: otel.port,
            path: trace_path,
            max_tag_length: otel.max_tag_length.unwrap_or(0),
        }));
    }
    if let Some(zipkin) = &p.zipkin {
        unread(notes, &format!("{path}.zipkin"), &zipkin.other);
        chosen.push(Provider::Trace(m::TraceProvider {
            name: p.name.clone(),
            protocol: m::TraceProtocol::Zipkin,
            host: collector_host(&zipkin.service),
            port: zipkin.port,
            path: zipkin
                .path
                .clone()
                .unwrap_or_else(|| ZIPKIN_PATH.to_owned()),
            max_tag_length: zipkin.max_tag_length.unwrap_or(0),
        }));
    }
    if p.prometheus.is_some() {
        chosen.push(Provider::Prometheus);
    }
    for kind in p.other.keys() {
        chosen.push(Provider::Unsupported(kind.clone()));
    }
    match chosen.len() {
        0 => Provider::Unsupported("(none)".to_owned()),
        1 => chosen.remove(0),
        _ => {
            notes.warn(
                path,
                "more than one provider kind in one entry; the first is used",
            );
            chosen.remove(0)
        }
    }
}

/// The mesh-wide Telemetry: access logs on with `accessLogFile` or
/// `defaultProviders.accessLogging`; tracing to `defaultProviders.tracing` (or the legacy
/// `defaultConfig.tracing.zipkin.address`) at `defaultConfig.tracing.sampling`.
fn mesh_wide(
    config: &MeshConfig,
    by_name: &BTreeMap<String, Provider>,
    defaults: &mc::DefaultProviders,
    base: &str,
    notes: &mut Notes,
) -> Option<m::Telemetry> {
    let mut telemetry = m::Telemetry {
        name: MESH_CONFIG_TELEMETRY.to_owned(),
        // Empty: sorts before every root-namespace Telemetry, which override it.
        namespace: String::new(),
        mesh_wide: true,
        ..m::Telemetry::default()
    };
    let log_provider = if config
        .access_log_file
        .as_deref()
        .is_some_and(|f| !f.is_empty())
    {
        match by_name.get(ENVOY_PROVIDER) {
            Some(Provider::AccessLog(p)) => Some(p.clone()),
            _ => None,
        }
    } else {
        default_of(
            &defaults.access_logging,
            by_name,
            &format!("{base}.defaultProviders.accessLogging"),
            notes,
            |p| match p {
                Provider::AccessLog(p) => Some(p.clone()),
                _ => None,
            },
        )
    };
    if let Some(provider) = log_provider {
        telemetry.access_logging = Some(m::AccessLogSettings {
            disabled: None,
            filter: None,
            provider: Some(provider),
        });
    }
    let legacy = config
        .default_config
        .as_ref()
        .and_then(|d| d.tracing.as_ref());
    if let Some(legacy) = legacy {
        unread(
            notes,
            &format!("{base}.defaultConfig.tracing"),
            &legacy.other,
        );
    }
    let sampling = legacy.and_then(|t| t.sampling);
    if let Some(s) = sampling.filter(|s| !(0.0..=100.0).contains(s)) {
        notes.warn(
            &format!("{base}.defaultConfig.tracing.sampling"),
            format!("{s} is outside 0-100; clamped"),
        );
    }
    let mut trace_provider = default_of(
        &defaults.tracing,
        by_name,
        &format!("{base}.defaultProviders.tracing"),
        notes,
        |p| match p {
            Provider::Trace(p) => Some(p.clone()),
            _ => None,
        },
    );
    if trace_provider.is_none() {
        let address = legacy
            .and_then(|t| t.zipkin.as_ref())
            .and_then(|z| z.address.as_deref());
        if let Some(address) = address {
            match address.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                Some((host, Ok(port))) => {
                    trace_provider = Some(m::TraceProvider {
                        name: "zipkin".to_owned(),
                        protocol: m::TraceProtocol::Zipkin,
                        host: host.to_owned(),
                        port,
                        path: ZIPKIN_PATH.to_owned(),
                        max_tag_length: 0,
                    })
                }
                _ => notes.warn(
                    &format!("{base}.defaultConfig.tracing.zipkin.address"),
                    format!("{address:?} is not host:port; no spans are sent"),
                ),
            }
        }
    }
    if config.enable_tracing == Some(false) {
        trace_provider = None;
    }
    if trace_provider.is_some() || sampling.is_some() {
        telemetry.tracing = Some(m::TracingSettings {
            provider: trace_provider,
            random_sampling_percentage: sampling,
            ..m::TracingSettings::default()
        });
    }
    for (i, name) in defaults.metrics.iter().enumerate() {
        if !matches!(by_name.get(name), Some(Provider::Prometheus)) {
            notes.warn(
                &format!("{base}.defaultProviders.metrics[{i}]"),
                format!("{name:?} is not a metrics provider of this mesh; metrics are exposed for Prometheus only"),
            );
        }
    }
    (telemetry.access_logging.is_some() || telemetry.tracing.is_some()).then_some(telemetry)
}

/// The first default provider of one kind; the others and unknown names are warnings.
fn default_of<T>(
    names: &[String],
    by_name: &BTreeMap<String, Provider>,
    path: &str,
    notes: &mut Notes,
    pick: impl Fn(&Provider) -> Option<T>,
) -> Option<T> {
    let mut found = None;
    for (i, name) in names.iter().enumerate() {
        let item = format!("{path}[{i}]");
        match by_name.get(name).map(&pick) {
            None => notes.warn(&item, format!("no extensionProvider named {name:?}")),
            Some(None) => notes.warn(&item, format!("{name:?} is not a provider of this kind")),
            Some(Some(p)) if found.is_none() => found = Some(p),
            Some(Some(_)) => notes.warn(&item, "only the first provider is used"),
        }
    }
    found
}

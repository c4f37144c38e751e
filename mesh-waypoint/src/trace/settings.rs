//! The tracing settings of requests to one destination, compiled once per route table from the
//! model's `Telemetry` resources (scope: the service's namespace, targets this waypoint's
//! Gateway and the Service, as for metrics): the collector, the sampling percentage, the longest
//! tag value and the custom tags (environment values read once, here).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use http::HeaderName;
use mesh_common::model::{
    effective_telemetry, CustomTag, EffectiveTelemetry, TelemetryScope, TraceProtocol,
    TraceProvider,
};

use crate::table::{RouteTable, ServiceKey, Target};

/// Envoy's longest tag value when `maxTagLength` is not set.
pub const DEFAULT_MAX_TAG_LENGTH: usize = 256;

/// Most destinations whose settings are kept per table.
const MAX_ENTRIES: usize = 65_536;

/// Where a custom tag's value comes from at request time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagValue {
    /// A fixed value (a literal, or an environment variable read when compiled).
    Fixed(String),
    /// A request header, with the value when absent (no tag when `None`).
    Header(HeaderName, Option<String>),
}

/// The tracing of requests to one destination.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSettings {
    /// Where spans go; `None`: no span (no collector, reporting disabled, or a protocol this
    /// build does not know).
    pub provider: Option<Arc<TraceProvider>>,
    /// `randomSamplingPercentage`, 0-100.
    pub percentage: f64,
    /// Longest attribute value, in bytes (cut at a character boundary).
    pub max_tag_length: usize,
    /// Custom tags, by name.
    pub custom_tags: Vec<(String, TagValue)>,
}

impl TraceSettings {
    /// No tracing.
    pub fn off() -> TraceSettings {
        TraceSettings {
            provider: None,
            percentage: 0.0,
            max_tag_length: DEFAULT_MAX_TAG_LENGTH,
            custom_tags: Vec::new(),
        }
    }

    /// The settings `effective` gives, `env` reading the proxy's environment.
    pub fn compile(
        effective: &EffectiveTelemetry,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> TraceSettings {
        let provider = effective
            .trace_provider()
            .filter(|p| p.protocol != TraceProtocol::Unknown)
            .cloned()
            .map(Arc::new);
        let max_tag_length = match provider.as_ref().map_or(0, |p| p.max_tag_length) {
            0 => DEFAULT_MAX_TAG_LENGTH,
            n => usize::try_from(n).unwrap_or(DEFAULT_MAX_TAG_LENGTH),
        };
        let custom_tags = effective
            .tracing
            .custom_tags
            .iter()
            .filter_map(|(name, tag)| {
                let value = match tag {
                    CustomTag::Literal { value } => TagValue::Fixed(value.clone()),
                    CustomTag::Environment {
                        name: var,
                        default_value,
                    } => TagValue::Fixed(env(var).or_else(|| default_value.clone())?),
                    CustomTag::Header {
                        name: header,
                        default_value,
                    } => TagValue::Header(
                        HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()).ok()?,
                        default_value.clone(),
                    ),
                };
                Some((name.clone(), value))
            })
            .collect();
        TraceSettings {
            provider,
            percentage: effective.sampling_percentage(),
            max_tag_length,
            custom_tags,
        }
    }
}

/// The settings of one model, built on first use per destination service.
#[derive(Debug, Default)]
pub struct SettingsIndex {
    services: Mutex<HashMap<ServiceKey, Arc<TraceSettings>>>,
    /// For workload addresses (scope: the waypoint's namespace).
    workloads: OnceLock<Arc<TraceSettings>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn off() -> Arc<TraceSettings> {
    static OFF: OnceLock<Arc<TraceSettings>> = OnceLock::new();
    OFF.get_or_init(|| Arc::new(TraceSettings::off())).clone()
}

impl SettingsIndex {
    /// The settings of requests to `target`.
    pub fn settings(&self, table: &RouteTable, target: &Target) -> Arc<TraceSettings> {
        if table.snapshot().telemetries.is_empty() {
            return off();
        }
        let (wp_ns, wp_name) = table.waypoint();
        let service = match target {
            Target::Service { service, .. } => service,
            Target::Workload { .. } => {
                return self
                    .workloads
                    .get_or_init(|| {
                        let targets = [("Gateway", wp_ns, wp_name)];
                        Arc::new(compile(table, wp_ns, &targets))
                    })
                    .clone();
            }
        };
        if let Some(hit) = lock(&self.services).get(service) {
            return hit.clone();
        }
        let targets = [
            ("Gateway", wp_ns, wp_name),
            ("Service", service.namespace.as_str(), service.name.as_str()),
        ];
        let built = Arc::new(compile(table, &service.namespace, &targets));
        let mut all = lock(&self.services);
        if all.len() < MAX_ENTRIES {
            all.insert(service.clone(), built.clone());
        }
        built
    }
}

fn compile(table: &RouteTable, namespace: &str, targets: &[(&str, &str, &str)]) -> TraceSettings {
    let scope = TelemetryScope {
        namespace,
        labels: None,
        targets,
    };
    let effective = effective_telemetry(&table.snapshot().telemetries, &scope);
    TraceSettings::compile(&effective, &env)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mesh_common::model::{Telemetry, TracingSettings};

    use super::*;

    fn provider(max_tag_length: u32, protocol: TraceProtocol) -> TraceProvider {
        TraceProvider {
            name: "otel".into(),
            protocol,
            host: "otel.observability.svc.cluster.local".into(),
            port: 4317,
            path: String::new(),
            max_tag_length,
        }
    }

    fn effective(tracing: TracingSettings) -> EffectiveTelemetry {
        EffectiveTelemetry {
            tracing,
            ..EffectiveTelemetry::default()
        }
    }

    #[test]
    fn settings_from_the_effective_telemetry() {
        let env = |name: &str| (name == "CLUSTER").then(|| "east".to_owned());
        let tags = BTreeMap::from([
            (
                "team".to_owned(),
                CustomTag::Literal {
                    value: "books".into(),
                },
            ),
            (
                "cluster".to_owned(),
                CustomTag::Environment {
                    name: "CLUSTER".into(),
                    default_value: None,
                },
            ),
            (
                "region".to_owned(),
                CustomTag::Environment {
                    name: "REGION".into(),
                    default_value: Some("none".into()),
                },
            ),
            (
                "unset".to_owned(),
                CustomTag::Environment {
                    name: "UNSET".into(),
                    default_value: None,
                },
            ),
            (
                "user".to_owned(),
                CustomTag::Header {
                    name: "End-User".into(),
                    default_value: Some("anonymous".into()),
                },
            ),
            (
                "bad".to_owned(),
                CustomTag::Header {
                    name: "bad header".into(),
                    default_value: None,
                },
            ),
        ]);
        // (tracing, provider kept, percentage, max tag length)
        let cases = [
            (TracingSettings::default(), false, 1.0, 256),
            (
                TracingSettings {
                    provider: Some(provider(0, TraceProtocol::OtlpGrpc)),
                    random_sampling_percentage: Some(10.0),
                    ..TracingSettings::default()
                },
                true,
                10.0,
                256,
            ),
            (
                TracingSettings {
                    provider: Some(provider(12, TraceProtocol::Zipkin)),
                    random_sampling_percentage: Some(250.0),
                    ..TracingSettings::default()
                },
                true,
                100.0,
                12,
            ),
            (
                TracingSettings {
                    provider: Some(provider(0, TraceProtocol::OtlpHttp)),
                    disable_span_reporting: Some(true),
                    ..TracingSettings::default()
                },
                false,
                1.0,
                256,
            ),
            (
                TracingSettings {
                    provider: Some(provider(0, TraceProtocol::Unknown)),
                    ..TracingSettings::default()
                },
                false,
                1.0,
                256,
            ),
        ];
        for (tracing, kept, percentage, max) in cases {
            let got = TraceSettings::compile(&effective(tracing.clone()), &env);
            assert_eq!(got.provider.is_some(), kept, "{tracing:?}");
            assert_eq!(got.percentage, percentage, "{tracing:?}");
            assert_eq!(got.max_tag_length, max, "{tracing:?}");
        }
        let got = TraceSettings::compile(
            &effective(TracingSettings {
                custom_tags: tags,
                ..TracingSettings::default()
            }),
            &env,
        );
        assert_eq!(
            got.custom_tags,
            vec![
                ("cluster".to_owned(), TagValue::Fixed("east".into())),
                ("region".to_owned(), TagValue::Fixed("none".into())),
                ("team".to_owned(), TagValue::Fixed("books".into())),
                (
                    "user".to_owned(),
                    TagValue::Header(
                        HeaderName::from_static("end-user"),
                        Some("anonymous".into())
                    )
                ),
            ]
        );
    }

    #[test]
    fn settings_per_destination_service() {
        let mut snapshot = crate::testdata::snapshot("");
        let mut mesh = Telemetry {
            name: "mesh-default".into(),
            namespace: "istio-system".into(),
            mesh_wide: true,
            ..Telemetry::default()
        };
        mesh.tracing = Some(TracingSettings {
            provider: Some(provider(0, TraceProtocol::OtlpGrpc)),
            random_sampling_percentage: Some(5.0),
            ..TracingSettings::default()
        });
        let mut reviews = Telemetry {
            name: "reviews".into(),
            namespace: "bookinfo".into(),
            target_refs: vec![mesh_common::model::PolicyTargetRef {
                group: String::new(),
                kind: "Service".into(),
                name: "reviews".into(),
                namespace: "bookinfo".into(),
            }],
            ..Telemetry::default()
        };
        reviews.tracing = Some(TracingSettings {
            random_sampling_percentage: Some(50.0),
            ..TracingSettings::default()
        });
        snapshot.telemetries = vec![mesh, reviews];
        let table = RouteTable::new(
            Arc::new(snapshot),
            "cluster.local",
            ("bookinfo", "waypoint"),
        );
        let index = SettingsIndex::default();
        let target = |addr: &str| {
            table
                .target(addr.parse().expect("address"))
                .expect("a target")
        };
        // (dialed, percentage)
        let cases = [
            ("10.96.0.20:9080", 50.0),
            ("10.96.0.10:9080", 5.0),
            ("10.1.0.21:9080", 5.0),
        ];
        for (addr, want) in cases {
            let got = index.settings(&table, &target(addr));
            assert_eq!(got.percentage, want, "{addr}");
            assert!(got.provider.is_some(), "{addr}");
            // Cached: the same settings again.
            assert!(Arc::ptr_eq(&got, &index.settings(&table, &target(addr))));
        }
    }
}

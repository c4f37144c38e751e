//! What a proxy applies for one Telemetry scope (a workload, or a service behind a waypoint),
//! compiled once per model and scope: the metric overrides and the access log.

use crate::access_log::{AccessLog, Entry};
use crate::istio_metrics::{IstioLabels, MetricSettings, UNKNOWN};
use crate::model::EffectiveTelemetry;

/// The compiled settings of one scope.
#[derive(Debug, Default)]
pub struct ScopeTelemetry {
    /// Metric overrides.
    pub metrics: MetricSettings,
    /// The access log, when logging is on in this scope.
    pub access_log: Option<AccessLog>,
    /// What is not applied (unsupported tag expressions, unknown log operators, a filter that
    /// does not parse), for the caller to report once.
    pub problems: Vec<String>,
}

impl ScopeTelemetry {
    /// Compiles the effective settings of a scope.
    pub fn new(effective: &EffectiveTelemetry) -> ScopeTelemetry {
        let metrics = MetricSettings::new(effective);
        let mut problems: Vec<String> = metrics
            .unsupported
            .iter()
            .map(|tag| {
                format!(
                    "tagOverrides {tag}: only quoted literals are applied; the tag is `unknown`"
                )
            })
            .collect();
        let (access_log, log_problems) = AccessLog::from_settings(effective);
        problems.extend(log_problems);
        ScopeTelemetry {
            metrics,
            access_log,
            problems,
        }
    }
}

fn known(value: &str) -> Option<String> {
    (value != UNKNOWN).then(|| value.to_owned())
}

/// Fills an access-log entry's identity fields from a report's Istio labels: both principals,
/// both workloads (`namespace/name`), and the upstream cluster (Envoy's
/// `outbound|<port>||<service host>`), leaving what the labels do not know absent.
pub fn fill_identities(entry: &mut Entry, labels: &IstioLabels, service_port: Option<u16>) {
    let workload =
        |namespace: &str, name: &str| known(name).map(|name| format!("{namespace}/{name}"));
    entry.source_principal = known(&labels.source_principal);
    entry.destination_principal = known(&labels.destination_principal);
    entry.source_workload = workload(&labels.source.namespace, &labels.source.workload);
    entry.destination_workload =
        workload(&labels.destination.namespace, &labels.destination.workload);
    entry.upstream_cluster = known(&labels.service.host).map(|host| match service_port {
        Some(port) => format!("outbound|{port}||{host}"),
        None => host,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccessLogFormat, AccessLogProvider, AccessLogSettings};

    #[test]
    fn logging_is_compiled_only_where_it_is_on() {
        let provider = AccessLogProvider {
            name: "envoy".into(),
            path: "/dev/null".into(),
            format: AccessLogFormat::Json {
                labels: [
                    ("code".to_owned(), "%RESPONSE_CODE%".to_owned()),
                    ("x".to_owned(), "%NOPE%".to_owned()),
                ]
                .into_iter()
                .collect(),
            },
        };
        let cases = [
            (None, None, false, 0),
            (Some(false), Some(provider.clone()), true, 1),
            (Some(true), Some(provider.clone()), false, 0),
            (None, Some(provider.clone()), true, 1),
        ];
        for (disabled, provider, on, problems) in cases {
            let effective = EffectiveTelemetry {
                access_logging: AccessLogSettings {
                    disabled,
                    filter: None,
                    provider,
                },
                ..EffectiveTelemetry::default()
            };
            let scope = ScopeTelemetry::new(&effective);
            assert_eq!(scope.access_log.is_some(), on, "{disabled:?}");
            assert_eq!(scope.problems.len(), problems, "{:?}", scope.problems);
        }
        let effective = EffectiveTelemetry {
            access_logging: AccessLogSettings {
                disabled: None,
                filter: Some("response.duration > 1".into()),
                provider: Some(AccessLogProvider {
                    name: "envoy".into(),
                    path: "/dev/null".into(),
                    format: AccessLogFormat::DefaultText,
                }),
            },
            ..EffectiveTelemetry::default()
        };
        let scope = ScopeTelemetry::new(&effective);
        assert!(
            scope.access_log.is_some(),
            "an unparsable filter logs everything"
        );
        assert!(
            scope.problems[0].contains("every entry is written"),
            "{:?}",
            scope.problems
        );
    }
}

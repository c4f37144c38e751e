//! Telemetry and the mesh configuration: Istio's `Telemetry` (v1 and v1alpha1) translated with
//! providers resolved against the ConfigMap `istio`'s `mesh` key, the mesh configuration's own
//! settings as the least specific level, every client getting the settings, and every field the
//! mesh does not apply reported with the file, object and field named.

use mesh_common::api::config::ClientKind;
use mesh_common::model::{
    effective_telemetry, AccessLogFormat, MetricName, ReportMode, TagOverride, Telemetry,
    TelemetryScope, TraceProtocol,
};
use mesh_controller::controller::{Change, Controller, Published};
use mesh_controller::load::parse_yaml;
use mesh_controller::server::view::view;
use mesh_controller::translate::TranslateOptions;

fn load(yaml: &str) -> std::sync::Arc<Published> {
    let controller = Controller::new(TranslateOptions::default());
    controller
        .apply(vec![Change::ReplaceUnit {
            unit: "case.yaml".to_owned(),
            parsed: parse_yaml("case.yaml", yaml),
        }])
        .expect("apply");
    controller.current()
}

/// `<object> <path>[ warning]: <message>` for every report.
fn reports(current: &Published) -> Vec<String> {
    current
        .errors
        .iter()
        .map(|e| {
            let object = e.object.as_ref().map(ToString::to_string);
            let warning = if e.warning { " warning" } else { "" };
            format!(
                "{} {}{warning}: {}",
                object.unwrap_or_default(),
                e.path,
                e.message
            )
        })
        .collect()
}

const MESH_CONFIG: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    trustDomain: cluster.local
    defaultConfig:
      tracing: {sampling: 10}
      holdApplicationUntilProxyStarts: true
    defaultProviders:
      tracing: [otel]
    extensionProviders:
    - name: otel
      opentelemetry: {service: observability/otel-collector.observability.svc.cluster.local, port: 4317}
    - name: otel-http
      opentelemetry:
        service: 198.19.0.90
        port: 4318
        http: {path: /custom/traces, timeout: 5s}
    - name: zipkin
      zipkin: {service: zipkin.observability.svc.cluster.local, port: 9411}
    - name: json-file
      envoyFileAccessLog:
        path: /var/log/mesh.log
        logFormat: {labels: {code: "%RESPONSE_CODE%", peer: "%DOWNSTREAM_PEER_PRINCIPAL%"}}
    - name: als
      envoyOtelAls: {service: als.observability, port: 4317}
"#;

fn find<'a>(telemetries: &'a [Telemetry], namespace: &str, name: &str) -> &'a Telemetry {
    telemetries
        .iter()
        .find(|t| t.namespace == namespace && t.name == name)
        .unwrap_or_else(|| panic!("no Telemetry {namespace}/{name} in {telemetries:#?}"))
}

#[test]
fn mesh_configuration_sets_the_mesh_wide_level_and_reports_what_it_does_not_apply() {
    let current = load(MESH_CONFIG);
    let telemetries = &current.snapshot.telemetries;
    let mesh = find(telemetries, "", "mesh-config");
    assert!(mesh.mesh_wide);
    let logging = mesh.access_logging.as_ref().expect("access logging");
    let provider = logging.provider.as_ref().expect("provider");
    assert_eq!(
        (provider.name.as_str(), provider.path.as_str()),
        ("envoy", "/dev/stdout")
    );
    assert!(matches!(&provider.format, AccessLogFormat::Json { labels } if labels.is_empty()));
    let tracing = mesh.tracing.as_ref().expect("tracing");
    assert_eq!(tracing.random_sampling_percentage, Some(10.0));
    let otel = tracing.provider.as_ref().expect("default trace provider");
    assert_eq!(otel.protocol, TraceProtocol::OtlpGrpc);
    assert_eq!(otel.host, "otel-collector.observability.svc.cluster.local");
    assert_eq!(otel.port, 4317);

    let reports = reports(&current);
    for expected in [
        "ConfigMap istio-system/istio data.mesh.trustDomain warning: not applied by this mesh",
        "ConfigMap istio-system/istio data.mesh.defaultConfig.holdApplicationUntilProxyStarts warning: not applied by this mesh",
        "ConfigMap istio-system/istio data.mesh.extensionProviders[1].opentelemetry.http.timeout warning: not applied by this mesh",
    ] {
        assert!(
            reports.iter().any(|r| r.starts_with(expected)),
            "missing {expected:?} in {reports:#?}"
        );
    }
    // Nothing else is wrong with it.
    assert_eq!(reports.len(), 3, "{reports:#?}");
}

#[test]
fn telemetry_levels_resolve_providers_and_merge_per_scope() {
    let yaml = format!(
        r#"{MESH_CONFIG}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing: [{{providers: [{{name: zipkin}}], randomSamplingPercentage: 25}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: quiet, namespace: quiet}}
spec:
  accessLogging: [{{disabled: true}}]
  metrics:
  - providers: [{{name: prometheus}}]
    overrides:
    - match: {{metric: REQUEST_COUNT, mode: CLIENT}}
      disabled: true
    - match: {{metric: ALL_METRICS}}
      tagOverrides:
        request_protocol: {{operation: REMOVE}}
        team: {{value: "'payments'"}}
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {{name: errors-only, namespace: quiet}}
spec:
  selector: {{matchLabels: {{app: loud}}}}
  accessLogging:
  - providers: [{{name: json-file}}]
    filter: {{expression: "response.code >= 400"}}
  tracing:
  - providers: [{{name: otel-http}}]
    customTags:
      team: {{literal: {{value: payments}}}}
      user: {{header: {{name: end-user, defaultValue: anonymous}}}}
"#
    );
    let current = load(&yaml);
    assert_eq!(reports(&current).len(), 3, "{:#?}", reports(&current));
    let telemetries = &current.snapshot.telemetries;
    let quiet = find(telemetries, "quiet", "quiet");
    assert_eq!(quiet.metrics.len(), 2);
    assert_eq!(
        (
            quiet.metrics[0].metric,
            quiet.metrics[0].mode,
            quiet.metrics[0].disabled
        ),
        (MetricName::RequestCount, ReportMode::Client, Some(true))
    );
    assert_eq!(
        quiet.metrics[1].tags.get("request_protocol"),
        Some(&TagOverride::Remove)
    );
    assert_eq!(
        quiet.metrics[1].tags.get("team"),
        Some(&TagOverride::Upsert {
            value: "'payments'".into()
        })
    );

    // The namespace `apps`: mesh levels only (the root Telemetry overrides the mesh config).
    let apps = effective_telemetry(
        telemetries,
        &TelemetryScope {
            namespace: "apps",
            labels: None,
            targets: &[],
        },
    );
    assert!(apps.access_log_enabled());
    assert_eq!(apps.sampling_percentage(), 25.0);
    assert_eq!(
        apps.trace_provider().map(|p| p.protocol),
        Some(TraceProtocol::Zipkin)
    );
    assert_eq!(
        apps.trace_provider().map(|p| p.path.as_str()),
        Some("/api/v2/spans")
    );

    // `quiet`: logs off, REQUEST_COUNT off on the client side only.
    let quiet_ns = effective_telemetry(
        telemetries,
        &TelemetryScope {
            namespace: "quiet",
            labels: None,
            targets: &[],
        },
    );
    assert!(!quiet_ns.access_log_enabled());
    assert!(!quiet_ns.metric_enabled(MetricName::RequestCount, true));
    assert!(quiet_ns.metric_enabled(MetricName::RequestCount, false));

    // The `loud` pod in `quiet`: its own provider and filter, OTLP/HTTP tracing.
    let labels = [("app".to_owned(), "loud".to_owned())]
        .into_iter()
        .collect();
    let loud = effective_telemetry(
        telemetries,
        &TelemetryScope {
            namespace: "quiet",
            labels: Some(&labels),
            targets: &[],
        },
    );
    assert!(loud.access_log_enabled());
    let provider = loud.access_logging.provider.as_ref().expect("provider");
    assert_eq!(provider.path, "/var/log/mesh.log");
    assert!(
        matches!(&provider.format, AccessLogFormat::Json { labels } if labels.get("code").map(String::as_str) == Some("%RESPONSE_CODE%"))
    );
    assert_eq!(
        loud.access_logging.filter.as_deref(),
        Some("response.code >= 400")
    );
    let otlp_http = loud.trace_provider().expect("trace provider");
    assert_eq!(
        (
            otlp_http.protocol,
            otlp_http.host.as_str(),
            otlp_http.port,
            otlp_http.path.as_str()
        ),
        (
            TraceProtocol::OtlpHttp,
            "198.19.0.90",
            4318,
            "/custom/traces"
        )
    );
    assert_eq!(loud.tracing.custom_tags.len(), 2);

    // Every client gets every Telemetry.
    let agent = view(
        &current.snapshot,
        &current.resources,
        ClientKind::Agent,
        "node-a",
    );
    let waypoint = view(
        &current.snapshot,
        &current.resources,
        ClientKind::Waypoint,
        "waypoint/apps/wp",
    );
    for set in [agent, waypoint] {
        let snapshot = set.to_snapshot("v").expect("decode");
        assert_eq!(snapshot.telemetries.len(), telemetries.len());
    }
}

fn telemetry(spec: &str) -> String {
    format!(
        "{MESH_CONFIG}\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: apps}}\nspec: {spec}\n"
    )
}

#[test]
fn what_the_mesh_cannot_apply_is_an_error_or_a_warning_naming_the_field() {
    // (spec, expected report prefix, whether the resource is still translated)
    let cases: &[(&str, &str, bool)] = &[
        (
            "{accessLogging: [{providers: [{name: nope}]}]}",
            "Telemetry apps/t spec.accessLogging[0].providers[0].name: no provider named \"nope\"",
            false,
        ),
        (
            "{accessLogging: [{providers: [{name: als}]}]}",
            "Telemetry apps/t spec.accessLogging[0].providers[0].name: provider \"als\" is of kind envoyOtelAls",
            false,
        ),
        (
            "{tracing: [{providers: [{name: json-file}]}]}",
            "Telemetry apps/t spec.tracing[0].providers[0].name: provider \"json-file\" is not of the kind",
            false,
        ),
        (
            "{accessLogging: [{filter: {expression: \"response.duration > 10\"}}]}",
            "Telemetry apps/t spec.accessLogging[0].filter.expression:",
            false,
        ),
        (
            "{metrics: [{overrides: [{match: {metric: REQUEST_COUNTS}}]}]}",
            "Telemetry apps/t spec.metrics[0].overrides[0].match.metric: unknown value \"REQUEST_COUNTS\"",
            false,
        ),
        (
            "{metrics: [{overrides: [{tagOverrides: {x: {operation: UPSERT}}}]}]}",
            "Telemetry apps/t spec.metrics[0].overrides[0].tagOverrides.x.value: UPSERT needs a value",
            false,
        ),
        (
            "{tracing: [{randomSamplingPercentage: 150}]}",
            "Telemetry apps/t spec.tracing[0].randomSamplingPercentage: 150 is outside 0-100",
            false,
        ),
        (
            "{tracing: [{customTags: {x: {literal: {value: a}, header: {name: b}}}}]}",
            "Telemetry apps/t spec.tracing[0].customTags.x: exactly one of",
            false,
        ),
        (
            "{metrics: [{overrides: [{match: {customMetric: my_metric}, disabled: true}]}]}",
            "Telemetry apps/t spec.metrics[0].overrides[0].match.customMetric warning: not supported",
            true,
        ),
        (
            "{metrics: [{overrides: [{tagOverrides: {host: {value: request.host}}}]}]}",
            "Telemetry apps/t spec.metrics[0].overrides[0].tagOverrides.host.value warning: only quoted literals",
            true,
        ),
        (
            "{metrics: [{reportingInterval: 5s}]}",
            "Telemetry apps/t spec.metrics[0].reportingInterval warning: not applicable",
            true,
        ),
        (
            "{tracing: [{match: {mode: CLIENT}, randomSamplingPercentage: 5}]}",
            "Telemetry apps/t spec.tracing[0].match.mode warning: not applied",
            true,
        ),
        (
            "{tracing: [{randomSamplingPercentage: 5}, {randomSamplingPercentage: 6}]}",
            "Telemetry apps/t spec.tracing[1] warning: not applied",
            true,
        ),
        (
            "{accessLogging: [{providers: [{name: envoy}, {name: json-file}]}]}",
            "Telemetry apps/t spec.accessLogging[0].providers[1] warning: not applied",
            true,
        ),
        (
            "{tracing: [{useRequestIdForTraceSampling: true}]}",
            "Telemetry apps/t spec.tracing[0].useRequestIdForTraceSampling warning: not supported",
            true,
        ),
        (
            "{selector: {matchLabels: {app: a}}, targetRefs: [{kind: Gateway, name: wp}]}",
            "Telemetry apps/t spec.selector: selector and targetRefs are mutually exclusive",
            false,
        ),
        (
            "{metrics: [{overrides: [{match: {metric: REQUEST_COUNT, mode: SIDEWAYS}}]}]}",
            "Telemetry apps/t spec.metrics[0].overrides[0].match.mode: unknown value \"SIDEWAYS\"",
            false,
        ),
    ];
    for (spec, expected, kept) in cases {
        let current = load(&telemetry(spec));
        let reports: Vec<String> = reports(&current)
            .into_iter()
            .filter(|r| r.starts_with("Telemetry"))
            .collect();
        assert!(
            reports.iter().any(|r| r.starts_with(expected)),
            "{spec}: missing {expected:?} in {reports:#?}"
        );
        let translated = current
            .snapshot
            .telemetries
            .iter()
            .any(|t| t.namespace == "apps" && t.name == "t");
        assert_eq!(translated, *kept, "{spec}");
    }
}

#[test]
fn an_unknown_field_in_a_telemetry_is_an_error_naming_it() {
    let current = load(&telemetry("{tracing: [{sampling: 5}]}"));
    let reports = reports(&current);
    assert!(
        reports
            .iter()
            .any(|r| r.contains("Telemetry apps/t") && r.contains("sampling")),
        "{reports:#?}"
    );
    assert!(current.snapshot.telemetries.iter().all(|t| t.name != "t"));
}

#[test]
fn legacy_zipkin_address_and_a_broken_mesh_config() {
    let legacy = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultConfig:
      tracing:
        sampling: 100
        zipkin: {address: 198.19.0.91:9411}
"#;
    let current = load(legacy);
    let mesh = find(&current.snapshot.telemetries, "", "mesh-config");
    let provider = mesh
        .tracing
        .as_ref()
        .and_then(|t| t.provider.as_ref())
        .expect("zipkin");
    assert_eq!(
        (
            provider.protocol,
            provider.host.as_str(),
            provider.port,
            provider.path.as_str()
        ),
        (TraceProtocol::Zipkin, "198.19.0.91", 9411, "/api/v2/spans")
    );
    assert!(mesh.access_logging.is_none(), "no accessLogFile: no logs");

    let broken = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: \"accessLogFile: [\"\n";
    let current = load(broken);
    let broken_reports = reports(&current);
    assert!(
        broken_reports
            .iter()
            .any(|r| r.starts_with("ConfigMap istio-system/istio data.mesh: invalid YAML")),
        "{broken_reports:#?}"
    );
    assert!(current.snapshot.telemetries.is_empty());

    // Other ConfigMaps, and `istio` outside the root namespace, are not the mesh config.
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config, namespace: apps}\ndata: {mesh: 'accessLogFile: /dev/stdout'}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: apps}\ndata: {mesh: 'accessLogFile: /dev/stdout'}\n";
    let current = load(other);
    assert!(current.snapshot.telemetries.is_empty());
    assert!(reports(&current).is_empty(), "{:#?}", reports(&current));
}

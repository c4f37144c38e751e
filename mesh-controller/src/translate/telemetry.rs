//! Istio `Telemetry` in the compact model: metric overrides (disable a metric, drop or set a
//! tag), tracing (provider, sampling, custom tags) and access logging (provider, on/off,
//! filter), with providers resolved against the mesh configuration. The first `tracing` and
//! `accessLogging` entry applies (the mesh reports each once); what is not applied is a warning,
//! a value the mesh cannot apply safely (an unknown provider or metric, a filter it cannot
//! evaluate) an error that leaves the resource out.

use mesh_common::access_log::Filter;
use mesh_common::model as m;

use super::field::{Field, Notes};
use super::mesh_providers::{self, MeshProviders, Provider};
use super::security::target_refs;
use super::Context;
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::istio_telemetry as tel;

/// The mesh configuration's settings (first, least specific) and every Telemetry resource.
pub(super) fn telemetries(cx: &mut Context<'_>) -> Vec<m::Telemetry> {
    let providers = mesh_providers::mesh_providers(cx);
    let mut out: Vec<m::Telemetry> = providers.mesh_wide.iter().cloned().collect();
    for (key, object) in cx.objects(Kind::Telemetry) {
        let Object::Telemetry(t) = &*object else {
            continue;
        };
        let mut notes = Notes::default();
        match telemetry(cx, &key, &t.spec, &providers, &mut notes) {
            Ok(t) => out.push(t),
            Err((path, message)) => cx.error(&key, &path, message),
        }
        notes.report(cx, &key);
    }
    out
}

fn telemetry(
    cx: &Context<'_>,
    key: &ObjectKey,
    spec: &tel::TelemetrySpec,
    providers: &MeshProviders,
    notes: &mut Notes,
) -> Field<m::Telemetry> {
    let target_refs = target_refs(key, spec.target_ref.as_ref(), &spec.target_refs)?;
    if spec.selector.is_some() && !target_refs.is_empty() {
        return Err((
            "spec.selector".to_owned(),
            "selector and targetRefs are mutually exclusive".to_owned(),
        ));
    }
    let selector = spec.selector.as_ref().map(|s| s.match_labels.clone());
    let mut metrics = Vec::new();
    for (i, entry) in spec.metrics.iter().enumerate() {
        metrics.extend(metric_entry(
            &format!("spec.metrics[{i}]"),
            entry,
            providers,
            notes,
        )?);
    }
    let tracing = match spec.tracing.split_first() {
        None => None,
        Some((first, rest)) => {
            ignored_after_first(
                notes,
                "spec.tracing",
                rest.len(),
                "not applied: the mesh applies the first tracing entry",
            );
            tracing("spec.tracing[0]", first, providers, notes)?
        }
    };
    let access_logging = match spec.access_logging.split_first() {
        None => None,
        Some((first, rest)) => {
            ignored_after_first(
                notes,
                "spec.accessLogging",
                rest.len(),
                "not applied: the mesh applies the first accessLogging entry",
            );
            Some(access_logging(
                "spec.accessLogging[0]",
                first,
                providers,
                notes,
            )?)
        }
    };
    Ok(m::Telemetry {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        mesh_wide: key.namespace == cx.options.root_namespace
            && selector.is_none()
            && target_refs.is_empty(),
        selector,
        target_refs,
        metrics,
        tracing,
        access_logging,
    })
}

/// Warns about the `extra` entries after the first of the list at `path` (not applied).
fn ignored_after_first(notes: &mut Notes, path: &str, extra: usize, message: &str) {
    for i in 1..=extra {
        notes.warn(&format!("{path}[{i}]"), message);
    }
}

/// An Istio enum name (`REQUEST_COUNT`, `CLIENT`) as a model enum; unknown names are errors.
fn istio_enum<T: serde::de::DeserializeOwned>(path: &str, value: &str, allowed: &str) -> Field<T> {
    serde_json::from_value::<T>(serde_json::Value::String(value.to_owned()))
        .ok()
        .filter(|_| allowed.split(", ").any(|a| a == value))
        .ok_or_else(|| {
            (
                path.to_owned(),
                format!("unknown value {value:?} (one of {allowed})"),
            )
        })
}

const METRICS: &str = "ALL_METRICS, REQUEST_COUNT, REQUEST_DURATION, REQUEST_SIZE, RESPONSE_SIZE, TCP_OPENED_CONNECTIONS, TCP_CLOSED_CONNECTIONS, TCP_SENT_BYTES, TCP_RECEIVED_BYTES, GRPC_REQUEST_MESSAGES, GRPC_RESPONSE_MESSAGES";
const MODES: &str = "CLIENT_AND_SERVER, CLIENT, SERVER";

fn mode(path: &str, mode: Option<&String>) -> Field<m::ReportMode> {
    mode.map_or(Ok(m::ReportMode::ClientAndServer), |v| {
        istio_enum(path, v, MODES)
    })
}

fn metric_entry(
    path: &str,
    entry: &tel::Metrics,
    providers: &MeshProviders,
    notes: &mut Notes,
) -> Field<Vec<m::MetricOverride>> {
    for (i, p) in entry.providers.iter().enumerate() {
        if !matches!(providers.by_name.get(&p.name), Some(Provider::Prometheus)) {
            notes.warn(
                &format!("{path}.providers[{i}].name"),
                format!("{:?} is not a metrics provider of this mesh; the overrides apply to the Prometheus metrics", p.name),
            );
        }
    }
    if entry.reporting_interval.is_some() {
        notes.warn(
            &format!("{path}.reportingInterval"),
            "not applicable: Prometheus scrapes the current values",
        );
    }
    let mut out = Vec::new();
    for (i, o) in entry.overrides.iter().enumerate() {
        let at = format!("{path}.overrides[{i}]");
        let selector = o.match_.clone().unwrap_or_default();
        if selector.custom_metric.is_some() {
            notes.warn(
                &format!("{at}.match.customMetric"),
                "not supported: the mesh reports Istio's standard metrics only; override not applied",
            );
            continue;
        }
        let metric = match &selector.metric {
            None => m::MetricName::AllMetrics,
            Some(v) => istio_enum(&format!("{at}.match.metric"), v, METRICS)?,
        };
        let mode = mode(&format!("{at}.match.mode"), selector.mode.as_ref())?;
        let mut tags = std::collections::BTreeMap::new();
        for (tag, op) in &o.tag_overrides {
            let tag_path = format!("{at}.tagOverrides.{tag}");
            let value = match op.operation.as_deref() {
                None | Some("UPSERT") => match &op.value {
                    Some(value) => m::TagOverride::Upsert {
                        value: value.clone(),
                    },
                    None => {
                        return Err((
                            format!("{tag_path}.value"),
                            "UPSERT needs a value".to_owned(),
                        ))
                    }
                },
                Some("REMOVE") => m::TagOverride::Remove,
                Some(other) => {
                    return Err((
                        format!("{tag_path}.operation"),
                        format!("unknown value {other:?} (one of UPSERT, REMOVE)"),
                    ))
                }
            };
            if matches!(&value, m::TagOverride::Upsert { value } if !is_quoted_literal(value)) {
                notes.warn(
                    &format!("{tag_path}.value"),
                    "only quoted literals are evaluated by this mesh; the label is reported as `unknown`",
                );
            }
            tags.insert(tag.clone(), value);
        }
        out.push(m::MetricOverride {
            metric,
            mode,
            disabled: o.disabled,
            tags,
        });
    }
    Ok(out)
}

/// Whether a tag value expression is a quoted string literal (`'v'` or `"v"`).
fn is_quoted_literal(value: &str) -> bool {
    let v = value.trim();
    v.len() >= 2
        && ((v.starts_with('\'') && v.ends_with('\'')) || (v.starts_with('"') && v.ends_with('"')))
}

/// The provider an entry names (`providers[0]`), of the kind `pick` accepts.
fn named_provider<T>(
    path: &str,
    names: &[tel::ProviderRef],
    providers: &MeshProviders,
    notes: &mut Notes,
    pick: impl Fn(&Provider) -> Option<T>,
) -> Field<Option<T>> {
    let Some((first, rest)) = names.split_first() else {
        return Ok(None);
    };
    ignored_after_first(
        notes,
        &format!("{path}.providers"),
        rest.len(),
        "not applied: the mesh sends to the first provider",
    );
    let at = format!("{path}.providers[0].name");
    match providers.by_name.get(&first.name) {
        None => Err((
            at,
            format!(
                "no provider named {:?} in the mesh configuration's extensionProviders",
                first.name
            ),
        )),
        Some(Provider::Unsupported(kind)) => Err((
            at,
            format!(
                "provider {:?} is of kind {kind}, which this mesh does not support",
                first.name
            ),
        )),
        Some(p) => pick(p).map(Some).ok_or_else(|| {
            (
                at,
                format!(
                    "provider {:?} is not of the kind this entry needs",
                    first.name
                ),
            )
        }),
    }
}

fn tracing(
    path: &str,
    entry: &tel::Tracing,
    providers: &MeshProviders,
    notes: &mut Notes,
) -> Field<Option<m::TracingSettings>> {
    let side = mode(
        &format!("{path}.match.mode"),
        entry.match_.as_ref().and_then(|m| m.mode.as_ref()),
    )?;
    if side == m::ReportMode::Client {
        notes.warn(
            &format!("{path}.match.mode"),
            "not applied: spans are reported by waypoints, which report as SERVER",
        );
        return Ok(None);
    }
    let pick = |p: &Provider| match p {
        Provider::Trace(t) => Some(t.clone()),
        _ => None,
    };
    let mut provider = named_provider(path, &entry.providers, providers, notes, pick)?;
    if provider.is_none() {
        // No provider named: the mesh's default trace provider (else the inherited one).
        provider = providers
            .defaults
            .tracing
            .iter()
            .find_map(|name| providers.by_name.get(name).and_then(pick));
    }
    if let Some(p) = entry
        .random_sampling_percentage
        .filter(|p| !(0.0..=100.0).contains(p))
    {
        return Err((
            format!("{path}.randomSamplingPercentage"),
            format!("{p} is outside 0-100"),
        ));
    }
    if entry.use_request_id_for_trace_sampling == Some(true) {
        notes.warn(
            &format!("{path}.useRequestIdForTraceSampling"),
            "not supported; sampling is random",
        );
    }
    if entry.enable_istio_tags == Some(false) {
        notes.warn(
            &format!("{path}.enableIstioTags"),
            "not supported; Istio's span tags are always added",
        );
    }
    let mut custom_tags = std::collections::BTreeMap::new();
    for (name, tag) in &entry.custom_tags {
        let at = format!("{path}.customTags.{name}");
        let value = match (&tag.literal, &tag.environment, &tag.header) {
            (Some(l), None, None) => m::CustomTag::Literal {
                value: l.value.clone(),
            },
            (None, Some(e), None) => m::CustomTag::Environment {
                name: e.name.clone(),
                default_value: e.default_value.clone(),
            },
            (None, None, Some(h)) => m::CustomTag::Header {
                name: h.name.clone(),
                default_value: h.default_value.clone(),
            },
            _ => {
                return Err((
                    at,
                    "exactly one of literal, environment and header".to_owned(),
                ))
            }
        };
        custom_tags.insert(name.clone(), value);
    }
    Ok(Some(m::TracingSettings {
        provider,
        random_sampling_percentage: entry.random_sampling_percentage,
        disable_span_reporting: entry.disable_span_reporting,
        custom_tags,
    }))
}

fn access_logging(
    path: &str,
    entry: &tel::AccessLogging,
    providers: &MeshProviders,
    notes: &mut Notes,
) -> Field<m::AccessLogSettings> {
    let side = mode(
        &format!("{path}.match.mode"),
        entry.match_.as_ref().and_then(|m| m.mode.as_ref()),
    )?;
    if side != m::ReportMode::ClientAndServer {
        notes.warn(
            &format!("{path}.match.mode"),
            "not applied to access logs: both sides of a connection log",
        );
    }
    let pick = |p: &Provider| match p {
        Provider::AccessLog(l) => Some(l.clone()),
        _ => None,
    };
    let mut provider = named_provider(path, &entry.providers, providers, notes, pick)?;
    if provider.is_none() && entry.disabled != Some(true) {
        // No provider named: the mesh's default access-log provider, else Istio's `envoy`.
        provider = providers
            .defaults
            .access_logging
            .iter()
            .chain(std::iter::once(&mesh_providers::ENVOY_PROVIDER.to_owned()))
            .find_map(|name| providers.by_name.get(name).and_then(pick));
    }
    let filter = match &entry.filter {
        None => None,
        Some(f) => {
            Filter::parse(&f.expression).map_err(|e| {
                (
                    format!("{path}.filter.expression"),
                    format!("{e} (a filter the mesh cannot evaluate would log the wrong lines)"),
                )
            })?;
            Some(f.expression.clone())
        }
    };
    Ok(m::AccessLogSettings {
        // An entry turns logging on at its level unless it says `disabled: true`, as in Istio.
        disabled: Some(entry.disabled.unwrap_or(false)),
        filter,
        provider,
    })
}

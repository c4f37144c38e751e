//! One VirtualService HTTP rule in the model: matches (with header presence, `withoutHeaders`,
//! source labels and namespace, `ignoreUriCase`; matches bound to other gateways dropped),
//! weighted destinations with their own header changes, and exactly one action (route,
//! redirect, direct response, or a delegate handled by the caller) with its rewrite, timeout,
//! retries, fault, mirrors and header changes. Fields accepted but not applied yet are warnings.

use std::collections::BTreeMap;

use base64::Engine as _;
use mesh_common::model as m;

use super::field::{at, opt_duration, opt_u32, Field, Notes};
use super::virtualservice::{destination, MESH_GATEWAY};
use super::{values, Context};
use crate::object::ObjectKey;
use crate::resources::istio_networking as net;

/// Redirect status codes Istio accepts.
const REDIRECT_CODES: [u16; 5] = [301, 302, 303, 307, 308];
/// The scheme of every request a waypoint routes (HTTP inside HBONE; TLS is passed through).
const MESH_SCHEME: &str = "http";

fn string_match(path: &str, sm: &net::StringMatch) -> Field<m::StringMatch> {
    match (&sm.exact, &sm.prefix, &sm.regex) {
        (Some(v), None, None) => Ok(m::StringMatch::Exact(v.clone())),
        (None, Some(v), None) => Ok(m::StringMatch::Prefix(v.clone())),
        (None, None, Some(v)) => Ok(m::StringMatch::Regex(v.clone())),
        _ => Err((
            path.to_owned(),
            "exactly one of exact, prefix or regex is required".to_owned(),
        )),
    }
}

/// Header matches (lower-case names); a header given no value matches its presence, as Istio
/// reads it.
fn header_matches(
    path: &str,
    headers: &BTreeMap<String, net::StringMatch>,
    notes: &mut Notes,
) -> Field<BTreeMap<String, m::StringMatch>> {
    let mut out = BTreeMap::new();
    for (name, sm) in headers {
        let p = format!("{path}.{name}");
        let lower = name.to_ascii_lowercase();
        if matches!(lower.as_str(), "uri" | "scheme" | "method" | "authority") {
            notes.warn(
                &p,
                "ignored, as Istio ignores it: use the match's own field",
            );
            continue;
        }
        let value = if sm.exact.is_none() && sm.prefix.is_none() && sm.regex.is_none() {
            m::StringMatch::Present(true)
        } else {
            string_match(&p, sm)?
        };
        out.insert(lower, value);
    }
    Ok(out)
}

/// Whether the scheme match holds inside the mesh (every routed request is `http`).
fn scheme_holds(path: &str, sm: &net::StringMatch) -> Field<bool> {
    match string_match(path, sm)? {
        m::StringMatch::Exact(v) => Ok(v == MESH_SCHEME),
        m::StringMatch::Prefix(v) => Ok(MESH_SCHEME.starts_with(&v)),
        _ => Err((
            path.to_owned(),
            "a regex scheme match is not supported (requests a waypoint routes are http)"
                .to_owned(),
        )),
    }
}

/// The matches of a rule; `None` when it has matches but none applies to waypoints (bound to
/// other gateways, or on a scheme no routed request has).
fn matches(
    path: &str,
    requests: &[net::HttpMatchRequest],
    notes: &mut Notes,
) -> Field<Option<Vec<m::HttpMatch>>> {
    let mut out = Vec::new();
    for (i, mr) in requests.iter().enumerate() {
        let p = format!("{path}.match[{i}]");
        if !mr.gateways.is_empty() {
            let mesh = mr.gateways.iter().any(|g| g == MESH_GATEWAY);
            let others: Vec<&String> = mr.gateways.iter().filter(|g| *g != MESH_GATEWAY).collect();
            if !mesh {
                notes.warn(
                    &format!("{p}.gateways"),
                    format!(
                        "bound to gateways {others:?} only: this match is not applied to \
                         waypoints (ingress gateways are not built yet)"
                    ),
                );
                continue;
            }
            if !others.is_empty() {
                notes.warn(
                    &format!("{p}.gateways"),
                    format!("gateways {others:?} not applied: ingress gateways are not built yet"),
                );
            }
        }
        if let Some(scheme) = &mr.scheme {
            if !scheme_holds(&format!("{p}.scheme"), scheme)? {
                notes.warn(
                    &format!("{p}.scheme"),
                    "never matches: every request a waypoint routes is http",
                );
                continue;
            }
        }
        if mr.stat_prefix.is_some() {
            notes.unsupported(&format!("{p}.statPrefix"), "ignored");
        }
        let opt = |field: &str, sm: Option<&net::StringMatch>| {
            sm.map(|sm| string_match(&format!("{p}.{field}"), sm))
                .transpose()
        };
        let mut query_params = BTreeMap::new();
        for (name, sm) in &mr.query_params {
            query_params.insert(
                name.clone(),
                string_match(&format!("{p}.queryParams.{name}"), sm)?,
            );
        }
        out.push(m::HttpMatch {
            uri: opt("uri", mr.uri.as_ref())?,
            method: opt("method", mr.method.as_ref())?,
            authority: opt("authority", mr.authority.as_ref())?,
            headers: header_matches(&format!("{p}.headers"), &mr.headers, notes)?,
            query_params,
            port: mr
                .port
                .map(|n| at(&format!("{p}.port"), values::port(i64::from(n))))
                .transpose()?,
            without_headers: header_matches(
                &format!("{p}.withoutHeaders"),
                &mr.without_headers,
                notes,
            )?,
            source_labels: mr.source_labels.clone(),
            source_namespace: mr.source_namespace.clone().filter(|n| !n.is_empty()),
            ignore_uri_case: mr.ignore_uri_case.unwrap_or(false),
        });
    }
    if !requests.is_empty() && out.is_empty() {
        return Ok(None);
    }
    Ok(Some(out))
}

fn header_ops(ops: Option<&net::HeaderOperations>) -> m::HeaderOps {
    ops.map(|o| m::HeaderOps {
        set: o.set.clone(),
        add: o.add.clone(),
        remove: o.remove.clone(),
    })
    .unwrap_or_default()
}

fn redirect(path: &str, r: &net::HttpRedirect, notes: &mut Notes) -> Field<m::Redirect> {
    let code = match r.redirect_code {
        None => 301,
        Some(c) => u16::try_from(c)
            .ok()
            .filter(|c| REDIRECT_CODES.contains(c))
            .ok_or_else(|| {
                (
                    format!("{path}.redirectCode"),
                    format!("invalid redirect code {c} (expected 301, 302, 303, 307 or 308)"),
                )
            })?,
    };
    let mut port = r
        .port
        .map(|p| at(&format!("{path}.port"), values::port(i64::from(p))))
        .transpose()?;
    match r.derive_port.as_deref() {
        None | Some("FROM_REQUEST_PORT") => {}
        Some("FROM_PROTOCOL_DEFAULT") => {
            if port.is_some() {
                return Err((
                    format!("{path}.derivePort"),
                    "only one of port and derivePort may be set".to_owned(),
                ));
            }
            match r.scheme.as_deref() {
                Some("http") => port = Some(80),
                Some("https") => port = Some(443),
                _ => notes.unsupported(
                    &format!("{path}.derivePort"),
                    "without a scheme the request's port is kept",
                ),
            }
        }
        Some(other) => {
            return Err((
                format!("{path}.derivePort"),
                format!(
                    "invalid value {other:?} (expected FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT)"
                ),
            ))
        }
    }
    Ok(m::Redirect {
        scheme: r.scheme.clone(),
        port,
        replace_prefix: false,
        uri: r.uri.clone(),
        authority: r.authority.clone(),
        code,
    })
}

fn direct_response(path: &str, d: &net::HttpDirectResponse) -> Field<m::DirectResponse> {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .ok_or_else(|| {
            (
                format!("{path}.status"),
                format!("invalid HTTP status {} (must be 200-599)", d.status),
            )
        })?;
    let body = match &d.body {
        None => None,
        Some(net::HttpBody {
            string: Some(text),
            bytes: None,
        }) => Some(text.clone()),
        Some(net::HttpBody {
            string: None,
            bytes: Some(encoded),
        }) => {
            let bpath = format!("{path}.body.bytes");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| (bpath.clone(), format!("invalid base64: {e}")))?;
            Some(String::from_utf8(raw).map_err(|_| {
                (
                    bpath,
                    "a body that is not UTF-8 text is not supported yet".to_owned(),
                )
            })?)
        }
        Some(_) => {
            return Err((
                format!("{path}.body"),
                "exactly one of string or bytes is required".to_owned(),
            ))
        }
    };
    Ok(m::DirectResponse { status, body })
}

fn rewrite(path: &str, r: &net::HttpRewrite) -> Field<m::Rewrite> {
    if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
        return Err((
            format!("{path}.uriRegexRewrite"),
            "only one of uri and uriRegexRewrite may be set".to_owned(),
        ));
    }
    Ok(m::Rewrite {
        uri: r.uri.clone(),
        uri_regex: r.uri_regex_rewrite.as_ref().map(|x| m::RegexRewrite {
            pattern: x.pattern.clone(),
            rewrite: x.rewrite.clone(),
        }),
        full_path: false,
        authority: r.authority.clone(),
    })
}

/// Retry conditions a waypoint applies (issue 12's list; Envoy's names) besides status codes.
const RETRY_CONDITIONS: [&str; 13] = [
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "refused-stream",
    "retriable-4xx",
    "retriable-status-codes",
    "retriable-headers",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// `retryOn`: known conditions and status codes kept; an unknown condition is a warning and
/// left out (the others still apply).
pub(super) fn retry_on(path: &str, text: &str, notes: &mut Notes) -> Vec<String> {
    let mut out = Vec::new();
    for c in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let status = c.parse::<u16>().is_ok_and(|s| (100..=599).contains(&s));
        if status || RETRY_CONDITIONS.contains(&c) {
            if !out.iter().any(|o| o == c) {
                out.push(c.to_owned());
            }
        } else {
            notes.warn(
                path,
                format!(
                    "unknown retry condition {c:?} left out (known: {}, or a status code)",
                    RETRY_CONDITIONS.join(", ")
                ),
            );
        }
    }
    out
}

fn retries(path: &str, r: &net::HttpRetry, notes: &mut Notes) -> Field<m::RetryPolicy> {
    let backoff_base_ms = opt_duration(&format!("{path}.backoff"), r.backoff.as_ref())?;
    if backoff_base_ms == Some(0) {
        return Err((format!("{path}.backoff"), "must be at least 1ms".to_owned()));
    }
    Ok(m::RetryPolicy {
        backoff_base_ms,
        retry_ignore_previous_hosts: r.retry_ignore_previous_hosts,
        retry_remote_localities: r.retry_remote_localities == Some(true),
        attempts: opt_u32(&format!("{path}.attempts"), r.attempts)?.unwrap_or(0),
        per_try_timeout_ms: opt_duration(
            &format!("{path}.perTryTimeout"),
            r.per_try_timeout.as_ref(),
        )?,
        retry_on: r
            .retry_on
            .as_deref()
            .map(|s| retry_on(&format!("{path}.retryOn"), s, notes))
            .unwrap_or_default(),
    })
}

fn mirrors(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    http: &net::HttpRoute,
    notes: &mut Notes,
) -> Field<Vec<m::Mirror>> {
    if http.mirror.is_some() && !http.mirrors.is_empty() {
        return Err((
            format!("{path}.mirrors"),
            "only one of mirror and mirrors may be set".to_owned(),
        ));
    }
    if let Some(d) = &http.mirror {
        let percentage = http
            .mirror_percentage
            .as_ref()
            .map(|p| p.value)
            .or(http.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        return Ok(vec![m::Mirror {
            destination: destination(cx, key, &format!("{path}.mirror"), d, None, 1, notes)?,
            percentage: at(
                &format!("{path}.mirrorPercentage.value"),
                values::percentage(percentage),
            )?,
        }]);
    }
    if http.mirror_percentage.is_some() || http.mirror_percent.is_some() {
        notes.warn(
            &format!("{path}.mirrorPercentage"),
            "ignored without mirror (each of mirrors has its own percentage)",
        );
    }
    http.mirrors
        .iter()
        .enumerate()
        .map(|(i, mp)| {
            Ok(m::Mirror {
                destination: destination(
                    cx,
                    key,
                    &format!("{path}.mirrors[{i}].destination"),
                    &mp.destination,
                    None,
                    1,
                    notes,
                )?,
                percentage: at(
                    &format!("{path}.mirrors[{i}].percentage.value"),
                    values::percentage(mp.percentage.as_ref().map_or(100.0, |p| p.value)),
                )?,
            })
        })
        .collect()
}

/// The rule at `path`, or `None` when none of its matches applies to waypoints. With
/// `require_action` (every rule but one that delegates) exactly one of route, redirect and
/// directResponse must be set.
pub(super) fn rule(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    http: &net::HttpRoute,
    require_action: bool,
    notes: &mut Notes,
) -> Field<Option<m::RouteRule>> {
    if require_action {
        let actions = [
            !http.route.is_empty(),
            http.redirect.is_some(),
            http.direct_response.is_some(),
        ];
        match actions.iter().filter(|a| **a).count() {
            1 => {}
            0 => {
                return Err((
                    path.to_owned(),
                    "one of route, redirect, directResponse or delegate is required".to_owned(),
                ))
            }
            _ => {
                return Err((
                    path.to_owned(),
                    "only one of route, redirect and directResponse may be set".to_owned(),
                ))
            }
        }
    }
    let Some(matches) = matches(path, &http.matches, notes)? else {
        return Ok(None);
    };
    let mut destinations = Vec::new();
    for (i, rd) in http.route.iter().enumerate() {
        let mut d = destination(
            cx,
            key,
            &format!("{path}.route[{i}].destination"),
            &rd.destination,
            rd.weight,
            http.route.len(),
            notes,
        )?;
        let headers = rd.headers.clone().unwrap_or_default();
        d.request_headers = header_ops(headers.request.as_ref());
        d.response_headers = header_ops(headers.response.as_ref());
        destinations.push(d);
    }
    if destinations.len() > 1 && destinations.iter().all(|d| d.weight == 0) {
        return Err((
            format!("{path}.route"),
            "all destination weights are 0".to_owned(),
        ));
    }
    if http.cors_policy.is_some() {
        notes.unsupported(
            &format!("{path}.corsPolicy"),
            "no CORS headers are added (browsers refuse cross-origin responses)",
        );
    }
    let headers = http.headers.clone().unwrap_or_default();
    Ok(Some(m::RouteRule {
        name: http.name.clone(),
        matches,
        destinations,
        redirect: http
            .redirect
            .as_ref()
            .map(|r| redirect(&format!("{path}.redirect"), r, notes))
            .transpose()?,
        rewrite: http
            .rewrite
            .as_ref()
            .map(|r| rewrite(&format!("{path}.rewrite"), r))
            .transpose()?,
        timeout_ms: opt_duration(&format!("{path}.timeout"), http.timeout.as_ref())?,
        retries: http
            .retries
            .as_ref()
            .map(|r| retries(&format!("{path}.retries"), r, notes))
            .transpose()?,
        fault: http
            .fault
            .as_ref()
            .map(|f| fault(&format!("{path}.fault"), f, notes))
            .transpose()?,
        mirrors: mirrors(cx, key, path, http, notes)?,
        request_headers: header_ops(headers.request.as_ref()),
        response_headers: header_ops(headers.response.as_ref()),
        direct_response: http
            .direct_response
            .as_ref()
            .map(|d| direct_response(&format!("{path}.directResponse"), d))
            .transpose()?,
    }))
}

/// gRPC status names (Istio's `grpcStatus` values).
const GRPC_STATUSES: [&str; 16] = [
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn abort(path: &str, a: &net::FaultAbort, notes: &mut Notes) -> Field<Option<m::FaultAbort>> {
    let share = at(
        &format!("{path}.percentage.value"),
        values::percentage(a.percentage.as_ref().map_or(100.0, |p| p.value)),
    )?;
    let set = [
        a.http_status.is_some(),
        a.grpc_status.is_some(),
        a.http2_error.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err((
            path.to_owned(),
            "exactly one of httpStatus, grpcStatus or http2Error is required".to_owned(),
        ));
    }
    if a.http2_error.is_some() {
        notes.unsupported(&format!("{path}.http2Error"), "no request is aborted");
        return Ok(None);
    }
    if let Some(name) = &a.grpc_status {
        let upper = name.trim().to_ascii_uppercase();
        if !GRPC_STATUSES.contains(&upper.as_str()) {
            return Err((
                format!("{path}.grpcStatus"),
                format!("unknown gRPC status {name:?} (expected e.g. UNAVAILABLE)"),
            ));
        }
        return Ok(Some(m::FaultAbort {
            http_status: 0,
            grpc_status: Some(upper),
            percentage: share,
        }));
    }
    let status = a.http_status.unwrap_or_default();
    let http_status = u16::try_from(status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .ok_or_else(|| {
            (
                format!("{path}.httpStatus"),
                format!("invalid HTTP status {status} (must be 200-599)"),
            )
        })?;
    Ok(Some(m::FaultAbort {
        http_status,
        grpc_status: None,
        percentage: share,
    }))
}

fn fault(path: &str, f: &net::HttpFaultInjection, notes: &mut Notes) -> Field<m::Fault> {
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            if d.exponential_delay.is_some() {
                notes.unsupported(&format!("{path}.delay.exponentialDelay"), "ignored");
            }
            let Some(fixed) = &d.fixed_delay else {
                return Err((
                    format!("{path}.delay.fixedDelay"),
                    "fixedDelay is required".to_owned(),
                ));
            };
            let share = d
                .percentage
                .as_ref()
                .map(|p| p.value)
                .or(d.percent.map(f64::from))
                .unwrap_or(100.0);
            Some(m::FaultDelay {
                fixed_delay_ms: at(
                    &format!("{path}.delay.fixedDelay"),
                    values::duration_ms(fixed),
                )?,
                percentage: at(
                    &format!("{path}.delay.percentage.value"),
                    values::percentage(share),
                )?,
            })
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => abort(&format!("{path}.abort"), a, notes)?,
    };
    Ok(m::Fault { delay, abort })
}

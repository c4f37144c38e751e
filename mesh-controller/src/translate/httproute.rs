//! Gateway API HTTPRoutes as routes. A route whose parent is a Service (the GAMMA mesh binding)
//! applies to that service's host (and, with `port`, that port only); a ServiceEntry parent to
//! its hosts; a waypoint Gateway parent to its `hostnames`, or without any, to the services
//! assigned to that waypoint. A parent that is another Gateway (ingress) is reported and not
//! applied: ingress gateways are not built yet. Backends must be existing Services; a rule
//! without backends (and without a redirect) answers 500, as the Gateway API requires.

use std::collections::BTreeMap;

use mesh_common::model::{self as m, RouteKind};

use super::field::{Field, Notes};
use super::{values, Context};
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::gateway_api::{self as gw, WAYPOINT_CLASS};

/// Status codes the Gateway API allows on a redirect.
const REDIRECT_CODES: [u16; 5] = [301, 302, 303, 307, 308];
/// What a rule whose filter cannot run answers (Gateway API: an error, never skip the filter).
const FILTER_FAILURE_STATUS: u16 = 500;

pub(super) fn routes(cx: &mut Context<'_>, services: &[m::Service]) -> Vec<m::Route> {
    let mut out = Vec::new();
    for (key, object) in cx.objects(Kind::HttpRoute) {
        let Object::HttpRoute(r) = &*object else {
            continue;
        };
        let mut notes = Notes::default();
        let result = route(cx, &key, &r.spec, services, &mut notes);
        notes.report(cx, &key);
        match result {
            Ok(Some(route)) => out.push(route),
            Ok(None) => {}
            Err((path, message)) => cx.error(&key, &path, message),
        }
    }
    out
}

pub(super) fn is_service_kind(
    group: Option<&str>,
    kind: Option<&str>,
    default_service: bool,
) -> bool {
    let core_group = group.is_none_or(str::is_empty);
    match kind {
        Some("Service") => core_group,
        None => default_service && core_group,
        _ => false,
    }
}

/// What a route binds to: its parents and, for a waypoint Gateway parent, the host names that
/// choose the services (none: every service assigned to the waypoint).
pub(super) struct Binding<'a> {
    /// `spec.parentRefs`.
    pub parent_refs: &'a [gw::ParentReference],
    /// `spec.hostnames` (empty for a TCPRoute).
    pub hostnames: &'a [String],
    /// Whether `hostnames` mean something for a Service parent too (TLSRoute: the SNI match).
    pub hostnames_match_service: bool,
}

/// The hosts and the service port the parents bind the route to; `None` when no parent
/// applies to waypoints.
pub(super) fn parents(
    cx: &Context<'_>,
    key: &ObjectKey,
    spec: &Binding<'_>,
    services: &[m::Service],
    notes: &mut Notes,
) -> Field<Option<(Vec<String>, Option<u16>)>> {
    if spec.parent_refs.is_empty() {
        return Err((
            "spec.parentRefs".to_owned(),
            "at least one parent (Service or Gateway) is required".to_owned(),
        ));
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    let mut applied = 0;
    for (i, parent) in spec.parent_refs.iter().enumerate() {
        let path = format!("spec.parentRefs[{i}]");
        let namespace = parent
            .namespace
            .clone()
            .unwrap_or_else(|| key.namespace.clone());
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        // `group` defaults to the Gateway API's, but a Service is the core one either way.
        let default_group = if kind == "Service" {
            ""
        } else {
            "gateway.networking.k8s.io"
        };
        let group = parent.group.as_deref().unwrap_or(default_group);
        if parent.section_name.is_some() {
            notes.unsupported(
                &format!("{path}.sectionName"),
                "the route applies to the whole parent",
            );
        }
        match (group, kind) {
            ("", "Service") => {
                let host = cx.hosts.service_fqdn(&namespace, &parent.name);
                if !cx.hosts.contains(&host) {
                    return Err((
                        format!("{path}.name"),
                        format!("Service {namespace}/{} not found", parent.name),
                    ));
                }
                let port = parent
                    .port
                    .map(|p| values::port(i64::from(p)).map_err(|e| (format!("{path}.port"), e)))
                    .transpose()?;
                ports.push(port);
                hosts.push(host);
                applied += 1;
            }
            ("networking.istio.io", "ServiceEntry") => {
                let se = ObjectKey {
                    kind: Kind::ServiceEntry,
                    namespace: namespace.clone(),
                    name: parent.name.clone(),
                };
                let Some(Object::ServiceEntry(entry)) = cx.store.get(&se).map(|e| &*e.object) else {
                    return Err((
                        format!("{path}.name"),
                        format!("ServiceEntry {namespace}/{} not found", parent.name),
                    ));
                };
                hosts.extend(entry.spec.hosts.iter().cloned());
                ports.push(None);
                applied += 1;
            }
            ("gateway.networking.k8s.io", "Gateway") => {
                let gateway = ObjectKey {
                    kind: Kind::Gateway,
                    namespace: namespace.clone(),
                    name: parent.name.clone(),
                };
                let Some(Object::Gateway(g)) = cx.store.get(&gateway).map(|e| &*e.object) else {
                    return Err((
                        format!("{path}.name"),
                        format!("Gateway {namespace}/{} not found", parent.name),
                    ));
                };
                if g.spec.gateway_class_name != WAYPOINT_CLASS {
                    notes.warn(
                        &path,
                        format!(
                            "Gateway {namespace}/{} (class {:?}) is an ingress gateway: not \
                             applied (ingress gateways are not built yet)",
                            parent.name, g.spec.gateway_class_name
                        ),
                    );
                    continue;
                }
                if spec.hostnames.is_empty() {
                    hosts.extend(
                        services
                            .iter()
                            .filter(|s| {
                                s.waypoint.as_ref().is_some_and(|w| {
                                    w.namespace == namespace && w.name == parent.name
                                })
                            })
                            .map(|s| s.hostname.clone()),
                    );
                } else {
                    hosts.extend(
                        spec.hostnames
                            .iter()
                            .map(|h| cx.hosts.qualify(h, &key.namespace)),
                    );
                }
                ports.push(None);
                applied += 1;
            }
            _ => {
                return Err((
                    format!("{path}.kind"),
                    format!("unsupported parent {kind} (group {group:?}): expected a Service, a ServiceEntry or a Gateway"),
                ))
            }
        }
    }
    if applied == 0 {
        return Ok(None);
    }
    let service_parent = spec
        .parent_refs
        .iter()
        .any(|p| is_service_kind(p.group.as_deref(), p.kind.as_deref(), false));
    if service_parent && !spec.hostnames.is_empty() && !spec.hostnames_match_service {
        notes.warn(
            "spec.hostnames",
            "ignored for a Service parent: the route applies to the service's own host",
        );
    }
    let port = match ports.first() {
        Some(Some(p)) if ports.iter().all(|q| *q == Some(*p)) => Some(*p),
        _ => {
            if ports.iter().any(Option::is_some) {
                notes.unsupported(
                    "spec.parentRefs",
                    "ports differing between parents; the route applies to every port",
                );
            }
            None
        }
    };
    hosts.sort();
    hosts.dedup();
    Ok(Some((hosts, port)))
}

fn route(
    cx: &Context<'_>,
    key: &ObjectKey,
    spec: &gw::HTTPRouteSpec,
    services: &[m::Service],
    notes: &mut Notes,
) -> Field<Option<m::Route>> {
    if spec.use_default_gateways.is_some() {
        notes.unsupported(
            "spec.useDefaultGateways",
            "ignored (ingress gateways are not built yet)",
        );
    }
    let binding = Binding {
        parent_refs: &spec.parent_refs,
        hostnames: &spec.hostnames,
        hostnames_match_service: false,
    };
    let Some((hosts, port)) = parents(cx, key, &binding, services, notes)? else {
        return Ok(None);
    };
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let mut r = route_rule(cx, key, &format!("spec.rules[{i}]"), rule, notes)?;
        if let Some(port) = port {
            if r.matches.is_empty() {
                r.matches.push(m::HttpMatch::default());
            }
            for m in &mut r.matches {
                m.port = Some(port);
            }
        }
        rules.push(r);
    }
    Ok(Some(m::Route {
        tcp: Vec::new(),
        tls: Vec::new(),
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        kind: RouteKind::HttpRoute,
        hosts,
        rules,
        export_to: Vec::new(),
    }))
}

fn name_match(path: &str, nm: &gw::HttpNameMatch) -> Field<m::StringMatch> {
    match nm.match_type.as_deref() {
        None | Some("Exact") => Ok(m::StringMatch::Exact(nm.value.clone())),
        Some("RegularExpression") => Ok(m::StringMatch::Regex(nm.value.clone())),
        Some(other) => Err((
            format!("{path}.type"),
            format!("invalid match type {other:?} (expected Exact or RegularExpression)"),
        )),
    }
}

pub(super) fn backend(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    b: &gw::BackendObjectReference,
) -> Field<m::RouteDestination> {
    let (group, kind, name) = (b.group.as_deref(), b.kind.as_deref(), b.name.as_str());
    let (namespace, port) = (b.namespace.as_deref(), b.port);
    if !is_service_kind(group, kind, true) {
        return Err((
            format!("{path}.kind"),
            format!("unsupported backend kind {:?}", kind.unwrap_or_default()),
        ));
    }
    let namespace = namespace.unwrap_or(&key.namespace);
    let host = cx.hosts.service_fqdn(namespace, name);
    if !cx.hosts.contains(&host) {
        return Err((
            format!("{path}.name"),
            format!("Service {namespace}/{name} not found"),
        ));
    }
    let port = port
        .map(|p| values::port(i64::from(p)).map_err(|e| (format!("{path}.port"), e)))
        .transpose()?;
    Ok(m::RouteDestination {
        host,
        subset: None,
        port,
        weight: 1,
        ..Default::default()
    })
}

fn header_ops(hm: &gw::HeaderModifier) -> m::HeaderOps {
    let pairs = |hs: &[gw::HttpHeader]| -> BTreeMap<String, String> {
        hs.iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect()
    };
    m::HeaderOps {
        set: pairs(&hm.set),
        add: pairs(&hm.add),
        remove: hm.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    }
}

/// A path modifier: (path, whether it replaces only the matched prefix).
fn path_modifier(path: &str, pm: &gw::PathModifier, prefix_matches: bool) -> Field<(String, bool)> {
    match pm.modifier_type.as_str() {
        "ReplaceFullPath" => pm
            .replace_full_path
            .clone()
            .map(|p| (p, false))
            .ok_or_else(|| {
                (
                    format!("{path}.replaceFullPath"),
                    "required for type ReplaceFullPath".to_owned(),
                )
            }),
        "ReplacePrefixMatch" => {
            if !prefix_matches {
                return Err((
                    format!("{path}.type"),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"
                        .to_owned(),
                ));
            }
            pm.replace_prefix_match
                .clone()
                .map(|p| (p, true))
                .ok_or_else(|| {
                    (
                        format!("{path}.replacePrefixMatch"),
                        "required for type ReplacePrefixMatch".to_owned(),
                    )
                })
        }
        other => Err((
            format!("{path}.type"),
            format!(
                "invalid path modifier {other:?} (expected ReplaceFullPath or ReplacePrefixMatch)"
            ),
        )),
    }
}

fn redirect(path: &str, r: &gw::RequestRedirect, prefix_matches: bool) -> Field<m::Redirect> {
    let code = match r.status_code {
        None => 302,
        Some(c) => u16::try_from(c)
            .ok()
            .filter(|c| REDIRECT_CODES.contains(c))
            .ok_or_else(|| {
                (
                    format!("{path}.statusCode"),
                    format!("invalid status code {c} (expected 301, 302, 303, 307 or 308)"),
                )
            })?,
    };
    let (uri, replace_prefix) = match &r.path {
        None => (None, false),
        Some(pm) => {
            let (p, prefix) = path_modifier(&format!("{path}.path"), pm, prefix_matches)?;
            (Some(p), prefix)
        }
    };
    Ok(m::Redirect {
        scheme: r.scheme.clone(),
        port: r
            .port
            .map(|p| values::port(i64::from(p)).map_err(|e| (format!("{path}.port"), e)))
            .transpose()?,
        replace_prefix,
        uri,
        authority: r.hostname.clone(),
        code,
    })
}

fn mirror(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    r: &gw::RequestMirror,
) -> Field<m::Mirror> {
    let destination = backend(cx, key, &format!("{path}.backendRef"), &r.backend_ref)?;
    let share = match (&r.percent, &r.fraction) {
        (Some(_), Some(_)) => {
            return Err((
                path.to_owned(),
                "only one of percent and fraction may be set".to_owned(),
            ))
        }
        (Some(p), None) => f64::from(*p),
        (None, Some(fraction)) => {
            let part = |name: &str| fraction.0.get(name).and_then(serde_json::Value::as_f64);
            let numerator = part("numerator")
                .ok_or_else(|| (format!("{path}.fraction.numerator"), "required".to_owned()))?;
            let denominator = part("denominator").unwrap_or(100.0);
            if denominator <= 0.0 || numerator > denominator {
                return Err((
                    format!("{path}.fraction"),
                    "numerator must be at most denominator, which must be positive".to_owned(),
                ));
            }
            numerator * 100.0 / denominator
        }
        (None, None) => 100.0,
    };
    let percentage = values::percentage(share).map_err(|e| (format!("{path}.percent"), e))?;
    Ok(m::Mirror {
        destination,
        percentage,
    })
}

/// A filter that cannot run: the rule answers with an error instead of skipping it.
fn failing_filter(out: &mut m::RouteRule, notes: &mut Notes, path: &str, what: &str) {
    notes.warn(
        path,
        format!(
            "{what} filters are not supported: every request this rule matches is answered \
             {FILTER_FAILURE_STATUS}, as the Gateway API requires"
        ),
    );
    out.direct_response = Some(m::DirectResponse {
        status: FILTER_FAILURE_STATUS,
        body: None,
    });
}

fn route_rule(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    rule: &gw::HttpRouteRule,
    notes: &mut Notes,
) -> Field<m::RouteRule> {
    let mut matches = Vec::new();
    for (i, mr) in rule.matches.iter().enumerate() {
        let p = format!("{path}.matches[{i}]");
        let uri = match &mr.path {
            None => None,
            Some(pm) => {
                let value = pm.value.clone().unwrap_or_else(|| "/".to_owned());
                Some(match pm.match_type.as_deref() {
                    None | Some("PathPrefix") => m::StringMatch::Prefix(value),
                    Some("Exact") => m::StringMatch::Exact(value),
                    Some("RegularExpression") => m::StringMatch::Regex(value),
                    Some(other) => {
                        return Err((format!("{p}.path.type"), format!("invalid path match type {other:?} (expected Exact, PathPrefix or RegularExpression)")))
                    }
                })
            }
        };
        let mut headers = BTreeMap::new();
        for (j, h) in mr.headers.iter().enumerate() {
            headers.insert(
                h.name.to_ascii_lowercase(),
                name_match(&format!("{p}.headers[{j}]"), h)?,
            );
        }
        let mut query_params = BTreeMap::new();
        for (j, q) in mr.query_params.iter().enumerate() {
            query_params.insert(
                q.name.clone(),
                name_match(&format!("{p}.queryParams[{j}]"), q)?,
            );
        }
        matches.push(m::HttpMatch {
            uri,
            method: mr.method.clone().map(m::StringMatch::Exact),
            headers,
            query_params,
            ..Default::default()
        });
    }
    // A rule without matches matches the path prefix `/`.
    let prefix_matches = matches
        .iter()
        .all(|m| matches!(m.uri, None | Some(m::StringMatch::Prefix(_))));
    let mut destinations = Vec::new();
    for (i, b) in rule.backend_refs.iter().enumerate() {
        let p = format!("{path}.backendRefs[{i}]");
        let reference = gw::BackendObjectReference {
            group: b.group.clone(),
            kind: b.kind.clone(),
            name: b.name.clone(),
            namespace: b.namespace.clone(),
            port: b.port,
        };
        let mut d = backend(cx, key, &p, &reference)?;
        d.weight = b.weight.unwrap_or(1);
        for (j, f) in b.filters.iter().enumerate() {
            let fp = format!("{p}.filters[{j}]");
            match (
                f.filter_type.as_str(),
                &f.request_header_modifier,
                &f.response_header_modifier,
            ) {
                ("RequestHeaderModifier", Some(hm), _) => d.request_headers = header_ops(hm),
                ("ResponseHeaderModifier", _, Some(hm)) => d.response_headers = header_ops(hm),
                ("RequestHeaderModifier", None, _) => {
                    return Err((
                        format!("{fp}.requestHeaderModifier"),
                        "required for filter type RequestHeaderModifier".to_owned(),
                    ))
                }
                ("ResponseHeaderModifier", _, None) => {
                    return Err((
                        format!("{fp}.responseHeaderModifier"),
                        "required for filter type ResponseHeaderModifier".to_owned(),
                    ))
                }
                (other, _, _) => notes.unsupported(
                    &format!("{fp}.type"),
                    &format!(
                        "{other} on a backend is ignored (only header modifiers apply per backend)"
                    ),
                ),
            }
        }
        destinations.push(d);
    }
    let mut out = m::RouteRule {
        name: rule.name.clone(),
        matches,
        destinations,
        ..m::RouteRule::default()
    };
    for (i, f) in rule.filters.iter().enumerate() {
        let p = format!("{path}.filters[{i}]");
        let missing = |field: &str| {
            (
                format!("{p}.{field}"),
                format!("required for filter type {}", f.filter_type),
            )
        };
        match f.filter_type.as_str() {
            "RequestHeaderModifier" => {
                out.request_headers = header_ops(
                    f.request_header_modifier
                        .as_ref()
                        .ok_or_else(|| missing("requestHeaderModifier"))?,
                )
            }
            "ResponseHeaderModifier" => {
                out.response_headers = header_ops(
                    f.response_header_modifier
                        .as_ref()
                        .ok_or_else(|| missing("responseHeaderModifier"))?,
                )
            }
            "RequestRedirect" => {
                let r = f
                    .request_redirect
                    .as_ref()
                    .ok_or_else(|| missing("requestRedirect"))?;
                out.redirect = Some(redirect(
                    &format!("{p}.requestRedirect"),
                    r,
                    prefix_matches,
                )?);
            }
            "URLRewrite" => {
                let r = f
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| missing("urlRewrite"))?;
                let (uri, full_path) = match &r.path {
                    None => (None, false),
                    Some(pm) => {
                        let (p, prefix) =
                            path_modifier(&format!("{p}.urlRewrite.path"), pm, prefix_matches)?;
                        (Some(p), !prefix)
                    }
                };
                out.rewrite = Some(m::Rewrite {
                    uri,
                    uri_regex: None,
                    full_path,
                    authority: r.hostname.clone(),
                });
            }
            "RequestMirror" => {
                let r = f
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| missing("requestMirror"))?;
                out.mirrors
                    .push(mirror(cx, key, &format!("{p}.requestMirror"), r)?);
            }
            "CORS" => notes.unsupported(
                &p,
                "no CORS headers are added (browsers refuse cross-origin responses)",
            ),
            "ExtensionRef" => failing_filter(&mut out, notes, &p, "ExtensionRef"),
            "ExternalAuth" => failing_filter(&mut out, notes, &p, "ExternalAuth"),
            other => {
                return Err((
                    format!("{p}.type"),
                    format!("unknown filter type {other:?}"),
                ))
            }
        }
    }
    if out.destinations.is_empty() && out.redirect.is_none() && out.direct_response.is_none() {
        // Gateway API: a rule with no backend answers 500.
        out.direct_response = Some(m::DirectResponse {
            status: FILTER_FAILURE_STATUS,
            body: None,
        });
    }
    let backend_timeout = rule
        .timeouts
        .as_ref()
        .and_then(|t| t.backend_request.as_deref())
        .map(|d| values::duration_ms(d).map_err(|e| (format!("{path}.timeouts.backendRequest"), e)))
        .transpose()?;
    if let Some(t) = &rule.timeouts {
        out.timeout_ms = t
            .request
            .as_deref()
            .map(|d| values::duration_ms(d).map_err(|e| (format!("{path}.timeouts.request"), e)))
            .transpose()?;
    }
    match &rule.retry {
        Some(r) => {
            let backoff_base_ms = r
                .backoff
                .as_deref()
                .map(|d| values::duration_ms(d).map_err(|e| (format!("{path}.retry.backoff"), e)))
                .transpose()?;
            for (i, code) in r.codes.iter().enumerate() {
                if !(400..=599).contains(code) {
                    return Err((
                        format!("{path}.retry.codes[{i}]"),
                        format!("invalid status {code} (must be 400-599)"),
                    ));
                }
            }
            out.retries = Some(m::RetryPolicy {
                backoff_base_ms,
                retry_ignore_previous_hosts: None,
                retry_remote_localities: false,
                attempts: r.attempts.unwrap_or(1),
                per_try_timeout_ms: backend_timeout,
                retry_on: r.codes.iter().map(u32::to_string).collect(),
            });
        }
        // One attempt: its timeout bounds the whole request.
        None => {
            if let Some(b) = backend_timeout {
                out.timeout_ms = Some(out.timeout_ms.map_or(b, |t| t.min(b)));
            }
        }
    }
    if rule.session_persistence.is_some() {
        notes.unsupported(&format!("{path}.sessionPersistence"), "ignored");
    }
    Ok(out)
}

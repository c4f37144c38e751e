//! Gateway API HTTPRoutes as routes. A route whose parent is a Service (the GAMMA mesh binding)
//! applies to that service's host; one whose parent is a Gateway applies to its `hostnames`.
//! Backends must be existing Services (or ServiceEntry hosts).

use std::collections::BTreeMap;

use mesh_common::model::{self as m, RouteKind};

use super::{values, Context};
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::gateway_api as gw;

type Field<T> = Result<T, (String, String)>;

pub(super) fn routes(cx: &mut Context<'_>) -> Vec<m::Route> {
    let mut out = Vec::new();
    for (key, object) in cx.objects(Kind::HttpRoute) {
        let Object::HttpRoute(r) = &*object else {
            continue;
        };
        match route(cx, &key, &r.spec) {
            Ok(route) => out.push(route),
            Err((path, message)) => cx.error(&key, &path, message),
        }
    }
    out
}

fn is_service_kind(group: Option<&str>, kind: Option<&str>, default_service: bool) -> bool {
    let core_group = group.is_none_or(str::is_empty);
    match kind {
        Some("Service") => core_group,
        None => default_service && core_group,
        _ => false,
    }
}

fn route(cx: &Context<'_>, key: &ObjectKey, spec: &gw::HTTPRouteSpec) -> Field<m::Route> {
    let mut hosts = Vec::new();
    for (i, parent) in spec.parent_refs.iter().enumerate() {
        let path = format!("spec.parentRefs[{i}]");
        let namespace = parent
            .namespace
            .clone()
            .unwrap_or_else(|| key.namespace.clone());
        if is_service_kind(parent.group.as_deref(), parent.kind.as_deref(), false) {
            let host = cx.hosts.service_fqdn(&namespace, &parent.name);
            if !cx.hosts.contains(&host) {
                return Err((
                    format!("{path}.name"),
                    format!("Service {namespace}/{} not found", parent.name),
                ));
            }
            hosts.push(host);
        } else {
            let gateway = ObjectKey {
                kind: Kind::Gateway,
                namespace: namespace.clone(),
                name: parent.name.clone(),
            };
            if cx.store.get(&gateway).is_none() {
                return Err((
                    format!("{path}.name"),
                    format!("Gateway {namespace}/{} not found", parent.name),
                ));
            }
            hosts.extend(spec.hostnames.iter().cloned());
        }
    }
    if hosts.is_empty() {
        return Err((
            "spec.parentRefs".to_owned(),
            "at least one parent (Service or Gateway) is required".to_owned(),
        ));
    }
    hosts.sort();
    hosts.dedup();
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        rules.push(route_rule(cx, key, &format!("spec.rules[{i}]"), rule)?);
    }
    Ok(m::Route {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        kind: RouteKind::HttpRoute,
        hosts,
        rules,
    })
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

fn backend(
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
        remove: hm.remove.clone(),
    }
}

fn route_rule(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    rule: &gw::HttpRouteRule,
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
            authority: None,
            headers,
            query_params,
            port: None,
            ..Default::default()
        });
    }
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
                out.redirect = Some(m::Redirect {
                    uri: r.path.as_ref().and_then(|p| {
                        p.replace_full_path
                            .clone()
                            .or(p.replace_prefix_match.clone())
                    }),
                    authority: r.hostname.clone(),
                    code: r
                        .status_code
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(302),
                    ..Default::default()
                });
            }
            "URLRewrite" => {
                let r = f
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| missing("urlRewrite"))?;
                out.rewrite = Some(m::Rewrite {
                    uri: r.path.as_ref().and_then(|p| {
                        p.replace_prefix_match
                            .clone()
                            .or(p.replace_full_path.clone())
                    }),
                    authority: r.hostname.clone(),
                    ..Default::default()
                });
            }
            "RequestMirror" => {
                let r = f
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| missing("requestMirror"))?;
                let d = backend(
                    cx,
                    key,
                    &format!("{p}.requestMirror.backendRef"),
                    &r.backend_ref,
                )?;
                let percentage = values::percentage(f64::from(r.percent.unwrap_or(100)))
                    .map_err(|e| (format!("{p}.requestMirror.percent"), e))?;
                out.mirror = Some(m::Mirror {
                    destination: d,
                    percentage,
                });
            }
            "CORS" | "ExtensionRef" => {}
            other => {
                return Err((
                    format!("{p}.type"),
                    format!("unknown filter type {other:?}"),
                ))
            }
        }
    }
    if let Some(t) = &rule.timeouts {
        out.timeout_ms = t
            .request
            .as_deref()
            .map(|d| values::duration_ms(d).map_err(|e| (format!("{path}.timeouts.request"), e)))
            .transpose()?;
    }
    if let Some(r) = &rule.retry {
        out.retries = Some(m::RetryPolicy {
            attempts: r.attempts.unwrap_or(1),
            per_try_timeout_ms: rule
                .timeouts
                .as_ref()
                .and_then(|t| t.backend_request.as_deref())
                .map(|d| {
                    values::duration_ms(d)
                        .map_err(|e| (format!("{path}.timeouts.backendRequest"), e))
                })
                .transpose()?,
            retry_on: r.codes.iter().map(u32::to_string).collect(),
        });
    }
    Ok(out)
}

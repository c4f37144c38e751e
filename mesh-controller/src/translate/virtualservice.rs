//! Istio traffic management: DestinationRules become destination policies (and define the
//! subsets routes may name); VirtualServices become routes. Hosts and subsets must exist.

use mesh_common::model::{self as m, RouteKind};

use super::{values, Context};
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::istio_networking as net;

/// Result of one field conversion: a path-relative message on failure.
type Field<T> = Result<T, (String, String)>;

fn at<T>(path: &str, r: Result<T, String>) -> Field<T> {
    r.map_err(|e| (path.to_owned(), e))
}

fn opt_duration(path: &str, d: Option<&String>) -> Field<Option<u64>> {
    d.map(|d| at(path, values::duration_ms(d))).transpose()
}

fn opt_u32(path: &str, v: Option<i32>) -> Field<Option<u32>> {
    v.map(|v| {
        at(
            path,
            u32::try_from(v).map_err(|_| format!("invalid value {v} (must be >= 0)")),
        )
    })
    .transpose()
}

pub(super) fn destination_policies(cx: &mut Context<'_>) -> Vec<m::DestinationPolicy> {
    let mut out = Vec::new();
    for (key, object) in cx.objects(Kind::DestinationRule) {
        let Object::DestinationRule(dr) = &*object else {
            continue;
        };
        match destination_policy(cx, &key, &dr.spec) {
            Ok(policy) => {
                cx.subsets
                    .entry(policy.host.clone())
                    .or_default()
                    .extend(policy.subsets.iter().map(|s| s.name.clone()));
                out.push(policy);
            }
            Err((path, message)) => cx.error(&key, &path, message),
        }
    }
    out
}

fn destination_policy(
    cx: &Context<'_>,
    key: &ObjectKey,
    spec: &net::DestinationRuleSpec,
) -> Field<m::DestinationPolicy> {
    let host = cx.hosts.qualify(&spec.host, &key.namespace);
    if !cx.hosts.contains(&host) {
        return Err((
            "spec.host".to_owned(),
            format!(
                "host {:?} not found in the mesh (no Service or ServiceEntry)",
                spec.host
            ),
        ));
    }
    let host_policy = match &spec.traffic_policy {
        Some(tp) => traffic_policy("spec.trafficPolicy", tp)?,
        None => m::TrafficPolicy::default(),
    };
    let mut subsets: Vec<m::Subset> = Vec::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let path = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            return Err((format!("{path}.name"), "subset name is required".to_owned()));
        }
        if subsets.iter().any(|other| other.name == s.name) {
            return Err((
                format!("{path}.name"),
                format!("duplicate subset {:?}", s.name),
            ));
        }
        let traffic_policy = s
            .traffic_policy
            .as_ref()
            .map(|tp| traffic_policy(&format!("{path}.trafficPolicy"), tp))
            .transpose()?;
        subsets.push(m::Subset {
            name: s.name.clone(),
            labels: s.labels.clone(),
            traffic_policy,
        });
    }
    Ok(m::DestinationPolicy {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        host,
        traffic_policy: host_policy,
        subsets,
    })
}

fn traffic_policy(path: &str, tp: &net::TrafficPolicy) -> Field<m::TrafficPolicy> {
    let load_balancer = match &tp.load_balancer {
        None => None,
        Some(lb) => {
            let p = format!("{path}.loadBalancer");
            if let Some(hash) = &lb.consistent_hash {
                Some(m::LoadBalancer::ConsistentHash {
                    header: hash.http_header_name.clone(),
                })
            } else {
                match lb.simple.as_deref() {
                    None | Some("UNSPECIFIED") => None,
                    Some("ROUND_ROBIN") => Some(m::LoadBalancer::RoundRobin),
                    Some("LEAST_REQUEST" | "LEAST_CONN") => Some(m::LoadBalancer::LeastRequest),
                    Some("RANDOM") => Some(m::LoadBalancer::Random),
                    Some("PASSTHROUGH") => Some(m::LoadBalancer::Passthrough),
                    Some(other) => {
                        return Err((
                            format!("{p}.simple"),
                            format!("invalid load balancer {other:?} (expected ROUND_ROBIN, LEAST_REQUEST, RANDOM or PASSTHROUGH)"),
                        ))
                    }
                }
            }
        }
    };
    let connection_pool = match &tp.connection_pool {
        None => None,
        Some(cp) => {
            let p = format!("{path}.connectionPool");
            let tcp = cp.tcp.clone().unwrap_or_default();
            let http = cp.http.clone().unwrap_or_default();
            Some(m::ConnectionPool {
                max_connections: opt_u32(&format!("{p}.tcp.maxConnections"), tcp.max_connections)?,
                connect_timeout_ms: opt_duration(
                    &format!("{p}.tcp.connectTimeout"),
                    tcp.connect_timeout.as_ref(),
                )?,
                http1_max_pending_requests: opt_u32(
                    &format!("{p}.http.http1MaxPendingRequests"),
                    http.http1_max_pending_requests,
                )?,
                http2_max_requests: opt_u32(
                    &format!("{p}.http.http2MaxRequests"),
                    http.http2_max_requests,
                )?,
                max_requests_per_connection: opt_u32(
                    &format!("{p}.http.maxRequestsPerConnection"),
                    http.max_requests_per_connection,
                )?,
            })
        }
    };
    let outlier_detection = match &tp.outlier_detection {
        None => None,
        Some(od) => {
            let p = format!("{path}.outlierDetection");
            let max_ejection_percent =
                opt_u32(&format!("{p}.maxEjectionPercent"), od.max_ejection_percent)?;
            if let Some(v) = max_ejection_percent.filter(|v| *v > 100) {
                return Err((
                    format!("{p}.maxEjectionPercent"),
                    format!("invalid percentage {v} (must be 0-100)"),
                ));
            }
            let legacy = opt_u32(&format!("{p}.consecutiveErrors"), od.consecutive_errors)?;
            Some(m::OutlierDetection {
                consecutive_5xx_errors: od.consecutive_5xx_errors.or(legacy),
                consecutive_gateway_errors: od.consecutive_gateway_errors,
                interval_ms: opt_duration(&format!("{p}.interval"), od.interval.as_ref())?,
                base_ejection_time_ms: opt_duration(
                    &format!("{p}.baseEjectionTime"),
                    od.base_ejection_time.as_ref(),
                )?,
                max_ejection_percent,
            })
        }
    };
    Ok(m::TrafficPolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
    })
}

pub(super) fn routes(cx: &mut Context<'_>) -> Vec<m::Route> {
    let mut out = Vec::new();
    for (key, object) in cx.objects(Kind::VirtualService) {
        let Object::VirtualService(vs) = &*object else {
            continue;
        };
        match route(cx, &key, &vs.spec) {
            Ok(route) => out.push(route),
            Err((path, message)) => cx.error(&key, &path, message),
        }
    }
    out
}

fn route(cx: &Context<'_>, key: &ObjectKey, spec: &net::VirtualServiceSpec) -> Field<m::Route> {
    if spec.hosts.is_empty() {
        return Err((
            "spec.hosts".to_owned(),
            "at least one host is required".to_owned(),
        ));
    }
    let hosts = spec
        .hosts
        .iter()
        .map(|h| cx.hosts.qualify(h, &key.namespace))
        .collect();
    let mut rules = Vec::new();
    for (i, http) in spec.http.iter().enumerate() {
        rules.push(http_rule(cx, key, &format!("spec.http[{i}]"), http)?);
    }
    for (i, tcp) in spec.tcp.iter().enumerate() {
        for (j, r) in tcp.route.iter().enumerate() {
            destination(
                cx,
                key,
                &format!("spec.tcp[{i}].route[{j}].destination"),
                &r.destination,
                r.weight,
                1,
            )?;
        }
    }
    for (i, tls) in spec.tls.iter().enumerate() {
        for (j, r) in tls.route.iter().enumerate() {
            destination(
                cx,
                key,
                &format!("spec.tls[{i}].route[{j}].destination"),
                &r.destination,
                r.weight,
                1,
            )?;
        }
    }
    Ok(m::Route {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        kind: RouteKind::VirtualService,
        hosts,
        rules,
    })
}

/// Checks a destination's host, subset and port, and fills in its weight.
fn destination(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    d: &net::Destination,
    weight: Option<i32>,
    siblings: usize,
) -> Field<m::RouteDestination> {
    let host = cx.hosts.qualify(&d.host, &key.namespace);
    if !cx.hosts.contains(&host) {
        return Err((
            format!("{path}.host"),
            format!(
                "host {:?} not found in the mesh (no Service or ServiceEntry)",
                d.host
            ),
        ));
    }
    if let Some(subset) = &d.subset {
        let known = cx.subsets.get(&host).is_some_and(|s| s.contains(subset));
        if !known {
            return Err((
                format!("{path}.subset"),
                format!("subset {subset:?} of host {host} is not defined by any DestinationRule"),
            ));
        }
    }
    let port = d
        .port
        .as_ref()
        .map(|p| {
            at(
                &format!("{path}.port.number"),
                values::port(i64::from(p.number)),
            )
        })
        .transpose()?;
    let weight = match weight {
        // A lone destination takes all traffic; unweighted siblings take none, as in Istio.
        None => {
            if siblings == 1 {
                100
            } else {
                0
            }
        }
        Some(w) if (0..=100).contains(&w) => w.unsigned_abs(),
        Some(w) => {
            let wpath = path.strip_suffix(".destination").unwrap_or(path);
            return Err((
                format!("{wpath}.weight"),
                format!("invalid weight {w} (must be 0-100)"),
            ));
        }
    };
    Ok(m::RouteDestination {
        host,
        subset: d.subset.clone(),
        port,
        weight,
        ..Default::default()
    })
}

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

fn header_ops(ops: Option<&net::HeaderOperations>) -> m::HeaderOps {
    ops.map(|o| m::HeaderOps {
        set: o.set.clone(),
        add: o.add.clone(),
        remove: o.remove.clone(),
    })
    .unwrap_or_default()
}

fn http_rule(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    http: &net::HttpRoute,
) -> Field<m::RouteRule> {
    let mut matches = Vec::new();
    for (i, mr) in http.matches.iter().enumerate() {
        let p = format!("{path}.match[{i}]");
        let opt = |field: &str, sm: Option<&net::StringMatch>| {
            sm.map(|sm| string_match(&format!("{p}.{field}"), sm))
                .transpose()
        };
        let mut headers = std::collections::BTreeMap::new();
        for (name, sm) in &mr.headers {
            headers.insert(
                name.to_ascii_lowercase(),
                string_match(&format!("{p}.headers.{name}"), sm)?,
            );
        }
        let mut query_params = std::collections::BTreeMap::new();
        for (name, sm) in &mr.query_params {
            query_params.insert(
                name.clone(),
                string_match(&format!("{p}.queryParams.{name}"), sm)?,
            );
        }
        matches.push(m::HttpMatch {
            uri: opt("uri", mr.uri.as_ref())?,
            method: opt("method", mr.method.as_ref())?,
            authority: opt("authority", mr.authority.as_ref())?,
            headers,
            query_params,
            port: mr
                .port
                .map(|n| at(&format!("{p}.port"), values::port(i64::from(n))))
                .transpose()?,
            ..Default::default()
        });
    }
    let mut destinations = Vec::new();
    for (i, rd) in http.route.iter().enumerate() {
        destinations.push(destination(
            cx,
            key,
            &format!("{path}.route[{i}].destination"),
            &rd.destination,
            rd.weight,
            http.route.len(),
        )?);
    }
    if destinations.len() > 1 && destinations.iter().all(|d| d.weight == 0) {
        return Err((
            format!("{path}.route"),
            "all destination weights are 0".to_owned(),
        ));
    }
    let retries = match &http.retries {
        None => None,
        Some(r) => {
            let attempts = opt_u32(&format!("{path}.retries.attempts"), r.attempts)?.unwrap_or(0);
            Some(m::RetryPolicy {
                attempts,
                per_try_timeout_ms: opt_duration(
                    &format!("{path}.retries.perTryTimeout"),
                    r.per_try_timeout.as_ref(),
                )?,
                retry_on: r
                    .retry_on
                    .as_deref()
                    .map(|s| {
                        s.split(',')
                            .map(|c| c.trim().to_owned())
                            .filter(|c| !c.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        }
    };
    let fault = match &http.fault {
        None => None,
        Some(f) => Some(fault(&format!("{path}.fault"), f)?),
    };
    let mirror = match (&http.mirror, http.mirrors.first()) {
        (Some(d), _) => {
            let percentage = http
                .mirror_percentage
                .as_ref()
                .map(|p| p.value)
                .or(http.mirror_percent.map(f64::from))
                .unwrap_or(100.0);
            Some(m::Mirror {
                destination: destination(cx, key, &format!("{path}.mirror"), d, None, 1)?,
                percentage: at(
                    &format!("{path}.mirrorPercentage.value"),
                    values::percentage(percentage),
                )?,
            })
        }
        (None, Some(mp)) => Some(m::Mirror {
            destination: destination(
                cx,
                key,
                &format!("{path}.mirrors[0].destination"),
                &mp.destination,
                None,
                1,
            )?,
            percentage: at(
                &format!("{path}.mirrors[0].percentage.value"),
                values::percentage(mp.percentage.as_ref().map_or(100.0, |p| p.value)),
            )?,
        }),
        (None, None) => None,
    };
    let redirect = http.redirect.as_ref().map(|r| m::Redirect {
        uri: r.uri.clone(),
        authority: r.authority.clone(),
        code: r
            .redirect_code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(301),
        ..Default::default()
    });
    let rewrite = http.rewrite.as_ref().map(|r| m::Rewrite {
        uri: r.uri.clone(),
        authority: r.authority.clone(),
        ..Default::default()
    });
    let headers = http.headers.clone().unwrap_or_default();
    Ok(m::RouteRule {
        name: http.name.clone(),
        matches,
        destinations,
        redirect,
        rewrite,
        timeout_ms: opt_duration(&format!("{path}.timeout"), http.timeout.as_ref())?,
        retries,
        fault,
        mirror,
        request_headers: header_ops(headers.request.as_ref()),
        response_headers: header_ops(headers.response.as_ref()),
        direct_response: None,
    })
}

fn fault(path: &str, f: &net::HttpFaultInjection) -> Field<m::Fault> {
    let delay = match &f.delay {
        None => None,
        Some(d) => {
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
        Some(a) => {
            let status = a.http_status.ok_or_else(|| {
                (
                    format!("{path}.abort.httpStatus"),
                    "httpStatus is required (grpcStatus is not supported)".to_owned(),
                )
            })?;
            let http_status = u16::try_from(status)
                .ok()
                .filter(|s| (200..=599).contains(s))
                .ok_or_else(|| {
                    (
                        format!("{path}.abort.httpStatus"),
                        format!("invalid HTTP status {status} (must be 200-599)"),
                    )
                })?;
            let share = a.percentage.as_ref().map_or(100.0, |p| p.value);
            Some(m::FaultAbort {
                http_status,
                percentage: at(
                    &format!("{path}.abort.percentage.value"),
                    values::percentage(share),
                )?,
            })
        }
    };
    Ok(m::Fault { delay, abort })
}

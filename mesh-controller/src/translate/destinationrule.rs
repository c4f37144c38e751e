//! Istio DestinationRules as destination policies: traffic policy and subsets per host (the
//! subsets routes may name). The host must be a known service, or a wildcard (`*.ns.svc.…`,
//! `*`) that applies to every host it covers; `exportTo` limits which namespaces' waypoints see
//! the policy. Fields accepted but not applied yet (upstream TLS, port-level settings, locality,
//! warm-up, tunnels, PROXY protocol, keep-alive, …) are reported as warnings naming the field.

use mesh_common::model as m;

use super::field::{opt_duration, opt_u32, Field, Notes};
use super::{export_to, Context};
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::istio_networking as net;

/// Destination policies, and the subsets each host defines (in `cx.subsets`).
pub(super) fn destination_policies(cx: &mut Context<'_>) -> Vec<m::DestinationPolicy> {
    let mut out = Vec::new();
    for (key, object) in cx.objects(Kind::DestinationRule) {
        let Object::DestinationRule(dr) = &*object else {
            continue;
        };
        let mut notes = Notes::default();
        let result = destination_policy(cx, &key, &dr.spec, &mut notes);
        notes.report(cx, &key);
        match result {
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
    notes: &mut Notes,
) -> Field<m::DestinationPolicy> {
    let host = cx.hosts.qualify(&spec.host, &key.namespace);
    if !host.starts_with('*') && !cx.hosts.contains(&host) {
        return Err((
            "spec.host".to_owned(),
            format!(
                "host {:?} not found in the mesh (no Service or ServiceEntry)",
                spec.host
            ),
        ));
    }
    let host_policy = match &spec.traffic_policy {
        Some(tp) => traffic_policy("spec.trafficPolicy", tp, notes)?,
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
            .map(|tp| traffic_policy(&format!("{path}.trafficPolicy"), tp, notes))
            .transpose()?;
        subsets.push(m::Subset {
            name: s.name.clone(),
            labels: s.labels.clone(),
            traffic_policy,
        });
    }
    if spec.workload_selector.is_some() {
        notes.unsupported("spec.workloadSelector", "it applies to every client");
    }
    Ok(m::DestinationPolicy {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        host,
        traffic_policy: host_policy,
        subsets,
        export_to: export_to(&spec.export_to, &key.namespace),
    })
}

fn traffic_policy(
    path: &str,
    tp: &net::TrafficPolicy,
    notes: &mut Notes,
) -> Field<m::TrafficPolicy> {
    for (field, set) in [
        ("tls", tp.tls.is_some()),
        ("portLevelSettings", !tp.port_level_settings.is_empty()),
        ("tunnel", tp.tunnel.is_some()),
        ("proxyProtocol", tp.proxy_protocol.is_some()),
    ] {
        if set {
            notes.unsupported(&format!("{path}.{field}"), "ignored");
        }
    }
    let load_balancer = match &tp.load_balancer {
        None => None,
        Some(lb) => {
            let p = format!("{path}.loadBalancer");
            for (field, set) in [
                ("localityLbSetting", lb.locality_lb_setting.is_some()),
                ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
                ("warmup", lb.warmup.is_some()),
            ] {
                if set {
                    notes.unsupported(&format!("{p}.{field}"), "ignored");
                }
            }
            if let Some(hash) = &lb.consistent_hash {
                for (field, set) in [
                    ("httpCookie", hash.http_cookie.is_some()),
                    ("useSourceIp", hash.use_source_ip.is_some()),
                    (
                        "httpQueryParameterName",
                        hash.http_query_parameter_name.is_some(),
                    ),
                    ("ringHash", hash.ring_hash.is_some()),
                    ("maglev", hash.maglev.is_some()),
                    ("minimumRingSize", hash.minimum_ring_size.is_some()),
                ] {
                    if set {
                        notes.unsupported(&format!("{p}.consistentHash.{field}"), "ignored");
                    }
                }
            }
            if let Some(hash) = &lb.consistent_hash {
                Some(m::LoadBalancer::ConsistentHash(m::ConsistentHash {
                    header: hash.http_header_name.clone(),
                    ..Default::default()
                }))
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
            for (field, set) in [
                ("tcp.tcpKeepalive", tcp.tcp_keepalive.is_some()),
                (
                    "tcp.maxConnectionDuration",
                    tcp.max_connection_duration.is_some(),
                ),
                ("tcp.idleTimeout", tcp.idle_timeout.is_some()),
                ("http.maxRetries", http.max_retries.is_some()),
                ("http.idleTimeout", http.idle_timeout.is_some()),
                ("http.h2UpgradePolicy", http.h2_upgrade_policy.is_some()),
                ("http.useClientProtocol", http.use_client_protocol.is_some()),
                (
                    "http.maxConcurrentStreams",
                    http.max_concurrent_streams.is_some(),
                ),
            ] {
                if set {
                    notes.unsupported(&format!("{p}.{field}"), "ignored");
                }
            }
            Some(m::ConnectionPool {
                idle_timeout_ms: None,
                max_concurrent_streams: None,
                max_retries: None,
                tcp_keepalive: None,
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
            for (field, set) in [
                (
                    "consecutiveLocalOriginFailures",
                    od.consecutive_local_origin_failures.is_some(),
                ),
                (
                    "splitExternalLocalOriginErrors",
                    od.split_external_local_origin_errors.is_some(),
                ),
                ("minHealthPercent", od.min_health_percent.is_some()),
            ] {
                if set {
                    notes.unsupported(&format!("{p}.{field}"), "ignored");
                }
            }
            Some(m::OutlierDetection {
                consecutive_local_origin_failures: None,
                min_health_percent: None,
                split_external_local_origin_errors: false,
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
        locality_lb: None,
        port_policies: Vec::new(),
        warmup_ms: None,
        load_balancer,
        connection_pool,
        outlier_detection,
    })
}

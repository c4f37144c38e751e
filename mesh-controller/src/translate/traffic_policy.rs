//! A DestinationRule traffic policy (host-wide, per subset, per port) in the model: load
//! balancer (simple or consistent hash with its key and ring/maglev size), warm-up, locality
//! balancing (validated as Istio does), connection pool, outlier detection and port-level
//! settings. Bad values are errors naming the field; what is accepted but not applied yet
//! (upstream TLS, tunnels, PROXY protocol, HTTP/2 upgrade, …) is a warning.

use std::collections::BTreeSet;

use mesh_common::model as m;

use super::field::{at, opt_duration, opt_u32, Field, Notes};
use super::{locality, values};
use crate::resources::istio_networking as net;

/// Envoy's largest Maglev table.
const MAX_MAGLEV_TABLE: u64 = 5_000_011;

/// A traffic policy at `path` (`spec.trafficPolicy` or a subset's).
pub(super) fn traffic_policy(
    path: &str,
    tp: &net::TrafficPolicy,
    notes: &mut Notes,
) -> Field<m::TrafficPolicy> {
    for (field, set) in [
        ("tls", tp.tls.is_some()),
        ("tunnel", tp.tunnel.is_some()),
        ("proxyProtocol", tp.proxy_protocol.is_some()),
    ] {
        if set {
            notes.unsupported(&format!("{path}.{field}"), "ignored");
        }
    }
    let (load_balancer, warmup_ms, locality_lb) = match &tp.load_balancer {
        None => (None, None, None),
        Some(lb) => {
            let p = format!("{path}.loadBalancer");
            let balancer = load_balancer(&p, lb, notes)?;
            let warmup = warmup(&p, lb, balancer.as_ref(), notes)?;
            let locality = lb
                .locality_lb_setting
                .as_ref()
                .map(|l| {
                    locality_lb(
                        &format!("{p}.localityLbSetting"),
                        l,
                        tp.outlier_detection.is_some(),
                        notes,
                    )
                })
                .transpose()?;
            (balancer, warmup, locality)
        }
    };
    let connection_pool = tp
        .connection_pool
        .as_ref()
        .map(|cp| connection_pool(&format!("{path}.connectionPool"), cp, notes))
        .transpose()?;
    let outlier_detection = tp
        .outlier_detection
        .as_ref()
        .map(|od| outlier_detection(&format!("{path}.outlierDetection"), od))
        .transpose()?;
    let mut port_policies: Vec<m::PortTrafficPolicy> = Vec::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let p = format!("{path}.portLevelSettings[{i}]");
        let policy = port_policy(&p, pl, notes)?;
        if port_policies.iter().any(|other| other.port == policy.port) {
            return Err((
                format!("{p}.port.number"),
                format!("port {} has settings already", policy.port),
            ));
        }
        port_policies.push(policy);
    }
    Ok(m::TrafficPolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
        warmup_ms,
        locality_lb,
        port_policies,
    })
}

fn port_policy(
    path: &str,
    pl: &net::PortTrafficPolicy,
    notes: &mut Notes,
) -> Field<m::PortTrafficPolicy> {
    let Some(port) = &pl.port else {
        return Err((format!("{path}.port"), "a port is required".to_owned()));
    };
    let port = at(
        &format!("{path}.port.number"),
        values::port(i64::from(port.number)),
    )?;
    if pl.tls.is_some() {
        notes.unsupported(&format!("{path}.tls"), "ignored");
    }
    let load_balancer = match &pl.load_balancer {
        None => None,
        Some(lb) => {
            let p = format!("{path}.loadBalancer");
            for (field, set) in [
                ("localityLbSetting", lb.locality_lb_setting.is_some()),
                ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
                ("warmup", lb.warmup.is_some()),
            ] {
                if set {
                    notes.unsupported(
                        &format!("{p}.{field}"),
                        "ignored per port (the host's setting applies)",
                    );
                }
            }
            load_balancer(&p, lb, notes)?
        }
    };
    Ok(m::PortTrafficPolicy {
        port,
        load_balancer,
        connection_pool: pl
            .connection_pool
            .as_ref()
            .map(|cp| connection_pool(&format!("{path}.connectionPool"), cp, notes))
            .transpose()?,
        outlier_detection: pl
            .outlier_detection
            .as_ref()
            .map(|od| outlier_detection(&format!("{path}.outlierDetection"), od))
            .transpose()?,
    })
}

fn load_balancer(
    p: &str,
    lb: &net::LoadBalancerSettings,
    notes: &mut Notes,
) -> Field<Option<m::LoadBalancer>> {
    let simple = match lb.simple.as_deref() {
        None | Some("UNSPECIFIED") => None,
        Some("ROUND_ROBIN") => Some(m::LoadBalancer::RoundRobin),
        // Istio maps the deprecated LEAST_CONN to LEAST_REQUEST.
        Some("LEAST_REQUEST" | "LEAST_CONN") => Some(m::LoadBalancer::LeastRequest),
        Some("RANDOM") => Some(m::LoadBalancer::Random),
        Some("PASSTHROUGH") => Some(m::LoadBalancer::Passthrough),
        Some(other) => {
            return Err((
                format!("{p}.simple"),
                format!(
                    "invalid load balancer {other:?} (expected ROUND_ROBIN, LEAST_REQUEST, \
                     LEAST_CONN, RANDOM or PASSTHROUGH)"
                ),
            ))
        }
    };
    let Some(hash) = &lb.consistent_hash else {
        return Ok(simple);
    };
    if lb.simple.is_some() {
        return Err((
            p.to_owned(),
            "simple and consistentHash are exclusive: set one".to_owned(),
        ));
    }
    consistent_hash(&format!("{p}.consistentHash"), hash, notes)
        .map(|h| Some(m::LoadBalancer::ConsistentHash(h)))
}

fn consistent_hash(
    p: &str,
    hash: &net::ConsistentHash,
    notes: &mut Notes,
) -> Field<m::ConsistentHash> {
    let keys = [
        hash.http_header_name.is_some(),
        hash.http_cookie.is_some(),
        hash.use_source_ip == Some(true),
        hash.http_query_parameter_name.is_some(),
    ];
    if keys.iter().filter(|k| **k).count() > 1 {
        return Err((
            p.to_owned(),
            "set one hash key: httpHeaderName, httpCookie, useSourceIp or \
             httpQueryParameterName"
                .to_owned(),
        ));
    }
    let nonempty = |field: &str, v: &Option<String>| -> Field<Option<String>> {
        match v.as_deref().map(str::trim) {
            Some("") => Err((format!("{p}.{field}"), "must not be empty".to_owned())),
            other => Ok(other.map(str::to_owned)),
        }
    };
    let header =
        nonempty("httpHeaderName", &hash.http_header_name)?.map(|h| h.to_ascii_lowercase());
    let query_parameter = nonempty("httpQueryParameterName", &hash.http_query_parameter_name)?;
    let cookie = match &hash.http_cookie {
        None => None,
        Some(c) => {
            let cp = format!("{p}.httpCookie");
            if c.name.trim().is_empty() {
                return Err((format!("{cp}.name"), "a cookie name is required".to_owned()));
            }
            if !c.attributes.is_empty() {
                notes.unsupported(
                    &format!("{cp}.attributes"),
                    "an issued cookie carries only its path and lifetime",
                );
            }
            Some(m::HashCookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl_ms: opt_duration(&format!("{cp}.ttl"), c.ttl.as_ref())?,
            })
        }
    };
    if hash.ring_hash.is_some() && hash.maglev.is_some() {
        return Err((
            p.to_owned(),
            "ringHash and maglev are exclusive: set one".to_owned(),
        ));
    }
    let ring = hash.ring_hash.as_ref().and_then(|r| r.minimum_ring_size);
    if ring.is_some() && hash.minimum_ring_size.is_some() {
        return Err((
            format!("{p}.minimumRingSize"),
            "deprecated; set ringHash.minimumRingSize only".to_owned(),
        ));
    }
    let maglev_table_size = hash
        .maglev
        .as_ref()
        .map(|m| {
            let size = m.table_size.unwrap_or(0);
            // Envoy requires a prime table size of at most 5,000,011 (0: its default 65,537);
            // the bound also keeps the primality check short.
            if size != 0 && (size > MAX_MAGLEV_TABLE || !is_prime(size)) {
                return Err((
                    format!("{p}.maglev.tableSize"),
                    format!(
                        "invalid table size {size} (must be a prime number up to \
                         {MAX_MAGLEV_TABLE})"
                    ),
                ));
            }
            Ok(size)
        })
        .transpose()?;
    if hash.maglev.is_some() && hash.minimum_ring_size.is_some() {
        return Err((
            format!("{p}.minimumRingSize"),
            "a ring size means nothing with maglev".to_owned(),
        ));
    }
    Ok(m::ConsistentHash {
        header,
        cookie,
        source_ip: hash.use_source_ip == Some(true),
        query_parameter,
        maglev_table_size,
        minimum_ring_size: ring.or(hash.minimum_ring_size),
    })
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// `warmupDurationSecs` (a duration); only round robin and least request warm up.
fn warmup(
    p: &str,
    lb: &net::LoadBalancerSettings,
    balancer: Option<&m::LoadBalancer>,
    notes: &mut Notes,
) -> Field<Option<u64>> {
    if lb.warmup.is_some() {
        notes.unsupported(
            &format!("{p}.warmup"),
            "ignored (warmupDurationSecs is applied)",
        );
    }
    let ms = opt_duration(
        &format!("{p}.warmupDurationSecs"),
        lb.warmup_duration_secs.as_ref(),
    )?;
    match (ms, balancer) {
        (Some(_), Some(other))
            if !matches!(
                other,
                m::LoadBalancer::RoundRobin | m::LoadBalancer::LeastRequest
            ) =>
        {
            notes.warn(
                &format!("{p}.warmupDurationSecs"),
                "ignored: only ROUND_ROBIN and LEAST_REQUEST balancing warm up new endpoints",
            );
            Ok(None)
        }
        _ => Ok(ms),
    }
}

/// Istio's check of a set of localities: `*` only as a whole last part, no overlaps.
fn check_localities<'a>(path: &str, localities: impl Iterator<Item = &'a str>) -> Field<()> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for l in localities {
        if l.is_empty() {
            return Err((path.to_owned(), "a locality must not be empty".to_owned()));
        }
        let wildcards = l.matches('*').count();
        if wildcards > 1 || (wildcards == 1 && !(l == "*" || l.ends_with("/*"))) {
            return Err((
                path.to_owned(),
                format!("locality {l:?}: the wildcard '*' may appear once, as the last part"),
            ));
        }
        let prefix = l.trim_end_matches('*').trim_end_matches('/');
        let overlaps = seen.iter().any(|s| {
            let sp = s.trim_end_matches('*').trim_end_matches('/');
            s == l
                || (s.ends_with('*')
                    && (sp.is_empty() || prefix.starts_with(&format!("{sp}/")) || prefix == sp))
                || (l.ends_with('*')
                    && (prefix.is_empty() || sp.starts_with(&format!("{prefix}/")) || sp == prefix))
        });
        if overlaps {
            return Err((
                path.to_owned(),
                format!("locality {l:?} overlaps one given before"),
            ));
        }
        seen.insert(l.to_owned());
    }
    Ok(())
}

fn locality_lb(
    p: &str,
    l: &net::LocalityLbSetting,
    has_outlier_detection: bool,
    notes: &mut Notes,
) -> Field<m::LocalityLb> {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        return Err((
            p.to_owned(),
            "distribute and failover cannot both be set".to_owned(),
        ));
    }
    if !l.failover.is_empty() {
        if let Some(label) = l.failover_priority.iter().find(|label| {
            matches!(
                label.as_str(),
                locality::REGION_LABEL | locality::ZONE_LABEL | locality::SUBZONE_LABEL
            )
        }) {
            return Err((
                format!("{p}.failoverPriority"),
                format!("failover cannot be combined with the topology label {label:?} here"),
            ));
        }
    }
    let mut distribute = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = format!("{p}.distribute[{i}]");
        let mut total = 0u64;
        for (to, weight) in &d.to {
            if !(1..=100).contains(weight) {
                return Err((
                    format!("{dp}.to"),
                    format!("weight {weight} of {to:?} must be 1-100"),
                ));
            }
            total += u64::from(*weight);
        }
        if total != 100 {
            return Err((
                format!("{dp}.to"),
                format!("weights sum to {total}, not 100"),
            ));
        }
        check_localities(&format!("{dp}.to"), d.to.keys().map(String::as_str))?;
        distribute.push(m::LocalityDistribute {
            from: d.from.clone(),
            to: d.to.clone(),
        });
    }
    check_localities(
        &format!("{p}.distribute"),
        l.distribute.iter().map(|d| d.from.as_str()),
    )?;
    let mut failover = Vec::new();
    for (i, f) in l.failover.iter().enumerate() {
        let fp = format!("{p}.failover[{i}]");
        for (field, value) in [("from", &f.from), ("to", &f.to)] {
            if value.is_empty() || value.contains('/') || value.contains('*') {
                return Err((
                    format!("{fp}.{field}"),
                    format!("{value:?}: a failover names a region (no '/', no '*')"),
                ));
            }
        }
        if f.from == f.to {
            return Err((fp, "from and to must be different regions".to_owned()));
        }
        failover.push(m::LocalityFailover {
            from: f.from.clone(),
            to: f.to.clone(),
        });
    }
    for (i, label) in l.failover_priority.iter().enumerate() {
        if label.trim().is_empty() {
            return Err((
                format!("{p}.failoverPriority[{i}]"),
                "a label name must not be empty".to_owned(),
            ));
        }
    }
    if (!failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier_detection {
        notes.warn(
            p,
            "failover needs outlierDetection to tell unhealthy endpoints (as Istio): without \
             it traffic never fails over",
        );
    }
    Ok(m::LocalityLb {
        enabled: l.enabled,
        distribute,
        failover,
        failover_priority: l.failover_priority.clone(),
    })
}

fn connection_pool(
    p: &str,
    cp: &net::ConnectionPoolSettings,
    notes: &mut Notes,
) -> Field<m::ConnectionPool> {
    let tcp = cp.tcp.clone().unwrap_or_default();
    let http = cp.http.clone().unwrap_or_default();
    for (field, set) in [
        (
            "tcp.maxConnectionDuration",
            tcp.max_connection_duration.is_some(),
        ),
        ("tcp.idleTimeout", tcp.idle_timeout.is_some()),
        ("http.h2UpgradePolicy", http.h2_upgrade_policy.is_some()),
        ("http.useClientProtocol", http.use_client_protocol.is_some()),
    ] {
        if set {
            notes.unsupported(&format!("{p}.{field}"), "ignored");
        }
    }
    // `tcpKeepalive` and `maxConcurrentStreams` are translated (a waypoint that applies them
    // sees them) but not applied by this build's waypoint: its upstream sockets are the HBONE
    // pool's, shared by every destination, and it follows each upstream's HTTP/2 stream limit.
    let max_concurrent_streams = opt_u32(
        &format!("{p}.http.maxConcurrentStreams"),
        http.max_concurrent_streams,
    )?;
    if max_concurrent_streams.is_some() {
        notes.unsupported(
            &format!("{p}.http.maxConcurrentStreams"),
            "waypoints follow each upstream's own HTTP/2 stream limit",
        );
    }
    let tcp_keepalive = match &tcp.tcp_keepalive {
        None => None,
        Some(k) => {
            let kp = format!("{p}.tcp.tcpKeepalive");
            let keepalive = m::TcpKeepalive {
                probes: k.probes,
                time_ms: opt_duration(&format!("{kp}.time"), k.time.as_ref())?,
                interval_ms: opt_duration(&format!("{kp}.interval"), k.interval.as_ref())?,
            };
            notes.unsupported(
                &kp,
                "waypoints keep the kernel's keepalive settings on upstream connections",
            );
            Some(keepalive)
        }
    };
    Ok(m::ConnectionPool {
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
        max_retries: opt_u32(&format!("{p}.http.maxRetries"), http.max_retries)?,
        idle_timeout_ms: opt_duration(
            &format!("{p}.http.idleTimeout"),
            http.idle_timeout.as_ref(),
        )?,
        max_concurrent_streams,
        tcp_keepalive,
    })
}

fn percent(path: &str, v: Option<i32>) -> Field<Option<u32>> {
    let v = opt_u32(path, v)?;
    match v {
        Some(v) if v > 100 => Err((
            path.to_owned(),
            format!("invalid percentage {v} (must be 0-100)"),
        )),
        other => Ok(other),
    }
}

fn outlier_detection(p: &str, od: &net::OutlierDetection) -> Field<m::OutlierDetection> {
    let legacy = opt_u32(&format!("{p}.consecutiveErrors"), od.consecutive_errors)?;
    Ok(m::OutlierDetection {
        consecutive_5xx_errors: od.consecutive_5xx_errors.or(legacy),
        consecutive_gateway_errors: od.consecutive_gateway_errors,
        interval_ms: opt_duration(&format!("{p}.interval"), od.interval.as_ref())?,
        base_ejection_time_ms: opt_duration(
            &format!("{p}.baseEjectionTime"),
            od.base_ejection_time.as_ref(),
        )?,
        max_ejection_percent: percent(&format!("{p}.maxEjectionPercent"), od.max_ejection_percent)?,
        consecutive_local_origin_failures: od.consecutive_local_origin_failures,
        split_external_local_origin_errors: od.split_external_local_origin_errors == Some(true),
        min_health_percent: percent(&format!("{p}.minHealthPercent"), od.min_health_percent)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locality_sets() {
        let cases: [(&[&str], bool); 9] = [
            (&["us-west/zone1/*", "us-east"], true),
            (&["*"], true),
            (&["us-west/*", "us-west/zone1"], false),
            (&["us-west/zone1", "us-west/*"], false),
            (&["*", "us-west"], false),
            (&["us-west", "us-west"], false),
            (&["us-*"], false),
            (&["*/zone1"], false),
            (&[""], false),
        ];
        for (localities, ok) in cases {
            assert_eq!(
                check_localities("p", localities.iter().copied()).is_ok(),
                ok,
                "{localities:?}"
            );
        }
    }

    #[test]
    fn primes() {
        for (n, prime) in [
            (0, false),
            (1, false),
            (2, true),
            (65_537, true),
            (65_536, false),
            (131, true),
        ] {
            assert_eq!(is_prime(n), prime, "{n}");
        }
    }
}

//! DestinationRule traffic policies into the model, field by field: YAML in, the translated
//! policy (or the error or warning naming file, object and field) out.

use mesh_common::model::{
    ConnectionPool, ConsistentHash, DestinationPolicy, HashCookie, LoadBalancer,
    LocalityDistribute, LocalityFailover, LocalityLb, OutlierDetection, PortTrafficPolicy,
    TcpKeepalive, TrafficPolicy,
};
use mesh_controller::controller::{Change, Controller};
use mesh_controller::load::parse_yaml;
use mesh_controller::translate::TranslateOptions;

const BASE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {clusterIP: 10.96.0.13, ports: [{name: http, port: 9080}], selector: {app: reviews}}\n";

/// The DestinationRule `dr` with `policy` (YAML, indented under `trafficPolicy:`) as its host
/// policy and as the policy of subset `v1`.
fn dr(policy: &str) -> String {
    let indent = |n: usize| {
        policy
            .lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect::<String>()
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr}}\nspec:\n  host: reviews\n  trafficPolicy:\n{}  subsets:\n  - name: v1\n    labels: {{version: v1}}\n    trafficPolicy:\n{}",
        indent(4),
        indent(6)
    )
}

fn load(case: &str) -> (Option<DestinationPolicy>, Vec<String>) {
    let controller = Controller::new(TranslateOptions::default());
    controller
        .apply(vec![
            Change::ReplaceUnit {
                unit: "base.yaml".to_owned(),
                parsed: parse_yaml("base.yaml", BASE),
            },
            Change::ReplaceUnit {
                unit: "case.yaml".to_owned(),
                parsed: parse_yaml("case.yaml", case),
            },
        ])
        .expect("apply");
    let current = controller.current();
    let errors = current.errors.iter().map(ToString::to_string).collect();
    (
        current.snapshot.destination_policies.first().cloned(),
        errors,
    )
}

/// The host policy (also the subset's) for `policy`, with no error or warning.
fn translated(policy: &str) -> TrafficPolicy {
    let (p, errors) = load(&dr(policy));
    assert!(errors.is_empty(), "{policy}: {errors:#?}");
    let p = p.unwrap_or_else(|| panic!("{policy}: not translated"));
    assert_eq!(
        p.subsets[0].traffic_policy.as_ref(),
        Some(&p.traffic_policy),
        "subset policy for {policy}"
    );
    p.traffic_policy
}

fn hash(h: ConsistentHash) -> TrafficPolicy {
    TrafficPolicy {
        load_balancer: Some(LoadBalancer::ConsistentHash(h)),
        ..Default::default()
    }
}

#[test]
fn load_balancers() {
    let cases: Vec<(&str, TrafficPolicy)> = vec![
        ("loadBalancer: {simple: ROUND_ROBIN}", TrafficPolicy { load_balancer: Some(LoadBalancer::RoundRobin), ..Default::default() }),
        ("loadBalancer: {simple: LEAST_CONN}", TrafficPolicy { load_balancer: Some(LoadBalancer::LeastRequest), ..Default::default() }),
        ("loadBalancer: {simple: LEAST_REQUEST}", TrafficPolicy { load_balancer: Some(LoadBalancer::LeastRequest), ..Default::default() }),
        ("loadBalancer: {simple: RANDOM}", TrafficPolicy { load_balancer: Some(LoadBalancer::Random), ..Default::default() }),
        ("loadBalancer: {simple: PASSTHROUGH}", TrafficPolicy { load_balancer: Some(LoadBalancer::Passthrough), ..Default::default() }),
        ("loadBalancer: {simple: UNSPECIFIED}", TrafficPolicy::default()),
        ("loadBalancer: {consistentHash: {httpHeaderName: X-User}}", hash(ConsistentHash { header: Some("x-user".into()), ..Default::default() })),
        ("loadBalancer: {consistentHash: {httpCookie: {name: sid, path: /, ttl: 60s}}}", hash(ConsistentHash { cookie: Some(HashCookie { name: "sid".into(), path: Some("/".into()), ttl_ms: Some(60_000) }), ..Default::default() })),
        ("loadBalancer: {consistentHash: {httpCookie: {name: sid}}}", hash(ConsistentHash { cookie: Some(HashCookie { name: "sid".into(), path: None, ttl_ms: None }), ..Default::default() })),
        ("loadBalancer: {consistentHash: {useSourceIp: true}}", hash(ConsistentHash { source_ip: true, ..Default::default() })),
        ("loadBalancer: {consistentHash: {httpQueryParameterName: user}}", hash(ConsistentHash { query_parameter: Some("user".into()), ..Default::default() })),
        ("loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 2048}}}", hash(ConsistentHash { source_ip: true, minimum_ring_size: Some(2048), ..Default::default() })),
        ("loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 512}}", hash(ConsistentHash { source_ip: true, minimum_ring_size: Some(512), ..Default::default() })),
        ("loadBalancer: {consistentHash: {httpHeaderName: x, maglev: {tableSize: 131}}}", hash(ConsistentHash { header: Some("x".into()), maglev_table_size: Some(131), ..Default::default() })),
        ("loadBalancer: {consistentHash: {httpHeaderName: x, maglev: {}}}", hash(ConsistentHash { header: Some("x".into()), maglev_table_size: Some(0), ..Default::default() })),
        ("loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}", TrafficPolicy { load_balancer: Some(LoadBalancer::RoundRobin), warmup_ms: Some(30_000), ..Default::default() }),
        ("loadBalancer: {warmupDurationSecs: 1m}", TrafficPolicy { warmup_ms: Some(60_000), ..Default::default() }),
    ];
    for (policy, want) in cases {
        assert_eq!(translated(policy), want, "{policy}");
    }
}

#[test]
fn locality_balancing() {
    let od = OutlierDetection {
        consecutive_5xx_errors: Some(1),
        ..Default::default()
    };
    let cases: Vec<(&str, TrafficPolicy)> = vec![
        (
            "loadBalancer: {localityLbSetting: {enabled: true, distribute: [{from: us-west/zone1/*, to: {us-west/zone1/*: 80, us-west/zone2/*: 20}}, {from: us-east/*, to: {us-east/*: 100}}]}}",
            TrafficPolicy {
                locality_lb: Some(LocalityLb {
                    enabled: Some(true),
                    distribute: vec![
                        LocalityDistribute { from: "us-west/zone1/*".into(), to: [("us-west/zone1/*".to_owned(), 80), ("us-west/zone2/*".to_owned(), 20)].into() },
                        LocalityDistribute { from: "us-east/*".into(), to: [("us-east/*".to_owned(), 100)].into() },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: eu-west}]}}\noutlierDetection: {consecutive5xxErrors: 1}",
            TrafficPolicy {
                locality_lb: Some(LocalityLb { failover: vec![LocalityFailover { from: "us-east".into(), to: "eu-west".into() }], ..Default::default() }),
                outlier_detection: Some(od.clone()),
                ..Default::default()
            },
        ),
        (
            "loadBalancer: {localityLbSetting: {failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region, topology.kubernetes.io/zone]}}\noutlierDetection: {consecutive5xxErrors: 1}",
            TrafficPolicy {
                locality_lb: Some(LocalityLb { failover_priority: vec!["topology.istio.io/network".into(), "topology.kubernetes.io/region".into(), "topology.kubernetes.io/zone".into()], ..Default::default() }),
                outlier_detection: Some(od.clone()),
                ..Default::default()
            },
        ),
        // failover with a non-topology priority label: allowed, as Istio.
        (
            "loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}], failoverPriority: [version]}}\noutlierDetection: {consecutive5xxErrors: 1}",
            TrafficPolicy {
                locality_lb: Some(LocalityLb { failover: vec![LocalityFailover { from: "a".into(), to: "b".into() }], failover_priority: vec!["version".into()], ..Default::default() }),
                outlier_detection: Some(od.clone()),
                ..Default::default()
            },
        ),
        (
            "loadBalancer: {localityLbSetting: {enabled: false}}",
            TrafficPolicy { locality_lb: Some(LocalityLb { enabled: Some(false), ..Default::default() }), ..Default::default() },
        ),
    ];
    for (policy, want) in cases {
        assert_eq!(translated(policy), want, "{policy}");
    }
}

#[test]
fn connection_pools_and_outlier_detection() {
    let policy = "connectionPool:\n  tcp: {maxConnections: 10, connectTimeout: 250ms, tcpKeepalive: {probes: 3, time: 10s, interval: 2s}}\n  http: {http1MaxPendingRequests: 5, http2MaxRequests: 50, maxRequestsPerConnection: 7, maxRetries: 2, idleTimeout: 30s, maxConcurrentStreams: 100}\noutlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, consecutiveLocalOriginFailures: 4, splitExternalLocalOriginErrors: true, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 50, minHealthPercent: 20}";
    // Translated, and each of the two fields waypoints do not apply is a warning (host and subset).
    let (p, errors) = load(&dr(policy));
    let unapplied = |f: &str| {
        errors
            .iter()
            .filter(|e| e.contains(f) && e.contains("warning: not supported yet"))
            .count()
    };
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert_eq!(
        unapplied("connectionPool.tcp.tcpKeepalive:"),
        2,
        "{errors:#?}"
    );
    assert_eq!(
        unapplied("connectionPool.http.maxConcurrentStreams:"),
        2,
        "{errors:#?}"
    );
    let p = p.expect("translated");
    assert_eq!(
        p.subsets[0].traffic_policy.as_ref(),
        Some(&p.traffic_policy)
    );
    assert_eq!(
        p.traffic_policy,
        TrafficPolicy {
            connection_pool: Some(ConnectionPool {
                max_connections: Some(10),
                connect_timeout_ms: Some(250),
                http1_max_pending_requests: Some(5),
                http2_max_requests: Some(50),
                max_requests_per_connection: Some(7),
                max_retries: Some(2),
                idle_timeout_ms: Some(30_000),
                max_concurrent_streams: Some(100),
                tcp_keepalive: Some(TcpKeepalive {
                    probes: Some(3),
                    time_ms: Some(10_000),
                    interval_ms: Some(2_000)
                }),
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx_errors: Some(3),
                consecutive_gateway_errors: Some(2),
                interval_ms: Some(5_000),
                base_ejection_time_ms: Some(30_000),
                max_ejection_percent: Some(50),
                consecutive_local_origin_failures: Some(4),
                split_external_local_origin_errors: true,
                min_health_percent: Some(20),
            }),
            ..Default::default()
        }
    );
    // The deprecated consecutiveErrors is consecutive5xxErrors.
    assert_eq!(
        translated("outlierDetection: {consecutiveErrors: 7}").outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx_errors: Some(7),
            ..Default::default()
        })
    );
}

#[test]
fn port_level_settings() {
    let policy = "loadBalancer: {simple: RANDOM}\nportLevelSettings:\n- port: {number: 9080}\n  loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n  connectionPool: {tcp: {maxConnections: 1}}\n  outlierDetection: {consecutive5xxErrors: 1}\n- port: {number: 9443}\n  loadBalancer: {simple: LEAST_CONN}";
    assert_eq!(
        translated(policy),
        TrafficPolicy {
            load_balancer: Some(LoadBalancer::Random),
            port_policies: vec![
                PortTrafficPolicy {
                    port: 9080,
                    load_balancer: Some(LoadBalancer::ConsistentHash(ConsistentHash {
                        header: Some("x-user".into()),
                        ..Default::default()
                    })),
                    connection_pool: Some(ConnectionPool {
                        max_connections: Some(1),
                        ..Default::default()
                    }),
                    outlier_detection: Some(OutlierDetection {
                        consecutive_5xx_errors: Some(1),
                        ..Default::default()
                    }),
                },
                PortTrafficPolicy {
                    port: 9443,
                    load_balancer: Some(LoadBalancer::LeastRequest),
                    connection_pool: None,
                    outlier_detection: None
                },
            ],
            ..Default::default()
        }
    );
}

/// Each case: (policy, whether the rule is still translated, parts of the one message at the
/// host policy; the subset's copy is the second message).
#[test]
fn problems_name_the_field() {
    let cases: Vec<(&str, bool, Vec<&str>)> = vec![
        ("loadBalancer: {simple: FASTEST}", false, vec!["loadBalancer.simple", "invalid load balancer \"FASTEST\""]),
        ("loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}", false, vec!["trafficPolicy.loadBalancer:", "exclusive"]),
        ("loadBalancer: {consistentHash: {httpHeaderName: a, useSourceIp: true}}", false, vec!["loadBalancer.consistentHash:", "set one hash key"]),
        ("loadBalancer: {consistentHash: {httpHeaderName: \"\"}}", false, vec!["consistentHash.httpHeaderName", "must not be empty"]),
        ("loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}", false, vec!["consistentHash.httpCookie.name", "a cookie name is required"]),
        ("loadBalancer: {consistentHash: {httpCookie: {name: s, ttl: forever}}}", false, vec!["consistentHash.httpCookie.ttl", "invalid duration"]),
        ("loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 8}, maglev: {tableSize: 131}}}", false, vec!["loadBalancer.consistentHash:", "ringHash and maglev are exclusive"]),
        ("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}", false, vec!["consistentHash.maglev.tableSize", "prime"]),
        ("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 18446744073709551557}}}", false, vec!["consistentHash.maglev.tableSize", "up to 5000011"]),
        ("loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 8, ringHash: {minimumRingSize: 8}}}", false, vec!["consistentHash.minimumRingSize", "deprecated"]),
        ("loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: -1}}}", false, vec!["ringHash.minimumRingSize"]),
        ("loadBalancer: {warmupDurationSecs: soon}", false, vec!["loadBalancer.warmupDurationSecs", "invalid duration"]),
        ("loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 60, b/*: 30}}]}}", false, vec!["localityLbSetting.distribute[0].to", "sum to 90, not 100"]),
        ("loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 0, b/*: 100}}]}}", false, vec!["localityLbSetting.distribute[0].to", "must be 1-100"]),
        ("loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 100}}, {from: a/z1, to: {a/*: 100}}]}}", false, vec!["localityLbSetting.distribute", "overlaps"]),
        ("loadBalancer: {localityLbSetting: {distribute: [{from: a*, to: {a/*: 100}}]}}", false, vec!["localityLbSetting.distribute", "wildcard"]),
        ("loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 100}}], failover: [{from: a, to: b}]}}", false, vec!["localityLbSetting:", "distribute and failover cannot both be set"]),
        ("loadBalancer: {localityLbSetting: {failover: [{from: a, to: a}]}}\noutlierDetection: {interval: 1s}", false, vec!["localityLbSetting.failover[0]", "different regions"]),
        ("loadBalancer: {localityLbSetting: {failover: [{from: a/z, to: b}]}}\noutlierDetection: {interval: 1s}", false, vec!["localityLbSetting.failover[0].from", "names a region"]),
        ("loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}], failoverPriority: [topology.kubernetes.io/zone]}}\noutlierDetection: {interval: 1s}", false, vec!["localityLbSetting.failoverPriority", "topology.kubernetes.io/zone"]),
        ("connectionPool: {tcp: {maxConnections: -1}}", false, vec!["connectionPool.tcp.maxConnections", "must be >= 0"]),
        ("connectionPool: {tcp: {connectTimeout: \"10\"}}", false, vec!["connectionPool.tcp.connectTimeout", "invalid duration"]),
        ("connectionPool: {tcp: {tcpKeepalive: {time: x}}}", false, vec!["connectionPool.tcp.tcpKeepalive.time", "invalid duration"]),
        ("connectionPool: {http: {maxRetries: -2}}", false, vec!["connectionPool.http.maxRetries"]),
        ("connectionPool: {http: {idleTimeout: 1y}}", false, vec!["connectionPool.http.idleTimeout", "invalid duration"]),
        ("connectionPool: {http: {maxConcurrentStreams: -1}}", false, vec!["connectionPool.http.maxConcurrentStreams"]),
        ("outlierDetection: {maxEjectionPercent: 101}", false, vec!["outlierDetection.maxEjectionPercent", "must be 0-100"]),
        ("outlierDetection: {minHealthPercent: 150}", false, vec!["outlierDetection.minHealthPercent", "must be 0-100"]),
        ("outlierDetection: {minHealthPercent: -1}", false, vec!["outlierDetection.minHealthPercent", "must be >= 0"]),
        ("outlierDetection: {baseEjectionTime: 3 s}", false, vec!["outlierDetection.baseEjectionTime", "invalid duration"]),
        ("portLevelSettings: [{loadBalancer: {simple: RANDOM}}]", false, vec!["portLevelSettings[0].port", "a port is required"]),
        ("portLevelSettings: [{port: {number: 0}}]", false, vec!["portLevelSettings[0].port.number", "invalid port"]),
        ("portLevelSettings: [{port: {number: 80}}, {port: {number: 80}}]", false, vec!["portLevelSettings[1].port.number", "has settings already"]),
        ("portLevelSettings: [{port: {number: 80}, outlierDetection: {maxEjectionPercent: 200}}]", false, vec!["portLevelSettings[0].outlierDetection.maxEjectionPercent"]),
        // Warnings: translated without the field.
        ("connectionPool: {http: {h2UpgradePolicy: UPGRADE}}", true, vec!["connectionPool.http.h2UpgradePolicy: warning: not supported yet"]),
        ("connectionPool: {http: {useClientProtocol: true}}", true, vec!["connectionPool.http.useClientProtocol: warning: not supported yet"]),
        ("connectionPool: {tcp: {idleTimeout: 1h}}", true, vec!["connectionPool.tcp.idleTimeout: warning: not supported yet"]),
        ("tls: {mode: ISTIO_MUTUAL}", true, vec!["trafficPolicy.tls: warning: not supported yet"]),
        ("loadBalancer: {simple: RANDOM, warmupDurationSecs: 10s}", true, vec!["loadBalancer.warmupDurationSecs: warning", "only ROUND_ROBIN and LEAST_REQUEST"]),
        ("loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}]}}", true, vec!["localityLbSetting: warning", "needs outlierDetection"]),
        ("loadBalancer: {consistentHash: {httpCookie: {name: s, attributes: [{name: SameSite, value: Strict}]}}}", true, vec!["httpCookie.attributes: warning: not supported yet"]),
        ("portLevelSettings: [{port: {number: 80}, loadBalancer: {warmupDurationSecs: 10s}}]", true, vec!["portLevelSettings[0].loadBalancer.warmupDurationSecs: warning", "ignored per port"]),
    ];
    for (policy, translated, parts) in cases {
        let (p, errors) = load(&dr(policy));
        assert_eq!(
            errors.len(),
            if translated { 2 } else { 1 },
            "{policy}: {errors:#?}"
        );
        for part in &parts {
            assert!(
                errors[0].contains(part),
                "{policy}: {part:?} not in {:?}",
                errors[0]
            );
        }
        // A schema error (found while parsing) names the first of the two copies.
        let prefix = "case.yaml (document 1): DestinationRule default/dr: spec.";
        assert!(
            errors[0].starts_with(&format!("{prefix}trafficPolicy"))
                || errors[0].starts_with(&format!("{prefix}subsets[0].trafficPolicy")),
            "{policy}: {:?}",
            errors[0]
        );
        if translated {
            assert!(
                errors[1].contains("spec.subsets[0].trafficPolicy"),
                "{errors:#?}"
            );
        }
        assert_eq!(p.is_some(), translated, "{policy}: {errors:#?}");
    }
}

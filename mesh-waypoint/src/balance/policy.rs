//! The traffic policy that applies to one backend, as Istio merges it: the host's destination
//! policy with its port-level settings for the port, then the subset's policy (with its own
//! port-level settings) replacing each field it sets.

use mesh_common::model::{
    DestinationPolicy, LoadBalancer, LocalityLb, OutlierDetection, TrafficDistribution,
    TrafficPolicy,
};

/// What balancing uses of a backend's policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effective {
    /// The algorithm (`None`: round robin).
    pub load_balancer: Option<LoadBalancer>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// Slow start window (ms).
    pub warmup_ms: Option<u64>,
    /// Locality balancing when it is on (explicitly, or implicitly with outlier detection).
    pub locality: Option<LocalityLb>,
}

/// `policy` with the port-level settings for `port` applied.
fn at_port(policy: &TrafficPolicy, port: u16) -> TrafficPolicy {
    let mut p = policy.clone();
    if let Some(pp) = policy.port_policies.iter().find(|pp| pp.port == port) {
        if pp.load_balancer.is_some() {
            p.load_balancer.clone_from(&pp.load_balancer);
        }
        if pp.connection_pool.is_some() {
            p.connection_pool.clone_from(&pp.connection_pool);
        }
        if pp.outlier_detection.is_some() {
            p.outlier_detection.clone_from(&pp.outlier_detection);
        }
    }
    p
}

/// The effective policy of (`policy` for the host, `subset`, `port`); `distribution` is the
/// service's `trafficDistribution`, which turns locality balancing on (same zone first) when the
/// destination policy says nothing of localities.
pub fn effective(
    policy: Option<&DestinationPolicy>,
    subset: Option<&str>,
    port: u16,
    distribution: Option<&TrafficDistribution>,
) -> Effective {
    let mut merged =
        policy.map_or_else(TrafficPolicy::default, |p| at_port(&p.traffic_policy, port));
    let sub = policy
        .zip(subset)
        .and_then(|(p, name)| p.subsets.iter().find(|s| s.name == name))
        .and_then(|s| s.traffic_policy.as_ref())
        .map(|t| at_port(t, port));
    if let Some(s) = sub {
        if s.load_balancer.is_some() {
            merged.load_balancer = s.load_balancer;
        }
        if s.outlier_detection.is_some() {
            merged.outlier_detection = s.outlier_detection;
        }
        if s.warmup_ms.is_some() {
            merged.warmup_ms = s.warmup_ms;
        }
        if s.locality_lb.is_some() {
            merged.locality_lb = s.locality_lb;
        }
    }
    let locality = match merged.locality_lb {
        Some(l) if l.enabled.unwrap_or(merged.outlier_detection.is_some()) => Some(l),
        Some(_) => None,
        None if merged.outlier_detection.is_some() => Some(LocalityLb::default()),
        None => match distribution {
            Some(
                TrafficDistribution::PreferClose
                | TrafficDistribution::PreferSameZone
                | TrafficDistribution::PreferSameNode,
            ) => Some(LocalityLb::default()),
            _ => None,
        },
    };
    Effective {
        load_balancer: merged.load_balancer,
        outlier_detection: merged.outlier_detection,
        warmup_ms: merged.warmup_ms.filter(|w| *w > 0),
        locality,
    }
}

#[cfg(test)]
mod tests {
    use mesh_common::model::{PortTrafficPolicy, Subset};

    use super::*;

    fn od(n: u32) -> Option<OutlierDetection> {
        Some(OutlierDetection {
            consecutive_5xx_errors: Some(n),
            ..Default::default()
        })
    }

    fn policy() -> DestinationPolicy {
        DestinationPolicy {
            name: "dr".into(),
            namespace: "ns".into(),
            host: "h".into(),
            traffic_policy: TrafficPolicy {
                load_balancer: Some(LoadBalancer::Random),
                outlier_detection: od(1),
                warmup_ms: Some(5_000),
                port_policies: vec![PortTrafficPolicy {
                    port: 81,
                    load_balancer: Some(LoadBalancer::LeastRequest),
                    connection_pool: None,
                    outlier_detection: od(2),
                }],
                ..Default::default()
            },
            subsets: vec![
                Subset {
                    name: "v2".into(),
                    labels: Default::default(),
                    traffic_policy: Some(TrafficPolicy {
                        load_balancer: Some(LoadBalancer::Passthrough),
                        locality_lb: Some(LocalityLb {
                            enabled: Some(false),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
                Subset {
                    name: "v3".into(),
                    labels: Default::default(),
                    traffic_policy: None,
                },
            ],
            export_to: vec![],
        }
    }

    #[test]
    fn merge_order() {
        let p = policy();
        #[rustfmt::skip]
        let cases = [
            ("host", None, 80, Some(LoadBalancer::Random), od(1), true),
            ("host port level", None, 81, Some(LoadBalancer::LeastRequest), od(2), true),
            ("subset overrides the port level", Some("v2"), 81, Some(LoadBalancer::Passthrough), od(2), false),
            ("subset without policy", Some("v3"), 80, Some(LoadBalancer::Random), od(1), true),
            ("unknown subset", Some("v9"), 80, Some(LoadBalancer::Random), od(1), true),
        ];
        for (name, subset, port, lb, outlier, locality) in cases {
            let e = effective(Some(&p), subset, port, None);
            assert_eq!(e.load_balancer, lb, "{name}");
            assert_eq!(e.outlier_detection, outlier, "{name}");
            assert_eq!(e.locality.is_some(), locality, "{name}");
            assert_eq!(e.warmup_ms, Some(5_000), "{name}");
        }
    }

    #[test]
    fn locality_switch() {
        let on = Some(LocalityLb {
            enabled: Some(true),
            ..Default::default()
        });
        let implicit = Some(LocalityLb::default());
        #[rustfmt::skip]
        let cases = [
            ("nothing", None, None, None, false),
            ("outlier detection implies it", None, od(5), None, true),
            ("explicit on", on.clone(), None, None, true),
            ("unset without outlier detection", implicit.clone(), None, None, false),
            ("unset with outlier detection", implicit, od(5), None, true),
            ("trafficDistribution PreferClose", None, None, Some(TrafficDistribution::PreferClose), true),
            ("trafficDistribution other", None, None, Some(TrafficDistribution::Unknown), false),
        ];
        for (name, locality_lb, outlier_detection, dist, want) in cases {
            let p = DestinationPolicy {
                name: "dr".into(),
                namespace: "ns".into(),
                host: "h".into(),
                traffic_policy: TrafficPolicy {
                    outlier_detection,
                    locality_lb,
                    ..Default::default()
                },
                subsets: vec![],
                export_to: vec![],
            };
            assert_eq!(
                effective(Some(&p), None, 80, dist.as_ref())
                    .locality
                    .is_some(),
                want,
                "{name}"
            );
        }
        assert_eq!(effective(None, None, 80, None), Effective::default());
    }
}

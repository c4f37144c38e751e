//! The traffic policy that applies to one backend, as Istio merges it: the host's destination
//! policy with its port-level settings for the port, then the subset's policy (with its own
//! port-level settings) replacing each field it sets.

use mesh_common::model::{
    DestinationPolicy, LoadBalancer, LocalityLb, OutlierDetection, PortTrafficPolicy,
    TrafficDistribution, TrafficPolicy,
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

/// The levels a field of a backend's policy is looked up in, most specific first: the subset's
/// port-level settings, the subset's policy, the host's port-level settings, the host's policy.
/// A field takes its value from the first level that sets it (Istio's merge).
#[derive(Debug, Clone, Copy)]
pub struct Levels<'a> {
    subset: Option<&'a TrafficPolicy>,
    host: Option<&'a TrafficPolicy>,
    port: u16,
}

impl<'a> Levels<'a> {
    /// The levels of (`policy` for the host, `subset`, `port`).
    pub fn new(policy: Option<&'a DestinationPolicy>, subset: Option<&str>, port: u16) -> Self {
        let sub = policy
            .zip(subset)
            .and_then(|(p, name)| p.subsets.iter().find(|s| s.name == name))
            .and_then(|s| s.traffic_policy.as_ref());
        Levels {
            subset: sub,
            host: policy.map(|p| &p.traffic_policy),
            port,
        }
    }

    /// A field that port-level settings can set too (load balancer, connection pool, outlier
    /// detection).
    pub fn per_port<T>(
        &self,
        field: impl Fn(&'a TrafficPolicy) -> Option<&'a T>,
        port_field: impl Fn(&'a PortTrafficPolicy) -> Option<&'a T>,
    ) -> Option<&'a T> {
        let port = self.port;
        [self.subset, self.host]
            .into_iter()
            .flatten()
            .find_map(|level| {
                level
                    .port_policies
                    .iter()
                    .find(|pp| pp.port == port)
                    .and_then(&port_field)
                    .or_else(|| field(level))
            })
    }

    /// A field only whole policies set (slow start, locality).
    pub fn whole<T>(&self, field: impl Fn(&'a TrafficPolicy) -> Option<&'a T>) -> Option<&'a T> {
        [self.subset, self.host]
            .into_iter()
            .flatten()
            .find_map(field)
    }
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
    let levels = Levels::new(policy, subset, port);
    let merged = TrafficPolicy {
        load_balancer: levels
            .per_port(|t| t.load_balancer.as_ref(), |p| p.load_balancer.as_ref())
            .cloned(),
        outlier_detection: levels
            .per_port(
                |t| t.outlier_detection.as_ref(),
                |p| p.outlier_detection.as_ref(),
            )
            .cloned(),
        warmup_ms: levels.whole(|t| t.warmup_ms.as_ref()).copied(),
        locality_lb: levels.whole(|t| t.locality_lb.as_ref()).cloned(),
        ..TrafficPolicy::default()
    };
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

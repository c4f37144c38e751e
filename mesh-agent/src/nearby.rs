//! A Service's `trafficDistribution` for L4 traffic, as ztunnel honours it: which of a service's
//! endpoints a client's connection may go to, given where the client runs.
//!
//! | preference | endpoints used |
//! |---|---|
//! | `PreferClose`, `PreferSameZone` | those in the client's zone (same region and zone) when any is there, else all |
//! | `PreferSameNode` | those on the client's node, else those in its zone, else all |
//! | none, or a value this build does not know | all (round robin over them, as before) |
//!
//! A client or endpoint whose zone (or node) is unknown is near nothing: the preference then
//! falls through to the next tier, never to a refusal (a preference, not a requirement).

use mesh_common::model::{Locality, TrafficDistribution};

/// Where a workload runs.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// Its node (empty: unknown).
    pub node: &'a str,
    /// Its locality (its node's topology labels).
    pub locality: &'a Locality,
}

impl Place<'_> {
    fn same_node(&self, other: &Place<'_>) -> bool {
        !self.node.is_empty() && self.node == other.node
    }

    fn same_zone(&self, other: &Place<'_>) -> bool {
        !self.locality.zone.is_empty()
            && self.locality.zone == other.locality.zone
            && self.locality.region == other.locality.region
    }
}

/// Which endpoints were kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Those on the client's node.
    Node,
    /// Those in the client's zone.
    Zone,
    /// All of them (no preference, or none near).
    All,
}

/// Keeps the candidates `preference` prefers for a client at `source` (`None`: unknown, so
/// all); `place` tells where a candidate runs (`None`: unknown, near nothing).
pub fn prefer<T>(
    preference: Option<TrafficDistribution>,
    source: Option<Place<'_>>,
    candidates: Vec<T>,
    place: impl Fn(&T) -> Option<Place<'_>>,
) -> (Vec<T>, Tier) {
    let Some(source) = source else {
        return (candidates, Tier::All);
    };
    let tiers: &[Tier] = match preference {
        Some(TrafficDistribution::PreferClose | TrafficDistribution::PreferSameZone) => {
            &[Tier::Zone]
        }
        Some(TrafficDistribution::PreferSameNode) => &[Tier::Node, Tier::Zone],
        Some(TrafficDistribution::Unknown) | None => &[],
    };
    for tier in tiers {
        let near = |c: &T| {
            place(c).is_some_and(|p| match tier {
                Tier::Node => source.same_node(&p),
                Tier::Zone => source.same_zone(&p),
                Tier::All => true,
            })
        };
        if candidates.iter().any(near) {
            return (candidates.into_iter().filter(near).collect(), *tier);
        }
    }
    (candidates, Tier::All)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(region: &str, zone: &str) -> Locality {
        Locality {
            region: region.into(),
            zone: zone.into(),
            subzone: String::new(),
        }
    }

    #[test]
    fn endpoints_near_the_client_are_preferred() {
        use TrafficDistribution::*;
        let (r1a, r1b, r2a, none) = (at("r1", "a"), at("r1", "b"), at("r2", "a"), at("", ""));
        // (name, node, locality) of the service's endpoints; `?` has no known workload.
        let all = [
            ("n1-a", "n1", &r1a),
            ("n2-a", "n2", &r1a),
            ("n3-b", "n3", &r1b),
            ("n4-r2a", "n4", &r2a),
            ("n5-none", "n5", &none),
            ("?", "", &none),
        ];
        let only = |names: &[&str]| -> Vec<(&str, &str, &Locality)> {
            all.iter()
                .copied()
                .filter(|e| names.contains(&e.0))
                .collect()
        };
        type Case<'a> = (
            &'a str,
            Option<TrafficDistribution>,
            Option<(&'a str, &'a Locality)>,
            Vec<(&'a str, &'a str, &'a Locality)>,
            Vec<&'a str>,
            Tier,
        );
        // (case, preference, client node and locality, endpoints, kept, tier)
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("no preference: all", None, Some(("n1", &r1a)), all.to_vec(), vec!["n1-a", "n2-a", "n3-b", "n4-r2a", "n5-none", "?"], Tier::All),
            ("unknown preference: all", Some(Unknown), Some(("n1", &r1a)), all.to_vec(), vec!["n1-a", "n2-a", "n3-b", "n4-r2a", "n5-none", "?"], Tier::All),
            ("PreferClose: the zone (same region), both nodes", Some(PreferClose), Some(("n9", &r1a)), all.to_vec(), vec!["n1-a", "n2-a"], Tier::Zone),
            ("PreferSameZone: as PreferClose", Some(PreferSameZone), Some(("n9", &r1a)), all.to_vec(), vec!["n1-a", "n2-a"], Tier::Zone),
            ("PreferClose: zone b", Some(PreferClose), Some(("n9", &r1b)), all.to_vec(), vec!["n3-b"], Tier::Zone),
            ("PreferClose: zone a of another region is not the zone", Some(PreferClose), Some(("n9", &r2a)), only(&["n1-a", "n2-a", "n4-r2a"]), vec!["n4-r2a"], Tier::Zone),
            ("PreferClose: none in the zone, all", Some(PreferClose), Some(("n1", &r1a)), only(&["n3-b", "n4-r2a", "?"]), vec!["n3-b", "n4-r2a", "?"], Tier::All),
            ("PreferClose: client zone unknown, all", Some(PreferClose), Some(("n5", &none)), all.to_vec(), vec!["n1-a", "n2-a", "n3-b", "n4-r2a", "n5-none", "?"], Tier::All),
            ("PreferClose: client unknown, all", Some(PreferClose), None, only(&["n1-a", "n3-b"]), vec!["n1-a", "n3-b"], Tier::All),
            ("PreferClose: the node is not looked at", Some(PreferClose), Some(("n3", &r1a)), all.to_vec(), vec!["n1-a", "n2-a"], Tier::Zone),
            ("PreferSameNode: the node", Some(PreferSameNode), Some(("n2", &r1a)), all.to_vec(), vec!["n2-a"], Tier::Node),
            ("PreferSameNode: none on the node, the zone", Some(PreferSameNode), Some(("n9", &r1a)), all.to_vec(), vec!["n1-a", "n2-a"], Tier::Zone),
            ("PreferSameNode: neither, all", Some(PreferSameNode), Some(("n9", &r1a)), only(&["n3-b", "n4-r2a"]), vec!["n3-b", "n4-r2a"], Tier::All),
            ("PreferSameNode: node without locality still counts", Some(PreferSameNode), Some(("n5", &none)), all.to_vec(), vec!["n5-none"], Tier::Node),
            ("PreferSameNode: unknown node matches no unknown node", Some(PreferSameNode), Some(("", &none)), only(&["?", "n3-b"]), vec!["n3-b", "?"], Tier::All),
            ("no endpoints: none", Some(PreferClose), Some(("n1", &r1a)), vec![], vec![], Tier::All),
        ];
        for (case, preference, client, endpoints, want, tier) in cases {
            let source = client.map(|(node, locality)| Place { node, locality });
            let (kept, got_tier) = prefer(preference, source, endpoints, |e| {
                (e.0 != "?").then_some(Place {
                    node: e.1,
                    locality: e.2,
                })
            });
            let kept: Vec<&str> = kept.iter().map(|e| e.0).collect();
            assert_eq!(kept, want, "{case}");
            assert_eq!(got_tier, tier, "{case}");
        }
    }
}

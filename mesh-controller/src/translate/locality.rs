//! Where workloads run and which endpoints a Service prefers: a pod's locality from its node's
//! topology labels (Istio's `istio-locality` pod label overrides), and a Service's
//! `spec.trafficDistribution`.

use std::collections::BTreeMap;

use mesh_common::model::{Locality, TrafficDistribution};

use super::Context;
use crate::object::{Kind, Object};

/// Node label naming the region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Node label naming the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Node label naming the subzone (Istio's).
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// Pod label overriding the node's locality: `region.zone.subzone` (Istio's).
pub const POD_LOCALITY_LABEL: &str = "istio-locality";

/// Node name to locality, from the stored Nodes' labels.
pub(super) fn node_localities(cx: &Context<'_>) -> BTreeMap<String, Locality> {
    cx.objects(Kind::Node)
        .into_iter()
        .filter_map(|(key, object)| match &*object {
            Object::Node(node) => Some((
                key.name,
                from_node_labels(node.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())),
            )),
            _ => None,
        })
        .collect()
}

/// A node's locality from its topology labels (absent labels leave the part empty).
pub fn from_node_labels(labels: &BTreeMap<String, String>) -> Locality {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    Locality {
        region: get(REGION_LABEL),
        zone: get(ZONE_LABEL),
        subzone: get(SUBZONE_LABEL),
    }
}

/// Istio's `istio-locality` pod label: `region.zone.subzone` (fewer parts allowed; `/` is
/// accepted as separator too, as Istio does).
pub fn from_pod_label(value: &str) -> Locality {
    let separator = if value.contains('/') { '/' } else { '.' };
    let mut parts = value.splitn(3, separator).map(str::to_owned);
    Locality {
        region: parts.next().unwrap_or_default(),
        zone: parts.next().unwrap_or_default(),
        subzone: parts.next().unwrap_or_default(),
    }
}

/// A workload's locality: the pod label when set and non-empty, else its node's.
pub fn workload_locality(
    pod_labels: &BTreeMap<String, String>,
    node: Option<&Locality>,
) -> Locality {
    match pod_labels.get(POD_LOCALITY_LABEL).map(|v| v.trim()) {
        Some(value) if !value.is_empty() => from_pod_label(value),
        _ => node.cloned().unwrap_or_default(),
    }
}

/// A Service's `spec.trafficDistribution`: `Ok(None)` when unset, `Err` (a warning; no
/// preference) for a value this mesh does not know.
pub fn traffic_distribution(value: Option<&str>) -> Result<Option<TrafficDistribution>, String> {
    match value {
        None => Ok(None),
        Some("PreferClose") => Ok(Some(TrafficDistribution::PreferClose)),
        Some("PreferSameZone") => Ok(Some(TrafficDistribution::PreferSameZone)),
        Some("PreferSameNode") => Ok(Some(TrafficDistribution::PreferSameNode)),
        Some(other) => Err(format!(
            "unsupported value {other:?} (PreferClose, PreferSameZone or PreferSameNode); no \
             preference applied"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn loc(region: &str, zone: &str, subzone: &str) -> Locality {
        Locality {
            region: region.to_owned(),
            zone: zone.to_owned(),
            subzone: subzone.to_owned(),
        }
    }

    #[test]
    fn node_labels() {
        let cases = [
            (vec![], loc("", "", "")),
            (vec![(REGION_LABEL, "eu")], loc("eu", "", "")),
            (
                vec![(REGION_LABEL, "eu"), (ZONE_LABEL, "eu-1a")],
                loc("eu", "eu-1a", ""),
            ),
            (
                vec![
                    (REGION_LABEL, "eu"),
                    (ZONE_LABEL, "eu-1a"),
                    (SUBZONE_LABEL, "rack3"),
                    ("kubernetes.io/hostname", "n1"),
                ],
                loc("eu", "eu-1a", "rack3"),
            ),
            // The deprecated failure-domain labels are not read (as Istio's ambient).
            (
                vec![("failure-domain.beta.kubernetes.io/zone", "z")],
                loc("", "", ""),
            ),
        ];
        for (given, want) in cases {
            assert_eq!(from_node_labels(&labels(&given)), want, "{given:?}");
        }
    }

    #[test]
    fn pod_label_overrides_node() {
        let node = loc("eu", "eu-1a", "rack3");
        let cases = [
            (vec![], Some(&node), node.clone()),
            (vec![], None, loc("", "", "")),
            (
                vec![(POD_LOCALITY_LABEL, "us.us-2b.r1")],
                Some(&node),
                loc("us", "us-2b", "r1"),
            ),
            (
                vec![(POD_LOCALITY_LABEL, "us.us-2b")],
                Some(&node),
                loc("us", "us-2b", ""),
            ),
            (vec![(POD_LOCALITY_LABEL, "us")], None, loc("us", "", "")),
            (
                vec![(POD_LOCALITY_LABEL, "us/us-2b/r1")],
                None,
                loc("us", "us-2b", "r1"),
            ),
            // A subzone may hold dots only after the zone (splitn keeps the rest).
            (
                vec![(POD_LOCALITY_LABEL, "us.z.r.1")],
                None,
                loc("us", "z", "r.1"),
            ),
            // Empty label: the node's.
            (vec![(POD_LOCALITY_LABEL, " ")], Some(&node), node.clone()),
        ];
        for (pod, node, want) in cases {
            assert_eq!(workload_locality(&labels(&pod), node), want, "{pod:?}");
        }
    }

    #[test]
    fn traffic_distribution_values() {
        use TrafficDistribution::*;
        let cases = [
            (None, Ok(None)),
            (Some("PreferClose"), Ok(Some(PreferClose))),
            (Some("PreferSameZone"), Ok(Some(PreferSameZone))),
            (Some("PreferSameNode"), Ok(Some(PreferSameNode))),
        ];
        for (given, want) in cases {
            assert_eq!(traffic_distribution(given), want, "{given:?}");
        }
        for bad in ["preferclose", "Nearest", ""] {
            let err = traffic_distribution(Some(bad)).expect_err(bad);
            assert!(err.contains("unsupported value"), "{err}");
        }
    }
}

//! What each client receives. An agent gets every workload and service (it resolves any
//! destination and checks peer identities) but only the policies that apply to workloads on
//! its own node, dry-run ones included, and those attached with targetRefs to what its
//! workloads serve (the agent refuses that traffic until a waypoint can enforce them); L7 routes
//! and destination policies go to waypoints only.

use std::collections::BTreeSet;

use mesh_common::api::config::{ClientKind, ResourceKind};
use mesh_common::api::ResourceSet;
use mesh_common::model::{FailSafe, Snapshot};

/// The resources a client should hold.
pub fn view(
    snapshot: &Snapshot,
    resources: &ResourceSet,
    kind: ClientKind,
    node: &str,
) -> ResourceSet {
    if kind == ClientKind::Waypoint {
        return resources.clone();
    }
    let local: Vec<_> = snapshot
        .workloads
        .iter()
        .filter(|w| w.node == node)
        .collect();
    let fail_safe = FailSafe::new(snapshot);
    let authz: BTreeSet<String> = snapshot
        .authorization_policies
        .iter()
        .filter_map(|p| {
            let name = format!("{}/{}", p.namespace, p.name);
            local
                .iter()
                .any(|w| p.applies_to(w) || fail_safe.policy_refuses(&w.uid, &name))
                .then_some(name)
        })
        .collect();
    let peer: BTreeSet<String> = snapshot
        .peer_authentications
        .iter()
        .filter(|p| {
            local.iter().any(|w| {
                (p.mesh_wide || p.namespace == w.namespace)
                    && p.selector
                        .as_ref()
                        .is_none_or(|sel| sel.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            })
        })
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    resources.filter(|kind, key| match kind {
        ResourceKind::Workload | ResourceKind::Service => true,
        ResourceKind::AuthorizationPolicy => authz.contains(key),
        ResourceKind::PeerAuthentication => peer.contains(key),
        ResourceKind::Route | ResourceKind::DestinationPolicy | ResourceKind::Unspecified => false,
    })
}

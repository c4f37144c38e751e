//! What each client receives. An agent gets every workload and service (it resolves any
//! destination and checks peer identities) but only the policies that apply to workloads on
//! its own node, dry-run ones included, and those attached with targetRefs to what its
//! workloads serve (the agent refuses that traffic until a waypoint can enforce them); L7 routes
//! and destination policies go to waypoints only. Every client gets every Telemetry setting
//! (few and small; each resolves the ones that apply to its workloads or services itself).
//!
//! A waypoint (`waypoint/<namespace>/<name>`) gets every workload and service (it resolves any
//! destination and endpoint), the routes and destination policies exported to its namespace
//! (`exportTo`), and the AuthorizationPolicies attached with `targetRefs` to it: its Gateway,
//! the class `istio-waypoint`, or a Service (or ServiceEntry) assigned to it, and the
//! RequestAuthentications attached the same way (agents never get those). Nothing else
//! (no selector policy, no PeerAuthentication: the agents enforce those).

use std::collections::BTreeSet;

use mesh_common::api::config::{ClientKind, ResourceKind};
use mesh_common::api::ResourceSet;
use mesh_common::model::{exported_to, FailSafe, PolicyTargetRef, Snapshot, WAYPOINT_CLASS};

use crate::principal::Principal;

/// The resources the waypoint `namespace/name` should hold.
fn waypoint_view(
    snapshot: &Snapshot,
    resources: &ResourceSet,
    namespace: &str,
    name: &str,
) -> ResourceSet {
    let targets_this = |t: &PolicyTargetRef| match t.kind.as_str() {
        "Gateway" => t.namespace == namespace && t.name == name,
        "GatewayClass" => t.name == WAYPOINT_CLASS,
        "Service" | "ServiceEntry" => snapshot.services.iter().any(|s| {
            s.namespace == t.namespace
                && s.name == t.name
                && s.waypoint
                    .as_ref()
                    .is_some_and(|w| w.namespace == namespace && w.name == name)
        }),
        _ => false,
    };
    let authz: BTreeSet<String> = snapshot
        .authorization_policies
        .iter()
        .filter(|p| p.target_refs.iter().any(targets_this))
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    let authn: BTreeSet<String> = snapshot
        .request_authentications
        .iter()
        .filter(|p| p.target_refs.iter().any(targets_this))
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    let routes: BTreeSet<String> = snapshot
        .routes
        .iter()
        .filter(|r| exported_to(&r.export_to, namespace))
        .map(|r| format!("{:?}/{}/{}", r.kind, r.namespace, r.name))
        .collect();
    let destination_policies: BTreeSet<String> = snapshot
        .destination_policies
        .iter()
        .filter(|d| exported_to(&d.export_to, namespace))
        .map(|d| format!("{}/{}", d.namespace, d.name))
        .collect();
    resources.filter(|kind, key| match kind {
        ResourceKind::Workload | ResourceKind::Service => true,
        ResourceKind::AuthorizationPolicy => authz.contains(key),
        ResourceKind::Route => routes.contains(key),
        ResourceKind::DestinationPolicy => destination_policies.contains(key),
        ResourceKind::RequestAuthentication => authn.contains(key),
        ResourceKind::Telemetry => true,
        ResourceKind::PeerAuthentication | ResourceKind::Unspecified => false,
    })
}

/// The resources a client should hold.
pub fn view(
    snapshot: &Snapshot,
    resources: &ResourceSet,
    kind: ClientKind,
    node: &str,
) -> ResourceSet {
    if kind == ClientKind::Waypoint {
        return match node.parse::<Principal>() {
            Ok(Principal::Waypoint { namespace, name }) => {
                waypoint_view(snapshot, resources, &namespace, &name)
            }
            // Never admitted (see `admit`): nothing, rather than a node's view.
            _ => resources.filter(|_, _| false),
        };
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
        ResourceKind::Telemetry => true,
        ResourceKind::Route
        | ResourceKind::DestinationPolicy
        | ResourceKind::RequestAuthentication
        | ResourceKind::Unspecified => false,
    })
}

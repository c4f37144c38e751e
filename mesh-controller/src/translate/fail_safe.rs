//! Reports what the agents refuse because nothing can enforce it (see
//! `mesh_common::model::FailSafe`), on the object that asks for it, so `/errors` and
//! `meshctl status` say why traffic to it is denied: a waypoint assignment whose waypoint has
//! no instance, and an AuthorizationPolicy target (`targetRefs`) no running waypoint enforces.
//! A policy targeting a Service that has a waypoint with an instance, that waypoint's Gateway,
//! or the class `istio-waypoint` while some waypoint has an instance, is enforced by the
//! waypoint and not reported. The objects stay in the model: agents need them to refuse.

use mesh_common::model::{AuthorizationAction, FailSafeCause, PolicyTargetRef, Snapshot};

use super::waypoints::Waypoints;
use super::{Context, USE_WAYPOINT_LABEL};
use crate::object::{Kind, ObjectKey};
use crate::resources::gateway_api::WAYPOINT_CLASS;

/// Whether a running waypoint enforces a policy attached to `target`.
pub(super) fn enforced_by_waypoint(
    snapshot: &Snapshot,
    waypoints: &Waypoints,
    target: &PolicyTargetRef,
) -> bool {
    match target.kind.as_str() {
        "Service" | "ServiceEntry" => {
            let mut targeted = snapshot
                .services
                .iter()
                .filter(|s| s.namespace == target.namespace && s.name == target.name)
                .peekable();
            targeted.peek().is_some()
                && targeted.all(|s| {
                    s.waypoint
                        .as_ref()
                        .is_some_and(|w| waypoints.has_instance(&w.namespace, &w.name))
                })
        }
        "Gateway" => waypoints.has_instance(&target.namespace, &target.name),
        "GatewayClass" => target.name == WAYPOINT_CLASS && waypoints.any_instance(),
        _ => false,
    }
}

/// Records one report per unenforced policy target and per waypoint assignment without an
/// instance.
pub(super) fn report(cx: &mut Context<'_>, snapshot: &Snapshot) {
    for policy in &snapshot.authorization_policies {
        if policy.dry_run || policy.action == AuthorizationAction::Audit {
            continue;
        }
        let key = ObjectKey {
            kind: Kind::AuthorizationPolicy,
            namespace: policy.namespace.clone(),
            name: policy.name.clone(),
        };
        for (i, target) in policy.target_refs.iter().enumerate() {
            if enforced_by_waypoint(snapshot, &cx.waypoints, target) {
                continue;
            }
            let cause = FailSafeCause::policy(policy, target);
            cx.error(&key, &format!("spec.targetRefs[{i}]"), cause.to_string());
        }
    }
    for policy in &snapshot.request_authentications {
        let key = ObjectKey {
            kind: Kind::RequestAuthentication,
            namespace: policy.namespace.clone(),
            name: policy.name.clone(),
        };
        for (i, target) in policy.target_refs.iter().enumerate() {
            if !enforced_by_waypoint(snapshot, &cx.waypoints, target) {
                cx.warn(
                    &key,
                    &format!("spec.targetRefs[{i}]"),
                    format!(
                        "not applied: no running waypoint serves {} {}",
                        target.kind, target.name
                    ),
                );
            }
        }
    }
    let label = format!("metadata.labels[{USE_WAYPOINT_LABEL}]");
    for service in &snapshot.services {
        let Some(wp) = &service.waypoint else {
            continue;
        };
        if cx.waypoints.has_instance(&wp.namespace, &wp.name) {
            continue;
        }
        let cause = FailSafeCause::Waypoint {
            waypoint: format!("{}/{}", wp.namespace, wp.name),
            assigned: format!("Service {}/{}", service.namespace, service.name),
        };
        let key = ObjectKey {
            kind: Kind::Service,
            namespace: service.namespace.clone(),
            name: service.name.clone(),
        };
        cx.error(&key, &label, cause.to_string());
    }
    for workload in &snapshot.workloads {
        let Some(wp) = &workload.waypoint else {
            continue;
        };
        if cx.waypoints.has_instance(&wp.namespace, &wp.name) {
            continue;
        }
        let cause = FailSafeCause::Waypoint {
            waypoint: format!("{}/{}", wp.namespace, wp.name),
            assigned: format!("workload {}", workload.uid),
        };
        let key = ObjectKey {
            kind: Kind::Pod,
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        };
        cx.error(&key, &label, cause.to_string());
    }
}

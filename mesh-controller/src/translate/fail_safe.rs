//! Reports what the agents refuse because nothing can enforce it (see
//! `mesh_common::model::FailSafe`): each AuthorizationPolicy target (`targetRefs`) no waypoint
//! enforces and each waypoint assignment whose waypoint has no instance, on the object that asks
//! for it, so `/errors` and `meshctl status` say why traffic to it is denied. The objects stay in
//! the model: agents need them to refuse.

use std::collections::HashSet;

use mesh_common::model::{AuthorizationAction, FailSafe, FailSafeCause, Snapshot};

use super::{Context, USE_WAYPOINT_LABEL};
use crate::object::{Kind, ObjectKey};

/// Records one report per unenforceable policy target and per waypoint assignment.
pub(super) fn report(cx: &mut Context<'_>, snapshot: &Snapshot) {
    let fail_safe = FailSafe::new(snapshot);
    let causes: HashSet<&FailSafeCause> = fail_safe.causes().iter().collect();
    let unenforced = |cause: &FailSafeCause| causes.contains(cause);
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
            let cause = FailSafeCause::policy(policy, target);
            if !unenforced(&cause) {
                continue; // a waypoint enforces it
            }
            cx.error(&key, &format!("spec.targetRefs[{i}]"), cause.to_string());
        }
    }
    let label = format!("metadata.labels[{USE_WAYPOINT_LABEL}]");
    for service in &snapshot.services {
        let Some(wp) = &service.waypoint else {
            continue;
        };
        let cause = FailSafeCause::Waypoint {
            waypoint: format!("{}/{}", wp.namespace, wp.name),
            assigned: format!("Service {}/{}", service.namespace, service.name),
        };
        let key = ObjectKey {
            kind: Kind::Service,
            namespace: service.namespace.clone(),
            name: service.name.clone(),
        };
        if unenforced(&cause) {
            cx.error(&key, &label, cause.to_string());
        }
    }
    for workload in &snapshot.workloads {
        let Some(wp) = &workload.waypoint else {
            continue;
        };
        let cause = FailSafeCause::Waypoint {
            waypoint: format!("{}/{}", wp.namespace, wp.name),
            assigned: format!("workload {}", workload.uid),
        };
        let key = ObjectKey {
            kind: Kind::Pod,
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        };
        if unenforced(&cause) {
            cx.error(&key, &label, cause.to_string());
        }
    }
}

//! What a destination agent checks before any L4 policy: traffic that must pass a waypoint is
//! admitted only from that waypoint's instances, and what nothing can enforce is refused (fail
//! safe, as Istio does for rules it cannot enforce). Built once per model, by agents (inbound
//! admission, and which waypoint a pod address goes through) and by the controller (what it
//! reports, which nodes get which policies).
//!
//! - A waypoint assignment (a workload's: every port; a service's: its endpoints on its target
//!   ports) admits only the identities (namespace and service account) of the waypoint's
//!   instances: the workloads of the waypoint's namespace labelled
//!   `gateway.networking.k8s.io/gateway-name: <name>` that have an address. With no instance it
//!   refuses everyone ("no waypoint runs").
//! - A policy attached with `targetRefs` to a Service or ServiceEntry that has a waypoint, to a
//!   Gateway, or to the class `istio-waypoint` is the waypoint's to enforce: nothing is refused
//!   for it here (the assignment admits only the waypoint). One on a Service without a waypoint
//!   refuses its endpoints on its target ports; one on a kind this data plane does not know, its
//!   whole namespace.
//! - Several covering one port: a refusal that admits nobody wins; else the peer must be an
//!   instance of one of the covering waypoints (a pod behind two services with two waypoints
//!   admits both, since its agent cannot tell which service a connection was for).
//!
//! The trust domain is not compared: peers are verified against the mesh's roots, whose CA signs
//! one trust domain. A workload with the waypoint's service account passes as the waypoint: give
//! waypoints a service account of their own, as Istio does.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use super::{AuthorizationAction, AuthorizationPolicy, PolicyTargetRef, Service, Snapshot};
use super::{WaypointRef, Workload};
use crate::identity::Identity;

/// The Gateway class of Istio waypoints: a policy attached to it applies to every waypoint.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// The label naming the Gateway a pod is an instance of (set on waypoint pods).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Why connections to a workload are refused (or admitted only from a waypoint).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// An AuthorizationPolicy attached with `targetRefs` that no waypoint enforces.
    Policy {
        /// `namespace/name` of the policy.
        policy: String,
        /// What it targets, e.g. `Service apps/echo`.
        target: String,
    },
    /// Traffic to the workload must go through a waypoint, and it has no instance.
    Waypoint {
        /// `namespace/name` of the waypoint.
        waypoint: String,
        /// Who is assigned it, e.g. `Service apps/echo` or `workload apps/echo-1`.
        assigned: String,
    },
    /// Traffic to the workload must go through a waypoint: only its instances are admitted.
    NotFromWaypoint {
        /// `namespace/name` of the waypoint.
        waypoint: String,
        /// Who is assigned it, e.g. `Service apps/echo` or `workload apps/echo-1`.
        assigned: String,
    },
}

impl Cause {
    /// The cause for one target of a policy.
    pub fn policy(policy: &AuthorizationPolicy, target: &PolicyTargetRef) -> Cause {
        Cause::Policy {
            policy: format!("{}/{}", policy.namespace, policy.name),
            target: format!("{} {}/{}", target.kind, target.namespace, target.name),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Policy { policy, target } => write!(
                f,
                "policy {policy} targets {target}: no waypoint runs to enforce it; traffic to it is denied"
            ),
            Cause::Waypoint { waypoint, assigned } => write!(
                f,
                "{assigned} uses waypoint {waypoint}: no waypoint runs to carry its traffic; traffic to it is denied"
            ),
            Cause::NotFromWaypoint { waypoint, assigned } => write!(
                f,
                "{assigned} uses waypoint {waypoint}: only its instances are admitted; traffic around it is denied"
            ),
        }
    }
}

/// One rule on connections to a workload, checked before any policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub cause: Cause,
    /// The workload ports it covers (a service's target ports); `None`: every port.
    pub ports: Option<BTreeSet<u16>>,
    /// The waypoint assignment it comes from, if it is one.
    pub waypoint: Option<WaypointRef>,
    /// Who is admitted all the same, as (namespace, service account): the waypoint's instances.
    /// Empty: nobody.
    pub admitted: BTreeSet<(String, String)>,
}

impl Refusal {
    /// Whether a connection to `port` of the workload is subject to it.
    pub fn covers(&self, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|p| p.contains(&port))
    }

    /// Whether a connection from `peer` (`None`: plaintext) is admitted all the same.
    pub fn admits(&self, peer: Option<&Identity>) -> bool {
        peer.is_some_and(|p| {
            self.admitted
                .iter()
                .any(|(ns, sa)| *ns == p.namespace && *sa == p.service_account)
        })
    }
}

/// The instances of each waypoint: indexes of workloads of the waypoint's namespace labelled
/// [`GATEWAY_NAME_LABEL`] with its name and with at least one address, in uid order.
#[derive(Clone, Debug, Default)]
pub struct WaypointInstances {
    /// namespace -> waypoint name -> workload indexes.
    by_namespace: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl WaypointInstances {
    /// The instances of every waypoint of `snapshot` (one pass over its workloads).
    pub fn new(snapshot: &Snapshot) -> WaypointInstances {
        let mut by_namespace: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
        for (i, w) in snapshot.workloads.iter().enumerate() {
            let Some(name) = w.labels.get(GATEWAY_NAME_LABEL) else {
                continue;
            };
            if w.addresses.is_empty() {
                continue; // not running yet: nothing can reach it
            }
            by_namespace
                .entry(w.namespace.clone())
                .or_default()
                .entry(name.clone())
                .or_default()
                .push(i);
        }
        for indexes in by_namespace.values_mut().flat_map(HashMap::values_mut) {
            indexes.sort_by(|a, b| snapshot.workloads[*a].uid.cmp(&snapshot.workloads[*b].uid));
        }
        WaypointInstances { by_namespace }
    }

    /// The indexes (into the snapshot's workloads) of the instances of `waypoint`.
    pub fn get(&self, waypoint: &WaypointRef) -> &[usize] {
        self.by_namespace
            .get(&waypoint.namespace)
            .and_then(|names| names.get(&waypoint.name))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The admission rules of one model, by workload uid.
#[derive(Clone, Debug, Default)]
pub struct FailSafe {
    by_workload: HashMap<String, Vec<Refusal>>,
    causes: Vec<Cause>,
    instances: WaypointInstances,
}

/// The endpoint ports of a service (`targetPort`, else `port`); `None` when it lists no port.
fn service_ports(service: &Service) -> Option<BTreeSet<u16>> {
    (!service.ports.is_empty()).then(|| {
        service
            .ports
            .iter()
            .map(|p| p.target_port.unwrap_or(p.port))
            .collect()
    })
}

fn endpoint_uids(service: &Service) -> BTreeSet<&str> {
    service
        .endpoints
        .iter()
        .map(|e| e.workload_uid.as_str())
        .collect()
}

impl FailSafe {
    /// The admission rules of `snapshot`. Cost: one pass over workloads, then one over each
    /// assigned service's endpoints and each policy target (few of either).
    pub fn new(snapshot: &Snapshot) -> FailSafe {
        let mut out = FailSafe {
            instances: WaypointInstances::new(snapshot),
            ..FailSafe::default()
        };
        // Workloads first, then services in model order: [`FailSafe::waypoint`] reads that order.
        for w in &snapshot.workloads {
            if let Some(wp) = &w.waypoint {
                let admission = out.assignment(snapshot, wp, format!("workload {}", w.uid), None);
                out.add(&w.uid, &admission);
            }
        }
        for s in &snapshot.services {
            if let Some(wp) = &s.waypoint {
                let assigned = format!("Service {}/{}", s.namespace, s.name);
                let admission = out.assignment(snapshot, wp, assigned, service_ports(s));
                for uid in endpoint_uids(s) {
                    out.add(uid, &admission);
                }
            }
        }
        for policy in &snapshot.authorization_policies {
            // AUDIT never decides and dry-run is never enforced: neither is left unenforced.
            if policy.dry_run || policy.action == AuthorizationAction::Audit {
                continue;
            }
            for target in &policy.target_refs {
                out.refuse_target(snapshot, policy, target);
            }
        }
        out
    }

    /// The rule of a waypoint assignment: only its instances, or nobody when it has none.
    fn assignment(
        &mut self,
        snapshot: &Snapshot,
        wp: &WaypointRef,
        assigned: String,
        ports: Option<BTreeSet<u16>>,
    ) -> Refusal {
        let waypoint = format!("{}/{}", wp.namespace, wp.name);
        let admitted: BTreeSet<(String, String)> = self
            .instances
            .get(wp)
            .iter()
            .filter_map(|&i| snapshot.workloads.get(i))
            .map(|w: &Workload| (w.namespace.clone(), w.service_account.clone()))
            .collect();
        let cause = if admitted.is_empty() {
            let cause = Cause::Waypoint { waypoint, assigned };
            self.causes.push(cause.clone());
            cause
        } else {
            Cause::NotFromWaypoint { waypoint, assigned }
        };
        Refusal {
            cause,
            ports,
            waypoint: Some(wp.clone()),
            admitted,
        }
    }

    fn add(&mut self, uid: &str, rule: &Refusal) {
        if uid.is_empty() {
            return; // an endpoint outside the mesh (e.g. a ServiceEntry address)
        }
        self.by_workload
            .entry(uid.to_owned())
            .or_default()
            .push(rule.clone());
    }

    fn refuse(&mut self, uid: &str, cause: &Cause, ports: Option<BTreeSet<u16>>) {
        let rule = Refusal {
            cause: cause.clone(),
            ports,
            waypoint: None,
            admitted: BTreeSet::new(),
        };
        self.add(uid, &rule);
    }

    fn refuse_target(
        &mut self,
        snapshot: &Snapshot,
        policy: &AuthorizationPolicy,
        target: &PolicyTargetRef,
    ) {
        let cause = Cause::policy(policy, target);
        match target.kind.as_str() {
            "Service" | "ServiceEntry" => {
                let mut enforced = false;
                for s in snapshot
                    .services
                    .iter()
                    .filter(|s| s.namespace == target.namespace && s.name == target.name)
                {
                    if s.waypoint.is_some() {
                        enforced = true; // its waypoint enforces it; the assignment admits only it
                        continue;
                    }
                    let ports = service_ports(s);
                    for uid in endpoint_uids(s) {
                        self.refuse(uid, &cause, ports.clone());
                    }
                }
                if !enforced {
                    self.causes.push(cause);
                }
            }
            // A waypoint (or every waypoint): it enforces the policy; what is assigned to it
            // admits only its instances.
            "Gateway" => {}
            "GatewayClass" if target.name == WAYPOINT_CLASS => {}
            // Not waypoints: nothing the agents carry goes through them, and nothing enforces it.
            "GatewayClass" => self.causes.push(cause),
            // A kind this data plane does not know (the controller rejects them): refuse the
            // whole namespace rather than guess.
            _ => {
                for w in snapshot
                    .workloads
                    .iter()
                    .filter(|w| w.namespace == target.namespace)
                {
                    self.refuse(&w.uid, &cause, None);
                }
                self.causes.push(cause);
            }
        }
    }

    /// The rules on a workload.
    pub fn refusals(&self, uid: &str) -> &[Refusal] {
        self.by_workload.get(uid).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The rule refusing a connection from `peer` (`None`: plaintext) to `port` of the
    /// workload, if any: a covering one that admits nobody, else (when waypoints cover the
    /// port) the first covering one, unless `peer` is an instance of one of those waypoints.
    pub fn refusal(&self, uid: &str, port: u16, peer: Option<&Identity>) -> Option<&Refusal> {
        let mut refused = None;
        let mut admitted = false;
        for rule in self.refusals(uid).iter().filter(|r| r.covers(port)) {
            if rule.admitted.is_empty() {
                return Some(rule);
            }
            if rule.admits(peer) {
                admitted = true;
            } else if refused.is_none() {
                refused = Some(rule);
            }
        }
        refused.filter(|_| !admitted)
    }

    /// The waypoint a connection addressed to `port` of the workload's own address goes
    /// through: its own waypoint, else that of the first service (model order) it is an
    /// endpoint of whose target ports include `port`.
    pub fn waypoint(&self, uid: &str, port: u16) -> Option<&WaypointRef> {
        self.refusals(uid)
            .iter()
            .filter(|r| r.covers(port))
            .find_map(|r| r.waypoint.as_ref())
    }

    /// The instances of each waypoint of the model.
    pub fn instances(&self) -> &WaypointInstances {
        &self.instances
    }

    /// What nothing enforces, in model order (what the controller reports): each policy target
    /// no waypoint enforces and each waypoint assignment whose waypoint has no instance, whether
    /// or not it refuses any workload.
    pub fn causes(&self) -> &[Cause] {
        &self.causes
    }

    /// Whether `policy` (`namespace/name`) refuses anything on the workload.
    pub fn policy_refuses(&self, uid: &str, policy: &str) -> bool {
        self.refusals(uid)
            .iter()
            .any(|r| matches!(&r.cause, Cause::Policy { policy: p, .. } if p == policy))
    }
}

#[cfg(test)]
mod tests;

//! What the L4 data plane cannot enforce, and so refuses until a waypoint carries the traffic
//! (fail safe, as Istio does for L7 rules it cannot enforce): AuthorizationPolicies attached with
//! `targetRefs`, and waypoint assignments. Built once per model, by agents (inbound
//! authorization) and by the controller (what it reports, which nodes get which policies).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use super::{AuthorizationAction, AuthorizationPolicy, PolicyTargetRef, Service, Snapshot};

/// The Gateway class of Istio waypoints: a policy attached to it applies to every waypoint.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// Why connections to a workload are refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// An AuthorizationPolicy attached with `targetRefs`: only a waypoint could enforce it.
    Policy {
        /// `namespace/name` of the policy.
        policy: String,
        /// What it targets, e.g. `Service apps/echo`.
        target: String,
    },
    /// Traffic to the workload must go through a waypoint, and none can carry it.
    Waypoint {
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
        }
    }
}

/// One refusal of connections to a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub cause: Cause,
    /// The workload ports it covers (a service's target ports); `None`: every port.
    pub ports: Option<BTreeSet<u16>>,
}

impl Refusal {
    /// Whether a connection to `port` of the workload is refused.
    pub fn covers(&self, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|p| p.contains(&port))
    }
}

/// The refusals of one model, by workload uid.
#[derive(Clone, Debug, Default)]
pub struct FailSafe {
    by_workload: HashMap<String, Vec<Refusal>>,
    causes: Vec<Cause>,
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

impl FailSafe {
    /// Everything `snapshot` asks for that the agents cannot enforce. Cost: one pass over
    /// workloads, services and endpoints per waypoint and per policy target (few of either).
    pub fn new(snapshot: &Snapshot) -> FailSafe {
        let mut out = FailSafe::default();
        for w in &snapshot.workloads {
            if let Some(wp) = &w.waypoint {
                let cause = Cause::Waypoint {
                    waypoint: format!("{}/{}", wp.namespace, wp.name),
                    assigned: format!("workload {}", w.uid),
                };
                out.refuse(&w.uid, &cause, None);
                out.causes.push(cause);
            }
        }
        for s in &snapshot.services {
            if let Some(wp) = &s.waypoint {
                let cause = Cause::Waypoint {
                    waypoint: format!("{}/{}", wp.namespace, wp.name),
                    assigned: format!("Service {}/{}", s.namespace, s.name),
                };
                out.refuse_endpoints(s, &cause);
                out.causes.push(cause);
            }
        }
        for policy in &snapshot.authorization_policies {
            // AUDIT never decides and dry-run is never enforced: neither is left unenforced.
            if policy.dry_run || policy.action == AuthorizationAction::Audit {
                continue;
            }
            for target in &policy.target_refs {
                let cause = Cause::policy(policy, target);
                out.refuse_target(snapshot, target, &cause);
                out.causes.push(cause);
            }
        }
        out
    }

    fn refuse(&mut self, uid: &str, cause: &Cause, ports: Option<BTreeSet<u16>>) {
        if uid.is_empty() {
            return; // an endpoint outside the mesh (e.g. a ServiceEntry address)
        }
        self.by_workload
            .entry(uid.to_owned())
            .or_default()
            .push(Refusal {
                cause: cause.clone(),
                ports,
            });
    }

    fn refuse_endpoints(&mut self, service: &Service, cause: &Cause) {
        let ports = service_ports(service);
        let uids: BTreeSet<&str> = service
            .endpoints
            .iter()
            .map(|e| e.workload_uid.as_str())
            .collect();
        for uid in uids {
            self.refuse(uid, cause, ports.clone());
        }
    }

    fn refuse_target(&mut self, snapshot: &Snapshot, target: &PolicyTargetRef, cause: &Cause) {
        match target.kind.as_str() {
            "Service" | "ServiceEntry" => {
                for s in snapshot
                    .services
                    .iter()
                    .filter(|s| s.namespace == target.namespace && s.name == target.name)
                {
                    self.refuse_endpoints(s, cause);
                }
            }
            // A waypoint (or, for the waypoint class, every waypoint): what is assigned to it.
            "Gateway" | "GatewayClass" => {
                let class = target.kind == "GatewayClass";
                if class && target.name != WAYPOINT_CLASS {
                    return; // not waypoints: nothing the agents carry goes through them
                }
                let is_target = |wp: &super::WaypointRef| {
                    class || (wp.namespace == target.namespace && wp.name == target.name)
                };
                for s in &snapshot.services {
                    if s.waypoint.as_ref().is_some_and(is_target) {
                        self.refuse_endpoints(s, cause);
                    }
                }
                for w in &snapshot.workloads {
                    if w.waypoint.as_ref().is_some_and(is_target) {
                        self.refuse(&w.uid, cause, None);
                    }
                }
            }
            // A kind this data plane does not know (the controller rejects them): refuse the
            // whole namespace rather than guess.
            _ => {
                for w in snapshot
                    .workloads
                    .iter()
                    .filter(|w| w.namespace == target.namespace)
                {
                    self.refuse(&w.uid, cause, None);
                }
            }
        }
    }

    /// The refusals of a workload.
    pub fn refusals(&self, uid: &str) -> &[Refusal] {
        self.by_workload.get(uid).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The first refusal covering a connection to `port` of the workload, if any.
    pub fn refusal(&self, uid: &str, port: u16) -> Option<&Refusal> {
        self.refusals(uid).iter().find(|r| r.covers(port))
    }

    /// Every unenforceable policy target and waypoint assignment, in model order (what the
    /// controller reports), whether or not it refuses any workload.
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
mod tests {
    use super::*;

    const MODEL: &str = "
workloads:
- {uid: apps/echo-1, name: echo-1, namespace: apps, addresses: [198.18.1.10], meshed: true}
- {uid: apps/echo-2, name: echo-2, namespace: apps, addresses: [198.18.2.10], meshed: true}
- {uid: apps/db, name: db, namespace: apps, addresses: [198.18.2.11], meshed: true, waypoint: {name: wp, namespace: apps}}
- {uid: other/x, name: x, namespace: other, addresses: [198.18.2.12], meshed: true}
services:
- name: echo
  namespace: apps
  vips: [198.19.0.10]
  ports: [{port: 80, targetPort: 8080}]
  endpoints: [{workloadUid: apps/echo-1, address: 198.18.1.10}, {workloadUid: apps/echo-2, address: 198.18.2.10}]
- name: web
  namespace: apps
  vips: [198.19.0.11]
  ports: [{port: 80}]
  endpoints: [{workloadUid: apps/echo-2, address: 198.18.2.10}]
  waypoint: {name: wp, namespace: apps}
";

    fn model(policies: &str) -> Snapshot {
        yaml_serde::from_str(&format!("{MODEL}authorizationPolicies:\n{policies}"))
            .expect("test model")
    }

    #[test]
    fn refusals_by_target() {
        // (case, policies, workload, port, refused by)
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, u16, Option<&str>)] = &[
            ("no policy: an unrelated workload passes", "  []", "apps/echo-1", 8080, None),
            ("workload waypoint: every port", "  []", "apps/db", 5432, Some("workload apps/db uses waypoint apps/wp")),
            ("service waypoint: its endpoints on its ports", "  []", "apps/echo-2", 80, Some("Service apps/web uses waypoint apps/wp")),
            ("service waypoint: other ports pass", "  []", "apps/echo-2", 9090, None),
            ("Service target: endpoint on the target port",
             "- {name: p, namespace: apps, targetRefs: [{kind: Service, name: echo, namespace: apps}], action: DENY, rules: [{}]}",
             "apps/echo-1", 8080, Some("policy apps/p targets Service apps/echo")),
            ("Service target: another port passes",
             "- {name: p, namespace: apps, targetRefs: [{kind: Service, name: echo, namespace: apps}], action: ALLOW, rules: [{}]}",
             "apps/echo-1", 9090, None),
            ("Service target: ALLOW refuses too",
             "- {name: p, namespace: apps, targetRefs: [{kind: Service, name: echo, namespace: apps}], action: ALLOW, rules: [{}]}",
             "apps/echo-1", 8080, Some("policy apps/p targets Service apps/echo")),
            ("Service target: not an endpoint",
             "- {name: p, namespace: apps, targetRefs: [{kind: Service, name: echo, namespace: apps}], action: DENY}",
             "other/x", 8080, None),
            ("Gateway target: what uses the waypoint",
             "- {name: g, namespace: apps, targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp, namespace: apps}], action: DENY}",
             "apps/db", 1, Some("workload apps/db uses waypoint apps/wp")),
            ("dry run is never enforced",
             "- {name: p, namespace: apps, dryRun: true, targetRefs: [{kind: Service, name: echo, namespace: apps}], action: DENY}",
             "apps/echo-1", 8080, None),
            ("AUDIT never decides",
             "- {name: p, namespace: apps, targetRefs: [{kind: Service, name: echo, namespace: apps}], action: AUDIT}",
             "apps/echo-1", 8080, None),
            ("unknown kind: its namespace",
             "- {name: p, namespace: other, targetRefs: [{kind: Mystery, name: m, namespace: other}], action: DENY}",
             "other/x", 1, Some("policy other/p targets Mystery other/m")),
        ];
        for (case, policies, uid, port, want) in cases {
            let fs = FailSafe::new(&model(policies));
            let got = fs.refusal(uid, *port).map(|r| r.cause.to_string());
            match want {
                None => assert_eq!(got, None, "{case}"),
                Some(prefix) => {
                    let got = got.unwrap_or_default();
                    assert!(got.starts_with(prefix), "{case}: {got}");
                    assert!(got.ends_with("traffic to it is denied"), "{case}: {got}");
                }
            }
        }
    }

    #[test]
    fn causes_list_every_target_and_assignment() {
        let fs = FailSafe::new(&model(
            "- {name: p, namespace: apps, targetRefs: [{kind: Service, name: echo, namespace: apps}], action: DENY}",
        ));
        let causes: Vec<String> = fs.causes().iter().map(ToString::to_string).collect();
        assert_eq!(causes.len(), 3, "{causes:#?}");
        assert!(causes.contains(&"policy apps/p targets Service apps/echo: no waypoint runs to enforce it; traffic to it is denied".to_owned()));
        assert!(fs.policy_refuses("apps/echo-2", "apps/p"));
        assert!(!fs.policy_refuses("other/x", "apps/p"));
    }
}

//! L4 authorization of inbound connections: Istio `AuthorizationPolicy` semantics on the
//! attributes the agent knows (peer identity, source address, destination port).
//!
//! Order, as in Istio: any matching DENY policy denies; then, if any ALLOW policy applies to the
//! workload, the connection must match one of them; with no ALLOW policy, it is allowed. AUDIT
//! policies never change the decision. A policy whose action this build does not know (a newer
//! controller) denies every connection it applies to: fail closed (`mesh_common::model::compat`).

use std::net::IpAddr;

use mesh_common::identity::Identity;
use mesh_common::model::{
    AuthorizationAction, AuthorizationPolicy, FailSafe, FailSafeCause, Snapshot, Workload,
};

use crate::metrics::Metrics;

/// The outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the connection through.
    Allow,
    /// Refuse it.
    Deny(Denied),
}

/// Why a connection is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The `reason` label of the denied-connections metric: `policy`; before policy,
    /// `not_from_waypoint` (a destination behind a running waypoint, reached around it), or
    /// for what nothing enforces, `waypoint_unavailable` / `unenforced_policy`.
    pub label: &'static str,
    /// For the log.
    pub reason: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl Decision {
    fn deny(label: &'static str, reason: String) -> Decision {
        Decision::Deny(Denied { label, reason })
    }
}

/// What the agent knows about an inbound connection.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The peer's verified identity (`None` for plaintext).
    pub peer: Option<&'a Identity>,
    /// The source address.
    pub src: IpAddr,
    /// The destination port on the workload.
    pub dst_port: u16,
}

/// What a dry-run policy would have done to a connection had it been enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// Whether enforcing it would deny the connection: a DENY policy that matches, or an ALLOW
    /// policy that does not match while no enforced ALLOW policy did (it would narrow).
    pub would_deny: bool,
}

/// The decision and the dry-run policies' would-be decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What is enforced.
    pub decision: Decision,
    /// One per applicable dry-run ALLOW or DENY policy; never part of `decision`.
    pub dry_run: Vec<DryRun>,
}

/// Istio principals omit the scheme: `<trust-domain>/ns/<ns>/sa/<sa>`.
fn principal(peer: Option<&Identity>) -> Option<String> {
    peer.map(|id| {
        let full = id.to_string();
        full.strip_prefix("spiffe://")
            .map(str::to_owned)
            .unwrap_or(full)
    })
}

fn name(policy: &AuthorizationPolicy) -> String {
    format!("{}/{}", policy.namespace, policy.name)
}

/// Decides whether `conn` may reach `workload`. First admission (`fail_safe`): on the ports a
/// waypoint covers only its instances are admitted, and what nothing enforces (a waypoint with no
/// instance, a targetRefs policy no waypoint enforces) is refused; then the enforced policies,
/// with the peer as it is (the waypoint, for what it carries, as in Istio ambient); dry-run
/// policies never count.
pub fn authorize(
    snapshot: &Snapshot,
    fail_safe: &FailSafe,
    workload: &Workload,
    conn: Connection<'_>,
) -> Decision {
    evaluate(snapshot, fail_safe, workload, conn, false).decision
}

/// [`authorize`], with the dry-run policies evaluated too when `dry_run`.
pub fn evaluate(
    snapshot: &Snapshot,
    fail_safe: &FailSafe,
    workload: &Workload,
    conn: Connection<'_>,
    dry_run: bool,
) -> Verdict {
    let mut verdict = Verdict {
        decision: Decision::Allow,
        dry_run: Vec::new(),
    };
    if let Some(refusal) = fail_safe.refusal(&workload.uid, conn.dst_port, conn.peer) {
        // Nothing may bypass the L7 policy of the waypoint in front of the workload.
        let label = match refusal.cause {
            FailSafeCause::NotFromWaypoint { .. } => "not_from_waypoint",
            FailSafeCause::Waypoint { .. } => "waypoint_unavailable",
            FailSafeCause::Policy { .. } => "unenforced_policy",
        };
        verdict.decision = Decision::deny(label, refusal.cause.to_string());
        return verdict;
    }
    let principal = principal(conn.peer);
    let principal = principal.as_deref();
    let matches = |p: &AuthorizationPolicy| p.matches_l4(principal, conn.src, conn.dst_port);
    let mut allow_policies = 0usize;
    let mut allowed = false;
    let mut dry_allow = Vec::new();
    for policy in snapshot.authorization_policies_for(workload) {
        match (policy.action, policy.dry_run) {
            (AuthorizationAction::Audit, _) => {}
            (AuthorizationAction::Deny, true) => {
                if dry_run {
                    verdict.dry_run.push(DryRun {
                        policy: name(policy),
                        would_deny: matches(policy),
                    });
                }
            }
            (AuthorizationAction::Allow, true) => {
                if dry_run {
                    dry_allow.push(policy);
                }
            }
            (AuthorizationAction::Deny, false) => {
                if matches(policy) && verdict.decision == Decision::Allow {
                    verdict.decision = Decision::deny(
                        "policy",
                        format!("denied by AuthorizationPolicy {}", name(policy)),
                    );
                }
            }
            (AuthorizationAction::Allow, false) => {
                allow_policies += 1;
                allowed = allowed || matches(policy);
            }
            // A newer controller's action this build cannot evaluate: fail closed (a dry-run
            // one decides nothing either way).
            (AuthorizationAction::Unknown, false) => {
                verdict.decision = Decision::deny(
                    "policy",
                    format!(
                        "AuthorizationPolicy {} has an action this agent does not know",
                        name(policy)
                    ),
                );
                return verdict;
            }
            (AuthorizationAction::Unknown, true) => {}
        }
    }
    // An enforced ALLOW that matched keeps the connection whatever a dry-run ALLOW says.
    for policy in dry_allow {
        verdict.dry_run.push(DryRun {
            policy: name(policy),
            would_deny: !allowed && !matches(policy),
        });
    }
    if verdict.decision == Decision::Allow && allow_policies > 0 && !allowed {
        verdict.decision = Decision::deny(
            "policy",
            format!(
                "no ALLOW policy matched ({allow_policies} apply to {})",
                workload.uid
            ),
        );
    }
    verdict
}

/// Authorizes `conn` to `workload` for a proxy: evaluates the dry-run policies too, counting
/// each would-be decision and logging it once per burst per policy, and counts a denial.
/// Logging the denial is left to the caller, which knows the connection.
pub fn check(
    snapshot: &Snapshot,
    fail_safe: &FailSafe,
    workload: &Workload,
    conn: Connection<'_>,
    metrics: &Metrics,
) -> Decision {
    let verdict = evaluate(snapshot, fail_safe, workload, conn, true);
    for d in &verdict.dry_run {
        let decision = if d.would_deny { "deny" } else { "allow" };
        if let Some(unlogged) = metrics.dry_run(&workload.uid, &d.policy, decision) {
            tracing::info!(dst.workload = %workload.uid, src.identity = ?conn.peer.map(ToString::to_string), src.address = %conn.src, dst.port = conn.dst_port, policy = %d.policy, would = decision, unlogged, "dry-run AuthorizationPolicy evaluated, not enforced (logged once per burst per policy)");
        }
    }
    verdict.decision
}

/// Counts a denial of a connection to `workload`; `Some(n)` when it is to be logged. Denials by
/// a policy are logged each time, as before; refusals of what nothing enforces (which any client
/// can cause at will) once per burst, `n` saying how many were not logged.
pub fn count_denial(metrics: &Metrics, workload: &str, denied: &Denied) -> Option<u64> {
    if denied.label == "policy" {
        metrics.record_denied(workload, denied.label);
        Some(0)
    } else {
        metrics.refuse(workload, denied.label)
    }
}

/// Whether any dry-run policy applies to `workload` (its connections are then kept out of the
/// kernel fast path, so that each is evaluated and counted).
pub fn has_dry_run(snapshot: &Snapshot, workload: &Workload) -> bool {
    snapshot
        .authorization_policies_for(workload)
        .any(|p| p.dry_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(policies: &str) -> Snapshot {
        let yaml = format!(
            "workloads:\n- uid: prod/server\n  name: server\n  namespace: prod\n  addresses: [198.18.2.10]\n  labels: {{app: server}}\nauthorizationPolicies:\n{policies}"
        );
        yaml_serde::from_str(&yaml).expect("test model")
    }

    fn verdict(snap: &Snapshot, peer: Option<&str>, src: &str, port: u16) -> Verdict {
        let workload = snap.workload("prod/server").expect("workload");
        let id: Option<Identity> = peer.map(|p| p.parse().expect("identity"));
        evaluate(
            snap,
            &FailSafe::new(snap),
            workload,
            Connection {
                peer: id.as_ref(),
                src: src.parse().expect("ip"),
                dst_port: port,
            },
            true,
        )
    }

    fn check(snap: &Snapshot, peer: Option<&str>, src: &str, port: u16) -> Decision {
        verdict(snap, peer, src, port).decision
    }

    const CLIENT: &str = "spiffe://cluster.local/ns/apps/sa/client";
    const OTHER: &str = "spiffe://cluster.local/ns/other/sa/intruder";
    const WAYPOINT: &str = "spiffe://cluster.local/ns/prod/sa/waypoint";

    #[test]
    fn no_policy_allows() {
        assert_eq!(
            check(&snapshot("  []\n"), None, "198.18.1.10", 8080),
            Decision::Allow
        );
    }

    #[test]
    fn allow_by_principal_denies_everyone_else() {
        let snap = snapshot(
            "- {name: only-client, namespace: prod, action: ALLOW, rules: [{from: [{principals: [cluster.local/ns/apps/sa/client]}]}]}\n",
        );
        assert_eq!(
            check(&snap, Some(CLIENT), "198.18.1.10", 8080),
            Decision::Allow
        );
        assert!(matches!(
            check(&snap, Some(OTHER), "198.18.1.10", 8080),
            Decision::Deny(_)
        ));
        assert!(matches!(
            check(&snap, None, "198.18.1.10", 8080),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn deny_is_evaluated_before_allow() {
        let snap = snapshot(
            "- {name: allow-all, namespace: prod, action: ALLOW, rules: [{}]}\n- {name: no-9090, namespace: prod, action: DENY, rules: [{to: [{ports: [9090]}]}]}\n",
        );
        assert_eq!(
            check(&snap, Some(CLIENT), "198.18.1.10", 8080),
            Decision::Allow
        );
        let denied = check(&snap, Some(CLIENT), "198.18.1.10", 9090);
        assert_eq!(
            denied,
            Decision::deny(
                "policy",
                "denied by AuthorizationPolicy prod/no-9090".into()
            )
        );
    }

    #[test]
    fn namespaces_and_ip_blocks() {
        let snap = snapshot(
            "- {name: ns, namespace: prod, action: ALLOW, rules: [{from: [{namespaces: [apps]}]}, {from: [{ipBlocks: [{address: 198.18.9.0, prefixLen: 24}]}]}]}\n",
        );
        assert_eq!(
            check(&snap, Some(CLIENT), "198.18.1.10", 80),
            Decision::Allow
        );
        assert!(matches!(
            check(&snap, Some(OTHER), "198.18.1.10", 80),
            Decision::Deny(_)
        ));
        assert_eq!(check(&snap, None, "198.18.9.7", 80), Decision::Allow);
    }

    #[test]
    fn policy_of_another_namespace_or_selector_does_not_apply() {
        let snap = snapshot(
            "- {name: elsewhere, namespace: apps, action: DENY, rules: [{}]}\n- {name: other-app, namespace: prod, selector: {app: db}, action: DENY, rules: [{}]}\n",
        );
        assert_eq!(
            check(&snap, Some(CLIENT), "198.18.1.10", 80),
            Decision::Allow
        );
    }

    #[test]
    fn an_unknown_action_fails_closed() {
        // (what, policies, allowed?) for a request from CLIENT; the unknown action is what a
        // newer controller might send (e.g. Istio's CUSTOM).
        let cases = [
            (
                "unknown action whose rule would not even match",
                "- {name: newer, namespace: prod, action: CUSTOM, rules: [{from: [{principals: [nobody]}]}]}\n",
                false,
            ),
            (
                "unknown action next to an ALLOW that matches",
                "- {name: ok, namespace: prod, action: ALLOW, rules: [{}]}\n- {name: newer, namespace: prod, action: CUSTOM, rules: []}\n",
                false,
            ),
            (
                "unknown action in a policy that does not apply",
                "- {name: newer, namespace: apps, action: CUSTOM, rules: [{}]}\n",
                true,
            ),
        ];
        for (what, policies, allowed) in cases {
            let snap = snapshot(policies);
            let decision = check(&snap, Some(CLIENT), "198.18.1.10", 80);
            assert_eq!(decision == Decision::Allow, allowed, "{what}: {decision:?}");
        }
    }

    /// A model with a service `prod/front` (port 80 -> 8080) whose endpoint is `prod/server`.
    fn with_service(service_extra: &str, workload_extra: &str, policies: &str) -> Snapshot {
        let yaml = format!(
            "workloads:\n- {{uid: prod/server, name: server, namespace: prod, addresses: [198.18.2.10], labels: {{app: server}}{workload_extra}}}\nservices:\n- {{name: front, namespace: prod, vips: [198.19.0.10], ports: [{{port: 80, targetPort: 8080}}], endpoints: [{{workloadUid: prod/server, address: 198.18.2.10}}]{service_extra}}}\nauthorizationPolicies:\n{policies}"
        );
        yaml_serde::from_str(&yaml).expect("test model")
    }

    /// (case, service extra, workload extra, policies, peer, port, decision label or None,
    /// dry-run outcomes as (policy, would_deny))
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        String,
        Option<&'a str>,
        u16,
        Option<&'a str>,
        Vec<(&'a str, bool)>,
    );

    /// What nothing enforces is refused (fail safe: here no waypoint has an instance); dry-run
    /// policies never decide.
    #[test]
    fn fail_safe_and_dry_run() {
        let wp = ", waypoint: {name: wp, namespace: prod}";
        let on_front = "targetRefs: [{kind: Service, name: front, namespace: prod}]";
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("nothing applies", "", "", "  []".into(), Some(CLIENT), 8080, None, vec![]),
            ("targetRefs DENY on the service: its endpoint is refused on the service port", "", "",
             format!("- {{name: t, namespace: prod, {on_front}, action: DENY, rules: [{{}}]}}"), Some(CLIENT), 8080, Some("unenforced_policy"), vec![]),
            ("targetRefs ALLOW on the service: refused as well", "", "",
             format!("- {{name: t, namespace: prod, {on_front}, action: ALLOW, rules: [{{from: [{{principals: ['*']}}]}}]}}"), Some(CLIENT), 8080, Some("unenforced_policy"), vec![]),
            ("targetRefs on the service: another port passes", "", "",
             format!("- {{name: t, namespace: prod, {on_front}, action: DENY, rules: [{{}}]}}"), Some(CLIENT), 9090, None, vec![]),
            ("targetRefs on another service: passes", "", "",
             "- {name: t, namespace: prod, targetRefs: [{kind: Service, name: other, namespace: prod}], action: DENY, rules: [{}]}".into(), Some(CLIENT), 8080, None, vec![]),
            ("targetRefs on a waypoint without instance that the workload uses", "", wp,
             "- {name: t, namespace: prod, targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp, namespace: prod}], action: ALLOW}".into(), Some(CLIENT), 1234, Some("waypoint_unavailable"), vec![]),
            ("workload assigned a waypoint without instance: refused on every port", "", wp, "  []".into(), Some(CLIENT), 1234, Some("waypoint_unavailable"), vec![]),
            ("endpoint of a service assigned a waypoint without instance: refused on its ports", wp, "", "  []".into(), Some(CLIENT), 8080, Some("waypoint_unavailable"), vec![]),
            ("endpoint of a service assigned a waypoint without instance: other ports pass", wp, "", "  []".into(), Some(CLIENT), 9090, None, vec![]),
            ("plaintext to a workload behind a waypoint without instance", "", wp, "  []".into(), None, 8080, Some("waypoint_unavailable"), vec![]),
            ("dry-run DENY that matches does not deny", "", "",
             "- {name: d, namespace: prod, dryRun: true, action: DENY, rules: [{}]}".into(), Some(CLIENT), 8080, None, vec![("prod/d", true)]),
            ("dry-run DENY that does not match", "", "",
             "- {name: d, namespace: prod, dryRun: true, action: DENY, rules: [{to: [{ports: [9090]}]}]}".into(), Some(CLIENT), 8080, None, vec![("prod/d", false)]),
            ("dry-run ALLOW does not narrow", "", "",
             "- {name: a, namespace: prod, dryRun: true, action: ALLOW, rules: [{from: [{principals: [cluster.local/ns/apps/sa/client]}]}]}".into(), Some(OTHER), 8080, None, vec![("prod/a", true)]),
            ("dry-run ALLOW that matches", "", "",
             "- {name: a, namespace: prod, dryRun: true, action: ALLOW, rules: [{from: [{principals: [cluster.local/ns/apps/sa/client]}]}]}".into(), Some(CLIENT), 8080, None, vec![("prod/a", false)]),
            ("dry-run ALLOW does not allow what an enforced ALLOW refuses", "", "",
             "- {name: a, namespace: prod, dryRun: true, action: ALLOW, rules: [{}]}\n- {name: only-client, namespace: prod, action: ALLOW, rules: [{from: [{principals: [cluster.local/ns/apps/sa/client]}]}]}".into(), Some(OTHER), 8080, Some("policy"), vec![("prod/a", false)]),
            ("an enforced ALLOW that matched keeps a dry-run ALLOW from denying", "", "",
             "- {name: a, namespace: prod, dryRun: true, action: ALLOW, rules: [{to: [{ports: [1]}]}]}\n- {name: all, namespace: prod, action: ALLOW, rules: [{}]}".into(), Some(CLIENT), 8080, None, vec![("prod/a", false)]),
            ("dry-run DENY next to an enforced DENY", "", "",
             "- {name: d, namespace: prod, dryRun: true, action: DENY, rules: [{}]}\n- {name: e, namespace: prod, action: DENY, rules: [{}]}".into(), Some(CLIENT), 8080, Some("policy"), vec![("prod/d", true)]),
            ("dry-run targetRefs policy: not enforced, not refused", "", "",
             format!("- {{name: t, namespace: prod, dryRun: true, {on_front}, action: DENY, rules: [{{}}]}}"), Some(CLIENT), 8080, None, vec![]),
        ];
        for (case, service_extra, workload_extra, policies, peer, port, label, dry) in cases {
            let snap = with_service(service_extra, workload_extra, &policies);
            let v = verdict(&snap, peer, "198.18.1.10", port);
            let got = match &v.decision {
                Decision::Allow => None,
                Decision::Deny(d) => Some(d.label),
            };
            assert_eq!(got, label, "{case}: {:?}", v.decision);
            let got: Vec<(&str, bool)> = v
                .dry_run
                .iter()
                .map(|d| (d.policy.as_str(), d.would_deny))
                .collect();
            assert_eq!(got, dry, "{case}");
            // authorize() is the same decision without the dry-run evaluation.
            let workload = snap.workload("prod/server").expect("workload");
            let id: Option<Identity> = peer.map(|p| p.parse().expect("identity"));
            let conn = Connection {
                peer: id.as_ref(),
                src: "198.18.1.10".parse().expect("ip"),
                dst_port: port,
            };
            assert_eq!(
                authorize(&snap, &FailSafe::new(&snap), workload, conn),
                v.decision,
                "{case}"
            );
        }
    }

    /// (case, service extra, workload extra, policies, peer, port, decision label or None)
    type AdmissionCase<'a> = (
        &'a str,
        &'a str,
        &'a str,
        String,
        Option<&'a str>,
        u16,
        Option<&'a str>,
    );

    /// Behind a waypoint that runs (`prod/wp-1`, identity `WAYPOINT`): admission first, then the
    /// destination's L4 policies with the waypoint as the peer.
    #[test]
    fn waypoint_admission_then_policy() {
        let instance = "- {uid: prod/wp-1, name: wp-1, namespace: prod, serviceAccount: waypoint, addresses: [198.18.1.50], labels: {gateway.networking.k8s.io/gateway-name: wp}}\n";
        let wp = ", waypoint: {name: wp, namespace: prod}";
        let on_front = "targetRefs: [{kind: Service, name: front, namespace: prod}]";
        let on_gateway = "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp, namespace: prod}]";
        #[rustfmt::skip]
        let cases: Vec<AdmissionCase> = vec![
            ("workload behind the waypoint: from the waypoint", "", wp, "  []".into(), Some(WAYPOINT), 8080, None),
            ("workload behind the waypoint: from a client, around it", "", wp, "  []".into(), Some(CLIENT), 8080, Some("not_from_waypoint")),
            ("workload behind the waypoint: plaintext", "", wp, "  []".into(), None, 1234, Some("not_from_waypoint")),
            ("service behind the waypoint: a client on its target port", wp, "", "  []".into(), Some(CLIENT), 8080, Some("not_from_waypoint")),
            ("service behind the waypoint: a client on another port", wp, "", "  []".into(), Some(CLIENT), 9090, None),
            ("targetRefs on the service with a waypoint: the waypoint enforces it", wp, "",
             format!("- {{name: t, namespace: prod, {on_front}, action: DENY, rules: [{{}}]}}"), Some(WAYPOINT), 8080, None),
            ("targetRefs on the service with a waypoint: a client around it", wp, "",
             format!("- {{name: t, namespace: prod, {on_front}, action: DENY, rules: [{{}}]}}"), Some(CLIENT), 8080, Some("not_from_waypoint")),
            ("targetRefs on the waypoint's Gateway: the waypoint enforces it", "", wp,
             format!("- {{name: t, namespace: prod, {on_gateway}, action: DENY, rules: [{{}}]}}"), Some(WAYPOINT), 8080, None),
            ("L4 ALLOW of the client only: the waypoint is the peer, denied", "", wp,
             "- {name: a, namespace: prod, action: ALLOW, rules: [{from: [{principals: [cluster.local/ns/apps/sa/client]}]}]}".into(), Some(WAYPOINT), 8080, Some("policy")),
            ("L4 ALLOW of the waypoint", "", wp,
             "- {name: a, namespace: prod, action: ALLOW, rules: [{from: [{principals: [cluster.local/ns/prod/sa/waypoint]}]}]}".into(), Some(WAYPOINT), 8080, None),
            ("L4 DENY of the waypoint's namespace", "", wp,
             "- {name: d, namespace: prod, action: DENY, rules: [{from: [{namespaces: [prod]}]}]}".into(), Some(WAYPOINT), 8080, Some("policy")),
            ("L4 ALLOW of the client does not let it around the waypoint", "", wp,
             "- {name: a, namespace: prod, action: ALLOW, rules: [{from: [{principals: [cluster.local/ns/apps/sa/client]}]}]}".into(), Some(CLIENT), 8080, Some("not_from_waypoint")),
        ];
        for (case, service_extra, workload_extra, policies, peer, port, label) in cases {
            let mut snap = with_service(service_extra, workload_extra, &policies);
            let instance: Vec<Workload> = yaml_serde::from_str(instance).expect("instance");
            snap.workloads.extend(instance);
            let v = verdict(&snap, peer, "198.18.1.50", port);
            let got = match &v.decision {
                Decision::Allow => None,
                Decision::Deny(d) => Some(d.label),
            };
            assert_eq!(got, label, "{case}: {:?}", v.decision);
        }
    }

    #[test]
    fn fail_safe_reasons_say_why() {
        let snap = with_service(
            "",
            "",
            "- {name: t, namespace: prod, targetRefs: [{kind: Service, name: front, namespace: prod}], action: DENY, rules: [{}]}",
        );
        let Decision::Deny(d) = check(&snap, Some(CLIENT), "198.18.1.10", 8080) else {
            panic!("refused");
        };
        assert_eq!(
            d.reason,
            "policy prod/t targets Service prod/front: no waypoint runs to enforce it; traffic to it is denied"
        );
    }
}

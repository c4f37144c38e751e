//! L4 authorization of inbound connections: Istio `AuthorizationPolicy` semantics on the
//! attributes the agent knows (peer identity, source address, destination port).
//!
//! Order, as in Istio: any matching DENY policy denies; then, if any ALLOW policy applies to the
//! workload, the connection must match one of them; with no ALLOW policy, it is allowed. AUDIT
//! policies never change the decision. A policy whose action this build does not know (a newer
//! controller) denies every connection it applies to: fail closed (`mesh_common::model::compat`).

use std::net::IpAddr;

use mesh_common::identity::Identity;
use mesh_common::model::{AuthorizationAction, Snapshot, Workload};

/// The outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the connection through.
    Allow,
    /// Refuse it, with the reason for the log.
    Deny(String),
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

/// Decides whether `conn` may reach `workload`.
pub fn authorize(snapshot: &Snapshot, workload: &Workload, conn: Connection<'_>) -> Decision {
    // Istio principals omit the scheme: `<trust-domain>/ns/<ns>/sa/<sa>`.
    let principal = conn.peer.map(|id| {
        let full = id.to_string();
        full.strip_prefix("spiffe://")
            .map(str::to_owned)
            .unwrap_or(full)
    });
    let principal = principal.as_deref();
    let mut allow_policies = 0usize;
    let mut allowed = false;
    for policy in snapshot.authorization_policies_for(workload) {
        match policy.action {
            AuthorizationAction::Deny => {
                if policy.matches_l4(principal, conn.src, conn.dst_port) {
                    return Decision::Deny(format!(
                        "denied by AuthorizationPolicy {}/{}",
                        policy.namespace, policy.name
                    ));
                }
            }
            AuthorizationAction::Allow => {
                allow_policies += 1;
                allowed = allowed || policy.matches_l4(principal, conn.src, conn.dst_port);
            }
            AuthorizationAction::Audit => {}
            // A newer controller's action this build cannot evaluate: fail closed.
            AuthorizationAction::Unknown => {
                return Decision::Deny(format!(
                    "AuthorizationPolicy {}/{} has an action this agent does not know",
                    policy.namespace, policy.name
                ));
            }
        }
    }
    if allow_policies > 0 && !allowed {
        return Decision::Deny(format!(
            "no ALLOW policy matched ({allow_policies} apply to {})",
            workload.uid
        ));
    }
    Decision::Allow
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

    fn check(snap: &Snapshot, peer: Option<&str>, src: &str, port: u16) -> Decision {
        let workload = snap.workload("prod/server").expect("workload");
        let id: Option<Identity> = peer.map(|p| p.parse().expect("identity"));
        authorize(
            snap,
            workload,
            Connection {
                peer: id.as_ref(),
                src: src.parse().expect("ip"),
                dst_port: port,
            },
        )
    }

    const CLIENT: &str = "spiffe://cluster.local/ns/apps/sa/client";
    const OTHER: &str = "spiffe://cluster.local/ns/other/sa/intruder";

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
            Decision::Deny("denied by AuthorizationPolicy prod/no-9090".into())
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
}

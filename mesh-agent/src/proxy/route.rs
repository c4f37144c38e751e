//! The outbound decision: where a captured connection goes, as a pure function of what the
//! model and the node know about its destination.
//!
//! Routes: a captured pod of this node (delivered by the agent; the verdict may then be reused
//! by the kernel fast path), HBONE to a meshed pod elsewhere, plaintext to anything outside the
//! mesh, or deny. A destination assigned a waypoint is denied until this agent can send traffic
//! through a running waypoint (fail safe: the waypoint's L7 policy must not be bypassed); that
//! branch is where the waypoint route goes.

use std::net::SocketAddr;

use mesh_common::identity::Identity;
use mesh_common::model::{WaypointRef, Workload};
use mesh_common::ports::AGENT_POD_PORTS;

/// What is known about a captured connection's destination.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// Where the connection would be made (a service VIP already resolved to an endpoint).
    pub target: SocketAddr,
    /// The requested destination always resolves to `target` (a pod address, or a service with
    /// one endpoint), so a verdict about it can be reused.
    pub fixed: bool,
    /// The waypoint of the service the connection was addressed to, if any.
    pub service_waypoint: Option<&'a WaypointRef>,
    /// The model's workload at `target`'s address, if it is meshed.
    pub meshed: Option<&'a Workload>,
    /// `target` is a captured pod of this node.
    pub local: bool,
    /// This node has workload certificates (a certificate service is configured).
    pub tunnel: bool,
}

/// How a captured connection is carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To a captured pod of this node, by the agent; `reuse_in_kernel`: the verdict may be
    /// installed for the kernel fast path (later connects decided in `connect4`/`connect6`).
    Local {
        /// Whether the verdict may be reused by the kernel.
        reuse_in_kernel: bool,
    },
    /// Over HBONE to the destination pod's 15008, expecting this identity.
    Hbone {
        /// The destination workload's identity.
        identity: Identity,
    },
    /// In plaintext, from inside the source pod.
    Plaintext,
    /// Refused.
    Deny(DenyReason),
}

/// Why an outbound connection is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The destination port is one of the agent's own in-pod ports (15001, 15006, 15008):
    /// accepting it would make the agent call itself.
    AgentPort(u16),
    /// The destination is assigned a waypoint that this agent cannot send traffic through.
    WaypointUnavailable {
        /// `namespace/name` of the waypoint.
        waypoint: String,
    },
}

impl DenyReason {
    /// The `reason` label of the denied-connections metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DenyReason::AgentPort(_) => "agent_port",
            DenyReason::WaypointUnavailable { .. } => "waypoint_unavailable",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenyReason::AgentPort(port) => {
                write!(f, "port {port} is the agent's own port, never a destination")
            }
            DenyReason::WaypointUnavailable { waypoint } => write!(
                f,
                "the destination uses waypoint {waypoint}, which is not available: refused rather than bypassed"
            ),
        }
    }
}

/// Decides the route of a captured connection.
pub fn decide(dst: &Destination<'_>, trust_domain: &str) -> Route {
    if AGENT_POD_PORTS.contains(&dst.target.port()) {
        return Route::Deny(DenyReason::AgentPort(dst.target.port()));
    }
    let waypoint = dst
        .service_waypoint
        .or_else(|| dst.meshed.and_then(|w| w.waypoint.as_ref()));
    if let Some(waypoint) = waypoint {
        return Route::Deny(DenyReason::WaypointUnavailable {
            waypoint: format!("{}/{}", waypoint.namespace, waypoint.name),
        });
    }
    if dst.local {
        return Route::Local {
            reuse_in_kernel: dst.fixed,
        };
    }
    match dst.meshed {
        Some(workload) if dst.tunnel => Route::Hbone {
            identity: workload.identity(trust_domain),
        },
        _ => Route::Plaintext,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(waypoint: Option<&WaypointRef>) -> Workload {
        Workload {
            uid: "apps/server".into(),
            name: "server".into(),
            namespace: "apps".into(),
            service_account: "server".into(),
            node: "node2".into(),
            addresses: vec!["198.18.2.10".parse().expect("ip")],
            meshed: true,
            labels: Default::default(),
            waypoint: waypoint.cloned(),
        }
    }

    /// (case, target, fixed, service waypoint, meshed workload, local, tunnel, route)
    type Case<'a> = (
        &'a str,
        &'a str,
        bool,
        Option<&'a WaypointRef>,
        Option<&'a Workload>,
        bool,
        bool,
        Route,
    );

    #[test]
    fn routes() {
        let waypoint = WaypointRef {
            name: "wp".into(),
            namespace: "apps".into(),
            addresses: Vec::new(),
        };
        let plain = workload(None);
        let behind_waypoint = workload(Some(&waypoint));
        let hbone = Route::Hbone {
            identity: Identity::new("cluster.local", "apps", "server"),
        };
        let wp_denied = Route::Deny(DenyReason::WaypointUnavailable {
            waypoint: "apps/wp".into(),
        });
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("meshed pod elsewhere", "198.18.2.10:8080", true, None, Some(&plain), false, true, hbone.clone()),
            ("meshed pod, no certificates", "198.18.2.10:8080", true, None, Some(&plain), false, false, Route::Plaintext),
            ("outside the mesh", "198.18.2.20:80", true, None, None, false, true, Route::Plaintext),
            ("same node, fixed", "198.18.1.10:8080", true, None, Some(&plain), true, true, Route::Local { reuse_in_kernel: true }),
            ("same node via a service of 2 endpoints", "198.18.1.10:8080", false, None, Some(&plain), true, true, Route::Local { reuse_in_kernel: false }),
            ("agent outbound port", "198.18.2.10:15001", true, None, Some(&plain), false, true, Route::Deny(DenyReason::AgentPort(15001))),
            ("agent inbound port", "198.18.2.10:15006", true, None, Some(&plain), false, true, Route::Deny(DenyReason::AgentPort(15006))),
            ("agent HBONE port", "[fd18:2::10]:15008", true, None, Some(&plain), false, true, Route::Deny(DenyReason::AgentPort(15008))),
            ("agent port of a local pod", "198.18.1.10:15006", true, None, Some(&plain), true, true, Route::Deny(DenyReason::AgentPort(15006))),
            ("agent port outside the mesh", "198.18.0.2:15008", true, None, None, false, true, Route::Deny(DenyReason::AgentPort(15008))),
            ("service with a waypoint", "198.18.2.10:8080", false, Some(&waypoint), Some(&plain), false, true, wp_denied.clone()),
            ("workload with a waypoint", "198.18.2.10:8080", true, None, Some(&behind_waypoint), false, true, wp_denied.clone()),
            ("local workload with a waypoint", "198.18.1.10:8080", true, None, Some(&behind_waypoint), true, true, wp_denied.clone()),
            ("waypoint even without certificates", "198.18.2.10:8080", true, None, Some(&behind_waypoint), false, false, wp_denied),
        ];
        for (case, target, fixed, service_waypoint, meshed, local, tunnel, want) in cases {
            let dst = Destination {
                target: target.parse().expect("test address"),
                fixed,
                service_waypoint,
                meshed,
                local,
                tunnel,
            };
            assert_eq!(decide(&dst, "cluster.local"), want, "{case}");
        }
    }

    #[test]
    fn deny_reasons_have_metric_labels_and_messages() {
        let reason = DenyReason::AgentPort(15006);
        assert_eq!(reason.metric_label(), "agent_port");
        assert!(reason.to_string().contains("15006"));
        let reason = DenyReason::WaypointUnavailable {
            waypoint: "apps/wp".into(),
        };
        assert_eq!(reason.metric_label(), "waypoint_unavailable");
        assert!(reason.to_string().contains("apps/wp"));
    }
}

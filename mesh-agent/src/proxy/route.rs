//! The outbound decision: where a captured connection goes, as a pure function of what the
//! model and the node know about its destination.
//!
//! Routes: through a waypoint, to a captured pod of this node (delivered by the agent; the
//! verdict may then be reused by the kernel fast path), HBONE to a meshed pod elsewhere,
//! plaintext to anything outside the mesh, or deny.
//!
//! **Which destinations go through a waypoint** (found by `State::waypoint`, from the same rules
//! the destination's agent admits by, `mesh_common::model::FailSafe`): a connection to a service
//! address goes through the service's waypoint; one to a pod address (or to the endpoint a
//! service without waypoint resolved to) through the pod's own waypoint (`istio.io/use-waypoint`
//! on the pod), else through the waypoint of the first service, in model order, that the pod is
//! an endpoint of and whose target ports include the port. So a pod dialing another pod's
//! address is sent through the waypoint, never around it, and the destination's agent admits
//! on those ports only the waypoint's instances. Same-node destinations too: never `Local`,
//! so never the kernel fast path. A waypoint without instance (or a node without workload
//! certificates, which cannot speak HBONE) is a refusal, never a bypass.
//!
//! **Which instance**: among the instances with an address of the destination's family (any
//! address if none has one), the one at `FNV-1a(source address, source port) mod n`, instances
//! in uid order: the same client socket always gets the same instance (a decision that can be
//! tested and retraced from a log line), and successive connections of a client, whose ports
//! differ, spread over all of them. The stream goes to `<instance-ip>:15008` with the source
//! pod's identity, expecting the instance's, with the original destination (service
//! `VIP:port`, or `pod-ip:port`) as CONNECT authority.

use std::net::{IpAddr, SocketAddr};

use mesh_common::identity::Identity;
use mesh_common::model::{WaypointRef, Workload};
use mesh_common::ports::{AGENT_POD_PORTS, HBONE};

/// A waypoint a destination must go through.
#[derive(Debug, Clone, Copy)]
pub struct Waypoint<'a> {
    /// The waypoint.
    pub waypoint: &'a WaypointRef,
    /// Its instances, in uid order (empty: none runs).
    pub instances: &'a [Workload],
}

/// What is known about a captured connection's destination.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The client's address in the source pod (spreads connections over waypoint instances).
    pub source: SocketAddr,
    /// What the application connected to (a service VIP and port, or a pod address).
    pub requested: SocketAddr,
    /// Where the connection would be made (a service VIP already resolved to an endpoint; via a
    /// waypoint, the requested address itself).
    pub target: SocketAddr,
    /// The requested destination always resolves to `target` (a pod address, or a service with
    /// one endpoint), so a verdict about it can be reused.
    pub fixed: bool,
    /// The waypoint the destination must go through, if any (see the module doc for which).
    pub waypoint: Option<Waypoint<'a>>,
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
    /// Over HBONE to a waypoint instance, which carries it on to the destination.
    Waypoint {
        /// `namespace/name` of the waypoint.
        waypoint: String,
        /// The instance's HBONE address (`<instance-ip>:15008`).
        instance: SocketAddr,
        /// The instance's identity, required of its certificate.
        identity: Identity,
        /// The CONNECT authority: the original destination (service `VIP:port` or
        /// `pod-ip:port`), not an endpoint chosen here.
        authority: SocketAddr,
    },
    /// In plaintext, from inside the source pod.
    Plaintext,
    /// Refused.
    Deny(DenyReason),
}

/// Why a waypoint cannot carry a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No instance of the waypoint has an address.
    NoInstance,
    /// This node has no workload certificates, so it cannot speak HBONE to the waypoint.
    NoCertificates,
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
        /// Why.
        why: Unavailable,
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
                write!(
                    f,
                    "port {port} is the agent's own port, never a destination"
                )
            }
            DenyReason::WaypointUnavailable { waypoint, why } => {
                let why = match why {
                    Unavailable::NoInstance => "has no running instance",
                    Unavailable::NoCertificates => {
                        "cannot be reached from a node without workload certificates"
                    }
                };
                write!(
                    f,
                    "the destination uses waypoint {waypoint}, which {why}: refused rather than bypassed"
                )
            }
        }
    }
}

/// Decides the route of a captured connection.
pub fn decide(dst: &Destination<'_>, trust_domain: &str) -> Route {
    if AGENT_POD_PORTS.contains(&dst.target.port()) {
        return Route::Deny(DenyReason::AgentPort(dst.target.port()));
    }
    if let Some(waypoint) = &dst.waypoint {
        return through_waypoint(dst, waypoint, trust_domain);
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

fn through_waypoint(dst: &Destination<'_>, wp: &Waypoint<'_>, trust_domain: &str) -> Route {
    let waypoint = format!("{}/{}", wp.waypoint.namespace, wp.waypoint.name);
    let deny = |why| {
        Route::Deny(DenyReason::WaypointUnavailable {
            waypoint: waypoint.clone(),
            why,
        })
    };
    if !dst.tunnel {
        return deny(Unavailable::NoCertificates);
    }
    let v4 = dst.requested.is_ipv4();
    let of_family = |w: &'_ Workload| w.addresses.iter().copied().find(|ip| ip.is_ipv4() == v4);
    let mut candidates: Vec<(&Workload, IpAddr)> = wp
        .instances
        .iter()
        .filter_map(|w| Some((w, of_family(w)?)))
        .collect();
    if candidates.is_empty() {
        candidates = wp
            .instances
            .iter()
            .filter_map(|w| Some((w, *w.addresses.first()?)))
            .collect();
    }
    if candidates.is_empty() {
        return deny(Unavailable::NoInstance);
    }
    // The remainder is below the length, so it fits and indexes.
    let (instance, ip) = candidates[(spread(dst.source) % candidates.len() as u64) as usize];
    Route::Waypoint {
        waypoint,
        instance: SocketAddr::new(ip, HBONE),
        identity: instance.identity(trust_domain),
        authority: dst.requested,
    }
}

/// FNV-1a (64 bits) of a socket address: stable across builds and platforms, unlike std's
/// `DefaultHasher`, so a log line's instance choice can be retraced.
fn spread(addr: SocketAddr) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let ip = match addr.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    };
    ip.iter()
        .chain(addr.port().to_be_bytes().iter())
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(
        uid: &str,
        sa: &str,
        addresses: &[&str],
        waypoint: Option<&WaypointRef>,
    ) -> Workload {
        let (namespace, name) = uid.split_once('/').expect("namespace/name");
        Workload {
            locality: Default::default(),
            workload_name: String::new(),
            uid: uid.into(),
            name: name.into(),
            namespace: namespace.into(),
            service_account: sa.into(),
            node: "node2".into(),
            addresses: addresses.iter().map(|a| a.parse().expect("ip")).collect(),
            meshed: true,
            labels: Default::default(),
            waypoint: waypoint.cloned(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    /// One row of the table: the destination and the route it gets.
    struct Case<'a> {
        case: &'a str,
        requested: &'a str,
        /// Empty: the requested address.
        target: &'a str,
        fixed: bool,
        waypoint: Option<Waypoint<'a>>,
        meshed: Option<&'a Workload>,
        local: bool,
        tunnel: bool,
        want: Route,
    }

    fn base<'a>() -> Case<'a> {
        Case {
            case: "",
            requested: "198.18.2.10:8080",
            target: "",
            fixed: true,
            waypoint: None,
            meshed: None,
            local: false,
            tunnel: true,
            want: Route::Plaintext,
        }
    }

    #[test]
    fn routes() {
        let wp = WaypointRef {
            name: "wp".into(),
            namespace: "apps".into(),
            addresses: Vec::new(),
        };
        let plain = workload("apps/server", "server", &["198.18.2.10"], None);
        let behind = workload("apps/server", "server", &["198.18.2.10"], Some(&wp));
        let wp_a = workload("apps/wp-a", "wp-a", &["198.18.1.50", "fd18:1::50"], None);
        let wp_b = workload("apps/wp-b", "wp-b", &["198.18.3.51"], None);
        let wp_c = workload("apps/wp-c", "wp-c", &["fd18:3::52"], None);
        let ghost = workload("apps/wp-ghost", "wp", &[], None);
        let (only_a, only_b, c_and_b, no_instance, no_address) = (
            [wp_a.clone()],
            [wp_b.clone()],
            [wp_c.clone(), wp_b.clone()],
            [],
            [ghost],
        );
        let through = |instances| {
            Some(Waypoint {
                waypoint: &wp,
                instances,
            })
        };
        let via = |instance: &str, sa: &str, authority: &str| Route::Waypoint {
            waypoint: "apps/wp".into(),
            instance: addr(instance),
            identity: Identity::new("cluster.local", "apps", sa),
            authority: addr(authority),
        };
        let unavailable = |why| {
            Route::Deny(DenyReason::WaypointUnavailable {
                waypoint: "apps/wp".into(),
                why,
            })
        };
        let hbone = Route::Hbone {
            identity: Identity::new("cluster.local", "apps", "server"),
        };
        let agent_port = |p| Route::Deny(DenyReason::AgentPort(p));
        #[rustfmt::skip]
        let cases = vec![
            Case { case: "meshed pod elsewhere", meshed: Some(&plain), want: hbone.clone(), ..base() },
            Case { case: "meshed pod, no certificates", meshed: Some(&plain), tunnel: false, want: Route::Plaintext, ..base() },
            Case { case: "outside the mesh", requested: "198.18.2.20:80", want: Route::Plaintext, ..base() },
            Case { case: "same node, fixed", requested: "198.18.1.10:8080", meshed: Some(&plain), local: true, want: Route::Local { reuse_in_kernel: true }, ..base() },
            Case { case: "same node via a service of 2 endpoints", requested: "198.19.0.10:80", target: "198.18.1.10:8080", fixed: false, meshed: Some(&plain), local: true, want: Route::Local { reuse_in_kernel: false }, ..base() },
            Case { case: "agent outbound port", requested: "198.18.2.10:15001", meshed: Some(&plain), want: agent_port(15001), ..base() },
            Case { case: "agent inbound port", requested: "198.18.2.10:15006", meshed: Some(&plain), want: agent_port(15006), ..base() },
            Case { case: "agent HBONE port", requested: "[fd18:2::10]:15008", meshed: Some(&plain), want: agent_port(15008), ..base() },
            Case { case: "agent port of a local pod", requested: "198.18.1.10:15006", meshed: Some(&plain), local: true, want: agent_port(15006), ..base() },
            Case { case: "agent port outside the mesh", requested: "198.18.0.2:15008", want: agent_port(15008), ..base() },
            Case { case: "agent port of a pod behind a waypoint", requested: "198.18.2.10:15008", meshed: Some(&behind), waypoint: through(&only_a), want: agent_port(15008), ..base() },
            Case { case: "service with a waypoint: its instance, authority the VIP", requested: "198.19.0.10:80", fixed: false, waypoint: through(&only_a), want: via("198.18.1.50:15008", "wp-a", "198.19.0.10:80"), ..base() },
            Case { case: "service without one resolved to a pod behind one: authority still what was requested", requested: "198.19.0.12:81", target: "198.18.2.10:8080", fixed: false, meshed: Some(&behind), waypoint: through(&only_a), want: via("198.18.1.50:15008", "wp-a", "198.19.0.12:81"), ..base() },
            Case { case: "pod address behind a waypoint: authority the pod address", meshed: Some(&behind), waypoint: through(&only_a), want: via("198.18.1.50:15008", "wp-a", "198.18.2.10:8080"), ..base() },
            Case { case: "same node goes through the waypoint, never local", requested: "198.18.1.10:8080", meshed: Some(&behind), local: true, waypoint: through(&only_a), want: via("198.18.1.50:15008", "wp-a", "198.18.1.10:8080"), ..base() },
            Case { case: "v6 destination: the instance's v6 address", requested: "[fd19::10]:80", fixed: false, waypoint: through(&only_a), want: via("[fd18:1::50]:15008", "wp-a", "[fd19::10]:80"), ..base() },
            Case { case: "v6 destination, instance v4 only: its v4 address", requested: "[fd19::10]:80", fixed: false, waypoint: through(&only_b), want: via("198.18.3.51:15008", "wp-b", "[fd19::10]:80"), ..base() },
            Case { case: "v4 destination: only the instance of that family", requested: "198.19.0.10:80", fixed: false, waypoint: through(&c_and_b), want: via("198.18.3.51:15008", "wp-b", "198.19.0.10:80"), ..base() },
            Case { case: "v6 destination: only the instance of that family", requested: "[fd19::10]:80", fixed: false, waypoint: through(&c_and_b), want: via("[fd18:3::52]:15008", "wp-c", "[fd19::10]:80"), ..base() },
            Case { case: "waypoint without instance", meshed: Some(&behind), waypoint: through(&no_instance), want: unavailable(Unavailable::NoInstance), ..base() },
            Case { case: "waypoint whose instances have no address", meshed: Some(&behind), waypoint: through(&no_address), want: unavailable(Unavailable::NoInstance), ..base() },
            Case { case: "local pod, waypoint without instance: refused, not delivered", requested: "198.18.1.10:8080", meshed: Some(&behind), local: true, waypoint: through(&no_instance), want: unavailable(Unavailable::NoInstance), ..base() },
            Case { case: "waypoint, no certificates: refused, not plaintext", meshed: Some(&behind), waypoint: through(&only_a), tunnel: false, want: unavailable(Unavailable::NoCertificates), ..base() },
        ];
        for c in cases {
            let requested = addr(c.requested);
            let dst = Destination {
                source: addr("198.18.1.10:40000"),
                requested,
                target: if c.target.is_empty() {
                    requested
                } else {
                    addr(c.target)
                },
                fixed: c.fixed,
                waypoint: c.waypoint,
                meshed: c.meshed,
                local: c.local,
                tunnel: c.tunnel,
            };
            assert_eq!(decide(&dst, "cluster.local"), c.want, "{}", c.case);
        }
    }

    #[test]
    fn instances_are_picked_by_source_deterministically_and_spread() {
        let wp = WaypointRef {
            name: "wp".into(),
            namespace: "apps".into(),
            addresses: Vec::new(),
        };
        let instances: Vec<Workload> = (0..3)
            .map(|i| {
                workload(
                    &format!("apps/wp-{i}"),
                    "wp",
                    &[&format!("198.18.1.{}", 50 + i)],
                    None,
                )
            })
            .collect();
        let pick = |source: SocketAddr| {
            let dst = Destination {
                source,
                requested: addr("198.19.0.10:80"),
                target: addr("198.19.0.10:80"),
                fixed: false,
                waypoint: Some(Waypoint {
                    waypoint: &wp,
                    instances: &instances,
                }),
                meshed: None,
                local: false,
                tunnel: true,
            };
            match decide(&dst, "cluster.local") {
                Route::Waypoint { instance, .. } => instance,
                other => panic!("not through the waypoint: {other:?}"),
            }
        };
        // FNV-1a of ::ffff:198.18.1.10 and port 40000 is 0x7ca9016bc229630c, 0 mod 3.
        assert_eq!(spread(addr("198.18.1.10:40000")), 0x7ca9_016b_c229_630c);
        assert_eq!(pick(addr("198.18.1.10:40000")), addr("198.18.1.50:15008"));
        let mut seen = std::collections::BTreeMap::new();
        for port in 40_000..40_300 {
            let source = addr(&format!("198.18.1.10:{port}"));
            let first = pick(source);
            assert_eq!(
                pick(source),
                first,
                "the same client socket, the same instance"
            );
            *seen.entry(first).or_insert(0u32) += 1;
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(
            seen.values().all(|&n| n >= 60),
            "300 connections spread over 3: {seen:?}"
        );
    }

    #[test]
    fn deny_reasons_have_metric_labels_and_messages() {
        let reason = DenyReason::AgentPort(15006);
        assert_eq!(reason.metric_label(), "agent_port");
        assert!(reason.to_string().contains("15006"));
        for (why, says) in [
            (Unavailable::NoInstance, "no running instance"),
            (Unavailable::NoCertificates, "without workload certificates"),
        ] {
            let reason = DenyReason::WaypointUnavailable {
                waypoint: "apps/wp".into(),
                why,
            };
            assert_eq!(reason.metric_label(), "waypoint_unavailable");
            let text = reason.to_string();
            assert!(text.contains("apps/wp") && text.contains(says), "{text}");
        }
    }
}

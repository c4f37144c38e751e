//! The well-known ports of the data plane (the same numbers Istio ambient uses).

/// In each enrolled pod: captured outbound connections arrive here (on loopback).
pub const OUTBOUND_CAPTURE: u16 = 15001;
/// In each enrolled pod: plaintext inbound connections steered by `sk_lookup` arrive here.
pub const INBOUND_PLAINTEXT: u16 = 15006;
/// In each enrolled pod and on waypoints: HBONE (HTTP/2 CONNECT over mTLS).
pub const HBONE: u16 = 15008;
/// Agent admin endpoint (node network namespace, loopback only).
pub const ADMIN: u16 = 15000;
/// Agent Prometheus metrics.
pub const METRICS: u16 = 15020;
/// Agent readiness probe.
pub const READINESS: u16 = 15021;

/// Ports the agent itself listens on inside a pod: never captured nor steered.
pub const AGENT_POD_PORTS: [u16; 3] = [OUTBOUND_CAPTURE, INBOUND_PLAINTEXT, HBONE];

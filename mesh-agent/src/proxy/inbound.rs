//! Inbound plaintext: connections for a pod's application ports, steered by `sk_lookup` to the
//! pod's 15006 listener. The accepted socket's local address is the original destination; one
//! that names an agent port or an address that is not the pod's is refused ([`refusal`], the
//! destination check of every path that delivers into a pod), so the agent never connects to
//! itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use mesh_common::model::PeerAuthMode;
use mesh_common::ports::AGENT_POD_PORTS;

use crate::authz::{self, Decision};
use crate::live;
use crate::metrics::{ConnectionLabels, Transport};
use crate::pod_context::PodContext;
use crate::proxy::{accept_loop, relay_live};
use mesh_hbone::relay;

/// Accepts steered connections until the task is aborted.
pub async fn serve(listener: TcpListener, pod: Arc<PodContext>) {
    accept_loop(listener, pod, |stream, peer, pod| async move {
        handle(stream, peer, &pod).await
    })
    .await;
}

/// Why a destination inside a pod is refused before any policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The port is one of the agent's in-pod ports (15001, 15006, 15008): delivering there
    /// would make the agent connect to itself (a direct connection to `<pod>:15006` arrives on
    /// 15006 with exactly that local address).
    AgentPort(u16),
    /// The address is not one of the pod's (loopback, the node's, another pod's): the agent only
    /// delivers to the pod it serves.
    NotPodAddress(IpAddr),
}

impl Refusal {
    /// The `reason` label of `mesh_agent_connections_denied`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Refusal::AgentPort(_) => "agent_port",
            Refusal::NotPodAddress(_) => "not_pod_address",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::AgentPort(port) => {
                write!(
                    f,
                    "port {port} is the agent's own port, never a destination"
                )
            }
            Refusal::NotPodAddress(ip) => write!(f, "{ip} is not an address of this pod"),
        }
    }
}

/// Whether a connection for `dst` may be delivered into the pod whose addresses are
/// `addresses`: `None` if so, else why not. Exact comparison: a v4-mapped form of a pod address
/// is not the pod's address (the kernel never produces one here; a CONNECT authority might).
pub fn refusal(dst: SocketAddr, addresses: &[IpAddr]) -> Option<Refusal> {
    if AGENT_POD_PORTS.contains(&dst.port()) {
        return Some(Refusal::AgentPort(dst.port()));
    }
    if !addresses.contains(&dst.ip()) {
        return Some(Refusal::NotPodAddress(dst.ip()));
    }
    None
}

/// Counts a refusal of a connection into `pod` and logs it once per burst (a client can open
/// refused connections at will; a log line each would make the log the bottleneck).
pub fn record_refusal(
    pod: &PodContext,
    refusal: Refusal,
    path: &'static str,
    peer: &dyn std::fmt::Display,
    dst: SocketAddr,
) {
    if let Some(unlogged) = pod.metrics.refuse(&pod.info.uid, refusal.metric_label()) {
        warn!(dst.workload = %pod.info.uid, src = %peer, dst.original = %dst, reason = %refusal, path, unlogged, "inbound connection refused (logged once per burst)");
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, pod: &PodContext) {
    let Ok(dst) = stream.local_addr() else { return };
    if let Some(refusal) = refusal(dst, &pod.info.addresses) {
        record_refusal(pod, refusal, "plaintext", &peer, dst);
        return; // dropping the stream closes it; nothing was read from it
    }
    let _ = stream.set_nodelay(true);
    // Registered before the model is read: a change from here on re-authorizes it.
    let inputs = live::Inputs {
        peer: None,
        src: peer.ip(),
        dst_port: dst.port(),
        via: live::Via::Plaintext,
    };
    let Some(live) = pod.live.register(&pod.info.uid, || pod.announced(), inputs) else {
        pod.metrics.refuse(&pod.info.uid, "live_limit");
        return;
    };
    let workload = pod.workload();
    let (snapshot, fail_safe) = pod.state.policies();
    // Plaintext from outside the mesh: PeerAuthentication STRICT refuses it.
    if snapshot.peer_auth_mode(&workload, dst.port()) == PeerAuthMode::Strict {
        warn!(dst.workload = %pod.info.uid, src.address = %peer, dst.original = %dst, "plaintext connection refused: PeerAuthentication is STRICT");
        pod.metrics
            .record_denied(&pod.info.uid, "peer_authentication");
        return;
    }
    let conn = authz::Connection {
        peer: None,
        src: peer.ip(),
        dst_port: dst.port(),
    };
    if let Decision::Deny(denied) =
        authz::check(&snapshot, &fail_safe, &workload, conn, &pod.metrics)
    {
        if let Some(unlogged) = authz::count_denial(&pod.metrics, &pod.info.uid, &denied) {
            warn!(dst.workload = %pod.info.uid, src.address = %peer, dst.original = %dst, reason = %denied, unlogged, "plaintext connection denied");
        }
        return;
    }
    info!(dst.workload = %pod.info.uid, src.address = %peer, dst.original = %dst, "inbound plaintext connection");
    let remote = crate::istio_conn::Remote {
        ip: Some(peer.ip()),
        identity: None,
    };
    let labels = crate::istio_conn::inbound(
        pod,
        ConnectionLabels::inbound(&pod.info.uid, Transport::Plaintext),
        &remote,
        dst.port(),
        mesh_common::istio_metrics::Security::None,
        crate::istio_conn::Ends {
            source: Some(peer),
            original: Some(dst),
            upstream: Some(dst),
        },
    );
    pod.metrics.record_open(&labels);
    // Delivered from inside the pod (source = the pod's own address), which `sk_lookup` skips.
    // Boxed: a one-off future whose space would otherwise stay in the task for the relay.
    match Box::pin(pod.netns.connect(dst)).await {
        Ok(upstream) => {
            let relay = relay::tcp_tcp(stream, upstream);
            relay_live(relay, live, false, &[&labels], &pod.metrics).await
        }
        Err(e) => {
            warn!(pod = %pod.info.uid, %dst, error = %e, "inbound delivery failed");
            pod.metrics.record_relay(&labels, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_inside_a_pod() {
        let pod: Vec<IpAddr> = vec![
            "198.18.1.10".parse().expect("ip"),
            "fd18:1::10".parse().expect("ip"),
        ];
        let agent = |p| Some(Refusal::AgentPort(p));
        let foreign = |ip: &str| Some(Refusal::NotPodAddress(ip.parse().expect("ip")));
        // (case, destination, expected)
        #[rustfmt::skip]
        let cases = [
            ("application port, v4", "198.18.1.10:8080", None),
            ("application port, v6", "[fd18:1::10]:8080", None),
            ("plaintext port on the pod address", "198.18.1.10:15006", agent(15006)),
            ("plaintext port, v6", "[fd18:1::10]:15006", agent(15006)),
            ("HBONE port", "198.18.1.10:15008", agent(15008)),
            ("HBONE port, v6", "[fd18:1::10]:15008", agent(15008)),
            ("outbound capture port", "198.18.1.10:15001", agent(15001)),
            ("outbound capture port, v6", "[fd18:1::10]:15001", agent(15001)),
            ("loopback plaintext port", "127.0.0.1:15006", agent(15006)),
            ("v6 loopback plaintext port", "[::1]:15006", agent(15006)),
            ("loopback application port", "127.0.0.1:8080", foreign("127.0.0.1")),
            ("v6 loopback application port", "[::1]:8080", foreign("::1")),
            ("node address", "198.18.0.1:8080", foreign("198.18.0.1")),
            ("another pod", "198.18.1.11:8080", foreign("198.18.1.11")),
            ("v4-mapped pod address", "[::ffff:198.18.1.10]:8080", foreign("::ffff:198.18.1.10")),
            ("v4-mapped, agent port", "[::ffff:198.18.1.10]:15006", agent(15006)),
            ("unspecified", "0.0.0.0:8080", foreign("0.0.0.0")),
        ];
        for (case, dst, want) in cases {
            let dst: SocketAddr = dst.parse().expect("test address");
            assert_eq!(refusal(dst, &pod), want, "{case}");
        }
    }

    #[test]
    fn refusals_have_metric_labels_and_messages() {
        let r = Refusal::AgentPort(15008);
        assert_eq!(r.metric_label(), "agent_port");
        assert!(r.to_string().contains("15008"));
        let r = Refusal::NotPodAddress("127.0.0.1".parse().expect("ip"));
        assert_eq!(r.metric_label(), "not_pod_address");
        assert!(r.to_string().contains("127.0.0.1"));
    }
}

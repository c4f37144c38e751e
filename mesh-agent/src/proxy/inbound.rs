//! Inbound plaintext: connections for a pod's application ports, steered by `sk_lookup` to the
//! pod's 15006 listener. The accepted socket's local address is the original destination.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use mesh_common::model::PeerAuthMode;

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

async fn handle(stream: TcpStream, peer: SocketAddr, pod: &PodContext) {
    let Ok(dst) = stream.local_addr() else { return };
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
    let labels = ConnectionLabels::inbound(&pod.info.uid, Transport::Plaintext);
    pod.metrics.connections_opened.get_or_create(&labels).inc();
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

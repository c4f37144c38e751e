//! Inbound plaintext: connections for a pod's application ports, steered by `sk_lookup` to the
//! pod's 15006 listener. The accepted socket's local address is the original destination.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use mesh_common::model::PeerAuthMode;

use crate::authz::{self, Decision};
use crate::metrics::{ConnectionLabels, Transport};
use crate::pod_context::PodContext;
use crate::proxy::{accept_loop, relay_and_record};
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
    let workload = pod.workload();
    let snapshot = pod.state.snapshot();
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
    if let Decision::Deny(reason) = authz::authorize(&snapshot, &workload, conn) {
        warn!(dst.workload = %pod.info.uid, src.address = %peer, dst.original = %dst, %reason, "plaintext connection denied");
        pod.metrics.record_denied(&pod.info.uid, "policy");
        return;
    }
    info!(dst.workload = %pod.info.uid, src.address = %peer, dst.original = %dst, "inbound plaintext connection");
    let labels = ConnectionLabels::inbound(&pod.info.uid, Transport::Plaintext);
    pod.metrics.connections_opened.get_or_create(&labels).inc();
    // Delivered from inside the pod (source = the pod's own address), which `sk_lookup` skips.
    // Boxed: a one-off future whose space would otherwise stay in the task for the relay.
    match Box::pin(pod.netns.connect(dst)).await {
        Ok(upstream) => {
            relay_and_record(relay::tcp_tcp(stream, upstream), &[&labels], &pod.metrics).await
        }
        Err(e) => {
            warn!(pod = %pod.info.uid, %dst, error = %e, "inbound delivery failed");
            pod.metrics.record_relay(&labels, 0, 0);
        }
    }
}

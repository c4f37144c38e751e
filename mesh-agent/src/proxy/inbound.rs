//! Inbound plaintext: connections for a pod's application ports, steered by `sk_lookup` to the
//! pod's 15006 listener. The accepted socket's local address is the original destination.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use mesh_common::model::PeerAuthMode;

use crate::authz::{self, Decision};
use crate::metrics::{ConnectionLabels, DenyLabels, Direction, Transport};
use crate::pods::PodContext;
use crate::proxy::relay_and_record;

/// Accepts steered connections until the task is aborted.
pub async fn serve(listener: TcpListener, pod: Arc<PodContext>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let pod = pod.clone();
                tokio::spawn(async move { handle(stream, peer, &pod).await });
            }
            Err(e) => {
                warn!(pod = %pod.info.uid, error = %e, "inbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(stream: TcpStream, peer: std::net::SocketAddr, pod: &PodContext) {
    let Ok(dst) = stream.local_addr() else { return };
    let _ = stream.set_nodelay(true);
    let workload = pod.workload();
    let snapshot = pod.state.snapshot();
    // Plaintext from outside the mesh: PeerAuthentication STRICT refuses it.
    if snapshot.peer_auth_mode(&workload, dst.port()) == PeerAuthMode::Strict {
        warn!(dst.workload = %pod.info.uid, src.address = %peer, dst.original = %dst, "plaintext connection refused: PeerAuthentication is STRICT");
        deny(pod, "peer_authentication");
        return;
    }
    let conn = authz::Connection {
        peer: None,
        src: peer.ip(),
        dst_port: dst.port(),
    };
    if let Decision::Deny(reason) = authz::authorize(&snapshot, &workload, conn) {
        warn!(dst.workload = %pod.info.uid, src.address = %peer, dst.original = %dst, %reason, "plaintext connection denied");
        deny(pod, "policy");
        return;
    }
    info!(dst.workload = %pod.info.uid, src.address = %peer, dst.original = %dst, "inbound plaintext connection");
    let labels = ConnectionLabels {
        direction: Direction::Inbound,
        transport: Transport::Plaintext,
        workload: pod.info.uid.clone(),
        destination_service: "unknown".into(),
    };
    pod.metrics.connections_opened.get_or_create(&labels).inc();
    // Delivered from inside the pod (source = the pod's own address), which `sk_lookup` skips.
    match pod.netns.connect(dst).await {
        Ok(upstream) => relay_and_record(stream, upstream, &[&labels], &pod.metrics).await,
        Err(e) => {
            warn!(pod = %pod.info.uid, %dst, error = %e, "inbound delivery failed");
            pod.metrics.record_relay(&labels, 0, 0);
        }
    }
}

fn deny(pod: &PodContext, reason: &str) {
    pod.metrics
        .denied
        .get_or_create(&DenyLabels {
            workload: pod.info.uid.clone(),
            reason: reason.into(),
        })
        .inc();
}

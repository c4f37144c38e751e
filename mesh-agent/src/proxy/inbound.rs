//! Inbound plaintext: connections for a pod's application ports, steered by `sk_lookup` to the
//! pod's 15006 listener. The accepted socket's local address is the original destination.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::metrics::{ConnectionLabels, Direction, Transport};
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
        Ok(upstream) => relay_and_record(stream, upstream, &labels, &pod.metrics).await,
        Err(e) => {
            warn!(pod = %pod.info.uid, %dst, error = %e, "inbound delivery failed");
            pod.metrics.record_relay(&labels, 0, 0);
        }
    }
}

//! Outbound: connections captured by `cgroup/connect{4,6}` arrive on the pod's 15001 listener.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::metrics::{ConnectionLabels, Direction, Transport};
use crate::pods::PodContext;
use crate::proxy::relay_and_record;
use crate::state::Resolved;

/// Accepts captured connections until the task is aborted.
pub async fn serve(listener: TcpListener, pod: Arc<PodContext>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let pod = pod.clone();
                tokio::spawn(async move { handle(stream, &pod).await });
            }
            Err(e) => {
                warn!(pod = %pod.info.uid, error = %e, "outbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(stream: TcpStream, pod: &PodContext) {
    let Ok(peer) = stream.peer_addr() else { return };
    let Some(orig_dst) = pod.programs.take_original_dst(pod.netns.cookie(), peer) else {
        warn!(pod = %pod.info.uid, %peer, "outbound connection without a recorded original destination; closing");
        return;
    };
    let resolved = match pod.state.resolve(orig_dst) {
        Ok(resolved) => resolved,
        Err(e) => {
            warn!(pod = %pod.info.uid, %orig_dst, error = %e, "outbound destination unresolvable; closing");
            return;
        }
    };
    let target = resolved.target();
    info!(
        src.workload = %pod.info.uid,
        src.identity = %pod.identity,
        dst.original = %orig_dst,
        dst.target = %target,
        "outbound connection captured"
    );
    let labels = ConnectionLabels {
        direction: Direction::Outbound,
        transport: Transport::Plaintext,
        workload: pod.info.uid.clone(),
        destination_service: match &resolved {
            Resolved::Service {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
            Resolved::Direct(_) => "unknown".into(),
        },
    };
    pod.metrics.connections_opened.get_or_create(&labels).inc();
    match pod.netns.connect(target).await {
        Ok(upstream) => relay_and_record(stream, upstream, &labels, &pod.metrics).await,
        Err(e) => {
            warn!(pod = %pod.info.uid, %target, error = %e, "outbound connect failed");
            pod.metrics.record_relay(&labels, 0, 0);
        }
    }
}

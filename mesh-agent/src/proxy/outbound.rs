//! Outbound: connections captured by `cgroup/connect{4,6}` arrive on the pod's 15001 listener.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::pods::PodContext;
use crate::proxy::relay;

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
    let upstream = match pod.netns.connect(target).await {
        Ok(upstream) => upstream,
        Err(e) => {
            warn!(pod = %pod.info.uid, %target, error = %e, "outbound connect failed");
            return;
        }
    };
    match relay(stream, upstream).await {
        Ok((sent, received)) => {
            debug!(pod = %pod.info.uid, %target, sent, received, "outbound closed")
        }
        Err(e) => debug!(pod = %pod.info.uid, %target, error = %e, "outbound relay ended"),
    }
}

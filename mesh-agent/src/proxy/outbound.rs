//! Outbound: connections captured by `cgroup/connect{4,6}` arrive on the pod's 15001 listener.

use std::sync::Arc;

use std::net::SocketAddr;

use mesh_common::ports::HBONE;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::metrics::{ConnectionLabels, Direction, Transport};
use crate::pods::PodContext;
use crate::proxy::{accept_loop, local, relay_and_record};
use crate::state::Resolved;
use crate::tunnel::Tunnel;
use mesh_common::identity::Identity;
use mesh_hbone::relay;

/// Accepts captured connections until the task is aborted.
pub async fn serve(listener: TcpListener, pod: Arc<PodContext>) {
    accept_loop(listener, pod, |stream, peer, pod| async move {
        handle(stream, peer, &pod).await
    })
    .await;
}

async fn handle(stream: TcpStream, peer: SocketAddr, pod: &PodContext) {
    let _ = stream.set_nodelay(true);
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
    let destination_service = match &resolved {
        Resolved::Service {
            namespace, name, ..
        } => format!("{namespace}/{name}"),
        Resolved::Direct(_) => "unknown".into(),
    };
    // A captured pod of this node is delivered to directly; a meshed pod elsewhere over HBONE
    // when this node has certificates; anything else in plaintext.
    let route = match pod.local.get(target.ip()) {
        Some(dst) => Route::Local(dst),
        None => match pod
            .tunnel
            .as_ref()
            .zip(pod.state.meshed_workload(target.ip()))
        {
            Some((tunnel, workload)) => Route::Hbone(
                tunnel.clone(),
                workload.identity(&pod.identity.trust_domain),
            ),
            None => Route::Plaintext,
        },
    };
    let labels = ConnectionLabels {
        direction: Direction::Outbound,
        transport: route.transport(),
        workload: pod.info.uid.clone(),
        destination_service,
    };
    info!(
        src.workload = %pod.info.uid,
        src.identity = %pod.identity,
        dst.original = %orig_dst,
        dst.target = %target,
        transport = ?labels.transport,
        "outbound connection captured"
    );
    pod.metrics.connections_opened.get_or_create(&labels).inc();
    match route {
        Route::Local(dst) => {
            // The kernel may reuse the decision only if this destination always resolves here.
            let requested = resolved.is_fixed().then_some(orig_dst);
            local::deliver(stream, pod, &dst, target, requested, labels).await
        }
        Route::Hbone(tunnel, dst_identity) => {
            let peer = SocketAddr::new(target.ip(), HBONE);
            // Boxed: the pool's connect (TLS handshake on a cold pool) is a large future needed
            // once; inline, its space would stay in the task for the life of the connection.
            let connect = Box::pin(tunnel.connect_from_pod(
                &pod.netns,
                &pod.identity,
                &dst_identity,
                peer,
                target,
            ));
            match connect.await {
                Ok(upstream) => {
                    relay_and_record(relay::tcp_hbone(stream, upstream), &[&labels], &pod.metrics)
                        .await
                }
                Err(e) => {
                    warn!(pod = %pod.info.uid, %target, dst.identity = %dst_identity, error = %e, "outbound HBONE connect failed");
                    pod.metrics.record_relay(&labels, 0, 0);
                }
            }
        }
        Route::Plaintext => match Box::pin(pod.netns.connect(target)).await {
            Ok(upstream) => {
                relay_and_record(relay::tcp_tcp(stream, upstream), &[&labels], &pod.metrics).await
            }
            Err(e) => {
                warn!(pod = %pod.info.uid, %target, error = %e, "outbound connect failed");
                pod.metrics.record_relay(&labels, 0, 0);
            }
        },
    }
}

/// How a captured connection is carried.
enum Route {
    /// To a captured pod of this node, directly.
    Local(Arc<PodContext>),
    /// Over HBONE, expecting this identity.
    Hbone(Arc<Tunnel>, Identity),
    /// In plaintext.
    Plaintext,
}

impl Route {
    fn transport(&self) -> Transport {
        match self {
            Route::Local(_) => Transport::Local,
            Route::Hbone(..) => Transport::Hbone,
            Route::Plaintext => Transport::Plaintext,
        }
    }
}

//! Outbound: connections captured by `cgroup/connect{4,6}` arrive on the pod's 15001 listener.

use std::sync::Arc;

use std::net::SocketAddr;

use mesh_common::ports::HBONE;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::metrics::{ConnectionLabels, Direction, Transport};
use crate::pod_context::PodContext;
use crate::proxy::route::{self, Destination, Route};
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
        // Not captured: a direct connection to the 15001 listener (an application connecting
        // to its own loopback:15001). Counted and logged once per burst; it can be repeated at will.
        if let Some(unlogged) = pod.metrics.refuse(&pod.info.uid, "no_original_destination") {
            warn!(pod = %pod.info.uid, %peer, unlogged, "outbound connection without a recorded original destination refused (logged once per burst)");
        }
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
    let (destination_service, service_waypoint) = match &resolved {
        Resolved::Service {
            namespace,
            name,
            waypoint,
            ..
        } => (format!("{namespace}/{name}"), waypoint.as_ref()),
        Resolved::Direct(_) => ("unknown".into(), None),
    };
    let local = pod.local.get(target.ip());
    let meshed = pod.state.meshed_workload(target.ip());
    let route = route::decide(
        &Destination {
            target,
            fixed: resolved.is_fixed(),
            service_waypoint,
            meshed: meshed.as_ref(),
            local: local.is_some(),
            tunnel: pod.tunnel.is_some(),
        },
        &pod.identity.trust_domain,
    );
    let labels = ConnectionLabels {
        direction: Direction::Outbound,
        transport: transport(&route),
        workload: pod.info.uid.clone(),
        destination_service,
    };
    if let Route::Deny(reason) = &route {
        if let Some(unlogged) = pod.metrics.refuse(&pod.info.uid, reason.metric_label()) {
            warn!(src.workload = %pod.info.uid, dst.original = %orig_dst, dst.target = %target, %reason, unlogged, "outbound connection refused (logged once per burst)");
        }
        return;
    }
    info!(
        src.workload = %pod.info.uid,
        src.identity = %pod.identity,
        dst.original = %orig_dst,
        dst.target = %target,
        transport = ?labels.transport,
        "outbound connection captured"
    );
    pod.metrics.connections_opened.get_or_create(&labels).inc();
    match (route, local, pod.tunnel.as_ref()) {
        (Route::Local { reuse_in_kernel }, Some(dst), _) => {
            // The kernel may reuse the decision only if this destination always resolves here.
            let requested = reuse_in_kernel.then_some(orig_dst);
            local::deliver(stream, pod, &dst, target, requested, labels).await
        }
        (Route::Hbone { identity }, _, Some(tunnel)) => {
            hbone(stream, pod, tunnel, &identity, target, &labels).await
        }
        (Route::Plaintext, ..) => match Box::pin(pod.netns.connect(target)).await {
            Ok(upstream) => {
                relay_and_record(relay::tcp_tcp(stream, upstream), &[&labels], &pod.metrics).await
            }
            Err(e) => {
                warn!(pod = %pod.info.uid, %target, error = %e, "outbound connect failed");
                pod.metrics.record_relay(&labels, 0, 0);
            }
        },
        // `decide` picks Local only for a local pod and HBONE only with a tunnel; anything else
        // is refused rather than carried some other way.
        (route, ..) => {
            warn!(pod = %pod.info.uid, %target, ?route, "route without the means to carry it; refused");
            pod.metrics.record_relay(&labels, 0, 0);
        }
    }
}

/// Carries a captured connection over HBONE to `target`'s 15008, expecting `dst_identity`.
async fn hbone(
    stream: TcpStream,
    pod: &PodContext,
    tunnel: &Tunnel,
    dst_identity: &Identity,
    target: SocketAddr,
    labels: &ConnectionLabels,
) {
    let peer = SocketAddr::new(target.ip(), HBONE);
    // Boxed: the pool's connect (TLS handshake on a cold pool) is a large future needed
    // once; inline, its space would stay in the task for the life of the connection.
    let connect =
        Box::pin(tunnel.connect_from_pod(&pod.netns, &pod.identity, dst_identity, peer, target));
    match connect.await {
        Ok(upstream) => {
            relay_and_record(relay::tcp_hbone(stream, upstream), &[labels], &pod.metrics).await
        }
        Err(e) => {
            warn!(pod = %pod.info.uid, %target, dst.identity = %dst_identity, error = %e, "outbound HBONE connect failed");
            pod.metrics.record_relay(labels, 0, 0);
        }
    }
}

/// The metrics' transport label of a route.
fn transport(route: &Route) -> Transport {
    match route {
        Route::Local { .. } => Transport::Local,
        Route::Hbone { .. } => Transport::Hbone,
        Route::Plaintext | Route::Deny(_) => Transport::Plaintext,
    }
}

//! Outbound: connections captured by `cgroup/connect{4,6}` arrive on the pod's 15001 listener
//! and are carried as `proxy::route` decides: through a waypoint, same node, HBONE, plaintext.

use std::sync::Arc;

use std::net::SocketAddr;

use mesh_common::ports::HBONE;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::istio_conn;
use crate::metrics::{Conn, ConnectionLabels, Direction, Transport};
use crate::pod_context::PodContext;
use crate::proxy::route::{self, Destination, Route};
use crate::proxy::{accept_loop, local, relay_and_record};
use crate::state::StateError;
use crate::tunnel::Tunnel;
use mesh_common::identity::Identity;
use mesh_common::istio_metrics::Security;
use mesh_hbone::hbone::HboneError;
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
    let resolved = match pod.state.resolve_from(orig_dst, Some(&pod.info.uid)) {
        Ok(resolved) => resolved,
        Err(e) => {
            if let Some(unlogged) = pod.metrics.refuse(&pod.info.uid, unresolvable(&e)) {
                warn!(pod = %pod.info.uid, %orig_dst, error = %e, unlogged, "outbound destination unresolvable; closing (logged once per burst)");
            }
            return;
        }
    };
    let target = resolved.target();
    let destination_service = resolved.service().unwrap_or_else(|| "unknown".into());
    let local = pod.local.get(target.ip());
    let meshed = pod.state.meshed_workload(target.ip());
    let waypoint = pod.state.waypoint(&resolved);
    let route = route::decide(
        &Destination {
            source: peer,
            requested: orig_dst,
            target,
            fixed: resolved.is_fixed(),
            waypoint: waypoint.as_ref().map(|w| route::Waypoint {
                waypoint: &w.waypoint,
                instances: &w.instances,
            }),
            meshed: meshed.as_ref(),
            local: local.is_some(),
            tunnel: pod.tunnel.is_some(),
        },
        &pod.identity.trust_domain,
    );
    let own = ConnectionLabels {
        direction: Direction::Outbound,
        transport: transport(&route),
        workload: pod.info.uid.clone(),
        destination_service: destination_service.clone(),
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
        transport = ?own.transport,
        "outbound connection captured"
    );
    let remote = match &route {
        Route::Hbone { identity } => istio_conn::remote(target, Some(identity)),
        Route::Waypoint {
            instance, identity, ..
        } => istio_conn::remote(*instance, Some(identity)),
        _ => istio_conn::remote(target, None),
    };
    let security = match &route {
        Route::Plaintext | Route::Deny(_) => Security::None,
        _ => Security::MutualTls,
    };
    let service = (destination_service != "unknown").then_some(destination_service.as_str());
    let ends = istio_conn::Ends {
        source: Some(peer),
        original: Some(orig_dst),
        upstream: Some(match &route {
            Route::Waypoint { instance, .. } => *instance,
            _ => target,
        }),
    };
    let labels = istio_conn::outbound(pod, own, &remote, service, security, ends);
    pod.metrics.record_open(&labels);
    match (route, local, pod.tunnel.as_ref()) {
        (Route::Local { reuse_in_kernel }, Some(dst), _) => {
            // The kernel may reuse the decision only if this destination always resolves here.
            let requested = reuse_in_kernel.then_some(orig_dst);
            local::deliver(stream, pod, &dst, target, requested, labels).await
        }
        (Route::Hbone { identity }, _, Some(tunnel)) => {
            hbone(stream, pod, tunnel, &identity, target, &labels).await
        }
        (
            Route::Waypoint {
                waypoint,
                instance,
                identity,
                authority,
            },
            _,
            Some(tunnel),
        ) => {
            let via = Via {
                waypoint: &waypoint,
                instance,
                identity: &identity,
                authority,
            };
            through_waypoint(stream, pod, tunnel, via, &labels).await
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
        // `decide` picks Local only for a local pod and HBONE (direct or through a waypoint)
        // only with a tunnel; anything else
        // is refused rather than carried some other way.
        (route, ..) => {
            warn!(pod = %pod.info.uid, %target, ?route, "route without the means to carry it; refused");
            pod.metrics.record_denied(&pod.info.uid, "no_route");
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
    labels: &Conn,
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

/// Where a connection through a waypoint goes.
#[derive(Debug, Clone, Copy)]
struct Via<'a> {
    waypoint: &'a str,
    instance: SocketAddr,
    identity: &'a Identity,
    authority: SocketAddr,
}

/// Carries a captured connection over HBONE to a waypoint instance, with the source pod's
/// identity and the original destination as authority. If the waypoint cannot be reached the
/// client's connection is closed at once: never carried around the waypoint.
async fn through_waypoint(
    stream: TcpStream,
    pod: &PodContext,
    tunnel: &Tunnel,
    via: Via<'_>,
    labels: &Conn,
) {
    // Boxed, as in `hbone`.
    let connect = Box::pin(tunnel.connect_from_pod(
        &pod.netns,
        &pod.identity,
        via.identity,
        via.instance,
        via.authority,
    ));
    match connect.await {
        Ok(upstream) => {
            relay_and_record(relay::tcp_hbone(stream, upstream), &[labels], &pod.metrics).await
        }
        Err(e) => {
            let reason = waypoint_failure(&e);
            if let Some(unlogged) = pod.metrics.refuse(&pod.info.uid, reason) {
                warn!(src.workload = %pod.info.uid, dst.original = %via.authority, waypoint = via.waypoint, waypoint.instance = %via.instance, waypoint.identity = %via.identity, error = %e, reason, unlogged, "waypoint did not take the connection: closed, not carried around it (logged once per burst)");
            }
            drop(stream);
            pod.metrics.record_relay(labels, 0, 0);
        }
    }
}

/// The `reason` label of a connection the waypoint did not take: it answered the CONNECT with
/// a refusal (`waypoint_refused`), or it could not be reached at all (`waypoint_unreachable`:
/// TCP, TLS, identity, HTTP/2, timeouts).
fn waypoint_failure(error: &HboneError) -> &'static str {
    match error {
        HboneError::Status(_) => "waypoint_refused",
        _ => "waypoint_unreachable",
    }
}

/// The `reason` label of a destination that does not resolve: a service without endpoints
/// (`no_endpoints`), or anything else (`unresolvable`).
fn unresolvable(error: &StateError) -> &'static str {
    match error {
        StateError::NoEndpoints { .. } => "no_endpoints",
        _ => "unresolvable",
    }
}

/// The metrics' transport label of a route.
fn transport(route: &Route) -> Transport {
    match route {
        Route::Local { .. } => Transport::Local,
        Route::Hbone { .. } => Transport::Hbone,
        Route::Waypoint { .. } => Transport::Waypoint,
        Route::Plaintext | Route::Deny(_) => Transport::Plaintext,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waypoint_failures_are_told_apart() {
        let peer: SocketAddr = "198.18.1.50:15008".parse().expect("addr");
        // (case, error, reason)
        let cases = [
            (
                "refused at TCP",
                HboneError::Connect {
                    peer,
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                },
                "waypoint_unreachable",
            ),
            (
                "silent",
                HboneError::Timeout {
                    step: mesh_hbone::hbone::Step::TcpConnect,
                    peer,
                    after: std::time::Duration::from_secs(1),
                },
                "waypoint_unreachable",
            ),
            ("lost", HboneError::PeerLost(peer), "waypoint_unreachable"),
            (
                "answered the CONNECT with a refusal",
                HboneError::Status(hyper::StatusCode::FORBIDDEN),
                "waypoint_refused",
            ),
        ];
        for (case, error, want) in cases {
            assert_eq!(waypoint_failure(&error), want, "{case}");
        }
    }

    #[test]
    fn unresolvable_destinations_are_told_apart() {
        let no_endpoints = StateError::NoEndpoints {
            namespace: "apps".into(),
            name: "web".into(),
        };
        assert_eq!(unresolvable(&no_endpoints), "no_endpoints");
        let other = StateError::Parse {
            path: "x".into(),
            message: "y".into(),
        };
        assert_eq!(unresolvable(&other), "unresolvable");
    }

    #[test]
    fn routes_have_transport_labels() {
        let via = Route::Waypoint {
            waypoint: "apps/wp".into(),
            instance: "198.18.1.50:15008".parse().expect("addr"),
            identity: Identity::new("cluster.local", "apps", "wp"),
            authority: "198.19.0.10:80".parse().expect("addr"),
        };
        assert_eq!(transport(&via), Transport::Waypoint);
        assert_eq!(transport(&Route::Plaintext), Transport::Plaintext);
    }
}

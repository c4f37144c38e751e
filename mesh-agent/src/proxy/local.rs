//! Same-node delivery: a captured pod calling another captured pod of this node. The agent knows
//! both identities, so it applies the destination's L4 authorization with the source's identity
//! and delivers from inside the destination pod, with no TLS: nothing crosses a wire. The decision
//! is handed to the kernel fast path (`crate::fastpath`) for the next connections.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::authz::{self, Decision};
use crate::fastpath::Decided;
use crate::istio_conn;
use crate::live;
use crate::metrics::{Conn, ConnectionLabels, Direction, Transport};
use crate::pod_context::PodContext;
use crate::proxy::{inbound, relay_live};
use mesh_common::istio_metrics::Security;
use mesh_hbone::relay;

/// Delivers `stream` from `src` to `target` in `dst`, if `dst`'s policies allow `src`.
/// `requested` is what the application connected to, when it always resolves to `target`: the
/// decision is then installed for the kernel.
pub async fn deliver(
    stream: TcpStream,
    src: &PodContext,
    dst: &PodContext,
    target: SocketAddr,
    requested: Option<SocketAddr>,
    outbound: Conn,
) {
    // The route already refuses agent ports; checked again here so that no way into this
    // function can make the agent deliver to its own listeners in `dst`.
    if let Some(refusal) = inbound::refusal(target, &dst.info.addresses) {
        inbound::record_refusal(dst, refusal, "same_node", &src.identity, target);
        dst.metrics.record_relay(&outbound, 0, 0);
        return;
    }
    // Read before the model: a change after this point makes the decision stale, not reused.
    let epoch = src.fastpath.epoch();
    // The source address the destination would see over the wire: the pod's own, same family.
    let src_ip = src
        .info
        .addresses
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() == target.is_ipv4())
        .unwrap_or(target.ip());
    // Registered before the model is read: a change from here on re-authorizes it.
    let inputs = live::Inputs {
        peer: Some(src.identity.clone()),
        src: src_ip,
        dst_port: target.port(),
        via: live::Via::Local,
    };
    let live = dst.live.register(&dst.info.uid, || dst.announced(), inputs);
    let workload = dst.workload();
    let conn = authz::Connection {
        peer: Some(&src.identity),
        src: src_ip,
        dst_port: target.port(),
    };
    let (snapshot, fail_safe) = dst.state.policies();
    let decision = if live.is_some() {
        authz::check(&snapshot, &fail_safe, &workload, conn, &dst.metrics)
    } else {
        Decision::Deny(authz::Denied {
            label: "live_limit",
            reason: format!("{} has too many live connections", dst.info.uid),
        })
    };
    // The destination's series, for an allowed connection only (no empty series for refusals).
    let inbound_conn = matches!(decision, Decision::Allow).then(|| {
        let inbound = ConnectionLabels {
            direction: Direction::Inbound,
            transport: Transport::Local,
            workload: dst.info.uid.clone(),
            destination_service: outbound.labels.destination_service.clone(),
        };
        let remote = istio_conn::Remote {
            ip: Some(src_ip),
            identity: Some(src.identity.clone()),
        };
        let ends = istio_conn::Ends {
            source: None,
            original: requested.or(Some(target)),
            upstream: Some(target),
        };
        istio_conn::inbound(
            dst,
            inbound,
            &remote,
            target.port(),
            Security::MutualTls,
            ends,
        )
    });
    // Dry-run policies are evaluated per connection, so their connections stay in the agent;
    // a refusal (fail-safe ones included) is installed as a refusal; a full registry is not a
    // decision and is not installed.
    let requested =
        requested.filter(|_| live.is_some() && !authz::has_dry_run(&snapshot, &workload));
    if let Some(requested) = requested {
        src.fastpath.learn(
            epoch,
            Decided {
                src_netns_cookie: src.netns.cookie(),
                src_workload: src.info.uid.clone(),
                dst_workload: dst.info.uid.clone(),
                requested,
                target,
                destination_service: outbound.labels.destination_service.clone(),
                allowed: matches!(decision, Decision::Allow),
                istio: Some(std::sync::Arc::new([
                    outbound.istio.clone(),
                    inbound_conn
                        .as_ref()
                        .map(|c| c.istio.clone())
                        .unwrap_or_default(),
                ])),
            },
        );
    }
    let (Decision::Allow, Some(live), Some(inbound)) = (&decision, live, inbound_conn) else {
        if let Decision::Deny(denied) = &decision {
            if let Some(unlogged) = authz::count_denial(&dst.metrics, &dst.info.uid, denied) {
                warn!(src.identity = %src.identity, dst.workload = %dst.info.uid, dst.original = %target, reason = %denied, unlogged, "same-node connection denied");
            }
        }
        dst.metrics.record_relay(&outbound, 0, 0);
        return;
    };
    dst.metrics.record_open(&inbound);
    info!(dst.workload = %dst.info.uid, src.identity = %src.identity, dst.original = %target, "inbound same-node connection");
    // Boxed: a one-off future whose space would otherwise stay in the task for the relay.
    match Box::pin(dst.netns.connect(target)).await {
        Ok(upstream) => {
            relay_live(
                relay::tcp_tcp(stream, upstream),
                live,
                false,
                &[&outbound, &inbound],
                &dst.metrics,
            )
            .await
        }
        Err(e) => {
            warn!(pod = %dst.info.uid, %target, error = %e, "same-node delivery failed");
            dst.metrics.record_relay(&outbound, 0, 0);
            dst.metrics.record_relay(&inbound, 0, 0);
        }
    }
}

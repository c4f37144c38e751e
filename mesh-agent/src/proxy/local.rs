//! Same-node delivery: a captured pod calling another captured pod of this node. The agent knows
//! both identities, so it applies the destination's L4 authorization with the source's identity
//! and delivers from inside the destination pod, with no TLS: nothing crosses a wire. The decision
//! is handed to the kernel fast path (`crate::fastpath`) for the next connections.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::authz::{self, Decision};
use crate::fastpath::Decided;
use crate::metrics::{ConnectionLabels, Direction, Transport};
use crate::pod_context::PodContext;
use crate::proxy::{inbound, relay_and_record};
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
    outbound: ConnectionLabels,
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
    let workload = dst.workload();
    let conn = authz::Connection {
        peer: Some(&src.identity),
        src: src_ip,
        dst_port: target.port(),
    };
    let decision = authz::authorize(&dst.state.snapshot(), &workload, conn);
    if let Some(requested) = requested {
        src.fastpath.learn(
            epoch,
            Decided {
                src_netns_cookie: src.netns.cookie(),
                src_workload: src.info.uid.clone(),
                dst_workload: dst.info.uid.clone(),
                requested,
                target,
                destination_service: outbound.destination_service.clone(),
                allowed: matches!(decision, Decision::Allow),
            },
        );
    }
    if let Decision::Deny(reason) = decision {
        warn!(src.identity = %src.identity, dst.workload = %dst.info.uid, dst.original = %target, %reason, "same-node connection denied");
        dst.metrics.record_denied(&dst.info.uid, "policy");
        dst.metrics.record_relay(&outbound, 0, 0);
        return;
    }
    let inbound = ConnectionLabels {
        direction: Direction::Inbound,
        transport: Transport::Local,
        workload: dst.info.uid.clone(),
        destination_service: outbound.destination_service.clone(),
    };
    dst.metrics.connections_opened.get_or_create(&inbound).inc();
    info!(dst.workload = %dst.info.uid, src.identity = %src.identity, dst.original = %target, "inbound same-node connection");
    // Boxed: a one-off future whose space would otherwise stay in the task for the relay.
    match Box::pin(dst.netns.connect(target)).await {
        Ok(upstream) => {
            relay_and_record(
                relay::tcp_tcp(stream, upstream),
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

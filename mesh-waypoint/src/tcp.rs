//! Opaque TCP through the waypoint: a connection that is not HTTP (declared `tcp`, or detected)
//! is authorized on what a TCP connection shows — the source and the port; rules that need
//! request attributes never allow it and, in a DENY policy, deny it (fail closed, as Istio does)
//! — then relayed byte for byte to an endpoint of its destination.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::proxy::{choose_endpoint, Downstream, Shared};

/// Relays `io` to an endpoint of the destination, or closes it when it is refused.
pub async fn pass<S>(shared: &Shared, downstream: &Downstream, mut io: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let table = shared.state.table();
    let Some(target) = table.target(downstream.authority) else {
        tracing::warn!(dst = %downstream.authority, "TCP destination left the mesh; closed");
        return;
    };
    let source = table.source_info(Some(downstream.peer.clone()), downstream.remote.ip());
    if let Some(e) = table.authorize_tcp(&target, &source).error() {
        tracing::info!(src.identity = %downstream.peer, dst = %downstream.authority, error = %e, "TCP connection denied");
        return;
    }
    let backend = table.default_backend(&target);
    let picked = match choose_endpoint(shared, &table, &backend, downstream, None, None) {
        Ok(picked) => picked,
        Err(e) => {
            tracing::warn!(dst = %downstream.authority, error = %e, "TCP connection without an endpoint; closed");
            return;
        }
    };
    let endpoint = picked.endpoint.clone();
    let mut upstream = match shared.upstreams.open_stream(&endpoint).await {
        Ok(upstream) => upstream,
        Err(e) => {
            picked.report(crate::balance::TryOutcome::LocalOrigin);
            tracing::warn!(dst = %downstream.authority, upstream = %endpoint.addr, error = %e, "TCP upstream connect failed; closed");
            return;
        }
    };
    let copied = tokio::io::copy_bidirectional(&mut io, &mut upstream).await;
    picked.report(match copied {
        Ok(_) => crate::balance::TryOutcome::Success,
        Err(_) => crate::balance::TryOutcome::LocalOrigin,
    });
    tracing::info!(src.identity = %downstream.peer, dst = %downstream.authority, upstream = %endpoint.addr, result = ?copied, "TCP connection");
}

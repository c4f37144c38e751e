//! The agent's proxies for captured connections: outbound (from a pod) and inbound (to a pod).
//!
//! Until the HBONE tunnel is wired in, both relay plaintext: outbound connects to the resolved
//! destination from inside the source pod's netns; inbound delivers to the application from
//! inside the destination pod's netns.

pub mod inbound;
pub mod outbound;
pub mod tunnel_inbound;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::metrics::{ConnectionLabels, Metrics};

/// Copies bytes both ways until both sides are done, then records the connection's byte counts
/// (client->server as sent, server->client as received).
pub async fn relay_and_record<D, U>(
    mut downstream: D,
    mut upstream: U,
    labels: &ConnectionLabels,
    metrics: &Metrics,
) where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (sent, received) = match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await
    {
        Ok(counts) => counts,
        Err(e) => {
            tracing::debug!(workload = %labels.workload, error = %e, "relay ended with an error");
            (0, 0)
        }
    };
    tracing::debug!(workload = %labels.workload, sent, received, "connection closed");
    metrics.record_relay(labels, sent, received);
}

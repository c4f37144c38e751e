//! The agent's proxies for captured connections: outbound (from a pod) and inbound (to a pod).
//!
//! Until the HBONE tunnel is wired in, both relay plaintext: outbound connects to the resolved
//! destination from inside the source pod's netns; inbound delivers to the application from
//! inside the destination pod's netns.

pub mod inbound;
pub mod local;
pub mod outbound;
pub mod tunnel_inbound;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::metrics::{ConnectionLabels, Metrics};

/// Copy buffer per direction: 64 KiB moves bulk data in fewer syscalls than tokio's 8 KiB
/// default and matches the HBONE frame sizes.
const BUFFER: usize = 64 * 1024;

/// Copies bytes both ways until both sides are done, then records the connection's byte counts
/// (client->server as sent, server->client as received) under each label set.
pub async fn relay_and_record<D, U>(
    mut downstream: D,
    mut upstream: U,
    labels: &[&ConnectionLabels],
    metrics: &Metrics,
) where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let copied =
        tokio::io::copy_bidirectional_with_sizes(&mut downstream, &mut upstream, BUFFER, BUFFER)
            .await;
    let (sent, received) = match copied {
        Ok(counts) => counts,
        Err(e) => {
            tracing::debug!(error = %e, "relay ended with an error");
            (0, 0)
        }
    };
    tracing::debug!(sent, received, "connection closed");
    for labels in labels {
        metrics.record_relay(labels, sent, received);
    }
}

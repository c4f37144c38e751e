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
    // tokio's 8 KiB per direction: larger buffers were not measured to help and each one is held
    // for the life of the connection (see benches/README.md, memory per idle connection).
    let copied = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
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

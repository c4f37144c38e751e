//! The agent's proxies for captured connections: outbound (from a pod) and inbound (to a pod).
//!
//! Until the HBONE tunnel is wired in, both relay plaintext: outbound connects to the resolved
//! destination from inside the source pod's netns; inbound delivers to the application from
//! inside the destination pod's netns.

pub mod inbound;
pub mod local;
pub mod outbound;
pub mod tunnel_inbound;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::pods::PodContext;

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

/// Accepts connections on one of a pod's listeners until the task is aborted, handling each in
/// its own task. Accept errors (e.g. out of file descriptors) are logged and retried after a
/// pause instead of ending the listener.
pub async fn accept_loop<F, Fut>(listener: TcpListener, pod: Arc<PodContext>, handle: F)
where
    F: Fn(TcpStream, SocketAddr, Arc<PodContext>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(handle(stream, peer, pod.clone()));
            }
            Err(e) => {
                tracing::warn!(pod = %pod.info.uid, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

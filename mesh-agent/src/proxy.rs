//! The agent's proxies for captured connections: outbound (from a pod) and inbound (to a pod).
//!
//! Outbound goes over HBONE, same-node delivery or plaintext from inside the source pod's netns;
//! inbound (HBONE or plaintext) delivers to the application from inside the destination pod's
//! netns. Every path relays with `mesh_hbone::relay`, which holds no buffer while a connection
//! is idle.

pub mod inbound;
pub mod local;
pub mod outbound;
pub mod route;
pub mod tunnel_inbound;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_hbone::relay::Relayed;
use tokio::net::{TcpListener, TcpStream};

use crate::pod_context::PodContext;

use crate::metrics::{ConnectionLabels, Metrics};

/// Runs a relay (see [`mesh_hbone::relay`]: no buffer is held while the connection is idle) to
/// its end, then records its byte counts (client->server as sent, server->client as received)
/// under each label set, whether it ended cleanly or not.
pub async fn relay_and_record(
    relay: impl Future<Output = Relayed>,
    labels: &[&ConnectionLabels],
    metrics: &Metrics,
) {
    let Relayed {
        forward: sent,
        backward: received,
        result,
    } = relay.await;
    match result {
        Ok(()) => tracing::debug!(sent, received, "connection closed"),
        Err(e) => tracing::debug!(sent, received, error = %e, "relay ended with an error"),
    }
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

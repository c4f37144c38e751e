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

use mesh_hbone::relay::{self, Relayed};
use tokio::net::{TcpListener, TcpStream};

use crate::live::Live;
use crate::pod_context::PodContext;

use crate::metrics::{Conn, Metrics};

/// Runs a relay (see [`mesh_hbone::relay`]: no buffer is held while the connection is idle) to
/// its end, then records its byte counts (client->server as sent, server->client as received)
/// under each label set, whether it ended cleanly or not.
pub async fn relay_and_record(
    relay: impl Future<Output = Relayed>,
    labels: &[&Conn],
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

/// A relay that can be cut on purpose, resetting its sockets (see [`relay::TcpRelay::cut`]).
pub trait Cuttable: Future<Output = Relayed> + Unpin {
    /// Ends the relay now; what was moved so far.
    fn cut(self, why: &'static str) -> Relayed;
}

impl Cuttable for relay::TcpRelay {
    fn cut(self, why: &'static str) -> Relayed {
        relay::TcpRelay::cut(self, why)
    }
}

impl Cuttable for relay::HboneRelay {
    fn cut(self, why: &'static str) -> Relayed {
        relay::HboneRelay::cut(self, why)
    }
}

/// [`relay_and_record`] for an inbound connection registered as live: when a model change no
/// longer authorizes it, the relay is cut (both ends reset) instead of running on. `reversed`
/// swaps the byte counts (a relay whose first side is the server).
pub async fn relay_live(
    mut relay: impl Cuttable,
    live: Live,
    reversed: bool,
    labels: &[&Conn],
    metrics: &Metrics,
) {
    let relayed = tokio::select! {
        relayed = &mut relay => relayed,
        () = live.revoked() => relay.cut("no longer authorized by the current policy"),
    };
    drop(live);
    let relayed = if reversed {
        relayed.reversed()
    } else {
        relayed
    };
    relay_and_record(std::future::ready(relayed), labels, metrics).await
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

//! Inbound HBONE: each enrolled pod's 15008 server. The CONNECT target must be one of the pod's
//! addresses on a port that is not the agent's (`inbound::refusal`: a CONNECT to `<pod>:15006`
//! would otherwise be delivered to the agent's own listener); the peer's identity comes from its
//! verified certificate; L4 authorization decides; the connection is delivered from inside the
//! pod.

use std::sync::Arc;

use async_trait::async_trait;
use mesh_hbone::hbone::{ConnectError, ConnectHandler, ConnectRequest, HboneStream};
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::authz::{self, Decision};
use crate::metrics::{ConnectionLabels, Transport};
use crate::pod_context::PodContext;
use crate::proxy::{inbound, relay_and_record};
use mesh_hbone::relay;

/// Handles the CONNECT streams arriving for one pod.
#[derive(Debug, Clone)]
pub struct InboundTunnel {
    pod: Arc<PodContext>,
}

impl InboundTunnel {
    /// A handler for `pod`.
    pub fn new(pod: Arc<PodContext>) -> InboundTunnel {
        InboundTunnel { pod }
    }

    fn labels(&self) -> ConnectionLabels {
        ConnectionLabels::inbound(&self.pod.info.uid, Transport::Hbone)
    }
}

#[async_trait]
impl ConnectHandler for InboundTunnel {
    type Upstream = TcpStream;

    async fn open(&self, request: &ConnectRequest) -> Result<TcpStream, ConnectError> {
        let pod = &self.pod;
        // Before policy: even a peer that every policy allows cannot make the agent call itself.
        if let Some(refusal) = inbound::refusal(request.target, &pod.info.addresses) {
            inbound::record_refusal(pod, refusal, "hbone", &request.peer, request.target);
            return Err(ConnectError::Forbidden(refusal.to_string()));
        }
        let workload = pod.workload();
        let decision = authz::authorize(
            &pod.state.snapshot(),
            &workload,
            authz::Connection {
                peer: Some(&request.peer),
                src: request.remote.ip(),
                dst_port: request.target.port(),
            },
        );
        if let Decision::Deny(reason) = decision {
            warn!(pod = %pod.info.uid, peer = %request.peer, target = %request.target, %reason, "inbound HBONE connection denied");
            pod.metrics.record_denied(&pod.info.uid, "policy");
            return Err(ConnectError::Forbidden(reason));
        }
        pod.netns.connect(request.target).await.map_err(|e| {
            warn!(pod = %pod.info.uid, target = %request.target, error = %e, "inbound HBONE delivery failed");
            ConnectError::Unreachable(std::io::Error::other(e.to_string()))
        })
    }

    async fn serve(&self, request: ConnectRequest, upstream: TcpStream, stream: HboneStream) {
        let pod = &self.pod;
        info!(
            dst.workload = %pod.info.uid,
            src.identity = %request.peer,
            src.address = %request.remote,
            dst.original = %request.target,
            "inbound HBONE connection"
        );
        let labels = self.labels();
        pod.metrics.connections_opened.get_or_create(&labels).inc();
        // The tunnel is the client side here: forward (client -> server) is HBONE -> TCP.
        let relay = async move { relay::tcp_hbone(upstream, stream).await.reversed() };
        relay_and_record(relay, &[&labels], &pod.metrics).await;
    }
}

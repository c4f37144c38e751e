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
use crate::istio_conn;
use crate::live::{self, Live};
use crate::metrics::{ConnectionLabels, Transport};
use crate::pod_context::PodContext;
use crate::proxy::{inbound, relay_live};
use mesh_common::istio_metrics::Security;
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
    type Upstream = (TcpStream, Live);

    async fn open(&self, request: &ConnectRequest) -> Result<(TcpStream, Live), ConnectError> {
        let pod = &self.pod;
        // Before policy: even a peer that every policy allows cannot make the agent call itself.
        if let Some(refusal) = inbound::refusal(request.target, &pod.info.addresses) {
            inbound::record_refusal(pod, refusal, "hbone", &request.peer, request.target);
            return Err(ConnectError::Forbidden(refusal.to_string()));
        }
        // Registered before the model is read: a change from here on re-authorizes it.
        let inputs = live::Inputs {
            peer: Some(request.peer.clone()),
            src: request.remote.ip(),
            dst_port: request.target.port(),
            via: live::Via::Hbone,
        };
        let Some(live) = pod.live.register(&pod.info.uid, || pod.announced(), inputs) else {
            pod.metrics.refuse(&pod.info.uid, "live_limit");
            return Err(ConnectError::Forbidden(format!(
                "{} has too many live connections",
                pod.info.uid
            )));
        };
        let workload = pod.workload();
        let (snapshot, fail_safe) = pod.state.policies();
        let conn = authz::Connection {
            peer: Some(&request.peer),
            src: request.remote.ip(),
            dst_port: request.target.port(),
        };
        let decision = authz::check(&snapshot, &fail_safe, &workload, conn, &pod.metrics);
        if let Decision::Deny(denied) = decision {
            if let Some(unlogged) = authz::count_denial(&pod.metrics, &pod.info.uid, &denied) {
                warn!(pod = %pod.info.uid, peer = %request.peer, target = %request.target, reason = %denied, unlogged, "inbound HBONE connection denied");
            }
            return Err(ConnectError::Forbidden(denied.reason));
        }
        let upstream = pod.netns.connect(request.target).await.map_err(|e| {
            warn!(pod = %pod.info.uid, target = %request.target, error = %e, "inbound HBONE delivery failed");
            ConnectError::Unreachable(std::io::Error::other(e.to_string()))
        })?;
        Ok((upstream, live))
    }

    async fn serve(
        &self,
        request: ConnectRequest,
        (upstream, live): (TcpStream, Live),
        stream: HboneStream,
    ) {
        let pod = &self.pod;
        info!(
            dst.workload = %pod.info.uid,
            src.identity = %request.peer,
            src.address = %request.remote,
            dst.original = %request.target,
            "inbound HBONE connection"
        );
        let remote = istio_conn::Remote {
            ip: Some(request.remote.ip()),
            identity: Some(request.peer.clone()),
        };
        let labels = istio_conn::inbound(
            pod,
            self.labels(),
            &remote,
            request.target.port(),
            Security::MutualTls,
            istio_conn::Ends {
                source: Some(request.remote),
                original: Some(request.target),
                upstream: Some(request.target),
            },
        );
        pod.metrics.record_open(&labels);
        // The tunnel is the client side here: forward (client -> server) is HBONE -> TCP.
        let relay = relay::tcp_hbone(upstream, stream);
        relay_live(relay, live, true, &[&labels], &pod.metrics).await;
    }
}

//! A captured pod's running parts: its listeners inside the pod's netns (15001 outbound, 15006
//! inbound plaintext, 15008 HBONE), the proxy tasks serving them, and its kernel attachments;
//! started together and torn down together.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use mesh_common::identity::Identity;
use mesh_common::ports::{HBONE, INBOUND_PLAINTEXT, OUTBOUND_CAPTURE};
use mesh_hbone::hbone::{HboneServer, HboneServerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ebpf::{PodAttachment, Programs};
use crate::fastpath::FastPath;
use crate::live::LiveConnections;
use crate::local::LocalPods;
use crate::metrics::Metrics;
use crate::netns::{Netns, NetnsError};
use crate::pod_context::PodContext;
use crate::pod_info::PodInfo;
use crate::proxy;
use crate::state::State;
use crate::tunnel::Tunnel;

/// How long starting a pod waits for its first certificate before serving HBONE without one.
const FIRST_CERTIFICATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Errors starting a pod's listeners.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Entering the pod's network namespace or listening in it failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Attaching the kernel programs failed.
    #[error(transparent)]
    Ebpf(#[from] crate::ebpf::EbpfError),
    /// The pod's HBONE server cannot be set up.
    #[error("HBONE server: {0}")]
    Tunnel(String),
}

/// The node-wide parts every pod's listeners use.
#[derive(Debug, Clone)]
pub struct NodeParts {
    /// The kernel programs and maps.
    pub programs: Arc<Programs>,
    /// The mesh model.
    pub state: Arc<State>,
    /// SPIFFE trust domain of the pods' identities.
    pub trust_domain: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Certificates and HBONE pool (`None`: plaintext only).
    pub tunnel: Option<Arc<Tunnel>>,
    /// The node's captured pods by address.
    pub local: Arc<LocalPods>,
    /// Same-node verdicts reused by the kernel.
    pub fastpath: Arc<FastPath>,
    /// Live inbound connections, re-authorized on every model change.
    pub live: Arc<LiveConnections>,
}

impl NodeParts {
    /// The SPIFFE identity of an announced pod.
    pub fn identity(&self, info: &PodInfo) -> Identity {
        Identity::new(&self.trust_domain, &info.namespace, &info.service_account)
    }
}

/// What runs for one captured pod.
#[derive(Debug)]
pub struct PodListeners {
    /// The context its proxies share.
    pub context: Arc<PodContext>,
    attachment: PodAttachment,
    tasks: Vec<JoinHandle<()>>,
    /// Tells the pod's HBONE servers to stop accepting and drain.
    shutdown: Option<watch::Sender<bool>>,
    /// The HBONE servers, which end once drained.
    servers: Vec<JoinHandle<()>>,
}

impl PodListeners {
    /// Opens the pod's listeners inside its netns, attaches the kernel programs and starts the
    /// proxies; with a tunnel, waits (bounded) for the pod's first certificate and starts its
    /// HBONE servers. Whatever was set up is torn down again if a step fails.
    pub async fn start(node: &NodeParts, info: PodInfo) -> Result<PodListeners, StartError> {
        let netns = Arc::new(Netns::open(&info.netns)?);
        let outbound_v4 = netns
            .listen(SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                OUTBOUND_CAPTURE,
            ))
            .await?;
        let outbound_v6 = netns
            .listen(SocketAddr::new(
                Ipv6Addr::LOCALHOST.into(),
                OUTBOUND_CAPTURE,
            ))
            .await
            .ok();
        let inbound_v4 = netns
            .listen(SocketAddr::new(
                Ipv4Addr::UNSPECIFIED.into(),
                INBOUND_PLAINTEXT,
            ))
            .await?;
        let inbound_v6 = netns
            .listen(SocketAddr::new(
                Ipv6Addr::UNSPECIFIED.into(),
                INBOUND_PLAINTEXT,
            ))
            .await
            .ok();
        if info.addresses.iter().any(IpAddr::is_ipv6)
            && (outbound_v6.is_none() || inbound_v6.is_none())
        {
            tracing::warn!(pod = %info.uid, "pod has IPv6 addresses but IPv6 listeners failed; IPv6 is not captured");
        }
        let attachment = node
            .programs
            .attach_pod(
                &info.cgroup,
                netns.file(),
                &info.addresses,
                &inbound_v4,
                inbound_v6.as_ref(),
            )
            .inspect_err(|e| node.metrics.attach_failed(e.attach_program()))?;
        let context = Arc::new(PodContext {
            identity: node.identity(&info),
            info,
            netns,
            programs: node.programs.clone(),
            state: node.state.clone(),
            metrics: node.metrics.clone(),
            tunnel: node.tunnel.clone(),
            local: node.local.clone(),
            fastpath: node.fastpath.clone(),
            live: node.live.clone(),
        });
        node.local.insert(&context);
        // A new same-node destination can change what earlier decisions would be now.
        node.fastpath.invalidate("pod added");
        let mut tasks = vec![
            tokio::spawn(proxy::outbound::serve(outbound_v4, context.clone())),
            tokio::spawn(proxy::inbound::serve(inbound_v4, context.clone())),
        ];
        if let Some(l) = outbound_v6 {
            tasks.push(tokio::spawn(proxy::outbound::serve(l, context.clone())));
        }
        if let Some(l) = inbound_v6 {
            tasks.push(tokio::spawn(proxy::inbound::serve(l, context.clone())));
        }
        let mut listeners = PodListeners {
            context,
            attachment,
            tasks,
            shutdown: None,
            servers: Vec::new(),
        };
        if let Err(e) = listeners.start_tunnel_servers(node).await {
            drop(listeners.teardown(node));
            return Err(e);
        }
        Ok(listeners)
    }

    /// Starts the pod's HBONE servers on 15008 (when the tunnel is configured), once its
    /// certificate is in hand or after a bounded wait.
    async fn start_tunnel_servers(&mut self, node: &NodeParts) -> Result<(), StartError> {
        let Some(tunnel) = &node.tunnel else {
            return Ok(());
        };
        let ctx = self.context.clone();
        // Serve HBONE only with a certificate in hand, so the pod's first peers are not refused;
        // if the CA is slow or down, go on (the manager keeps retrying in the background).
        match tokio::time::timeout(FIRST_CERTIFICATE_WAIT, tunnel.certs.get(&ctx.identity)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(identity = %ctx.identity, error = %e, "no workload certificate yet (retrying)");
            }
            Err(_) => {
                tracing::warn!(identity = %ctx.identity, "no workload certificate after {FIRST_CERTIFICATE_WAIT:?} (retrying)");
            }
        }
        let tls = tunnel
            .server_tls(&ctx.identity)
            .map_err(|e| StartError::Tunnel(e.to_string()))?;
        let (shutdown, signal) = watch::channel(false);
        // Set before the servers start, so a failure below still stops the ones started.
        self.shutdown = Some(shutdown);
        let mut addresses = vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), HBONE)];
        if ctx.info.addresses.iter().any(IpAddr::is_ipv6) {
            addresses.push(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), HBONE));
        }
        for addr in addresses {
            let listener = ctx.netns.listen(addr).await?;
            let server = HboneServer::new(
                listener,
                tls.clone(),
                proxy::tunnel_inbound::InboundTunnel::new(ctx.clone()),
                HboneServerConfig::default(),
            );
            let mut signal = signal.clone();
            let uid = ctx.info.uid.clone();
            self.servers.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = signal.wait_for(|stop| *stop).await;
                };
                if let Err(e) = server.serve(stop).await {
                    tracing::warn!(pod = %uid, error = %e, "HBONE server ended");
                }
            }));
        }
        Ok(())
    }

    /// The pod's netns cookie (its fast-path verdicts are keyed by it).
    pub fn netns_cookie(&self) -> u64 {
        self.context.netns.cookie()
    }

    /// Forgets the pod's addresses and fast-path verdicts, aborts its proxies, tells its HBONE
    /// servers to drain and detaches its programs; returns the servers, which end once drained
    /// (bounded by their grace period).
    pub fn teardown(self, node: &NodeParts) -> Vec<JoinHandle<()>> {
        node.local.remove(&self.context.info.addresses);
        node.fastpath.invalidate("pod removed");
        node.fastpath
            .forget_source(self.netns_cookie(), &node.metrics);
        for task in &self.tasks {
            task.abort();
        }
        if let Some(shutdown) = &self.shutdown {
            let _ = shutdown.send(true);
        }
        node.programs.detach_pod(self.attachment);
        self.servers
    }
}

//! Connections the kernel fast path carries, re-authorized when the model changes. The agent
//! decided the first connection of each (source pod, destination) pair; the kernel carried the
//! next ones without the agent, so `live.rs` does not know them. After every model update each
//! open one is authorized again with the new policies, and those now denied are destroyed in
//! both pods (`SOCK_DESTROY`: the kernel resets them), as relayed connections are cut.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_common::kernel::{FlowKey, SockAddr};

use crate::authz::{self, Decision};
use crate::ebpf::Programs;
use crate::fastpath::FastPath;
use crate::local::LocalPods;
use crate::metrics::Metrics;
use crate::state::State;

/// A kernel-carried connection the new model denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The client socket's address (in the source pod).
    pub client: SocketAddr,
    /// The server socket's address (in the destination pod).
    pub server: SocketAddr,
    /// The destination pod (`namespace/name`).
    pub workload: String,
    /// Why.
    pub reason: String,
}

/// Re-authorizes the kernel-carried connections after every update of `state`.
pub fn follow(
    state: &Arc<State>,
    programs: Arc<Programs>,
    fastpath: Arc<FastPath>,
    local: Arc<LocalPods>,
    metrics: Arc<Metrics>,
) {
    let weak_state = Arc::downgrade(state);
    state.on_change(move || {
        let Some(state) = weak_state.upgrade() else {
            return;
        };
        let denied = reauthorize(&state, &programs, &fastpath, &local);
        if denied.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                count = denied.len(),
                "cannot close kernel-carried connections outside the runtime"
            );
            return;
        };
        for d in denied {
            if let Some(unlogged) = metrics.refuse(&d.workload, "policy_changed") {
                tracing::warn!(dst.workload = %d.workload, client = %d.client, server = %d.server, reason = %d.reason, unlogged, "kernel-carried connection closed: the new policy denies it (logged once per burst)");
            }
            let local = local.clone();
            runtime.spawn(async move { destroy(&local, &d).await });
        }
    });
}

/// The open kernel-carried connections the current model denies.
fn reauthorize(
    state: &State,
    programs: &Programs,
    fastpath: &FastPath,
    local: &LocalPods,
) -> Vec<Denied> {
    let (snapshot, fail_safe) = state.policies();
    let mut denied = Vec::new();
    for (flow, key) in programs.kernel_flows() {
        match fastpath.decided(&key) {
            Some(decided) if decided.allowed => {}
            _ => continue,
        }
        let Some((client, server)) = endpoints(&flow) else {
            continue;
        };
        let (Some(src), Some(dst)) = (local.get(client.ip()), local.get(server.ip())) else {
            continue;
        };
        let conn = authz::Connection {
            peer: Some(&src.identity),
            src: client.ip(),
            dst_port: server.port(),
        };
        if let Decision::Deny(d) = authz::authorize(&snapshot, &fail_safe, &dst.workload(), conn) {
            denied.push(Denied {
                client,
                server,
                workload: dst.info.uid.clone(),
                reason: d.reason,
            });
        }
    }
    denied
}

/// The client's and the server's addresses of a client socket's 4-tuple.
fn endpoints(flow: &FlowKey) -> Option<(SocketAddr, SocketAddr)> {
    let addr = |words: [u32; 4], port: u32| {
        SockAddr {
            addr: words,
            port,
            family: flow.family,
        }
        .to_socket_addr()
    };
    Some((
        addr(flow.local, flow.local_port)?,
        addr(flow.remote, flow.remote_port)?,
    ))
}

/// Destroys both ends: the client socket in the source pod, the accepted one in the destination.
async fn destroy(local: &LocalPods, d: &Denied) {
    for (pod_ip, own, peer) in [
        (d.client.ip(), d.client, d.server),
        (d.server.ip(), d.server, d.client),
    ] {
        let Some(pod) = local.get(pod_ip) else {
            continue;
        };
        if let Err(e) = pod.netns.destroy_tcp(own, peer).await {
            tracing::warn!(pod = %pod.info.uid, %own, %peer, error = %e, "cannot close a kernel-carried connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_common::kernel::AF_INET;

    #[test]
    fn a_client_sockets_view_gives_both_ends() {
        let client: SocketAddr = "198.18.1.10:40000".parse().expect("addr");
        let server: SocketAddr = "198.18.1.20:8080".parse().expect("addr");
        let (c, s) = (SockAddr::from(client), SockAddr::from(server));
        let flow = FlowKey {
            local: c.addr,
            remote: s.addr,
            local_port: c.port,
            remote_port: s.port,
            family: AF_INET,
            _pad: 0,
        };
        assert_eq!(endpoints(&flow), Some((client, server)));
        let unknown = FlowKey { family: 99, ..flow };
        assert_eq!(endpoints(&unknown), None);
    }
}

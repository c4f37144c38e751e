//! Connections the kernel fast path carries, re-authorized when the model changes. The agent
//! decided the first connection of each (source pod, destination) pair; the kernel carried the
//! next ones without the agent, so `live.rs` does not know them. After every model update each
//! open one is authorized again with the new policies, and those now denied are destroyed in
//! both pods (`SOCK_DESTROY`: the kernel resets them), as relayed connections are cut. A
//! destination newly assigned a waypoint denies them all (their source is no waypoint instance),
//! and new connects to it are routed through the waypoint, never the kernel: every model update
//! withdraws the kernel's verdicts first (`FastPath::invalidate`).

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_common::identity::Identity;
use mesh_common::kernel::{FlowKey, SockAddr};
use mesh_common::model::{FailSafe, Snapshot, Workload};

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
        if let Some(reason) = denies(
            &snapshot,
            &fail_safe,
            &dst.workload(),
            &src.identity,
            client,
            server,
        ) {
            denied.push(Denied {
                client,
                server,
                workload: dst.info.uid.clone(),
                reason,
            });
        }
    }
    denied
}

/// Why the model now denies a kernel-carried connection from `client` (in a pod with identity
/// `source`) to `server` (in `workload`), if it does: as the agent would decide it now, so a
/// destination that became assigned a waypoint refuses it (`source` is no waypoint instance).
fn denies(
    snapshot: &Snapshot,
    fail_safe: &FailSafe,
    workload: &Workload,
    source: &Identity,
    client: SocketAddr,
    server: SocketAddr,
) -> Option<String> {
    let conn = authz::Connection {
        peer: Some(source),
        src: client.ip(),
        dst_port: server.port(),
    };
    match authz::authorize(snapshot, fail_safe, workload, conn) {
        Decision::Allow => None,
        Decision::Deny(d) => Some(d.reason),
    }
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

    #[test]
    fn a_destination_newly_behind_a_waypoint_denies_its_kernel_carried_flows() {
        let base = "workloads:
- {uid: prod/server, name: server, namespace: prod, addresses: [198.18.1.20], meshed: true, labels: {app: server}WAYPOINT}
- {uid: prod/wp-1, name: wp-1, namespace: prod, serviceAccount: wp, addresses: [198.18.2.50], labels: {gateway.networking.k8s.io/gateway-name: INSTANCE}}
services:
- {name: front, namespace: prod, vips: [198.19.0.10], ports: [{port: 80, targetPort: PORT}], endpoints: [{workloadUid: prod/server, address: 198.18.1.20}]SERVICE_WAYPOINT}
";
        let wp = ", waypoint: {name: wp, namespace: prod}";
        // (case, workload waypoint, service waypoint, service target port, label of the
        // instance's Gateway, denied with)
        #[rustfmt::skip]
        let cases = [
            ("no waypoint: kept", "", "", "8080", "wp", None),
            ("the pod is assigned a waypoint: closed", wp, "", "8080", "wp", Some("only its instances are admitted")),
            ("its service on that port: closed", "", wp, "8080", "wp", Some("only its instances are admitted")),
            ("its service, on another port: kept", "", wp, "9090", "wp", None),
            ("a waypoint without instance: closed", wp, "", "8080", "other", Some("no waypoint runs")),
        ];
        let client: SocketAddr = "198.18.1.10:40000".parse().expect("addr");
        let server: SocketAddr = "198.18.1.20:8080".parse().expect("addr");
        let source = Identity::new("cluster.local", "apps", "client");
        for (case, workload_wp, service_wp, port, instance, want) in cases {
            let yaml = base
                .replace("SERVICE_WAYPOINT", service_wp)
                .replace("WAYPOINT", workload_wp)
                .replace("INSTANCE", instance)
                .replace("PORT", port);
            let snapshot: Snapshot = yaml_serde::from_str(&yaml).expect("test model");
            let workload = snapshot.workload("prod/server").expect("workload");
            let got = denies(
                &snapshot,
                &FailSafe::new(&snapshot),
                workload,
                &source,
                client,
                server,
            );
            match want {
                None => assert_eq!(got, None, "{case}"),
                Some(says) => assert!(
                    got.as_deref().is_some_and(|r| r.contains(says)),
                    "{case}: {got:?}"
                ),
            }
        }
    }
}

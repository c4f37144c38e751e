//! Live inbound connections and their re-authorization: every connection the agent delivers to a
//! pod (HBONE, plaintext, same node) is registered with what its authorization read (peer
//! identity, source address, destination port) and a cancel handle. When the model changes, each
//! is authorized again against the new model and those now denied are cut (reset), as ztunnel
//! does. Bounded: at most [`MAX_PER_POD`] per pod (beyond that new connections are refused, not
//! left unchecked); a re-evaluation costs one authorization per live connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use mesh_common::identity::Identity;
use mesh_common::model::{FailSafe, PeerAuthMode, Snapshot, Workload};
use tokio_util::sync::CancellationToken;

use crate::authz::{self, Decision};
use crate::metrics::Metrics;
use crate::state::State;

/// A registry of live connections re-authorized after every update of `state`; each connection
/// cut is counted (`reason="policy_changed"`) and logged once per burst.
pub fn follow(state: &Arc<State>, metrics: Arc<Metrics>) -> Arc<LiveConnections> {
    let live = Arc::new(LiveConnections::default());
    // Weak: the state keeps the hook, the hook must not keep the state.
    let (weak_state, hook_live) = (Arc::downgrade(state), live.clone());
    state.on_change(move || {
        let Some(state) = weak_state.upgrade() else {
            return;
        };
        let (snapshot, fail_safe) = state.policies();
        let started = std::time::Instant::now();
        let cut = hook_live.reauthorize(&snapshot, &fail_safe);
        for c in &cut {
            if let Some(unlogged) = metrics.refuse(&c.workload, "policy_changed") {
                tracing::warn!(dst.workload = %c.workload, src.identity = ?c.peer.as_ref().map(ToString::to_string), src.address = %c.src, dst.port = c.dst_port, reason = %c.reason, unlogged, "live connection closed: the new policy denies it (logged once per burst)");
            }
        }
        tracing::info!(version = %snapshot.version, live = hook_live.len(), closed = cut.len(), elapsed_us = started.elapsed().as_micros() as u64, "live connections re-authorized");
    });
    live
}

/// Live connections kept per pod. A connection holds at least one descriptor, so this is far
/// above what a pod's descriptors allow in practice; past it, connections are refused.
pub const MAX_PER_POD: usize = 65_536;

/// How a live connection arrived (what its re-authorization checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Over HBONE, from a verified peer.
    Hbone,
    /// Plaintext (no identity): PeerAuthentication STRICT applies too.
    Plaintext,
    /// From a captured pod of this node, delivered by the agent.
    Local,
}

/// What a connection's authorization read.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Peer identity (`None` for plaintext).
    pub peer: Option<Identity>,
    /// Source address.
    pub src: IpAddr,
    /// Destination port on the pod.
    pub dst_port: u16,
    /// How it arrived.
    pub via: Via,
}

#[derive(Debug)]
struct Conn {
    inputs: Inputs,
    cancel: CancellationToken,
}

#[derive(Debug)]
struct Pod {
    /// The pod as enrolment announced it, for when the model does not know it.
    announced: Workload,
    conns: HashMap<u64, Conn>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    pods: HashMap<String, Pod>,
}

/// One connection cut by a re-evaluation (for the log and the metrics).
#[derive(Debug, Clone)]
pub struct Cut {
    /// The destination pod.
    pub workload: String,
    /// Its peer identity, if any.
    pub peer: Option<Identity>,
    /// Its source address.
    pub src: IpAddr,
    /// Its destination port.
    pub dst_port: u16,
    /// Why the new model denies it.
    pub reason: String,
}

/// The node's live inbound connections.
#[derive(Debug, Default)]
pub struct LiveConnections {
    inner: Mutex<Inner>,
}

/// A registered connection: cancelled when a re-evaluation denies it; unregistered on drop.
#[derive(Debug)]
pub struct Live {
    registry: Arc<LiveConnections>,
    workload: String,
    id: u64,
    cancel: CancellationToken,
}

impl Live {
    /// Resolves when the connection is no longer authorized.
    pub async fn revoked(&self) {
        self.cancel.cancelled().await
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(pod) = inner.pods.get_mut(&self.workload) {
            pod.conns.remove(&self.id);
            if pod.conns.is_empty() {
                inner.pods.remove(&self.workload);
            }
        }
    }
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection to pod `uid` (`announced`: the pod as enrolment announced it, for
    /// when the model does not know it); `None` when the pod already has [`MAX_PER_POD`] live
    /// connections (the caller refuses it).
    pub fn register(
        self: &Arc<Self>,
        uid: &str,
        announced: impl FnOnce() -> Workload,
        inputs: Inputs,
    ) -> Option<Live> {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let pod = inner.pods.entry(uid.to_owned()).or_insert_with(|| Pod {
            announced: announced(),
            conns: HashMap::new(),
        });
        if pod.conns.len() >= MAX_PER_POD {
            return None;
        }
        let cancel = CancellationToken::new();
        pod.conns.insert(
            id,
            Conn {
                inputs,
                cancel: cancel.clone(),
            },
        );
        Some(Live {
            registry: self.clone(),
            workload: uid.to_owned(),
            id,
            cancel,
        })
    }

    /// Live connections now.
    pub fn len(&self) -> usize {
        self.lock().pods.values().map(|p| p.conns.len()).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Authorizes every live connection again against `snapshot` and cancels those it denies
    /// (each connection's task then resets it). Returns what was cut.
    pub fn reauthorize(&self, snapshot: &Snapshot, fail_safe: &FailSafe) -> Vec<Cut> {
        let inner = self.lock();
        let mut cut = Vec::new();
        for (uid, pod) in &inner.pods {
            let workload = snapshot.workload(uid).unwrap_or(&pod.announced);
            for conn in pod.conns.values().filter(|c| !c.cancel.is_cancelled()) {
                let i = &conn.inputs;
                let reason = if i.via == Via::Plaintext
                    && snapshot.peer_auth_mode(workload, i.dst_port) == PeerAuthMode::Strict
                {
                    Some("plaintext refused: PeerAuthentication is STRICT".to_owned())
                } else {
                    let c = authz::Connection {
                        peer: i.peer.as_ref(),
                        src: i.src,
                        dst_port: i.dst_port,
                    };
                    match authz::authorize(snapshot, fail_safe, workload, c) {
                        Decision::Allow => None,
                        Decision::Deny(denied) => Some(denied.to_string()),
                    }
                };
                if let Some(reason) = reason {
                    conn.cancel.cancel();
                    cut.push(Cut {
                        workload: uid.clone(),
                        peer: i.peer.clone(),
                        src: i.src,
                        dst_port: i.dst_port,
                        reason,
                    });
                }
            }
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(policies: &str) -> Snapshot {
        yaml_serde::from_str(&format!(
            "workloads:\n- {{uid: prod/server, name: server, namespace: prod, addresses: [198.18.2.10], meshed: true}}\nauthorizationPolicies:\n{policies}"
        ))
        .expect("test model")
    }

    fn inputs(peer: &str) -> Inputs {
        Inputs {
            peer: Some(peer.parse().expect("identity")),
            src: "198.18.1.10".parse().expect("ip"),
            dst_port: 8080,
            via: Via::Hbone,
        }
    }

    #[tokio::test]
    async fn a_policy_change_cancels_only_what_it_now_denies() {
        let live = Arc::new(LiveConnections::default());
        let empty = model("  []\n");
        let server = empty.workload("prod/server").expect("workload").clone();
        let a = live
            .register(
                &server.uid,
                || server.clone(),
                inputs("spiffe://cluster.local/ns/apps/sa/a"),
            )
            .expect("registered");
        let b = live
            .register(
                &server.uid,
                || server.clone(),
                inputs("spiffe://cluster.local/ns/apps/sa/b"),
            )
            .expect("registered");
        assert_eq!(live.len(), 2);
        assert!(live.reauthorize(&empty, &FailSafe::new(&empty)).is_empty());
        let deny_a = model("- {name: no-a, namespace: prod, action: DENY, rules: [{from: [{principals: [cluster.local/ns/apps/sa/a]}]}]}\n");
        let cut = live.reauthorize(&deny_a, &FailSafe::new(&deny_a));
        assert_eq!(cut.len(), 1, "{cut:?}");
        assert!(cut[0].reason.contains("prod/no-a"), "{cut:?}");
        tokio::time::timeout(std::time::Duration::from_secs(1), a.revoked())
            .await
            .expect("a is revoked");
        assert!(!b.cancel.is_cancelled());
        // Already cut: not reported again.
        assert!(live
            .reauthorize(&deny_a, &FailSafe::new(&deny_a))
            .is_empty());
        drop(a);
        drop(b);
        assert!(live.is_empty());
    }

    #[tokio::test]
    async fn a_new_waypoint_cuts_what_goes_around_it_and_keeps_what_comes_through_it() {
        let live = Arc::new(LiveConnections::default());
        let before = model("  []\n");
        let server = before.workload("prod/server").expect("workload").clone();
        let register = |inputs| {
            live.register(&server.uid, || server.clone(), inputs)
                .expect("registered")
        };
        let client = register(inputs("spiffe://cluster.local/ns/apps/sa/client"));
        let plaintext = register(Inputs {
            peer: None,
            via: Via::Plaintext,
            ..inputs("spiffe://cluster.local/ns/apps/sa/client")
        });
        let through = register(inputs("spiffe://cluster.local/ns/prod/sa/wp"));
        assert!(live
            .reauthorize(&before, &FailSafe::new(&before))
            .is_empty());
        let mut after = before.clone();
        after.workloads[0].waypoint = Some(mesh_common::model::WaypointRef {
            name: "wp".into(),
            namespace: "prod".into(),
            addresses: Vec::new(),
        });
        after.workloads.push(
            yaml_serde::from_str("{uid: prod/wp-1, name: wp-1, namespace: prod, serviceAccount: wp, addresses: [198.18.1.50], labels: {gateway.networking.k8s.io/gateway-name: wp}}")
                .expect("instance"),
        );
        let cut = live.reauthorize(&after, &FailSafe::new(&after));
        assert_eq!(cut.len(), 2, "{cut:?}");
        assert!(
            cut.iter()
                .all(|c| c.reason.contains("only its instances are admitted")),
            "{cut:?}"
        );
        assert!(client.cancel.is_cancelled() && plaintext.cancel.is_cancelled());
        assert!(
            !through.cancel.is_cancelled(),
            "the waypoint's own connection is kept"
        );
    }
}

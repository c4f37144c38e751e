//! The pods announced to this agent: add, replace, remove and list them. No lock is held while a
//! pod is being set up (its first certificate may take seconds): the pod's slot is marked
//! pending, and an add that was overtaken by a remove or a newer add undoes its own work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mesh_common::identity::Identity;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::info;

use crate::ebpf::{AttachedProgram, Programs};
use crate::fastpath::FastPath;
use crate::local::LocalPods;
use crate::metrics::Metrics;
use crate::pod_info::{InvalidPod, PodInfo};
use crate::pod_listeners::{NodeParts, PodListeners, StartError};
use crate::state::State;
use crate::tunnel::Tunnel;

/// Errors of the enrolment operations.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// A field of the announced pod is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidPod),
    /// No such pod.
    #[error("pod {0} is not known to this agent")]
    Unknown(String),
    /// The pod's listeners or kernel attachments could not be set up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A remove or a newer add of the same pod arrived while this add was setting it up.
    #[error("pod {0} was removed or announced again while it was being set up")]
    Superseded(String),
}

/// One announced pod.
#[derive(Debug)]
struct Slot {
    info: PodInfo,
    /// Which add owns the slot: a later add or a remove changes it.
    generation: u64,
    state: SlotState,
}

#[derive(Debug)]
enum SlotState {
    /// Its listeners are being started.
    Pending,
    /// Set up: captured (with its listeners) or not captured (`None`).
    Ready(Option<PodListeners>),
}

/// A pod as the admin endpoint shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// Pod uid.
    pub uid: String,
    /// Whether the pod's traffic is captured.
    pub captured: bool,
    /// SPIFFE identity.
    pub identity: String,
    /// Pod addresses.
    pub addresses: Vec<IpAddr>,
    /// Network namespace path.
    pub netns: PathBuf,
    /// cgroup path.
    pub cgroup: PathBuf,
    /// Programs attached for the pod (empty when not captured).
    pub programs: Vec<AttachedProgram>,
}

#[derive(Debug, Default)]
struct Slots {
    by_uid: HashMap<String, Slot>,
    next_generation: u64,
}

/// All pods announced to this agent.
#[derive(Debug)]
pub struct Registry {
    node: NodeParts,
    slots: Mutex<Slots>,
}

impl Registry {
    /// An empty registry.
    pub fn new(
        programs: Arc<Programs>,
        state: Arc<State>,
        trust_domain: String,
        metrics: Arc<Metrics>,
        tunnel: Option<Arc<Tunnel>>,
        fastpath: Arc<FastPath>,
    ) -> Registry {
        let live = crate::live::follow(&state, metrics.clone());
        let local: Arc<LocalPods> = Arc::default();
        crate::kernel_flows::follow(
            &state,
            programs.clone(),
            fastpath.clone(),
            local.clone(),
            metrics.clone(),
        );
        Registry {
            node: NodeParts {
                programs,
                state,
                trust_domain,
                metrics,
                tunnel,
                local,
                fastpath,
                live,
            },
            slots: Mutex::new(Slots::default()),
        }
    }

    /// Adds (or replaces) a pod; returns whether it is captured.
    pub async fn add(&self, info: PodInfo) -> Result<bool, EnrolError> {
        info.validate()?;
        let uid = info.uid.clone();
        let captured = info.wants_capture();
        let (generation, replaced) = {
            let mut slots = self.slots.lock().await;
            if let Some(existing) = slots.by_uid.get(&uid) {
                if let (true, SlotState::Ready(listeners)) =
                    (existing.info == info, &existing.state)
                {
                    return Ok(listeners.is_some());
                }
            }
            slots.next_generation += 1;
            let generation = slots.next_generation;
            let slot = Slot {
                info: info.clone(),
                generation,
                state: SlotState::Pending,
            };
            let replaced = slots.by_uid.insert(uid.clone(), slot);
            self.update_gauge(&slots);
            (generation, replaced)
        };
        if let Some(old) = replaced {
            drop(self.release(old).await);
        }
        let listeners = if captured {
            match PodListeners::start(&self.node, info).await {
                Ok(listeners) => Some(listeners),
                Err(e) => {
                    let mut slots = self.slots.lock().await;
                    if slots.by_uid.get(&uid).map(|s| s.generation) == Some(generation) {
                        slots.by_uid.remove(&uid);
                        self.update_gauge(&slots);
                    }
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let superseded = {
            let mut slots = self.slots.lock().await;
            match slots.by_uid.get_mut(&uid) {
                Some(slot) if slot.generation == generation => {
                    slot.state = SlotState::Ready(listeners);
                    self.update_gauge(&slots);
                    None
                }
                _ => Some(listeners),
            }
        };
        if let Some(listeners) = superseded {
            if let Some(listeners) = listeners {
                let identity = listeners.context.identity.clone();
                drop(listeners.teardown(&self.node));
                self.forget_identity_if_unused(&identity).await;
            }
            return Err(EnrolError::Superseded(uid));
        }
        info!(pod = %uid, captured, "pod added");
        Ok(captured)
    }

    /// Removes a pod: detaches its programs and closes its listeners.
    pub async fn remove(&self, uid: &str) -> Result<(), EnrolError> {
        let removed = {
            let mut slots = self.slots.lock().await;
            let removed = slots.by_uid.remove(uid);
            self.update_gauge(&slots);
            removed
        };
        let slot = removed.ok_or_else(|| EnrolError::Unknown(uid.to_owned()))?;
        drop(self.release(slot).await);
        info!(pod = %uid, "pod removed");
        Ok(())
    }

    /// Tears down a slot taken out of the registry (a pending one is undone by its own add) and
    /// forgets its identity's certificate if no other pod of the node has that identity.
    async fn release(&self, slot: Slot) -> Vec<JoinHandle<()>> {
        let SlotState::Ready(Some(listeners)) = slot.state else {
            return Vec::new();
        };
        let identity = listeners.context.identity.clone();
        let servers = listeners.teardown(&self.node);
        self.forget_identity_if_unused(&identity).await;
        servers
    }

    /// A departed pod's certificate is not renewed forever: forgotten once no announced pod has
    /// its identity.
    async fn forget_identity_if_unused(&self, identity: &Identity) {
        let Some(tunnel) = &self.node.tunnel else {
            return;
        };
        let slots = self.slots.lock().await;
        let in_use = slots
            .by_uid
            .values()
            .any(|s| s.info.wants_capture() && self.node.identity(&s.info) == *identity);
        if !in_use {
            tunnel.certs.forget(identity);
            info!(%identity, "certificate forgotten: no pod of this node has the identity");
        }
    }

    fn update_gauge(&self, slots: &Slots) {
        let captured = slots
            .by_uid
            .values()
            .filter(|s| matches!(s.state, SlotState::Ready(Some(_))))
            .count();
        self.node
            .metrics
            .enrolled_pods
            .set(i64::try_from(captured).unwrap_or(i64::MAX));
    }

    /// Removes every pod (agent shutdown): stops accepting everywhere, then waits for in-flight
    /// HBONE streams to drain (each server cuts what is left after its grace period).
    pub async fn remove_all(&self) {
        let drained: Vec<Slot> = self
            .slots
            .lock()
            .await
            .by_uid
            .drain()
            .map(|(_, s)| s)
            .collect();
        let mut servers = Vec::new();
        for slot in drained {
            if let SlotState::Ready(Some(listeners)) = slot.state {
                servers.extend(listeners.teardown(&self.node));
            }
        }
        for server in servers {
            let _ = server.await;
        }
    }

    /// The pods, sorted by uid (a pod still being set up shows as not captured).
    pub async fn list(&self) -> Vec<PodStatus> {
        let slots = self.slots.lock().await;
        let mut list: Vec<PodStatus> = slots
            .by_uid
            .values()
            .map(|s| {
                let captured = matches!(s.state, SlotState::Ready(Some(_)));
                PodStatus {
                    uid: s.info.uid.clone(),
                    captured,
                    identity: self.node.identity(&s.info).to_string(),
                    addresses: s.info.addresses.clone(),
                    netns: s.info.netns.clone(),
                    cgroup: s.info.cgroup.clone(),
                    programs: if captured {
                        Programs::describe(&s.info.cgroup, &s.info.netns)
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        list.sort_by(|a, b| a.uid.cmp(&b.uid));
        list
    }
}

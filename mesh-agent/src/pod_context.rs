//! What a proxy task knows about its pod: the announced pod, its identity and netns, and the
//! node-wide parts it uses (model, programs, metrics, tunnel, same-node pods, fast path). It sits
//! below both the registry, which builds it, and the proxies, which read it.

use std::sync::Arc;

use mesh_common::identity::Identity;
use mesh_common::model::Workload;

use crate::ebpf::Programs;
use crate::fastpath::FastPath;
use crate::live::LiveConnections;
use crate::local::LocalPods;
use crate::metrics::Metrics;
use crate::netns::Netns;
use crate::pod_info::PodInfo;
use crate::state::State;
use crate::tunnel::Tunnel;

/// What a proxy task needs to know about its pod.
#[derive(Debug)]
pub struct PodContext {
    /// The pod as announced.
    pub info: PodInfo,
    /// Its SPIFFE identity.
    pub identity: Identity,
    /// Its network namespace.
    pub netns: Arc<Netns>,
    /// The kernel programs and maps.
    pub programs: Arc<Programs>,
    /// The mesh model.
    pub state: Arc<State>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Certificates and HBONE pool (`None`: no certificate service configured, plaintext only).
    pub tunnel: Option<Arc<Tunnel>>,
    /// The node's other captured pods, for same-node delivery.
    pub local: Arc<LocalPods>,
    /// Same-node verdicts reused by the kernel.
    pub fastpath: Arc<FastPath>,
    /// The node's live inbound connections (re-authorized when the model changes).
    pub live: Arc<LiveConnections>,
}

impl PodContext {
    /// The pod as a workload of the model (what policies select on): the control plane's view
    /// when it knows the pod, else what enrolment announced.
    pub fn workload(&self) -> Workload {
        self.state
            .workload(&self.info.uid)
            .unwrap_or_else(|| self.announced())
    }

    /// The pod as enrolment announced it, as a workload.
    pub fn announced(&self) -> Workload {
        Workload {
            locality: Default::default(),
            workload_name: String::new(),
            uid: self.info.uid.clone(),
            name: self.info.name.clone(),
            namespace: self.info.namespace.clone(),
            service_account: self.info.service_account.clone(),
            node: String::new(),
            addresses: self.info.addresses.clone(),
            meshed: true,
            labels: self.info.labels.clone(),
            waypoint: None,
        }
    }
}

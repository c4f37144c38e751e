//! The agent's view of the mesh: workloads and services, where a destination really goes, and
//! which waypoint (with its instances) a destination must go through.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use mesh_common::istio_metrics::{Peer, ServiceLabels};
use mesh_common::model::compat::{self, UnknownValues};
use mesh_common::model::{
    effective_telemetry, Endpoint, FailSafe, Service, Snapshot, TelemetryScope, WaypointRef,
    Workload,
};
use mesh_common::scope_telemetry::ScopeTelemetry;

use crate::nearby;

/// Errors loading the data-plane model or resolving a destination.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The local config file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The local config file is not a valid model.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A service matched but has no endpoints.
    #[error("service {namespace}/{name} has no endpoints")]
    NoEndpoints { namespace: String, name: String },
}

/// Where a captured connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The destination is a service address: connect to this endpoint.
    Service {
        namespace: String,
        name: String,
        endpoint: SocketAddr,
        /// How many endpoints it was chosen from (1: the choice is always the same).
        choices: usize,
    },
    /// The destination is the address of a service assigned a waypoint: the waypoint picks the
    /// endpoint, so none is chosen here (nor is a service without endpoints an error: the
    /// waypoint answers for it).
    ViaWaypoint {
        namespace: String,
        name: String,
        /// The service address and port connected to.
        vip: SocketAddr,
        /// The service's waypoint.
        waypoint: WaypointRef,
    },
    /// Not a service address: connect to it as it is.
    Direct(SocketAddr),
}

impl Resolved {
    /// Whether every resolution of this destination gives the same target (a pod address, or
    /// a service with one endpoint), so a decision about it can be reused.
    pub fn is_fixed(&self) -> bool {
        match self {
            Resolved::Service { choices, .. } => *choices == 1,
            Resolved::ViaWaypoint { .. } => false,
            Resolved::Direct(_) => true,
        }
    }

    /// The address to connect to (via a waypoint: the service address itself).
    pub fn target(&self) -> SocketAddr {
        match self {
            Resolved::Service { endpoint, .. } => *endpoint,
            Resolved::ViaWaypoint { vip, .. } => *vip,
            Resolved::Direct(addr) => *addr,
        }
    }

    /// The service (`namespace/name`) connected to, if a service address.
    pub fn service(&self) -> Option<String> {
        match self {
            Resolved::Service {
                namespace, name, ..
            }
            | Resolved::ViaWaypoint {
                namespace, name, ..
            } => Some(format!("{namespace}/{name}")),
            Resolved::Direct(_) => None,
        }
    }
}

/// A snapshot with the address indexes the per-connection lookups use, built once per update so
/// no connection scans every workload or service.
#[derive(Debug, Default)]
struct Indexed {
    snapshot: Arc<Snapshot>,
    /// Admission before policy (waypoint instances only, what nothing enforces), and the
    /// instances of each waypoint.
    fail_safe: Arc<FailSafe>,
    /// Address -> index of the meshed workload with that address.
    meshed_by_address: HashMap<IpAddr, usize>,
    /// Workload uid -> index.
    workloads_by_uid: HashMap<String, usize>,
    /// Virtual IP -> indexes of the services with that VIP, in snapshot order.
    services_by_vip: HashMap<IpAddr, Vec<usize>>,
    /// Address -> index of any workload with that address (meshed first).
    workloads_by_address: HashMap<IpAddr, usize>,
    /// Each workload's metric labels, by workload index.
    peers: Vec<Arc<Peer>>,
    /// Each service's metric labels, by `namespace/name`.
    service_labels: HashMap<String, Arc<ServiceLabels>>,
    /// Workload uid -> the metric labels of the services it is an endpoint of (model order),
    /// each with a target port.
    service_of_workload: HashMap<String, Vec<(Arc<ServiceLabels>, u16)>>,
    /// The `Telemetry` metric settings of each local workload, computed on first use.
    telemetry: std::sync::Mutex<HashMap<String, Arc<ScopeTelemetry>>>,
}

impl Indexed {
    fn new(snapshot: Arc<Snapshot>) -> Indexed {
        let mut meshed_by_address = HashMap::new();
        for (i, w) in snapshot
            .workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| w.meshed)
        {
            for ip in &w.addresses {
                meshed_by_address.entry(*ip).or_insert(i);
            }
        }
        let workloads_by_uid = snapshot
            .workloads
            .iter()
            .enumerate()
            .map(|(i, w)| (w.uid.clone(), i))
            .collect();
        let mut services_by_vip: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        for (i, service) in snapshot.services.iter().enumerate() {
            for vip in &service.vips {
                services_by_vip.entry(*vip).or_default().push(i);
            }
        }
        let mut workloads_by_address = meshed_by_address.clone();
        for (i, w) in snapshot.workloads.iter().enumerate() {
            for ip in &w.addresses {
                workloads_by_address.entry(*ip).or_insert(i);
            }
        }
        let peers = snapshot
            .workloads
            .iter()
            .map(|w| Arc::new(Peer::of(w)))
            .collect();
        let mut service_labels = HashMap::new();
        for s in &snapshot.services {
            service_labels
                .entry(format!("{}/{}", s.namespace, s.name))
                .or_insert_with(|| Arc::new(ServiceLabels::of(s)));
        }
        let mut service_of_workload: HashMap<String, Vec<(Arc<ServiceLabels>, u16)>> =
            HashMap::new();
        for service in &snapshot.services {
            let Some(labels) =
                service_labels.get(&format!("{}/{}", service.namespace, service.name))
            else {
                continue;
            };
            for e in &service.endpoints {
                let ports = service_of_workload
                    .entry(e.workload_uid.clone())
                    .or_default();
                for p in &service.ports {
                    ports.push((labels.clone(), p.target_port.unwrap_or(p.port)));
                }
            }
        }
        Indexed {
            fail_safe: Arc::new(FailSafe::new(&snapshot)),
            snapshot,
            meshed_by_address,
            workloads_by_uid,
            services_by_vip,
            workloads_by_address,
            peers,
            service_labels,
            service_of_workload,
            telemetry: Default::default(),
        }
    }

    /// The service whose VIP and port match `dst`, with the endpoint port to use.
    fn service(&self, dst: SocketAddr) -> Option<(&Service, u16)> {
        self.services_by_vip.get(&dst.ip())?.iter().find_map(|&i| {
            let service = &self.snapshot.services[i];
            let port = service.ports.iter().find(|p| p.port == dst.port())?;
            Some((service, port.target_port.unwrap_or(port.port)))
        })
    }
}

/// A waypoint a destination must go through, with its instances (in uid order; none when no
/// instance runs).
#[derive(Debug, Clone, PartialEq)]
pub struct WaypointRoute {
    /// The waypoint.
    pub waypoint: WaypointRef,
    /// Its instances.
    pub instances: Vec<Workload>,
}

/// Called after every model update.
type OnChange = Box<dyn Fn() + Send + Sync>;

/// The current snapshot, swapped whole on update.
#[derive(Default)]
pub struct State {
    current: RwLock<Arc<Indexed>>,
    next_endpoint: AtomicUsize,
    on_change: RwLock<Vec<OnChange>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl State {
    /// A state holding `snapshot`.
    pub fn new(snapshot: Snapshot) -> State {
        State {
            current: RwLock::new(Arc::new(Indexed::new(Arc::new(snapshot)))),
            next_endpoint: AtomicUsize::new(0),
            on_change: RwLock::new(Vec::new()),
        }
    }

    /// Adds what runs after each update, once the new snapshot is in place, in the order added
    /// (the fast path withdraws its verdicts there; live connections are re-authorized).
    pub fn on_change(&self, f: impl Fn() + Send + Sync + 'static) {
        self.on_change
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// Reads a YAML model file (unknown fields are errors, reported with their path).
    pub fn load_file(path: &Path) -> Result<Snapshot, StateError> {
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let parse_error = |message: String| StateError::Parse {
            path: path.display().to_string(),
            message,
        };
        let de = yaml_serde::Deserializer::from_str(&text);
        let (snapshot, fields): (Snapshot, _) =
            compat::deserialize_reporting(de).map_err(|e| parse_error(e.to_string()))?;
        // The model tolerates what a newer controller adds; a file written by hand must match
        // this build exactly, so a typo is an error naming the field, not a silent default.
        let problems: Vec<String> = fields
            .iter()
            .map(|field| format!("unknown field `{field}`"))
            .chain(snapshot.unknown_values().iter().map(ToString::to_string))
            .collect();
        if !problems.is_empty() {
            return Err(parse_error(problems.join("; ")));
        }
        Ok(snapshot)
    }

    /// Follows a controller: every snapshot the config client publishes replaces the current one
    /// (the client keeps the last good one while the controller is away).
    pub async fn follow(&self, mut updates: tokio::sync::watch::Receiver<Arc<Snapshot>>) {
        loop {
            let snapshot = updates.borrow_and_update().clone();
            tracing::info!(version = %snapshot.version, workloads = snapshot.workloads.len(), services = snapshot.services.len(), "config applied");
            self.install(snapshot);
            if updates.changed().await.is_err() {
                return;
            }
        }
    }

    /// Replaces the snapshot.
    pub fn replace(&self, snapshot: Snapshot) {
        self.install(Arc::new(snapshot));
    }

    fn install(&self, snapshot: Arc<Snapshot>) {
        let indexed = Arc::new(Indexed::new(snapshot));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = indexed;
        for f in self
            .on_change
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f();
        }
    }

    fn current(&self) -> Arc<Indexed> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current().snapshot.clone()
    }

    /// The current snapshot with its fail-safe refusals (what authorization reads).
    pub fn policies(&self) -> (Arc<Snapshot>, Arc<FailSafe>) {
        let current = self.current();
        (current.snapshot.clone(), current.fail_safe.clone())
    }

    /// The workload with this uid, if the model has it.
    pub fn workload(&self, uid: &str) -> Option<Workload> {
        let current = self.current();
        let index = *current.workloads_by_uid.get(uid)?;
        current.snapshot.workloads.get(index).cloned()
    }

    /// The metric labels of the workload with this uid.
    pub fn peer(&self, uid: &str) -> Option<Arc<Peer>> {
        let current = self.current();
        let index = *current.workloads_by_uid.get(uid)?;
        current.peers.get(index).cloned()
    }

    /// The metric labels of the workload with this address (a meshed one first), and its
    /// workload for its identity.
    pub fn peer_at(&self, ip: IpAddr) -> Option<(Arc<Peer>, Workload)> {
        let current = self.current();
        let index = *current.workloads_by_address.get(&ip)?;
        Some((
            current.peers.get(index)?.clone(),
            current.snapshot.workloads.get(index)?.clone(),
        ))
    }

    /// The metric labels of a service (`namespace/name`).
    pub fn service_labels(&self, key: &str) -> Option<Arc<ServiceLabels>> {
        self.current().service_labels.get(key).cloned()
    }

    /// The metric labels of the service a connection to `port` of workload `uid` is for: the
    /// first service (model order) that has the workload as an endpoint on that target port.
    pub fn service_of(&self, uid: &str, port: u16) -> Option<Arc<ServiceLabels>> {
        let current = self.current();
        let (labels, _) = current
            .service_of_workload
            .get(uid)?
            .iter()
            .find(|(_, p)| *p == port)?;
        Some(labels.clone())
    }

    /// The `Telemetry` settings (metric overrides, access log) that apply to the workload `uid`
    /// of `namespace` (its labels from the model; computed once per model version and
    /// workload, when logging what is not applied).
    pub fn telemetry(&self, uid: &str, namespace: &str) -> Arc<ScopeTelemetry> {
        let current = self.current();
        if current.snapshot.telemetries.is_empty() {
            static NONE: std::sync::OnceLock<Arc<ScopeTelemetry>> = std::sync::OnceLock::new();
            return NONE.get_or_init(Arc::default).clone();
        }
        let mut cache = current.telemetry.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(uid.to_owned())
            .or_insert_with(|| {
                let labels = current
                    .workloads_by_uid
                    .get(uid)
                    .and_then(|&i| current.snapshot.workloads.get(i))
                    .map(|w| &w.labels);
                let scope = TelemetryScope {
                    namespace,
                    labels,
                    targets: &[],
                };
                let effective = effective_telemetry(&current.snapshot.telemetries, &scope);
                let settings = ScopeTelemetry::new(&effective);
                if !settings.problems.is_empty() {
                    tracing::warn!(workload = %uid, problems = ?settings.problems, "Telemetry settings not fully applied by the agent");
                }
                Arc::new(settings)
            })
            .clone()
    }

    /// The meshed workload with this address, if any (its traffic goes over HBONE).
    pub fn meshed_workload(&self, ip: IpAddr) -> Option<Workload> {
        let current = self.current();
        let index = *current.meshed_by_address.get(&ip)?;
        current.snapshot.workloads.get(index).cloned()
    }

    /// The waypoint a resolved destination must go through, if any: a service address's
    /// waypoint ([`Resolved::ViaWaypoint`]); for a pod address (or the endpoint a service
    /// without waypoint resolved to), the meshed workload's own waypoint, else that of the
    /// first service (model order) it is an endpoint of whose target ports include the port
    /// (`FailSafe::waypoint`, the same rules its agent admits by).
    pub fn waypoint(&self, resolved: &Resolved) -> Option<WaypointRoute> {
        let current = self.current();
        let waypoint = match resolved {
            Resolved::ViaWaypoint { waypoint, .. } => waypoint,
            Resolved::Service {
                endpoint: target, ..
            }
            | Resolved::Direct(target) => {
                let index = *current.meshed_by_address.get(&target.ip())?;
                let uid = &current.snapshot.workloads.get(index)?.uid;
                current.fail_safe.waypoint(uid, target.port())?
            }
        };
        let instances = current
            .fail_safe
            .instances()
            .get(waypoint)
            .iter()
            .filter_map(|&i| current.snapshot.workloads.get(i).cloned())
            .collect();
        Some(WaypointRoute {
            waypoint: waypoint.clone(),
            instances,
        })
    }

    /// Resolves a captured destination: a service VIP and port pick an endpoint (round robin),
    /// unless the service has a waypoint (which picks it); anything else is used as it is.
    pub fn resolve(&self, dst: SocketAddr) -> Result<Resolved, StateError> {
        self.resolve_from(dst, None)
    }

    /// [`Self::resolve`] for a connection from the workload `source` (uid): the round robin is
    /// over the endpoints the service's `trafficDistribution` prefers for where that workload
    /// runs ([`nearby::prefer`]; an unknown source: all endpoints).
    ///
    /// The kernel fast path may reuse a verdict only when the destination has a single endpoint
    /// of the family ([`Resolved::is_fixed`]), counted *before* the preference: a service whose
    /// preference narrows several endpoints to one stays off the fast path, so its choice is
    /// always made here (fail closed: the kernel never applies, nor ignores, a preference).
    pub fn resolve_from(
        &self,
        dst: SocketAddr,
        source: Option<&str>,
    ) -> Result<Resolved, StateError> {
        let current = self.current();
        let Some((service, port)) = current.service(dst) else {
            return Ok(Resolved::Direct(dst));
        };
        if let Some(waypoint) = &service.waypoint {
            return Ok(Resolved::ViaWaypoint {
                namespace: service.namespace.clone(),
                name: service.name.clone(),
                vip: dst,
                waypoint: waypoint.clone(),
            });
        }
        if service.endpoints.is_empty() {
            return Err(StateError::NoEndpoints {
                namespace: service.namespace.clone(),
                name: service.name.clone(),
            });
        }
        // Endpoints of the destination's address family (a dual-stack pod is one endpoint per
        // family); any endpoint if the service has none of that family.
        let same_family: Vec<&Endpoint> = service
            .endpoints
            .iter()
            .filter(|e| e.address.is_ipv4() == dst.is_ipv4())
            .collect();
        let candidates: Vec<&Endpoint> = if same_family.is_empty() {
            service.endpoints.iter().collect()
        } else {
            same_family
        };
        let choices = candidates.len();
        fn place(w: &Workload) -> nearby::Place<'_> {
            nearby::Place {
                node: &w.node,
                locality: &w.locality,
            }
        }
        let workload = |uid: &str| {
            let index = *current.workloads_by_uid.get(uid)?;
            current.snapshot.workloads.get(index)
        };
        let candidates = match service.traffic_distribution {
            None => candidates,
            preference => {
                let source = source.and_then(workload).map(place);
                nearby::prefer(preference, source, candidates, |e| {
                    workload(&e.workload_uid).map(place)
                })
                .0
            }
        };
        let index = self.next_endpoint.fetch_add(1, Ordering::Relaxed) % candidates.len();
        let endpoint = candidates[index];
        Ok(Resolved::Service {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            endpoint: SocketAddr::new(endpoint.address, port),
            choices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test literal")
    }

    fn state() -> State {
        let snapshot: Snapshot = yaml_serde::from_str(
            "services:\n- name: echo\n  namespace: default\n  vips: [198.19.0.10]\n  ports: [{port: 80, targetPort: 8080}]\n  endpoints:\n  - {workloadUid: default/a, address: 198.18.1.10}\n  - {workloadUid: default/b, address: 198.18.2.10}\n",
        )
        .expect("test model");
        State::new(snapshot)
    }

    #[test]
    fn service_vip_round_robins_over_endpoints_with_target_port() {
        let s = state();
        let first = s
            .resolve(addr("198.19.0.10:80"))
            .expect("resolves")
            .target();
        let second = s
            .resolve(addr("198.19.0.10:80"))
            .expect("resolves")
            .target();
        let mut got = vec![first, second];
        got.sort();
        assert_eq!(
            got,
            vec![addr("198.18.1.10:8080"), addr("198.18.2.10:8080")]
        );
    }

    #[test]
    fn endpoints_of_the_destination_family_are_preferred() {
        let snapshot: Snapshot = yaml_serde::from_str(
            "services:\n- name: echo\n  namespace: default\n  vips: [198.19.0.10, fd19::10]\n  ports: [{port: 80}]\n  endpoints:\n  - {workloadUid: default/a, address: 198.18.1.10}\n  - {workloadUid: default/a, address: 'fd18:1::10'}\n",
        )
        .expect("test model");
        let s = State::new(snapshot);
        for _ in 0..4 {
            assert_eq!(
                s.resolve(addr("198.19.0.10:80")).expect("v4").target(),
                addr("198.18.1.10:80")
            );
            assert_eq!(
                s.resolve(addr("[fd19::10]:80")).expect("v6").target(),
                addr("[fd18:1::10]:80")
            );
        }
    }

    #[test]
    fn traffic_distribution_keeps_connections_near_the_client() {
        let model = |distribution: &str| {
            let snapshot: Snapshot = yaml_serde::from_str(&format!(
                "workloads:
- {{uid: apps/client, name: client, namespace: apps, node: n1, addresses: [198.18.1.5], meshed: true, locality: {{region: r, zone: a}}}}
- {{uid: apps/far, name: far, namespace: apps, node: n3, addresses: [198.18.3.10], meshed: true, locality: {{region: r, zone: b}}}}
- {{uid: apps/near, name: near, namespace: apps, node: n2, addresses: [198.18.2.10], meshed: true, locality: {{region: r, zone: a}}}}
services:
- name: echo
  namespace: apps
  vips: [198.19.0.10]
  ports: [{{port: 80}}]
  endpoints: [{{workloadUid: apps/far, address: 198.18.3.10}}, {{workloadUid: apps/near, address: 198.18.2.10}}]
{distribution}"
            ))
            .expect("test model");
            State::new(snapshot)
        };
        let targets = |s: &State, source| {
            let mut seen: Vec<SocketAddr> = (0..4)
                .map(|_| {
                    let resolved = s
                        .resolve_from(addr("198.19.0.10:80"), source)
                        .expect("resolves");
                    assert!(!resolved.is_fixed(), "two endpoints: off the fast path");
                    resolved.target()
                })
                .collect();
            seen.sort();
            seen.dedup();
            seen
        };
        let (near, both) = (
            vec![addr("198.18.2.10:80")],
            vec![addr("198.18.2.10:80"), addr("198.18.3.10:80")],
        );
        let close = model("  trafficDistribution: PreferClose");
        assert_eq!(targets(&close, Some("apps/client")), near);
        assert_eq!(targets(&close, None), both, "unknown source: all");
        assert_eq!(
            targets(&close, Some("apps/gone")),
            both,
            "source not in the model: all"
        );
        assert_eq!(
            targets(&model(""), Some("apps/client")),
            both,
            "no preference: all"
        );
        assert_eq!(
            targets(
                &model("  trafficDistribution: SomethingNew"),
                Some("apps/client")
            ),
            both,
            "unknown preference: all"
        );
    }

    #[test]
    fn other_port_or_address_is_direct() {
        let s = state();
        assert_eq!(
            s.resolve(addr("198.19.0.10:81")).expect("ok"),
            Resolved::Direct(addr("198.19.0.10:81"))
        );
        assert_eq!(
            s.resolve(addr("198.18.1.10:8080")).expect("ok"),
            Resolved::Direct(addr("198.18.1.10:8080"))
        );
    }

    #[test]
    fn which_waypoint_a_destination_goes_through() {
        let snapshot: Snapshot = yaml_serde::from_str(
            "workloads:
- {uid: apps/echo, name: echo, namespace: apps, addresses: [198.18.2.10], meshed: true}
- {uid: apps/db, name: db, namespace: apps, addresses: [198.18.2.11], meshed: true, waypoint: {name: wp, namespace: apps}}
- {uid: apps/wp-b, name: wp-b, namespace: apps, serviceAccount: wp, addresses: [198.18.1.51], labels: {gateway.networking.k8s.io/gateway-name: wp}}
- {uid: apps/wp-a, name: wp-a, namespace: apps, serviceAccount: wp, addresses: [198.18.1.50, 'fd18:1::50'], labels: {gateway.networking.k8s.io/gateway-name: wp}}
services:
- {name: web, namespace: apps, vips: [198.19.0.11], ports: [{port: 80, targetPort: 8080}], endpoints: [{workloadUid: apps/echo, address: 198.18.2.10}], waypoint: {name: wp, namespace: apps}}
- {name: plain, namespace: apps, vips: [198.19.0.12], ports: [{port: 81, targetPort: 8080}, {port: 82, targetPort: 9090}], endpoints: [{workloadUid: apps/echo, address: 198.18.2.10}]}
- {name: empty, namespace: apps, vips: [198.19.0.13], ports: [{port: 80}], waypoint: {name: wp, namespace: apps}}
",
        )
        .expect("test model");
        let s = State::new(snapshot);
        let via = |name: &str, vip: &str| Resolved::ViaWaypoint {
            namespace: "apps".into(),
            name: name.into(),
            vip: addr(vip),
            waypoint: WaypointRef {
                name: "wp".into(),
                namespace: "apps".into(),
                addresses: Vec::new(),
            },
        };
        let plain = |port| Resolved::Service {
            namespace: "apps".into(),
            name: "plain".into(),
            endpoint: addr(&format!("198.18.2.10:{port}")),
            choices: 1,
        };
        // (case, destination, resolved, waypoint)
        #[rustfmt::skip]
        let cases = [
            ("service with a waypoint: not resolved here", "198.19.0.11:80", via("web", "198.19.0.11:80"), Some("apps/wp")),
            ("service with a waypoint and no endpoints: the waypoint answers", "198.19.0.13:80", via("empty", "198.19.0.13:80"), Some("apps/wp")),
            ("service without one, to the target port of one that has", "198.19.0.12:81", plain(8080), Some("apps/wp")),
            ("service without one, to another port of its endpoint", "198.19.0.12:82", plain(9090), None),
            ("pod address on the target port of its service with a waypoint", "198.18.2.10:8080", Resolved::Direct(addr("198.18.2.10:8080")), Some("apps/wp")),
            ("pod address on another port", "198.18.2.10:9090", Resolved::Direct(addr("198.18.2.10:9090")), None),
            ("pod with a waypoint of its own: every port", "198.18.2.11:1", Resolved::Direct(addr("198.18.2.11:1")), Some("apps/wp")),
            ("outside the model", "198.18.9.9:80", Resolved::Direct(addr("198.18.9.9:80")), None),
        ];
        for (case, dst, want, waypoint) in cases {
            let resolved = s.resolve(addr(dst)).expect("resolves");
            assert_eq!(resolved, want, "{case}");
            let route = s.waypoint(&resolved);
            let got = route
                .as_ref()
                .map(|r| format!("{}/{}", r.waypoint.namespace, r.waypoint.name));
            assert_eq!(got.as_deref(), waypoint, "{case}");
            if let Some(route) = route {
                let uids: Vec<&str> = route.instances.iter().map(|w| w.uid.as_str()).collect();
                assert_eq!(uids, ["apps/wp-a", "apps/wp-b"], "{case}: in uid order");
            }
        }
    }

    #[test]
    fn service_without_endpoints_is_an_error() {
        let s = state();
        let mut snap = (*s.snapshot()).clone();
        snap.services[0].endpoints.clear();
        s.replace(snap);
        assert!(matches!(
            s.resolve(addr("198.19.0.10:80")),
            Err(StateError::NoEndpoints { .. })
        ));
    }

    #[test]
    fn load_file_names_the_file_and_unknown_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.yaml");
        std::fs::write(&path, "services:\n- name: a\n  namespace: b\n  vipz: []\n").expect("write");
        let err = State::load_file(&path)
            .expect_err("unknown field must fail")
            .to_string();
        assert!(err.contains("model.yaml") && err.contains("vipz"), "{err}");
    }

    #[test]
    fn load_file_refuses_what_the_stream_would_tolerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.yaml");
        // (file, what the error must name)
        let cases = [
            (
                "workloads:\n- {uid: a/b, name: b, namespace: a, addresses: [], waypoint: {name: w, namespace: a, adresses: []}}\n",
                "unknown field `workloads.0.waypoint.adresses`",
            ),
            (
                "authorizationPolicies:\n- {name: p, namespace: a, action: DENNY}\n",
                "authorizationPolicies.0.action: unknown value",
            ),
            (
                "peerAuthentications:\n- {name: p, namespace: a, mode: STRCT}\n",
                "peerAuthentications.0.mode: unknown value",
            ),
        ];
        for (text, named) in cases {
            std::fs::write(&path, text).expect("write");
            let err = State::load_file(&path).expect_err("must fail").to_string();
            assert!(err.contains(named), "{text}: {err}");
        }
        std::fs::write(&path, "services:\n- {name: a, namespace: b}\n").expect("write");
        assert_eq!(State::load_file(&path).expect("valid").services.len(), 1);
    }
}

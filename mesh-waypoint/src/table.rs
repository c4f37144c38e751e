//! The waypoint's view of one model, built once per snapshot: routes by host, services by VIP
//! and host name, workloads by address and uid, destination policies by host, the authorization
//! policies and JWT rules that apply here. Requests resolve their [`Target`] and [`SourceInfo`] through it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_common::identity::Identity;
use mesh_common::model::{PortProtocol, Service, Snapshot, Workload};

use crate::authz::AuthzIndex;
use crate::hosts::{self, HostIndex};
use crate::jwt::JwtIndex;
use crate::rules::{self, Rule, Warning};

/// A service by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    pub(crate) fn of(s: &Service) -> ServiceKey {
        ServiceKey {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a CONNECT authority names. Self-describing (no index into a table), so a connection
/// opened under one model keeps meaning the same thing under the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A service VIP and one of its ports.
    Service {
        /// The service.
        service: ServiceKey,
        /// Its host name (what routes apply by).
        hostname: String,
        /// The VIP dialed.
        vip: IpAddr,
        /// The service port dialed.
        port: u16,
    },
    /// A workload address and port.
    Workload {
        /// The workload's uid.
        uid: String,
        /// The address dialed.
        address: IpAddr,
        /// The port dialed.
        port: u16,
    },
}

impl Target {
    /// The port dialed.
    pub fn port(&self) -> u16 {
        match self {
            Target::Service { port, .. } | Target::Workload { port, .. } => *port,
        }
    }

    /// The address dialed.
    pub fn address(&self) -> IpAddr {
        match self {
            Target::Service { vip, .. } => *vip,
            Target::Workload { address, .. } => *address,
        }
    }
}

/// Who sent a request: the original source's identity (the peer certificate) and address (the
/// peer address), with its namespace and labels from the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// The peer identity (`None`: no certificate, which HBONE never lets through).
    pub identity: Option<Identity>,
    /// The source pod's address.
    pub address: IpAddr,
    /// Namespace: the identity's, else the workload's at `address`.
    pub namespace: Option<String>,
    /// Labels of the workload at `address`, when its identity is the peer's.
    pub labels: BTreeMap<String, String>,
    /// Locality of the workload at `address`, when its identity is the peer's (empty unknown).
    pub locality: mesh_common::model::Locality,
}

/// The waypoint's tables for one model.
#[derive(Debug)]
pub struct RouteTable {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) trust_domain: String,
    pub(crate) waypoint: (String, String),
    services_by_vip: HashMap<IpAddr, usize>,
    services_by_host: HashMap<String, usize>,
    services_by_key: HashMap<ServiceKey, usize>,
    workloads_by_addr: HashMap<IpAddr, usize>,
    workloads_by_uid: HashMap<String, usize>,
    pub(crate) routes: HostIndex<Vec<Arc<Rule>>>,
    /// TCP and TLS rules by host.
    pub(crate) l4_routes: HostIndex<crate::l4::L4Routes>,
    /// Destination policy (index into the snapshot) by host.
    pub(crate) destination_policies: HostIndex<usize>,
    pub(crate) authz: AuthzIndex,
    pub(crate) jwt: JwtIndex,
    warnings: Vec<Warning>,
    /// Istio metric labels of this model's workloads and services, built on first use.
    labels: crate::istio_request::LabelIndex,
    /// Tracing settings of this model's destinations, built on first use.
    trace: crate::trace::SettingsIndex,
}

/// A service's host name: the model's, else its Kubernetes name.
pub(crate) fn service_hostname(s: &Service) -> String {
    if s.hostname.is_empty() {
        hosts::service_fqdn(&s.namespace, &s.name)
    } else {
        hosts::normalize(&s.hostname)
    }
}

impl RouteTable {
    /// Builds the tables of `snapshot` for the waypoint `waypoint` (namespace, name) in
    /// `trust_domain`. Routes sharing a host keep their rules in model order, one after the
    /// other (as Istio merges HTTPRoutes); what cannot be applied is in [`Self::warnings`].
    pub fn new(snapshot: Arc<Snapshot>, trust_domain: &str, waypoint: (&str, &str)) -> RouteTable {
        Self::with_key_sets(snapshot, trust_domain, waypoint, &|_| None)
    }

    /// [`Self::new`], with the JWT key sets fetched from `http://` URLs so far.
    pub fn with_key_sets(
        snapshot: Arc<Snapshot>,
        trust_domain: &str,
        waypoint: (&str, &str),
        fetched: crate::jwt::Fetched<'_>,
    ) -> RouteTable {
        let mut services_by_vip = HashMap::new();
        let mut services_by_host = HashMap::new();
        let mut services_by_key = HashMap::new();
        for (i, s) in snapshot.services.iter().enumerate() {
            for vip in &s.vips {
                services_by_vip.entry(*vip).or_insert(i);
            }
            services_by_host.entry(service_hostname(s)).or_insert(i);
            services_by_key.entry(ServiceKey::of(s)).or_insert(i);
        }
        let mut workloads_by_addr = HashMap::new();
        let mut workloads_by_uid = HashMap::new();
        for (i, w) in snapshot.workloads.iter().enumerate() {
            for a in &w.addresses {
                workloads_by_addr.entry(*a).or_insert(i);
            }
            workloads_by_uid.entry(w.uid.clone()).or_insert(i);
        }
        let known: HashSet<String> = services_by_host.keys().cloned().collect();
        let mut warnings = Vec::new();
        let mut routes: HostIndex<Vec<Arc<Rule>>> = HostIndex::default();
        let mut l4_routes: HostIndex<crate::l4::L4Routes> = HostIndex::default();
        for route in &snapshot.routes {
            let compiled = rules::compile_route(route, &known, &mut |w| warnings.push(w));
            let tcp = crate::l4::compile(route, crate::l4::Kind::Tcp, &known, &mut |w| {
                warnings.push(w)
            });
            let tls = crate::l4::compile(route, crate::l4::Kind::Tls, &known, &mut |w| {
                warnings.push(w)
            });
            let mut seen = HashSet::new();
            for host in &route.hosts {
                let host = hosts::qualify(host, &route.namespace, &known);
                if seen.insert(host.clone()) {
                    if !compiled.is_empty() || (tcp.is_empty() && tls.is_empty()) {
                        routes
                            .entry(&host, Vec::new)
                            .extend(compiled.iter().cloned());
                    }
                    if !tcp.is_empty() || !tls.is_empty() {
                        let l4 = l4_routes.entry(&host, Default::default);
                        l4.tcp.extend(tcp.iter().cloned());
                        l4.tls.extend(tls.iter().cloned());
                    }
                }
            }
        }
        let mut destination_policies = HostIndex::default();
        for (i, dp) in snapshot.destination_policies.iter().enumerate() {
            let host = hosts::qualify(&dp.host, &dp.namespace, &known);
            let slot = destination_policies.entry(&host, || i);
            if *slot != i {
                warnings.push(Warning {
                    object: format!("destination policy {}/{}", dp.namespace, dp.name),
                    message: format!(
                        "host {host} already has destination policy {}/{}; this one is not used",
                        snapshot.destination_policies[*slot].namespace,
                        snapshot.destination_policies[*slot].name
                    ),
                });
            }
        }
        let authz = AuthzIndex::new(&snapshot, waypoint, &mut |w| warnings.push(w));
        let jwt = JwtIndex::new(&snapshot, waypoint, fetched, &mut |w| warnings.push(w));
        RouteTable {
            trust_domain: trust_domain.to_owned(),
            waypoint: (waypoint.0.to_owned(), waypoint.1.to_owned()),
            services_by_vip,
            services_by_host,
            services_by_key,
            workloads_by_addr,
            workloads_by_uid,
            routes,
            l4_routes,
            destination_policies,
            authz,
            jwt,
            warnings,
            snapshot,
            labels: Default::default(),
            trace: Default::default(),
        }
    }

    /// The Istio metric labels of this model.
    pub fn label_index(&self) -> &crate::istio_request::LabelIndex {
        &self.labels
    }

    /// The tracing settings of this model.
    pub fn trace_settings(&self) -> &crate::trace::SettingsIndex {
        &self.trace
    }

    /// What in the model cannot be applied as written (each names its object).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The model the tables were built from.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The waypoint (namespace, name) the tables are for.
    pub fn waypoint(&self) -> (&str, &str) {
        (&self.waypoint.0, &self.waypoint.1)
    }

    /// The trust domain identities are in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The service by key.
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services_by_key
            .get(key)
            .map(|i| &self.snapshot.services[*i])
    }

    /// The service with a (qualified) host name.
    pub fn service_by_host(&self, host: &str) -> Option<&Service> {
        self.services_by_host
            .get(&hosts::normalize(host))
            .map(|i| &self.snapshot.services[*i])
    }

    /// The workload by uid.
    pub fn workload(&self, uid: &str) -> Option<&Workload> {
        self.workloads_by_uid
            .get(uid)
            .map(|i| &self.snapshot.workloads[*i])
    }

    /// The workload with an address.
    pub fn workload_at(&self, addr: IpAddr) -> Option<&Workload> {
        self.workloads_by_addr
            .get(&addr.to_canonical())
            .map(|i| &self.snapshot.workloads[*i])
    }

    /// Resolves a CONNECT authority: a service VIP on one of its ports (any port when the
    /// service lists none), else a workload address; `None` for anything else (refused).
    pub fn target(&self, authority: SocketAddr) -> Option<Target> {
        let ip = authority.ip().to_canonical();
        let port = authority.port();
        if let Some(s) = self
            .services_by_vip
            .get(&ip)
            .map(|i| &self.snapshot.services[*i])
        {
            if s.ports.is_empty() || s.ports.iter().any(|p| p.port == port) {
                return Some(Target::Service {
                    service: ServiceKey::of(s),
                    hostname: service_hostname(s),
                    vip: ip,
                    port,
                });
            }
            return None;
        }
        self.workload_at(ip).map(|w| Target::Workload {
            uid: w.uid.clone(),
            address: ip,
            port,
        })
    }

    /// The protocol declared for a target's port: the service port's; for a workload address,
    /// that of a service port mapping to it (first in model order), if any.
    pub fn protocol(&self, target: &Target) -> Option<PortProtocol> {
        match target {
            Target::Service { service, port, .. } => {
                self.service(service)?
                    .ports
                    .iter()
                    .find(|p| p.port == *port)?
                    .protocol
            }
            Target::Workload { uid, port, .. } => {
                self.snapshot
                    .services
                    .iter()
                    .filter(|s| s.endpoints.iter().any(|e| e.workload_uid == *uid))
                    .flat_map(|s| s.ports.iter())
                    .find(|p| p.target_port.unwrap_or(p.port) == *port)?
                    .protocol
            }
        }
    }

    /// The source of a request: namespace from the identity, labels from the workload at the
    /// address when that workload has the same identity (an address alone is not trusted with
    /// another identity's labels).
    pub fn source_info(&self, identity: Option<Identity>, address: IpAddr) -> SourceInfo {
        let address = address.to_canonical();
        let workload = self.workload_at(address);
        let same = |w: &&Workload| {
            identity
                .as_ref()
                .is_none_or(|id| w.identity(&self.trust_domain) == *id)
        };
        let trusted = workload.filter(same);
        SourceInfo {
            namespace: identity
                .as_ref()
                .map(|id| id.namespace.clone())
                .or_else(|| trusted.map(|w| w.namespace.clone())),
            labels: trusted.map(|w| w.labels.clone()).unwrap_or_default(),
            locality: trusted.map(|w| w.locality.clone()).unwrap_or_default(),
            identity,
            address,
        }
    }
}

#[cfg(test)]
mod tests;

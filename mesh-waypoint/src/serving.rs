//! What this waypoint carries: whether a CONNECT target is assigned to it (a service using it,
//! a workload using it or behind such a service), the default backend of a target (no route),
//! and the protocol of a backend's port.

use std::collections::HashMap;

use mesh_common::model::{PortProtocol, WaypointRef};

use crate::route::Backend;
use crate::table::{RouteTable, ServiceKey, Target};

impl RouteTable {
    fn is_me(&self, waypoint: Option<&WaypointRef>) -> bool {
        waypoint.is_some_and(|w| w.namespace == self.waypoint.0 && w.name == self.waypoint.1)
    }

    /// The services a workload is an endpoint of.
    pub fn services_of<'a>(&'a self, uid: &'a str) -> impl Iterator<Item = ServiceKey> + 'a {
        self.snapshot
            .services
            .iter()
            .filter(move |s| s.endpoints.iter().any(|e| e.workload_uid == uid))
            .map(ServiceKey::of)
    }

    /// Whether traffic for `target` is assigned to this waypoint: a service that uses it, or a
    /// workload that uses it itself or is an endpoint of a service that uses it (the agents send
    /// a pod address of such a workload through its waypoint). Anything else is refused: the
    /// waypoint is no open proxy.
    pub fn serves(&self, target: &Target) -> bool {
        match target {
            Target::Service { service, .. } => self
                .service(service)
                .is_some_and(|s| self.is_me(s.waypoint.as_ref())),
            Target::Workload { uid, .. } => {
                self.workload(uid)
                    .is_some_and(|w| self.is_me(w.waypoint.as_ref()))
                    || self
                        .services_of(uid)
                        .filter_map(|k| self.service(&k))
                        .any(|s| self.is_me(s.waypoint.as_ref()))
            }
        }
    }

    /// The policies (indexes) that apply to `target`: those attached to this waypoint, then
    /// those attached to the target's services — for a workload address, every service it is
    /// an endpoint of, so dialing the pod skips none of them. Sorted, without repeats.
    pub(crate) fn attached(
        &self,
        to_waypoint: &[usize],
        by_service: &HashMap<ServiceKey, Vec<usize>>,
        target: &Target,
    ) -> Vec<usize> {
        let services: Vec<ServiceKey> = match target {
            Target::Service { service, .. } => vec![service.clone()],
            Target::Workload { uid, .. } => self.services_of(uid).collect(),
        };
        let mut ids: Vec<usize> = to_waypoint
            .iter()
            .chain(services.iter().filter_map(|k| by_service.get(k)).flatten())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Where a request to `target` goes when no route applies: the service itself, or the
    /// workload dialed.
    pub fn default_backend(&self, target: &Target) -> Backend {
        match target {
            Target::Service {
                service,
                hostname,
                port,
                ..
            } => Backend {
                host: hostname.clone(),
                service: Some(service.clone()),
                workload: None,
                subset: None,
                port: *port,
            },
            Target::Workload {
                uid, address, port, ..
            } => Backend {
                host: address.to_string(),
                service: None,
                workload: Some(uid.clone()),
                subset: None,
                port: *port,
            },
        }
    }

    /// The protocol declared for a backend's service port, if any.
    pub fn backend_protocol(&self, backend: &Backend) -> Option<PortProtocol> {
        let service = self.service(backend.service.as_ref()?)?;
        service
            .ports
            .iter()
            .find(|p| p.port == backend.port)
            .and_then(|p| p.protocol)
    }

    /// How many routes the model has (for the log).
    pub fn route_count(&self) -> usize {
        self.snapshot.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_common::model::Snapshot;

    use super::*;

    const MODEL: &str = "
workloads:
- {uid: apps/r1, name: r1, namespace: apps, addresses: [198.18.1.10], meshed: true}
- {uid: apps/own, name: own, namespace: apps, addresses: [198.18.1.11], meshed: true, waypoint: {name: wp, namespace: apps}}
- {uid: apps/plain, name: plain, namespace: apps, addresses: [198.18.1.12], meshed: true}
- {uid: apps/other, name: other, namespace: apps, addresses: [198.18.1.13], meshed: true, waypoint: {name: elsewhere, namespace: apps}}
services:
- name: reviews
  namespace: apps
  vips: [198.19.0.20]
  ports: [{port: 9080, protocol: http}]
  endpoints: [{workloadUid: apps/r1, address: 198.18.1.10}]
  waypoint: {name: wp, namespace: apps}
- name: free
  namespace: apps
  vips: [198.19.0.21]
  ports: [{port: 80, targetPort: 8080}]
  endpoints: [{workloadUid: apps/plain, address: 198.18.1.12}]
";

    #[test]
    fn serves_only_what_is_assigned_to_it() {
        let snapshot: Snapshot = yaml_serde::from_str(MODEL).expect("model");
        let table = RouteTable::new(Arc::new(snapshot), "cluster.local", ("apps", "wp"));
        // (authority, served)
        let cases = [
            ("198.19.0.20:9080", true),  // a service using it
            ("198.19.0.21:80", false),   // a service without a waypoint
            ("198.18.1.10:9080", true),  // an endpoint of a service using it
            ("198.18.1.11:5432", true),  // a workload using it itself
            ("198.18.1.12:8080", false), // a workload of a service without one
            ("198.18.1.13:80", false),   // a workload using another waypoint
        ];
        for (authority, want) in cases {
            let target = table
                .target(authority.parse().expect("addr"))
                .unwrap_or_else(|| panic!("{authority}: no target"));
            assert_eq!(table.serves(&target), want, "{authority}");
        }
        let target = table
            .target("198.19.0.20:9080".parse().expect("addr"))
            .expect("target");
        let backend = table.default_backend(&target);
        assert_eq!(backend.host, "reviews.apps.svc.cluster.local");
        assert_eq!(table.backend_protocol(&backend), Some(PortProtocol::Http));
    }
}

//! A backend's endpoints: the service's, narrowed to a DestinationRule subset by the endpoint
//! workloads' labels, each at the target port of the service port; and a simple pick among them
//! (balancing proper comes with the resilience layers).

use std::net::SocketAddr;

use mesh_common::identity::Identity;
use mesh_common::model::Service;

use crate::error::ProxyError;
use crate::route::Backend;
use crate::table::RouteTable;

/// One endpoint to send to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// Address and target port (the CONNECT authority of the upstream HBONE stream).
    pub addr: SocketAddr,
    /// The endpoint workload's identity (to verify), `None` when it is not meshed.
    pub identity: Option<Identity>,
    /// Whether the endpoint is meshed: only meshed endpoints take HBONE; the waypoint sends to
    /// others in plaintext, or refuses.
    pub meshed: bool,
    /// The endpoint workload's uid (empty for an endpoint outside the model's workloads).
    pub workload_uid: String,
}

/// The endpoint port a service port maps to; `None` when the service does not have the port
/// (a service listing no ports takes any).
fn target_port(service: &Service, port: u16) -> Option<u16> {
    if service.ports.is_empty() {
        return Some(port);
    }
    service
        .ports
        .iter()
        .find(|p| p.port == port)
        .map(|p| p.target_port.unwrap_or(p.port))
}

impl RouteTable {
    /// The endpoints of a backend. Unknown host or port: 503 `NC`; unknown subset or no
    /// endpoint: 503 `UH`.
    pub fn endpoints(&self, backend: &Backend) -> Result<Vec<Upstream>, ProxyError> {
        if let Some(uid) = &backend.workload {
            let w = self.workload(uid).ok_or_else(|| {
                ProxyError::no_healthy_upstream(format!("workload {uid} is no longer in the model"))
            })?;
            let ip = backend
                .host
                .parse()
                .ok()
                .or_else(|| w.addresses.first().copied())
                .ok_or_else(|| {
                    ProxyError::no_healthy_upstream(format!("workload {uid} has no address"))
                })?;
            return Ok(vec![self.upstream(uid, SocketAddr::new(ip, backend.port))]);
        }
        let service = self.service_by_host(&backend.host).ok_or_else(|| {
            ProxyError::no_cluster(format!("no service has host {}", backend.host))
        })?;
        let port = target_port(service, backend.port).ok_or_else(|| {
            ProxyError::no_cluster(format!(
                "service {}/{} has no port {}",
                service.namespace, service.name, backend.port
            ))
        })?;
        let labels = match &backend.subset {
            None => None,
            Some(name) => Some(self.subset_labels(&backend.host, name)?),
        };
        let selected: Vec<Upstream> = service
            .endpoints
            .iter()
            .filter(|e| {
                labels.is_none_or(|sel| {
                    let w = self.workload(&e.workload_uid);
                    sel.iter()
                        .all(|(k, v)| w.is_some_and(|w| w.labels.get(k) == Some(v)))
                })
            })
            .map(|e| self.upstream(&e.workload_uid, SocketAddr::new(e.address, port)))
            .collect();
        if selected.is_empty() {
            let what = backend
                .subset
                .as_ref()
                .map_or(String::new(), |s| format!(" in subset {s}"));
            return Err(ProxyError::no_healthy_upstream(format!(
                "service {}/{} has no endpoint{what}",
                service.namespace, service.name
            )));
        }
        Ok(selected)
    }

    fn upstream(&self, uid: &str, addr: SocketAddr) -> Upstream {
        let w = self.workload(uid);
        let meshed = w.is_some_and(|w| w.meshed);
        Upstream {
            addr,
            identity: w
                .filter(|w| w.meshed)
                .map(|w| w.identity(&self.trust_domain)),
            meshed,
            workload_uid: uid.to_owned(),
        }
    }

    /// The labels of a subset of the destination policy for `host` (most specific host).
    fn subset_labels(
        &self,
        host: &str,
        subset: &str,
    ) -> Result<&std::collections::BTreeMap<String, String>, ProxyError> {
        let policy = self
            .destination_policies
            .get(host)
            .map(|i| &self.snapshot.destination_policies[*i])
            .ok_or_else(|| {
                ProxyError::no_healthy_upstream(format!(
                    "subset {subset} of {host}: no destination policy for the host"
                ))
            })?;
        policy
            .subsets
            .iter()
            .find(|s| s.name == subset)
            .map(|s| &s.labels)
            .ok_or_else(|| {
                ProxyError::no_healthy_upstream(format!(
                    "destination policy {}/{} has no subset {subset}",
                    policy.namespace, policy.name
                ))
            })
    }
}

/// Picks an endpoint at random; `None` when there is none.
pub fn pick<'u>(upstreams: &'u [Upstream], rand: &mut dyn FnMut() -> u64) -> Option<&'u Upstream> {
    if upstreams.is_empty() {
        return None;
    }
    let n = upstreams.len() as u64;
    upstreams.get(usize::try_from(rand() % n).unwrap_or(0))
}

/// Picks an endpoint at random among those of `like`'s address family (the family the client
/// dialed: a dual-stack pod is one endpoint per address), any endpoint when none has it.
pub fn pick_like<'u>(
    upstreams: &'u [Upstream],
    like: std::net::IpAddr,
    rand: &mut dyn FnMut() -> u64,
) -> Option<&'u Upstream> {
    let v4 = like.to_canonical().is_ipv4();
    let same = |u: &&Upstream| u.addr.ip().to_canonical().is_ipv4() == v4;
    let count = upstreams.iter().filter(same).count() as u64;
    if count == 0 {
        return pick(upstreams, rand);
    }
    let k = usize::try_from(rand() % count).unwrap_or(0);
    upstreams.iter().filter(same).nth(k)
}

#[cfg(test)]
mod tests;

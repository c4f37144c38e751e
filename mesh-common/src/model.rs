//! The compact data-plane model the control plane sends to agents and waypoints.
//!
//! Agents never see raw Kubernetes objects: the controller translates Pods, Services,
//! EndpointSlices and Istio policies into these types. The same types load from a local file
//! (`mesh-agent --local-config`) for standalone use and tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::identity::Identity;

/// Everything one agent or waypoint needs, at one version.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// Opaque version, echoed in acknowledgements.
    #[serde(default)]
    pub version: String,
    /// Workloads (pods) of the mesh.
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// Services with their virtual IPs and endpoints.
    #[serde(default)]
    pub services: Vec<Service>,
}

/// One workload (a pod).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Unique id, e.g. `<namespace>/<pod-name>`.
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service account (part of the identity).
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Node the workload runs on.
    #[serde(default)]
    pub node: String,
    /// Pod addresses.
    pub addresses: Vec<IpAddr>,
    /// Whether the workload is in the mesh (captured, reachable over HBONE).
    #[serde(default)]
    pub meshed: bool,
    /// Pod labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_service_account() -> String {
    "default".to_owned()
}

impl Workload {
    /// The workload's SPIFFE identity in the given trust domain.
    pub fn identity(&self, trust_domain: &str) -> Identity {
        Identity::new(trust_domain, &self.namespace, &self.service_account)
    }
}

/// A service: virtual IPs and ports in front of a set of endpoints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Virtual IPs (ClusterIPs).
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    /// Service ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Endpoints: workload uids with their addresses.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// A service port and the port it maps to on the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port on the virtual IP.
    pub port: u16,
    /// Port on the endpoint (defaults to `port`).
    #[serde(default)]
    pub target_port: Option<u16>,
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Uid of the workload behind the endpoint.
    pub workload_uid: String,
    /// Address to connect to.
    pub address: IpAddr,
}

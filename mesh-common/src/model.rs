//! The compact data-plane model the control plane sends to agents and waypoints.
//!
//! Agents never see raw Kubernetes objects: the controller translates Pods, Services,
//! EndpointSlices and Istio policies into these types. The same types load from a local file
//! (`mesh-agent --local-config`) for standalone use and tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::identity::Identity;

mod authn;
pub mod compat;
mod fail_safe;
mod policy;
mod route;
mod telemetry;

pub use authn::{ClaimToHeader, JwtHeader, JwtRule, RequestAuthentication};
pub use fail_safe::{
    Cause as FailSafeCause, FailSafe, Refusal, WaypointInstances, GATEWAY_NAME_LABEL,
    WAYPOINT_CLASS,
};

pub use policy::{
    wildcard_match, AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Condition,
    IpBlock, Operation, PeerAuthMode, PeerAuthentication, PolicyTargetRef, Source,
};
pub use route::{
    exported_to, ConnectionPool, ConsistentHash, DestinationPolicy, DirectResponse, Fault,
    FaultAbort, FaultDelay, HashCookie, HeaderOps, HttpMatch, L4Match, L4Rule, LoadBalancer,
    LocalityDistribute, LocalityFailover, LocalityLb, Mirror, OutlierDetection, PortTrafficPolicy,
    Redirect, RegexRewrite, RetryPolicy, Rewrite, Route, RouteDestination, RouteKind, RouteRule,
    StringMatch, Subset, TcpKeepalive, TrafficPolicy,
};
pub use telemetry::{
    effective_telemetry, AccessLogFormat, AccessLogProvider, AccessLogSettings, CustomTag,
    EffectiveTelemetry, MetricName, MetricOverride, ReportMode, TagOverride, Telemetry,
    TelemetryScope, TraceProtocol, TraceProvider, TracingSettings, DEFAULT_SAMPLING_PERCENTAGE,
};

/// Everything one agent or waypoint needs, at one version.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// Authorization policies (L4 parts enforced by agents, L7 parts by waypoints).
    #[serde(default)]
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// Peer authentication (mTLS mode) policies.
    #[serde(default)]
    pub peer_authentications: Vec<PeerAuthentication>,
    /// L7 routes (from VirtualServices and HTTPRoutes), for waypoints.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Per-host traffic policies and subsets (from DestinationRules), for waypoints.
    #[serde(default)]
    pub destination_policies: Vec<DestinationPolicy>,
    /// JWT request authentication (from RequestAuthentications attached with `targetRefs`), for
    /// waypoints. Absent in what older controllers send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_authentications: Vec<RequestAuthentication>,
    /// Telemetry settings (Istio `Telemetry` and the mesh configuration's providers), for
    /// agents and waypoints. Absent in what older controllers send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub telemetries: Vec<Telemetry>,
}

impl Snapshot {
    /// The workload with the given uid.
    pub fn workload(&self, uid: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.uid == uid)
    }

    /// The service with the given namespace and name.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// The authorization policies that apply to a workload: mesh-wide ones (from the root
    /// namespace), its namespace's, and those whose selector matches its labels, dry-run ones
    /// included. Policies with `targetRefs` are not included: waypoints apply those ([`FailSafe`]
    /// refuses what they target where no waypoint does).
    pub fn authorization_policies_for<'a>(
        &'a self,
        workload: &'a Workload,
    ) -> impl Iterator<Item = &'a AuthorizationPolicy> + 'a {
        self.authorization_policies
            .iter()
            .filter(move |p| p.applies_to(workload))
    }

    /// The peer authentication mode for a workload's port: a port-level setting of a
    /// workload-selecting policy, else the most specific policy (workload, namespace, mesh), else
    /// `Permissive` as in Istio.
    pub fn peer_auth_mode(&self, workload: &Workload, port: u16) -> PeerAuthMode {
        policy::resolve_peer_auth(&self.peer_authentications, workload, port)
    }
}

/// One workload (a pod).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// Waypoint that traffic to this workload goes through (`istio.io/use-waypoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<WaypointRef>,
    /// Where the workload runs (its node's topology labels).
    #[serde(default, skip_serializing_if = "Locality::is_empty")]
    pub locality: Locality,
    /// The workload's name as Istio's metrics give it (`source_workload`): the owning
    /// Deployment, StatefulSet, DaemonSet, Job or CronJob; empty: the pod name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload_name: String,
}

/// A locality: region, zone and subzone (from the node's `topology.kubernetes.io/region`,
/// `topology.kubernetes.io/zone` and `topology.istio.io/subzone` labels); empty parts unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Locality {
    /// Region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Zone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Subzone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subzone: String,
}

impl Locality {
    /// Whether no part is known.
    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }
}

fn default_service_account() -> String {
    "default".to_owned()
}

impl Workload {
    /// The workload's SPIFFE identity in the given trust domain.
    pub fn identity(&self, trust_domain: &str) -> Identity {
        Identity::new(trust_domain, &self.namespace, &self.service_account)
    }

    /// The name Istio's metrics and logs give the workload: its owner's, else the pod's.
    pub fn metrics_name(&self) -> &str {
        if self.workload_name.is_empty() {
            &self.name
        } else {
            &self.workload_name
        }
    }

    /// Istio's canonical service: `service.istio.io/canonical-name`, else
    /// `app.kubernetes.io/name`, else `app`, else the workload name.
    pub fn canonical_service(&self) -> &str {
        first_label(
            &self.labels,
            &[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ],
        )
        .unwrap_or_else(|| self.metrics_name())
    }

    /// Istio's canonical revision: `service.istio.io/canonical-revision`, else
    /// `app.kubernetes.io/version`, else `version`, else `latest`.
    pub fn canonical_revision(&self) -> &str {
        first_label(
            &self.labels,
            &[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ],
        )
        .unwrap_or("latest")
    }

    /// The `app` label Istio's `*_app` metric labels carry (`app`, else
    /// `app.kubernetes.io/name`), empty when neither is set.
    pub fn app(&self) -> &str {
        first_label(&self.labels, &["app", "app.kubernetes.io/name"]).unwrap_or("")
    }

    /// The `version` label (`version`, else `app.kubernetes.io/version`), empty when unset.
    pub fn version(&self) -> &str {
        first_label(&self.labels, &["version", "app.kubernetes.io/version"]).unwrap_or("")
    }
}

/// The value of the first of `keys` set in `labels`.
fn first_label<'a>(labels: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| labels.get(*k))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A service: virtual IPs and ports in front of a set of endpoints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// Fully qualified host name, e.g. `reviews.default.svc.cluster.local` (or a ServiceEntry
    /// host). Empty in hand-written snapshots.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Waypoint that traffic to this service goes through (`istio.io/use-waypoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<WaypointRef>,
    /// Which endpoints L4 traffic prefers (`spec.trafficDistribution`); `None`: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<TrafficDistribution>,
}

/// A Service's `spec.trafficDistribution`: prefer endpoints near the client, fall back to the
/// rest when none near is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TrafficDistribution {
    /// `PreferClose` (Kubernetes 1.31+): the client's zone first, as `PreferSameZone`.
    PreferClose,
    /// `PreferSameZone`: the client's zone first.
    PreferSameZone,
    /// `PreferSameNode`: the client's node first, then its zone (as ztunnel).
    PreferSameNode,
    /// A value this build does not know (from a newer controller): no preference.
    #[serde(other)]
    Unknown,
}

/// A waypoint a workload or service is assigned to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaypointRef {
    /// Name of the waypoint (its Gateway and Service).
    pub name: String,
    /// Namespace of the waypoint.
    pub namespace: String,
    /// Addresses (VIPs) of the waypoint's service, when known.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// A service port and the port it maps to on the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port on the virtual IP.
    pub port: u16,
    /// Port on the endpoint (defaults to `port`).
    #[serde(default)]
    pub target_port: Option<u16>,
    /// The application protocol declared for the port (`appProtocol`, or the port name's
    /// prefix as Istio reads it); `None`: detected by the waypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PortProtocol>,
}

/// An application protocol a service port declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PortProtocol {
    /// HTTP/1.1 (or HTTP/2 with prior knowledge, which the waypoint detects).
    Http,
    /// HTTP/2 cleartext (`http2`, `kubernetes.io/h2c`).
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// Opaque TCP (also TLS, MongoDB, Redis, MySQL...): passed through unparsed.
    Tcp,
    /// A protocol this build does not know (from a newer controller): detected.
    #[serde(other)]
    Unknown,
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Uid of the workload behind the endpoint.
    pub workload_uid: String,
    /// Address to connect to.
    pub address: IpAddr,
}

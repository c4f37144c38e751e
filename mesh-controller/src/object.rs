//! The objects the controller understands: one enum over the core, Istio and Gateway API kinds,
//! and the key (kind, namespace, name) that identifies each.

use std::fmt;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::api::ObjectMeta;

use crate::resources::{
    gateway_api, istio_networking as net, istio_security as sec, istio_telemetry as tel,
};

/// A kind, with its `apiVersion` group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    /// v1 Namespace.
    Namespace,
    /// v1 Pod.
    Pod,
    /// v1 Node (cluster-scoped; only its topology labels are used).
    Node,
    /// v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// v1 ServiceAccount.
    ServiceAccount,
    /// v1 ConfigMap (only `istio`, the mesh configuration, is kept).
    ConfigMap,
    /// networking.istio.io VirtualService.
    VirtualService,
    /// networking.istio.io DestinationRule.
    DestinationRule,
    /// networking.istio.io ServiceEntry.
    ServiceEntry,
    /// networking.istio.io Gateway.
    IstioGateway,
    /// security.istio.io AuthorizationPolicy.
    AuthorizationPolicy,
    /// security.istio.io PeerAuthentication.
    PeerAuthentication,
    /// security.istio.io RequestAuthentication.
    RequestAuthentication,
    /// gateway.networking.k8s.io Gateway.
    Gateway,
    /// gateway.networking.k8s.io HTTPRoute.
    HttpRoute,
    /// gateway.networking.k8s.io TCPRoute (experimental).
    TcpRoute,
    /// gateway.networking.k8s.io TLSRoute (experimental).
    TlsRoute,
    /// telemetry.istio.io Telemetry.
    Telemetry,
}

/// Every kind, in a fixed order.
pub const ALL_KINDS: [Kind; 19] = [
    Kind::Namespace,
    Kind::Pod,
    Kind::Node,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::ServiceAccount,
    Kind::ConfigMap,
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::ServiceEntry,
    Kind::IstioGateway,
    Kind::AuthorizationPolicy,
    Kind::PeerAuthentication,
    Kind::RequestAuthentication,
    Kind::Gateway,
    Kind::HttpRoute,
    Kind::TcpRoute,
    Kind::TlsRoute,
    Kind::Telemetry,
];

impl Kind {
    /// The API group (empty for core) and the versions accepted for it.
    pub fn group_versions(self) -> (&'static str, &'static [&'static str]) {
        const ISTIO: &[&str] = &["v1", "v1beta1", "v1alpha3"];
        match self {
            Kind::Namespace
            | Kind::Pod
            | Kind::Node
            | Kind::Service
            | Kind::ServiceAccount
            | Kind::ConfigMap => ("", &["v1"]),
            Kind::EndpointSlice => ("discovery.k8s.io", &["v1"]),
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::IstioGateway => ("networking.istio.io", ISTIO),
            Kind::AuthorizationPolicy | Kind::PeerAuthentication | Kind::RequestAuthentication => {
                ("security.istio.io", &["v1", "v1beta1"])
            }
            Kind::Gateway | Kind::HttpRoute => ("gateway.networking.k8s.io", &["v1", "v1beta1"]),
            Kind::TcpRoute => ("gateway.networking.k8s.io", &["v1alpha2"]),
            Kind::TlsRoute => ("gateway.networking.k8s.io", &["v1alpha2", "v1alpha3"]),
            Kind::Telemetry => ("telemetry.istio.io", &["v1", "v1alpha1"]),
        }
    }

    /// The `kind:` field value.
    pub fn kind_name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::ConfigMap => "ConfigMap",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::IstioGateway | Kind::Gateway => "Gateway",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::HttpRoute => "HTTPRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::Telemetry => "Telemetry",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// The kind for an `apiVersion` and `kind`, if the controller knows it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        ALL_KINDS.into_iter().find(|k| {
            let (g, versions) = k.group_versions();
            k.kind_name() == kind && g == group && versions.contains(&version)
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::IstioGateway => f.write_str("Gateway.networking.istio.io"),
            Kind::Gateway => f.write_str("Gateway.gateway.networking.k8s.io"),
            other => f.write_str(other.kind_name()),
        }
    }
}

/// Identifies an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace (empty for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A parsed, schema-valid object.
#[derive(Clone, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "objects are parsed once and then shared behind an Arc in the store"
)]
pub enum Object {
    /// Namespace.
    Namespace(core::Namespace),
    /// Pod.
    Pod(core::Pod),
    /// Node.
    Node(core::Node),
    /// Service.
    Service(core::Service),
    /// EndpointSlice.
    EndpointSlice(discovery::EndpointSlice),
    /// ServiceAccount.
    ServiceAccount(core::ServiceAccount),
    /// ConfigMap (the mesh configuration).
    ConfigMap(core::ConfigMap),
    /// VirtualService.
    VirtualService(net::VirtualService),
    /// DestinationRule.
    DestinationRule(net::DestinationRule),
    /// ServiceEntry.
    ServiceEntry(net::ServiceEntry),
    /// Istio Gateway.
    IstioGateway(net::Gateway),
    /// AuthorizationPolicy.
    AuthorizationPolicy(sec::AuthorizationPolicy),
    /// PeerAuthentication.
    PeerAuthentication(sec::PeerAuthentication),
    /// RequestAuthentication.
    RequestAuthentication(sec::RequestAuthentication),
    /// Gateway API Gateway.
    Gateway(gateway_api::Gateway),
    /// HTTPRoute.
    HttpRoute(gateway_api::HTTPRoute),
    /// TCPRoute.
    TcpRoute(gateway_api::TCPRoute),
    /// TLSRoute.
    TlsRoute(gateway_api::TLSRoute),
    /// Telemetry.
    Telemetry(tel::Telemetry),
}

impl Object {
    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::VirtualService(o) => &o.metadata,
            Object::DestinationRule(o) => &o.metadata,
            Object::ServiceEntry(o) => &o.metadata,
            Object::IstioGateway(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::RequestAuthentication(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::TcpRoute(o) => &o.metadata,
            Object::TlsRoute(o) => &o.metadata,
            Object::Telemetry(o) => &o.metadata,
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::ServiceAccount(_) => Kind::ServiceAccount,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::DestinationRule(_) => Kind::DestinationRule,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::IstioGateway(_) => Kind::IstioGateway,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::RequestAuthentication(_) => Kind::RequestAuthentication,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::TlsRoute(_) => Kind::TlsRoute,
            Object::Telemetry(_) => Kind::Telemetry,
        }
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        let kind = self.kind();
        ObjectKey {
            kind,
            // A namespace on a cluster-scoped object means nothing (the API server drops it).
            namespace: if kind.namespaced() {
                meta.namespace.clone().unwrap_or_default()
            } else {
                String::new()
            },
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

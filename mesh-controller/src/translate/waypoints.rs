//! Waypoints: Gateway API Gateways of class `istio-waypoint`, the traffic each is for (label
//! `istio.io/waypoint-for`: `service` by default, `workload`, `all` or `none`) and its instances,
//! the pods of the Gateway's namespace labelled `gateway.networking.k8s.io/gateway-name: <name>`
//! that have an address. What the certificate service signs for a waypoint, what the agents
//! dial and whether an assignment is carried all follow from this one index.

use std::collections::BTreeMap;

use mesh_common::model::Workload;

use super::Context;
use crate::object::{Kind, Object};
use crate::resources::gateway_api::WAYPOINT_CLASS;

/// Gateway label saying which traffic a waypoint carries.
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// Pod label naming the Gateway a pod is an instance of (set by the Gateway's deployment).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Which traffic a waypoint carries (`istio.io/waypoint-for`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WaypointFor {
    /// Traffic to services (their VIPs) assigned to it: the default.
    #[default]
    Service,
    /// Traffic to workloads (pod addresses) assigned to it.
    Workload,
    /// Both.
    All,
    /// Neither: assignments to it have no effect.
    None,
}

impl WaypointFor {
    /// The label value, if valid.
    pub fn parse(value: &str) -> Option<WaypointFor> {
        match value {
            "service" => Some(WaypointFor::Service),
            "workload" => Some(WaypointFor::Workload),
            "all" => Some(WaypointFor::All),
            "none" => Some(WaypointFor::None),
            _ => None,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WaypointFor::Service => "service",
            WaypointFor::Workload => "workload",
            WaypointFor::All => "all",
            WaypointFor::None => "none",
        }
    }

    /// Whether a Service assigned to the waypoint gets it.
    pub fn carries_services(self) -> bool {
        matches!(self, WaypointFor::Service | WaypointFor::All)
    }

    /// Whether a pod assigned to the waypoint gets it.
    pub fn carries_workloads(self) -> bool {
        matches!(self, WaypointFor::Workload | WaypointFor::All)
    }
}

/// One running instance of a waypoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Workload uid (`namespace/pod`).
    pub uid: String,
    /// The pod's service account: its identity is `ns/<namespace>/sa/<service_account>`.
    pub service_account: String,
}

/// One declared waypoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waypoint {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Name of the Gateway.
    pub name: String,
    /// The traffic it carries.
    pub traffic: WaypointFor,
    /// Its instances (pods with an address).
    pub instances: Vec<Instance>,
}

/// Every declared waypoint, by (namespace, name).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Waypoints {
    by_key: BTreeMap<(String, String), Waypoint>,
}

impl Waypoints {
    /// The waypoint `namespace/name`, if a Gateway of class `istio-waypoint` declares it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Waypoint> {
        self.by_key.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Every waypoint.
    pub fn iter(&self) -> impl Iterator<Item = &Waypoint> {
        self.by_key.values()
    }

    /// Whether `namespace/name` is a waypoint with at least one instance.
    pub fn has_instance(&self, namespace: &str, name: &str) -> bool {
        self.get(namespace, name)
            .is_some_and(|w| !w.instances.is_empty())
    }

    /// Whether any waypoint has an instance.
    pub fn any_instance(&self) -> bool {
        self.by_key.values().any(|w| !w.instances.is_empty())
    }

    /// The waypoint a workload is an instance of, if any.
    pub fn instance_of(&self, workload: &Workload) -> Option<&Waypoint> {
        let name = workload.labels.get(GATEWAY_NAME_LABEL)?;
        self.get(&workload.namespace, name)
    }

    /// Fills in the instances from the translated workloads.
    pub(super) fn add_instances(&mut self, workloads: &[Workload]) {
        for w in workloads.iter().filter(|w| !w.addresses.is_empty()) {
            let Some(name) = w.labels.get(GATEWAY_NAME_LABEL) else {
                continue;
            };
            if let Some(wp) = self.by_key.get_mut(&(w.namespace.clone(), name.clone())) {
                wp.instances.push(Instance {
                    uid: w.uid.clone(),
                    service_account: w.service_account.clone(),
                });
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn insert(&mut self, waypoint: Waypoint) {
        self.by_key.insert(
            (waypoint.namespace.clone(), waypoint.name.clone()),
            waypoint,
        );
    }
}

/// The waypoints the Gateways declare (without instances yet). A `istio.io/waypoint-for` value
/// that is not one of `service`, `workload`, `all`, `none` is reported and read as `service`,
/// Istio's default.
pub(super) fn declare(cx: &mut Context<'_>) -> Waypoints {
    let mut out = Waypoints::default();
    for (key, object) in cx.objects(Kind::Gateway) {
        let Object::Gateway(gw) = &*object else {
            continue;
        };
        if gw.spec.gateway_class_name != WAYPOINT_CLASS {
            continue;
        }
        let label = gw
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(WAYPOINT_FOR_LABEL));
        let traffic = match label {
            None => WaypointFor::Service,
            Some(value) => WaypointFor::parse(value).unwrap_or_else(|| {
                cx.warn(
                    &key,
                    &format!("metadata.labels[{WAYPOINT_FOR_LABEL}]"),
                    format!(
                        "invalid value {value:?} (expected service, workload, all or none); \
                         read as service"
                    ),
                );
                WaypointFor::Service
            }),
        };
        out.by_key.insert(
            (key.namespace.clone(), key.name.clone()),
            Waypoint {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                traffic,
                instances: Vec::new(),
            },
        );
    }
    out
}

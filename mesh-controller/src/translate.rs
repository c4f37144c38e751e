//! Translation from the stored objects to the compact model agents and waypoints use. Value
//! checks (durations, ports, CIDRs) and cross-object references (hosts, subsets, backends) are
//! checked here; an object with a problem is left out with an error and the others still apply.

mod authn;
mod delegate;
mod destinationrule;
mod fail_safe;
mod field;
mod hosts;
mod httproute;
mod l4route;
mod locality;
mod mesh_providers;
mod protocol;
mod security;
mod services;
mod telemetry;
mod traffic_policy;
mod values;
mod virtualservice;
mod vs_rule;
mod waypoints;
mod workloads;

use std::collections::BTreeMap;

use mesh_common::model::Snapshot;

use crate::error::ConfigError;
use crate::object::{Kind, Object, ObjectKey};
use crate::store::Store;

pub use hosts::HostIndex;
pub use locality::{
    from_node_labels, from_pod_label, traffic_distribution, workload_locality, POD_LOCALITY_LABEL,
};
pub use protocol::port_protocol;
pub use values::duration_ms;
pub use waypoints::{
    Instance, Waypoint, WaypointFor, Waypoints, GATEWAY_NAME_LABEL, WAYPOINT_FOR_LABEL,
};

/// Namespace label that puts a namespace's pods in the mesh.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// Namespace, service or pod label naming the waypoint to use.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// Label naming the namespace of that waypoint (default: the labelled object's).
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";

/// Mesh-wide settings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TranslateOptions {
    /// Kubernetes cluster domain.
    pub cluster_domain: String,
    /// Namespace whose policies apply mesh-wide (Istio's root namespace).
    pub root_namespace: String,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            cluster_domain: "cluster.local".to_owned(),
            root_namespace: "istio-system".to_owned(),
        }
    }
}

/// The model and every problem found on the way.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    /// The model (version left empty; the controller sets it).
    pub snapshot: Snapshot,
    /// Problems; the objects they name are left out (or, for a waypoint label naming no
    /// Gateway, translated without the waypoint). Also what is translated but refused by the
    /// agents because no waypoint runs to enforce it (policies with targetRefs, waypoint
    /// assignments), and a dry-run annotation that is not `"true"`/`"false"`.
    pub errors: Vec<ConfigError>,
    /// The declared waypoints and their instances (what the certificate service signs for a
    /// waypoint's credential).
    pub waypoints: Waypoints,
}

/// Shared state of one translation run.
pub(crate) struct Context<'a> {
    pub store: &'a Store,
    pub options: &'a TranslateOptions,
    pub hosts: HostIndex,
    /// Namespace name to labels.
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// FQDN to subset names defined by DestinationRules.
    pub subsets: BTreeMap<String, Vec<String>>,
    /// VIPs of Kubernetes services by (namespace, name), for waypoint addresses.
    pub service_vips: BTreeMap<(String, String), Vec<std::net::IpAddr>>,
    /// Declared waypoints (instances filled in once workloads are translated).
    pub waypoints: Waypoints,
    pub errors: Vec<ConfigError>,
}

impl Context<'_> {
    /// Records an error about a field of a stored object.
    pub fn error(&mut self, key: &ObjectKey, path: &str, message: impl Into<String>) {
        let origin = self
            .store
            .get(key)
            .map(|e| e.origin.clone())
            .unwrap_or_default();
        self.errors
            .push(ConfigError::field(&origin, key, path, message));
    }

    /// Records a warning about a field of a stored object (translated without it).
    pub fn warn(&mut self, key: &ObjectKey, path: &str, message: impl Into<String>) {
        let origin = self
            .store
            .get(key)
            .map(|e| e.origin.clone())
            .unwrap_or_default();
        self.errors
            .push(ConfigError::warning(&origin, key, path, message));
    }

    /// Records an error or warning unless the same one is already recorded (for what many
    /// objects inherit, e.g. a namespace label).
    pub fn report_once(&mut self, key: &ObjectKey, path: &str, message: String, warning: bool) {
        let seen = self
            .errors
            .iter()
            .any(|e| e.object.as_deref() == Some(key) && e.path == path && e.message == message);
        if seen {
            return;
        }
        if warning {
            self.warn(key, path, message);
        } else {
            self.error(key, path, message);
        }
    }

    /// The subsets DestinationRules define for a qualified host: its own rule's, else those of
    /// the most specific wildcard rule covering it (as Istio picks).
    pub fn subsets_of(&self, host: &str) -> Option<&Vec<String>> {
        if let Some(own) = self.subsets.get(host) {
            return Some(own);
        }
        self.subsets
            .iter()
            .filter(|(pattern, _)| wildcard_covers(pattern, host))
            .max_by_key(|(pattern, _)| pattern.len())
            .map(|(_, subsets)| subsets)
    }

    /// Objects of one kind.
    pub fn objects(&self, kind: Kind) -> Vec<(ObjectKey, std::sync::Arc<Object>)> {
        self.store
            .of_kind(kind)
            .map(|(k, e)| (k.clone(), e.object.clone()))
            .collect()
    }
}

/// Whether a wildcard host (`*`, `*.suffix`) covers `host`.
pub fn wildcard_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => {
            suffix.starts_with('.') && host.ends_with(suffix) && host.len() > suffix.len()
        }
        None => false,
    }
}

/// Istio `exportTo` as model namespaces: `.` is the object's own namespace, `*` every
/// namespace, `~` none; empty: every namespace.
pub(crate) fn export_to(values: &[String], namespace: &str) -> Vec<String> {
    let mut out: Vec<String> = values
        .iter()
        .map(|v| {
            if v == "." {
                namespace.to_owned()
            } else {
                v.clone()
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Translates everything in the store.
pub fn translate(store: &Store, options: &TranslateOptions) -> Translation {
    let mut cx = Context {
        store,
        options,
        hosts: HostIndex::new(&options.cluster_domain),
        namespace_labels: BTreeMap::new(),
        subsets: BTreeMap::new(),
        service_vips: BTreeMap::new(),
        waypoints: Waypoints::default(),
        errors: Vec::new(),
    };
    for (key, object) in cx.objects(Kind::Namespace) {
        if let Object::Namespace(ns) = &*object {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            cx.namespace_labels.insert(key.name.clone(), labels);
        }
    }
    // Order matters: hosts first (services, service entries), then subsets, then what refers
    // to them.
    cx.waypoints = waypoints::declare(&mut cx);
    let mut services = services::translate(&mut cx);
    let workloads = workloads::translate(&mut cx);
    cx.waypoints.add_instances(&workloads);
    services::assign_waypoints(&mut cx, &mut services);
    let destination_policies = destinationrule::destination_policies(&mut cx);
    let mut routes = virtualservice::routes(&mut cx);
    routes.extend(httproute::routes(&mut cx, &services));
    routes.extend(l4route::gateway_routes(&mut cx, &services));
    let snapshot = Snapshot {
        version: String::new(),
        workloads,
        services,
        authorization_policies: security::authorization_policies(&mut cx),
        peer_authentications: security::peer_authentications(&mut cx),
        routes,
        destination_policies,
        request_authentications: authn::request_authentications(&mut cx),
        telemetries: telemetry::telemetries(&mut cx),
    };
    fail_safe::report(&mut cx, &snapshot);
    Translation {
        snapshot,
        errors: cx.errors,
        waypoints: cx.waypoints,
    }
}

//! Translation from the stored objects to the compact model agents and waypoints use. Value
//! checks (durations, ports, CIDRs) and cross-object references (hosts, subsets, backends) are
//! checked here; an object with a problem is left out with an error and the others still apply.

mod fail_safe;
mod hosts;
mod httproute;
mod security;
mod services;
mod values;
mod virtualservice;
mod workloads;

use std::collections::BTreeMap;

use mesh_common::model::Snapshot;

use crate::error::ConfigError;
use crate::object::{Kind, Object, ObjectKey};
use crate::store::Store;

pub use hosts::HostIndex;
pub use values::duration_ms;

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

    /// Objects of one kind.
    pub fn objects(&self, kind: Kind) -> Vec<(ObjectKey, std::sync::Arc<Object>)> {
        self.store
            .of_kind(kind)
            .map(|(k, e)| (k.clone(), e.object.clone()))
            .collect()
    }
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
    let mut services = services::translate(&mut cx);
    let workloads = workloads::translate(&mut cx);
    services::assign_waypoints(&mut cx, &mut services);
    let destination_policies = virtualservice::destination_policies(&mut cx);
    let mut routes = virtualservice::routes(&mut cx);
    routes.extend(httproute::routes(&mut cx));
    let snapshot = Snapshot {
        version: String::new(),
        workloads,
        services,
        authorization_policies: security::authorization_policies(&mut cx),
        peer_authentications: security::peer_authentications(&mut cx),
        routes,
        destination_policies,
    };
    fail_safe::report(&mut cx, &snapshot);
    Translation {
        snapshot,
        errors: cx.errors,
    }
}

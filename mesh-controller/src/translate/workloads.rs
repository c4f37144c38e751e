//! Workloads: pods with their identity, node, addresses, mesh membership (namespace label
//! `istio.io/dataplane-mode=ambient`, overridable per pod), waypoint and locality.

use std::net::IpAddr;

use mesh_common::model::Workload;

use super::locality::{node_localities, workload_locality};
use super::services::{pod_addresses, waypoint_for, Assigned};
use super::waypoints::GATEWAY_NAME_LABEL;
use super::{Context, DATAPLANE_MODE_LABEL};
use crate::object::{Kind, Object};

/// The label value that enrolls a namespace or pod.
const AMBIENT: &str = "ambient";

pub(super) fn translate(cx: &mut Context<'_>) -> Vec<Workload> {
    let mut workloads = Vec::new();
    let nodes = node_localities(cx);
    for (key, object) in cx.objects(Kind::Pod) {
        let Object::Pod(pod) = &*object else { continue };
        let spec = pod.spec.as_ref();
        if let Some(status) = &pod.status {
            for (i, ip) in status.pod_ips.iter().flatten().enumerate() {
                if ip.ip.parse::<IpAddr>().is_err() {
                    cx.error(
                        &key,
                        &format!("status.podIPs[{i}].ip"),
                        format!("invalid IP address {:?}", ip.ip),
                    );
                }
            }
        }
        let addresses = pod_addresses(pod);
        if matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let ns_mode = cx
            .namespace_labels
            .get(&key.namespace)
            .and_then(|l| l.get(DATAPLANE_MODE_LABEL))
            .map(String::as_str);
        let mode = labels
            .get(DATAPLANE_MODE_LABEL)
            .map(String::as_str)
            .or(ns_mode);
        let is_waypoint = labels.contains_key(GATEWAY_NAME_LABEL);
        let meshed = mode == Some(AMBIENT)
            && spec.and_then(|s| s.host_network) != Some(true)
            && !is_waypoint;
        let waypoint = if is_waypoint {
            None
        } else {
            waypoint_for(cx, &key, Some(&labels), Assigned::Workload)
        };
        let node = spec.and_then(|s| s.node_name.clone()).unwrap_or_default();
        workloads.push(Workload {
            locality: workload_locality(&labels, nodes.get(&node)),
            uid: format!("{}/{}", key.namespace, key.name),
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
            node,
            addresses,
            meshed,
            labels,
            waypoint,
        });
    }
    workloads
}

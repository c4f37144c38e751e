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
        let workload_name = owner_workload_name(
            &key.name,
            pod.metadata.owner_references.as_deref().unwrap_or_default(),
            &labels,
        );
        workloads.push(Workload {
            locality: workload_locality(&labels, nodes.get(&node)),
            workload_name,
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

/// The workload name Istio's metrics use for a pod (as Istio's `GetDeployMetaFromPod`): a
/// ReplicaSet owner with the pod's `pod-template-hash` is its Deployment, a Job named
/// `<cronjob>-<digits>` its CronJob, any other controller owner its own name; empty (the pod
/// name) for a pod without one.
fn owner_workload_name(
    pod_name: &str,
    owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    labels: &std::collections::BTreeMap<String, String>,
) -> String {
    let Some(owner) = owners.iter().find(|o| o.controller == Some(true)) else {
        return String::new();
    };
    let name = match owner.kind.as_str() {
        "ReplicaSet" => labels
            .get("pod-template-hash")
            .and_then(|hash| owner.name.strip_suffix(&format!("-{hash}")))
            .unwrap_or(&owner.name),
        "Job" => match owner.name.rsplit_once('-') {
            Some((cron, stamp))
                if !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()) =>
            {
                cron
            }
            _ => &owner.name,
        },
        _ => &owner.name,
    };
    if name == pod_name {
        String::new()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod workload_name_tests {
    use super::owner_workload_name;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owner(kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            kind: kind.into(),
            name: name.into(),
            controller: Some(true),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn owners_name_the_workload_as_istio_does() {
        let hash = std::collections::BTreeMap::from([(
            "pod-template-hash".to_owned(),
            "7d4f8b9c6".to_owned(),
        )]);
        let none = std::collections::BTreeMap::new();
        // (owner, labels, workload name)
        let cases = [
            (
                Some(owner("ReplicaSet", "reviews-v1-7d4f8b9c6")),
                &hash,
                "reviews-v1",
            ),
            (
                Some(owner("ReplicaSet", "reviews-v1-abc")),
                &none,
                "reviews-v1-abc",
            ),
            (Some(owner("StatefulSet", "db")), &none, "db"),
            (Some(owner("Job", "backup-29012345")), &none, "backup"),
            (Some(owner("Job", "migrate")), &none, "migrate"),
            (None, &none, ""),
        ];
        for (owner, labels, want) in cases {
            let owners: Vec<OwnerReference> = owner.into_iter().collect();
            assert_eq!(
                owner_workload_name("reviews-v1-7d4f8b9c6-x2x", &owners, labels),
                want
            );
        }
    }
}

//! Services: Kubernetes Services (VIPs, ports, endpoints from EndpointSlices or, without any,
//! from the pods the selector picks) and ServiceEntries; each registers its host names. Also the
//! waypoint assignment shared with workloads.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_common::model::{Endpoint, Service, ServicePort, WaypointRef};

use super::protocol::port_protocol;
use super::waypoints::{WaypointFor, WAYPOINT_FOR_LABEL};
use super::{values, Context, USE_WAYPOINT_LABEL, USE_WAYPOINT_NAMESPACE_LABEL};
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::gateway_api::WAYPOINT_CLASS;

/// Label on an EndpointSlice naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The pods that will become workloads: running or pending, not host-network.
pub(super) fn pod_addresses(pod: &core::Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    ips
}

fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Pods by (namespace, label name, label value).
type PodIndex = HashMap<(String, String, String), Vec<Arc<Object>>>;

pub(super) fn translate(cx: &mut Context<'_>) -> Vec<Service> {
    let mut services = Vec::new();
    let slices = endpoint_slices(cx);
    // Pods by (namespace, label, value): a selector looks up its first label instead of
    // scanning the namespace, which keeps translation linear in the number of pods.
    let mut pod_index: PodIndex = HashMap::new();
    for (key, object) in cx.objects(Kind::Pod) {
        for (k, v) in object.meta().labels.iter().flatten() {
            pod_index
                .entry((key.namespace.clone(), k.clone(), v.clone()))
                .or_default()
                .push(object.clone());
        }
    }
    for (key, object) in cx.objects(Kind::Service) {
        let Object::Service(svc) = &*object else {
            continue;
        };
        let sliced = slices.get(&(key.namespace.clone(), key.name.clone()));
        if let Some(service) = kube_service(cx, &key, svc, sliced, &pod_index) {
            cx.service_vips.insert(
                (service.namespace.clone(), service.name.clone()),
                service.vips.clone(),
            );
            let fqdn = cx.hosts.service_fqdn(&key.namespace, &key.name);
            cx.hosts.add(&fqdn);
            services.push(service);
        }
    }
    for (key, object) in cx.objects(Kind::ServiceEntry) {
        let Object::ServiceEntry(se) = &*object else {
            continue;
        };
        services.extend(service_entry(cx, &key, &se.spec));
    }
    services
}

/// Endpoints from EndpointSlices, by (namespace, service name).
fn endpoint_slices(cx: &Context<'_>) -> BTreeMap<(String, String), Vec<Endpoint>> {
    let mut out: BTreeMap<(String, String), Vec<Endpoint>> = BTreeMap::new();
    for (key, object) in cx.objects(Kind::EndpointSlice) {
        let Object::EndpointSlice(slice) = &*object else {
            continue;
        };
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let entry = out
            .entry((key.namespace.clone(), service.clone()))
            .or_default();
        for ep in slice.endpoints.iter().flatten() {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let uid = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.as_ref())
                .map(|name| format!("{}/{name}", key.namespace))
                .unwrap_or_default();
            for address in ep.addresses.iter().filter_map(|a| a.parse().ok()) {
                entry.push(Endpoint {
                    workload_uid: uid.clone(),
                    address,
                });
            }
        }
    }
    out
}

fn kube_service(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    svc: &core::Service,
    sliced: Option<&Vec<Endpoint>>,
    pod_index: &PodIndex,
) -> Option<Service> {
    let default_spec = core::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    let mut vips = Vec::new();
    let ips = spec
        .cluster_ips
        .clone()
        .unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect());
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" || ip.is_empty() {
            continue;
        }
        match ip.parse() {
            Ok(ip) => vips.push(ip),
            Err(_) => {
                cx.error(
                    key,
                    &format!("spec.clusterIPs[{i}]"),
                    format!("invalid IP address {ip:?}"),
                );
                return None;
            }
        }
    }
    let selector = spec.selector.clone().unwrap_or_default();
    let candidates = selector
        .iter()
        .next()
        .and_then(|(k, v)| pod_index.get(&(key.namespace.clone(), k.clone(), v.clone())))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let pods: Vec<&core::Pod> = candidates
        .iter()
        .filter_map(|o| match &**o {
            Object::Pod(p) if labels_match(&selector, p.metadata.labels.as_ref()) => Some(p),
            _ => None,
        })
        .collect();
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let port = match values::port(i64::from(p.port)) {
            Ok(port) => port,
            Err(e) => {
                cx.error(key, &format!("spec.ports[{i}].port"), e);
                return None;
            }
        };
        let target_port = match &p.target_port {
            None => None,
            Some(IntOrString::Int(n)) => match values::port(i64::from(*n)) {
                Ok(t) => Some(t),
                Err(e) => {
                    cx.error(key, &format!("spec.ports[{i}].targetPort"), e);
                    return None;
                }
            },
            // A named port: resolved on the first selected pod that declares it.
            Some(IntOrString::String(name)) => pods.iter().find_map(|pod| named_port(pod, name)),
        };
        // UDP and SCTP ports carry nothing the mesh proxies: no application protocol.
        let tcp = p.protocol.as_deref().is_none_or(|p| p == "TCP");
        ports.push(ServicePort {
            port,
            target_port,
            protocol: tcp
                .then(|| port_protocol(p.app_protocol.as_deref(), p.name.as_deref()))
                .flatten(),
        });
    }
    let endpoints = match sliced {
        Some(endpoints) => endpoints.clone(),
        None => pods
            .iter()
            .flat_map(|pod| {
                let uid = format!(
                    "{}/{}",
                    key.namespace,
                    pod.metadata.name.clone().unwrap_or_default()
                );
                pod_addresses(pod).into_iter().map(move |address| Endpoint {
                    workload_uid: uid.clone(),
                    address,
                })
            })
            .collect(),
    };
    let traffic_distribution =
        match super::locality::traffic_distribution(spec.traffic_distribution.as_deref()) {
            Ok(preference) => preference,
            Err(e) => {
                cx.warn(key, "spec.trafficDistribution", e);
                None
            }
        };
    Some(Service {
        traffic_distribution,
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        vips,
        ports,
        endpoints,
        hostname: cx.hosts.service_fqdn(&key.namespace, &key.name),
        waypoint: None,
    })
}

fn named_port(pod: &core::Pod, name: &str) -> Option<u16> {
    pod.spec.as_ref()?.containers.iter().find_map(|c| {
        c.ports.iter().flatten().find_map(|p| {
            (p.name.as_deref() == Some(name))
                .then(|| u16::try_from(p.container_port).ok())
                .flatten()
        })
    })
}

fn service_entry(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    spec: &crate::resources::istio_networking::ServiceEntrySpec,
) -> Vec<Service> {
    let mut vips = Vec::new();
    for (i, address) in spec.addresses.iter().enumerate() {
        match values::ip_block(address) {
            // A single address is a VIP; ranges only select traffic and have no VIP.
            Ok(block) if block.prefix_len == if block.address.is_ipv4() { 32 } else { 128 } => {
                vips.push(block.address)
            }
            Ok(_) => {}
            Err(e) => {
                cx.error(key, &format!("spec.addresses[{i}]"), e);
                return Vec::new();
            }
        }
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let port = match values::port(i64::from(p.number)) {
            Ok(port) => port,
            Err(e) => {
                cx.error(key, &format!("spec.ports[{i}].number"), e);
                return Vec::new();
            }
        };
        let target_port = match p
            .target_port
            .map(|t| values::port(i64::from(t)))
            .transpose()
        {
            Ok(t) => t,
            Err(e) => {
                cx.error(key, &format!("spec.ports[{i}].targetPort"), e);
                return Vec::new();
            }
        };
        ports.push(ServicePort {
            port,
            target_port,
            protocol: port_protocol(p.protocol.as_deref(), p.name.as_deref()),
        });
    }
    if spec.hosts.is_empty() {
        cx.error(key, "spec.hosts", "at least one host is required");
        return Vec::new();
    }
    // Host-name endpoints (DNS resolution) are resolved by the data plane, so only IPs here.
    let endpoints: Vec<Endpoint> = spec
        .endpoints
        .iter()
        .filter_map(|e| e.address.as_deref()?.parse().ok())
        .map(|address| Endpoint {
            workload_uid: String::new(),
            address,
        })
        .collect();
    spec.hosts
        .iter()
        .map(|host| {
            cx.hosts.add(host);
            Service {
                traffic_distribution: None,
                name: host.clone(),
                namespace: key.namespace.clone(),
                vips: vips.clone(),
                ports: ports.clone(),
                endpoints: endpoints.clone(),
                hostname: host.clone(),
                waypoint: None,
            }
        })
        .collect()
}

/// What a waypoint label is on: a Service (its VIP traffic) or a pod (its address traffic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Assigned {
    /// A Service.
    Service,
    /// A pod.
    Workload,
}

/// The waypoint an object's labels (or else its namespace's labels) ask for. A label naming a
/// Gateway that does not exist or is not of class `istio-waypoint` is reported and ignored; a
/// waypoint that does not carry this kind of traffic (`istio.io/waypoint-for`) is not applied,
/// with a warning when the object's own label asks for it (a namespace label applies to
/// services and pods alike, so a waypoint for one of them only is the normal case there).
pub(super) fn waypoint_for(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    labels: Option<&BTreeMap<String, String>>,
    assigned: Assigned,
) -> Option<WaypointRef> {
    let ns_labels = cx.namespace_labels.get(&key.namespace).cloned();
    let (own, name, from) = match labels.and_then(|l| l.get(USE_WAYPOINT_LABEL)) {
        Some(name) => (true, name.clone(), labels.cloned()),
        None => {
            let name = ns_labels.as_ref()?.get(USE_WAYPOINT_LABEL)?.clone();
            (false, name, ns_labels)
        }
    };
    if name == "none" || name.is_empty() {
        return None;
    }
    let namespace = from
        .as_ref()
        .and_then(|l| l.get(USE_WAYPOINT_NAMESPACE_LABEL))
        .cloned()
        .unwrap_or_else(|| key.namespace.clone());
    let err_key = if own {
        key.clone()
    } else {
        ObjectKey {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: key.namespace.clone(),
        }
    };
    let path = format!("metadata.labels[{USE_WAYPOINT_LABEL}]");
    let gateway = ObjectKey {
        kind: Kind::Gateway,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let Some(waypoint) = cx.waypoints.get(&namespace, &name).cloned() else {
        let message = match cx.store.get(&gateway).map(|e| &*e.object) {
            Some(Object::Gateway(gw)) => format!(
                "Gateway {namespace}/{name} is not a waypoint (gatewayClassName {:?}, not \
                 {WAYPOINT_CLASS:?})",
                gw.spec.gateway_class_name
            ),
            _ => format!("waypoint Gateway {namespace}/{name} not found"),
        };
        cx.report_once(&err_key, &path, message, false);
        return None;
    };
    let carried = match assigned {
        Assigned::Service => waypoint.traffic.carries_services(),
        Assigned::Workload => waypoint.traffic.carries_workloads(),
    };
    if !carried {
        if own {
            let what = match assigned {
                Assigned::Service => "this Service's traffic",
                Assigned::Workload => "this pod's traffic",
            };
            let message = format!(
                "waypoint {namespace}/{name} is for {} traffic ({WAYPOINT_FOR_LABEL}: {}): not \
                 applied to {what}",
                waypoint.traffic.as_str(),
                waypoint.traffic.as_str()
            );
            cx.report_once(&err_key, &path, message, true);
        } else if waypoint.traffic == WaypointFor::None {
            let message = format!(
                "waypoint {namespace}/{name} is for none traffic ({WAYPOINT_FOR_LABEL}: none): \
                 the namespace label assigns it nothing"
            );
            cx.report_once(&err_key, &path, message, true);
        }
        return None;
    }
    let addresses = cx
        .service_vips
        .get(&(namespace.clone(), name.clone()))
        .cloned()
        .unwrap_or_default();
    Some(WaypointRef {
        name,
        namespace,
        addresses,
    })
}

pub(super) fn assign_waypoints(cx: &mut Context<'_>, services: &mut [Service]) {
    for service in services.iter_mut() {
        let key = ObjectKey {
            kind: Kind::Service,
            namespace: service.namespace.clone(),
            name: service.name.clone(),
        };
        let Some(entry) = cx.store.get(&key) else {
            continue;
        };
        let labels = entry.object.meta().labels.clone();
        service.waypoint = waypoint_for(cx, &key, labels.as_ref(), Assigned::Service);
        // A waypoint never sends its own traffic through itself.
        if service
            .waypoint
            .as_ref()
            .is_some_and(|w| w.name == service.name && w.namespace == service.namespace)
        {
            service.waypoint = None;
        }
    }
}

//! Istio DestinationRules as destination policies: traffic policy and subsets per host (the
//! subsets routes may name). The host must be a known service, or a wildcard (`*.ns.svc.…`,
//! `*`) that applies to every host it covers; `exportTo` limits which namespaces' waypoints see
//! the policy. The traffic policies themselves: [`traffic_policy`](super::traffic_policy).

use mesh_common::model as m;

use super::field::{Field, Notes};
use super::traffic_policy::traffic_policy;
use super::{export_to, Context};
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::istio_networking as net;

/// Destination policies, and the subsets each host defines (in `cx.subsets`).
pub(super) fn destination_policies(cx: &mut Context<'_>) -> Vec<m::DestinationPolicy> {
    let mut out = Vec::new();
    for (key, object) in cx.objects(Kind::DestinationRule) {
        let Object::DestinationRule(dr) = &*object else {
            continue;
        };
        let mut notes = Notes::default();
        let result = destination_policy(cx, &key, &dr.spec, &mut notes);
        notes.report(cx, &key);
        match result {
            Ok(policy) => {
                cx.subsets
                    .entry(policy.host.clone())
                    .or_default()
                    .extend(policy.subsets.iter().map(|s| s.name.clone()));
                out.push(policy);
            }
            Err((path, message)) => cx.error(&key, &path, message),
        }
    }
    out
}

fn destination_policy(
    cx: &Context<'_>,
    key: &ObjectKey,
    spec: &net::DestinationRuleSpec,
    notes: &mut Notes,
) -> Field<m::DestinationPolicy> {
    let host = cx.hosts.qualify(&spec.host, &key.namespace);
    if !host.starts_with('*') && !cx.hosts.contains(&host) {
        return Err((
            "spec.host".to_owned(),
            format!(
                "host {:?} not found in the mesh (no Service or ServiceEntry)",
                spec.host
            ),
        ));
    }
    let host_policy = match &spec.traffic_policy {
        Some(tp) => traffic_policy("spec.trafficPolicy", tp, notes)?,
        None => m::TrafficPolicy::default(),
    };
    let mut subsets: Vec<m::Subset> = Vec::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let path = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            return Err((format!("{path}.name"), "subset name is required".to_owned()));
        }
        if subsets.iter().any(|other| other.name == s.name) {
            return Err((
                format!("{path}.name"),
                format!("duplicate subset {:?}", s.name),
            ));
        }
        let traffic_policy = s
            .traffic_policy
            .as_ref()
            .map(|tp| traffic_policy(&format!("{path}.trafficPolicy"), tp, notes))
            .transpose()?;
        subsets.push(m::Subset {
            name: s.name.clone(),
            labels: s.labels.clone(),
            traffic_policy,
        });
    }
    if spec.workload_selector.is_some() {
        notes.unsupported("spec.workloadSelector", "it applies to every client");
    }
    Ok(m::DestinationPolicy {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        host,
        traffic_policy: host_policy,
        subsets,
        export_to: export_to(&spec.export_to, &key.namespace),
    })
}

//! Istio VirtualServices as routes. Only rules bound to the mesh apply to waypoints (`gateways`
//! empty or naming `mesh`; ingress gateways are not built yet, so other bindings are reported
//! and not applied); `exportTo` limits which namespaces' waypoints see a route. A rule may
//! delegate to a VirtualService without hosts, whose rules are merged under it ([`delegate`]).
//! Destination hosts and subsets must exist.
//!
//! [`delegate`]: super::delegate

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_common::model::{self as m, RouteKind};

use super::delegate::merge_rule;
use super::field::{at, Field, Notes};
use super::l4route;
use super::vs_rule::rule;
use super::{export_to, values, Context};
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::istio_networking as net;

/// The reserved gateway name of the mesh's own proxies (sidecars, waypoints).
pub(super) const MESH_GATEWAY: &str = "mesh";

/// Every VirtualService by (namespace, name), for delegate lookups.
type Index = BTreeMap<(String, String), (ObjectKey, Arc<Object>)>;

pub(super) fn routes(cx: &mut Context<'_>) -> Vec<m::Route> {
    let all = cx.objects(Kind::VirtualService);
    let mut index = Index::new();
    let mut delegated = BTreeSet::new();
    for (key, object) in &all {
        index.insert(
            (key.namespace.clone(), key.name.clone()),
            (key.clone(), object.clone()),
        );
        if let Object::VirtualService(vs) = &**object {
            for d in vs.spec.http.iter().filter_map(|h| h.delegate.as_ref()) {
                let ns = d.namespace.clone().unwrap_or_else(|| key.namespace.clone());
                delegated.insert((ns, d.name.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for (key, object) in &all {
        let Object::VirtualService(vs) = &**object else {
            continue;
        };
        let spec = &vs.spec;
        if spec.hosts.is_empty() {
            if !delegated.contains(&(key.namespace.clone(), key.name.clone())) {
                cx.warn(
                    key,
                    "spec.hosts",
                    "no hosts, and no VirtualService delegates to it: not applied (a \
                     VirtualService without hosts is a delegate)",
                );
            }
            continue;
        }
        let mut notes = Notes::default();
        if !bound_to_mesh(&spec.gateways, "spec.gateways", &mut notes) {
            notes.report(cx, key);
            continue;
        }
        let result = route(cx, key, spec, &index, &mut notes);
        notes.report(cx, key);
        match result {
            Ok(route) => out.push(route),
            Err((path, message)) => cx.error(key, &path, message),
        }
    }
    out
}

/// Whether rules bound to `gateways` apply to waypoints (empty, or naming `mesh`); the other
/// gateways named are reported as not applied.
pub(super) fn bound_to_mesh(gateways: &[String], path: &str, notes: &mut Notes) -> bool {
    if gateways.is_empty() {
        return true;
    }
    let mesh = gateways.iter().any(|g| g == MESH_GATEWAY);
    let others: Vec<&str> = gateways
        .iter()
        .map(String::as_str)
        .filter(|g| *g != MESH_GATEWAY)
        .collect();
    if !others.is_empty() {
        let message = if mesh {
            format!(
                "gateways {others:?} not applied: ingress gateways are not built yet (the rules \
                 apply to the mesh's waypoints)"
            )
        } else {
            format!(
                "bound to gateways {others:?} only, not {MESH_GATEWAY:?}: not applied \
                 (ingress gateways are not built yet; waypoints apply rules bound to \
                 {MESH_GATEWAY:?})"
            )
        };
        notes.warn(path, message);
    }
    mesh
}

fn route(
    cx: &Context<'_>,
    key: &ObjectKey,
    spec: &net::VirtualServiceSpec,
    index: &Index,
    notes: &mut Notes,
) -> Field<m::Route> {
    let hosts: Vec<String> = spec
        .hosts
        .iter()
        .map(|h| cx.hosts.qualify(h, &key.namespace))
        .collect();
    let mut rules = Vec::new();
    for (i, http) in spec.http.iter().enumerate() {
        let path = format!("spec.http[{i}]");
        match &http.delegate {
            Some(d) => rules.extend(delegate_rules(cx, key, &path, http, d, index, notes)?),
            None => rules.extend(rule(cx, key, &path, http, true, notes)?),
        }
    }
    // An SNI host must be one of the hosts, as written or qualified (it is matched as written).
    let sni_scope: Vec<String> = hosts
        .iter()
        .cloned()
        .chain(spec.hosts.iter().map(|h| h.to_ascii_lowercase()))
        .collect();
    let tcp = l4route::vs_rules(
        cx,
        key,
        "tcp",
        spec.tcp
            .iter()
            .map(|t| (t.matches.as_slice(), t.route.as_slice())),
        &sni_scope,
        notes,
    )?;
    let tls = l4route::vs_rules(
        cx,
        key,
        "tls",
        spec.tls
            .iter()
            .map(|t| (t.matches.as_slice(), t.route.as_slice())),
        &sni_scope,
        notes,
    )?;
    Ok(m::Route {
        tcp,
        tls,
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        kind: RouteKind::VirtualService,
        hosts,
        rules,
        export_to: export_to(&spec.export_to, &key.namespace),
    })
}

/// The rules of the delegate `d` merged under the root rule `http` at `path`. Any problem with
/// the delegate (missing, not exported to the root's namespace, with hosts, delegating again,
/// an invalid rule) leaves the root out with an error naming the delegate and its field.
fn delegate_rules(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    http: &net::HttpRoute,
    d: &net::Delegate,
    index: &Index,
    notes: &mut Notes,
) -> Field<Vec<m::RouteRule>> {
    let dpath = format!("{path}.delegate");
    if !http.route.is_empty() || http.redirect.is_some() || http.direct_response.is_some() {
        return Err((
            dpath,
            "a rule that delegates cannot also have route, redirect or directResponse".to_owned(),
        ));
    }
    let namespace = d.namespace.clone().unwrap_or_else(|| key.namespace.clone());
    let name = format!("{namespace}/{}", d.name);
    let Some((dkey, object)) = index.get(&(namespace.clone(), d.name.clone())) else {
        return Err((
            format!("{dpath}.name"),
            format!("delegate VirtualService {name} not found"),
        ));
    };
    let Object::VirtualService(delegate) = &**object else {
        return Err((
            format!("{dpath}.name"),
            format!("{name} is not a VirtualService"),
        ));
    };
    let dspec = &delegate.spec;
    if dkey == key {
        return Err((
            dpath,
            "a VirtualService cannot delegate to itself".to_owned(),
        ));
    }
    if !dspec.hosts.is_empty() {
        return Err((
            dpath,
            format!(
                "delegate VirtualService {name} has hosts (spec.hosts): a delegate must have none"
            ),
        ));
    }
    let exported = export_to(&dspec.export_to, &namespace);
    if !m::exported_to(&exported, &key.namespace) {
        return Err((
            dpath,
            format!(
                "delegate VirtualService {name} is not exported to namespace {} (its exportTo: \
                 {:?})",
                key.namespace, dspec.export_to
            ),
        ));
    }
    if !dspec.gateways.is_empty() {
        notes.warn_on(
            dkey,
            "spec.gateways",
            "ignored in a delegate: its root's binding applies",
        );
    }
    if !dspec.tcp.is_empty() || !dspec.tls.is_empty() {
        notes.warn_on(
            dkey,
            "spec.tcp",
            "ignored in a delegate: only its http rules are merged",
        );
    }
    let Some(root) = rule(cx, key, path, http, false, notes)?.into_iter().next() else {
        return Ok(Vec::new()); // every root match is bound to other gateways
    };
    let mut out = Vec::new();
    for (j, leaf_http) in dspec.http.iter().enumerate() {
        let lpath = format!("spec.http[{j}]");
        if let Some(again) = &leaf_http.delegate {
            let again_ns = again.namespace.as_deref().unwrap_or(&namespace);
            let cycle = if again_ns == key.namespace && again.name == key.name {
                " (back to this VirtualService: a cycle)"
            } else {
                ""
            };
            return Err((
                dpath,
                format!(
                    "delegate VirtualService {name} delegates again at {lpath}.delegate{cycle}: \
                     only one level of delegation is supported"
                ),
            ));
        }
        let mut leaf_notes = Notes::default();
        let leaf = rule(cx, dkey, &lpath, leaf_http, true, &mut leaf_notes).map_err(|(p, m)| {
            (
                dpath.clone(),
                format!("delegate VirtualService {name}: {p}: {m}"),
            )
        })?;
        notes.absorb(leaf_notes, dkey);
        let Some(leaf) = leaf.into_iter().next() else {
            continue;
        };
        match merge_rule(&root, leaf) {
            Some(merged) => out.push(merged),
            None => notes.warn(
                &dpath,
                format!(
                    "rule {lpath} of delegate VirtualService {name} does not fit under this \
                     rule's matches: left out, as Istio does"
                ),
            ),
        }
    }
    Ok(out)
}

/// Checks a destination's host, subset and port, and fills in its weight.
/// A route destination. An unknown host or subset is kept (the waypoint answers requests routed
/// there with 503 `NC` / `UH`, as Envoy does) and reported as a warning naming the field.
pub(super) fn destination(
    cx: &Context<'_>,
    key: &ObjectKey,
    path: &str,
    d: &net::Destination,
    weight: Option<i32>,
    siblings: usize,
    notes: &mut Notes,
) -> Field<m::RouteDestination> {
    let host = cx.hosts.qualify(&d.host, &key.namespace);
    if !cx.hosts.contains(&host) {
        notes.warn(
            &format!("{path}.host"),
            format!(
                "host {:?} not found in the mesh (no Service or ServiceEntry): requests routed \
                 here are answered 503 (NC)",
                d.host
            ),
        );
    } else if let Some(subset) = &d.subset {
        let known = cx.subsets_of(&host).is_some_and(|s| s.contains(subset));
        if !known {
            notes.warn(
                &format!("{path}.subset"),
                format!(
                    "subset {subset:?} of host {host} is not defined by any DestinationRule: \
                     requests routed here are answered 503 (UH)"
                ),
            );
        }
    }
    let port = d
        .port
        .as_ref()
        .map(|p| {
            at(
                &format!("{path}.port.number"),
                values::port(i64::from(p.number)),
            )
        })
        .transpose()?;
    let weight = match weight {
        // A lone destination takes all traffic; unweighted siblings take none, as in Istio.
        None => {
            if siblings == 1 {
                100
            } else {
                0
            }
        }
        Some(w) if (0..=100).contains(&w) => w.unsigned_abs(),
        Some(w) => {
            let wpath = path.strip_suffix(".destination").unwrap_or(path);
            return Err((
                format!("{wpath}.weight"),
                format!("invalid weight {w} (must be 0-100)"),
            ));
        }
    };
    Ok(m::RouteDestination {
        host,
        subset: d.subset.clone(),
        port,
        weight,
        ..Default::default()
    })
}

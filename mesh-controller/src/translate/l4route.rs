//! Opaque TCP and TLS (SNI, passed through) rules: VirtualService `tcp` / `tls` and Gateway API
//! TCPRoute / TLSRoute, as the model's `Route.tcp` / `Route.tls`. Matches on port, SNI host,
//! source labels and source namespace; weighted destinations with subset (Istio) and port.
//! What cannot be matched yet (destination or source subnets) leaves the match out, with a
//! warning, so no connection is routed by a condition that was not checked.

use mesh_common::model::{self as m, RouteKind};

use super::field::{at, Field, Notes};
use super::httproute::{backend, parents, Binding};
use super::virtualservice::{destination, MESH_GATEWAY};
use super::{values, Context};
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::gateway_api as gw;
use crate::resources::istio_networking as net;

/// The fields of an Istio L4 match (`tcp[].match[]` or `tls[].match[]`).
pub(super) struct IstioMatch<'a> {
    port: Option<u32>,
    sni_hosts: &'a [String],
    source_labels: &'a std::collections::BTreeMap<String, String>,
    source_namespace: Option<&'a String>,
    gateways: &'a [String],
    destination_subnets: &'a [String],
    source_subnet: Option<&'a String>,
}

impl<'a> From<&'a net::L4MatchAttributes> for IstioMatch<'a> {
    fn from(a: &'a net::L4MatchAttributes) -> Self {
        IstioMatch {
            port: a.port,
            sni_hosts: &[],
            source_labels: &a.source_labels,
            source_namespace: a.source_namespace.as_ref(),
            gateways: &a.gateways,
            destination_subnets: &a.destination_subnets,
            source_subnet: a.source_subnet.as_ref(),
        }
    }
}

impl<'a> From<&'a net::TlsMatchAttributes> for IstioMatch<'a> {
    fn from(a: &'a net::TlsMatchAttributes) -> Self {
        IstioMatch {
            port: a.port,
            sni_hosts: &a.sni_hosts,
            source_labels: &a.source_labels,
            source_namespace: a.source_namespace.as_ref(),
            gateways: &a.gateways,
            destination_subnets: &a.destination_subnets,
            source_subnet: None,
        }
    }
}

/// An SNI host as matched: lower case, a wildcard kept.
fn sni(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether the SNI host `sni` is within one of the route's hosts (as written or qualified): equal, or covered
/// by a wildcard host, or itself a wildcard no wider than one (as Istio's validation).
fn sni_within(sni: &str, hosts: &[String]) -> bool {
    hosts.iter().any(|h| {
        h == sni
            || super::wildcard_covers(h, sni)
            || (sni.starts_with("*.")
                && super::wildcard_covers(h, &sni[2..])
                && h.len() <= sni.len())
    })
}

/// One Istio match; `None` when it does not apply to waypoints (other gateways) or cannot be
/// checked (subnets).
fn istio_match(
    path: &str,
    a: &IstioMatch<'_>,
    hosts: &[String],
    tls: bool,
    notes: &mut Notes,
) -> Field<Option<m::L4Match>> {
    if !a.gateways.is_empty() {
        let others: Vec<&String> = a.gateways.iter().filter(|g| *g != MESH_GATEWAY).collect();
        if !a.gateways.iter().any(|g| g == MESH_GATEWAY) {
            notes.warn(
                &format!("{path}.gateways"),
                format!(
                    "bound to gateways {others:?} only: this match is not applied to waypoints \
                     (ingress gateways are not built yet)"
                ),
            );
            return Ok(None);
        }
        if !others.is_empty() {
            notes.warn(
                &format!("{path}.gateways"),
                format!("gateways {others:?} not applied: ingress gateways are not built yet"),
            );
        }
    }
    for (field, present) in [
        ("destinationSubnets", !a.destination_subnets.is_empty()),
        ("sourceSubnet", a.source_subnet.is_some()),
    ] {
        if present {
            notes.unsupported(
                &format!("{path}.{field}"),
                "this match is left out (a connection is never routed by an unchecked condition)",
            );
            return Ok(None);
        }
    }
    if tls && a.sni_hosts.is_empty() {
        return Err((
            format!("{path}.sniHosts"),
            "a TLS match needs at least one SNI host".to_owned(),
        ));
    }
    let mut sni_hosts = Vec::new();
    for (i, h) in a.sni_hosts.iter().enumerate() {
        let host = sni(h);
        if host.is_empty() {
            return Err((format!("{path}.sniHosts[{i}]"), "empty host".to_owned()));
        }
        if !sni_within(&host, hosts) {
            return Err((
                format!("{path}.sniHosts[{i}]"),
                format!("SNI host {h:?} is not one of the VirtualService's hosts"),
            ));
        }
        sni_hosts.push(host);
    }
    Ok(Some(m::L4Match {
        port: a
            .port
            .map(|n| at(&format!("{path}.port"), values::port(i64::from(n))))
            .transpose()?,
        sni_hosts,
        source_labels: a.source_labels.clone(),
        source_namespace: a.source_namespace.cloned(),
    }))
}

/// VirtualService `tcp` (`tls: false`) or `tls` rules at `spec.<field>`.
pub(super) fn vs_rules<'a, M>(
    cx: &Context<'_>,
    key: &ObjectKey,
    field: &str,
    rules: impl Iterator<Item = (&'a [M], &'a [net::RouteDestination])>,
    hosts: &[String],
    notes: &mut Notes,
) -> Field<Vec<m::L4Rule>>
where
    M: 'a,
    &'a M: Into<IstioMatch<'a>>,
{
    let tls = field == "tls";
    let mut out = Vec::new();
    for (i, (matches, route)) in rules.enumerate() {
        let path = format!("spec.{field}[{i}]");
        if tls && matches.is_empty() {
            return Err((
                format!("{path}.match"),
                "a TLS rule needs at least one match (with sniHosts)".to_owned(),
            ));
        }
        if route.is_empty() {
            return Err((
                format!("{path}.route"),
                "at least one destination is required".to_owned(),
            ));
        }
        let mut l4_matches = Vec::new();
        for (j, mr) in matches.iter().enumerate() {
            if let Some(m) =
                istio_match(&format!("{path}.match[{j}]"), &mr.into(), hosts, tls, notes)?
            {
                l4_matches.push(m);
            }
        }
        if !matches.is_empty() && l4_matches.is_empty() {
            continue; // every match is for other gateways or left out
        }
        let mut destinations = Vec::new();
        for (j, r) in route.iter().enumerate() {
            destinations.push(destination(
                cx,
                key,
                &format!("{path}.route[{j}].destination"),
                &r.destination,
                r.weight,
                route.len(),
                notes,
            )?);
        }
        out.push(m::L4Rule {
            name: None,
            matches: l4_matches,
            destinations,
        });
    }
    Ok(out)
}

/// Gateway API TCPRoutes and TLSRoutes as routes (bound to parents as HTTPRoutes are).
pub(super) fn gateway_routes(cx: &mut Context<'_>, services: &[m::Service]) -> Vec<m::Route> {
    let mut out = Vec::new();
    for kind in [Kind::TcpRoute, Kind::TlsRoute] {
        for (key, object) in cx.objects(kind) {
            let mut notes = Notes::default();
            let result = match &*object {
                Object::TcpRoute(r) => gateway_route(
                    cx,
                    &key,
                    &r.spec.parent_refs,
                    &[],
                    &r.spec.rules,
                    r.spec.use_default_gateways.is_some(),
                    services,
                    &mut notes,
                ),
                Object::TlsRoute(r) => gateway_route(
                    cx,
                    &key,
                    &r.spec.parent_refs,
                    &r.spec.hostnames,
                    &r.spec.rules,
                    r.spec.use_default_gateways.is_some(),
                    services,
                    &mut notes,
                ),
                _ => continue,
            };
            notes.report(cx, &key);
            match result {
                Ok(Some(route)) => out.push(route),
                Ok(None) => {}
                Err((path, message)) => cx.error(&key, &path, message),
            }
        }
    }
    out
}

#[expect(
    clippy::too_many_arguments,
    reason = "the two kinds' fields, passed apart"
)]
fn gateway_route(
    cx: &Context<'_>,
    key: &ObjectKey,
    parent_refs: &[gw::ParentReference],
    hostnames: &[String],
    rules: &[gw::L4RouteRule],
    use_default_gateways: bool,
    services: &[m::Service],
    notes: &mut Notes,
) -> Field<Option<m::Route>> {
    let tls = key.kind == Kind::TlsRoute;
    if use_default_gateways {
        notes.unsupported(
            "spec.useDefaultGateways",
            "ignored (ingress gateways are not built yet)",
        );
    }
    let binding = Binding {
        parent_refs,
        hostnames,
        hostnames_match_service: true,
    };
    let Some((hosts, port)) = parents(cx, key, &binding, services, notes)? else {
        return Ok(None);
    };
    let mut sni_hosts = Vec::new();
    for (i, h) in hostnames.iter().enumerate() {
        let host = sni(h);
        if host.is_empty() || host.contains('/') || host.contains(':') {
            return Err((
                format!("spec.hostnames[{i}]"),
                format!("invalid host name {h:?}"),
            ));
        }
        sni_hosts.push(host);
    }
    if rules.is_empty() {
        return Err((
            "spec.rules".to_owned(),
            "at least one rule is required".to_owned(),
        ));
    }
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        if rule.backend_refs.is_empty() {
            return Err((
                format!("{path}.backendRefs"),
                "at least one backend is required".to_owned(),
            ));
        }
        let mut destinations = Vec::new();
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let reference = gw::BackendObjectReference {
                group: b.group.clone(),
                kind: b.kind.clone(),
                name: b.name.clone(),
                namespace: b.namespace.clone(),
                port: b.port,
            };
            let mut d = backend(cx, key, &format!("{path}.backendRefs[{j}]"), &reference)?;
            d.weight = b.weight.unwrap_or(1);
            destinations.push(d);
        }
        let matches = if port.is_some() || !sni_hosts.is_empty() {
            vec![m::L4Match {
                port,
                sni_hosts: sni_hosts.clone(),
                ..Default::default()
            }]
        } else {
            Vec::new()
        };
        out.push(m::L4Rule {
            name: rule.name.clone(),
            matches,
            destinations,
        });
    }
    let (tcp, tls_rules, kind) = if tls {
        (Vec::new(), out, RouteKind::TlsRoute)
    } else {
        (out, Vec::new(), RouteKind::TcpRoute)
    };
    Ok(Some(m::Route {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        kind,
        hosts,
        rules: Vec::new(),
        tcp,
        tls: tls_rules,
        export_to: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_hosts_within_route_hosts() {
        let hosts = vec!["a.example.com".to_owned(), "*.svc.example.com".to_owned()];
        let cases = [
            ("a.example.com", true),
            ("b.example.com", false),
            ("x.svc.example.com", true),
            ("*.svc.example.com", true),
            ("*.b.svc.example.com", true),
            ("*.example.com", false),
        ];
        for (host, want) in cases {
            assert_eq!(sni_within(host, &hosts), want, "{host}");
        }
        assert!(sni_within("anything.io", &["*".to_owned()]));
    }
}

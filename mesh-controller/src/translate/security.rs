//! Istio security: AuthorizationPolicies and PeerAuthentications in the compact model. Ports,
//! CIDRs and targets are checked; policies in the root namespace without a selector apply
//! mesh-wide.

use mesh_common::model as m;

use super::{values, Context};
use crate::object::{Kind, Object, ObjectKey};
use crate::resources::istio_security as sec;
use crate::resources::PolicyTargetReference;

pub(super) type Field<T> = Result<T, (String, String)>;

/// Annotation that makes an AuthorizationPolicy a dry run (evaluated and reported, never
/// enforced), as in Istio.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

pub(super) fn authorization_policies(cx: &mut Context<'_>) -> Vec<m::AuthorizationPolicy> {
    let mut out = Vec::new();
    for (key, object) in cx.objects(Kind::AuthorizationPolicy) {
        let Object::AuthorizationPolicy(ap) = &*object else {
            continue;
        };
        match authorization_policy(cx, &key, &ap.spec) {
            Ok(mut policy) => {
                policy.dry_run = dry_run(cx, &key, ap.metadata.annotations.as_ref());
                out.push(policy)
            }
            Err((path, message)) => cx.error(&key, &path, message),
        }
    }
    out
}

/// The dry-run annotation: `"true"` makes a dry run; any other value is reported and the
/// policy enforced (a typo must not switch a policy off).
fn dry_run(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    match annotations
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
        .map(String::as_str)
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            cx.error(
                key,
                &format!("metadata.annotations[{DRY_RUN_ANNOTATION}]"),
                format!("{other:?} is neither \"true\" nor \"false\"; the policy is enforced"),
            );
            false
        }
    }
}

fn parse_all<T>(
    path: &str,
    items: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Field<Vec<T>> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| parse(s).map_err(|e| (format!("{path}[{i}]"), e)))
        .collect()
}

/// `ns/sa` service accounts as principal patterns (any trust domain).
fn service_account_principals(path: &str, items: &[String]) -> Field<Vec<String>> {
    parse_all(path, items, |s| match s.split_once('/') {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() => Ok(format!("*/ns/{ns}/sa/{sa}")),
        _ => Err(format!(
            "invalid service account {s:?} (expected <namespace>/<name>)"
        )),
    })
}

/// `targetRef` and `targetRefs` as model targets: in the policy's own namespace, of a kind a
/// waypoint serves.
pub(super) fn target_refs(
    key: &ObjectKey,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) -> Field<Vec<m::PolicyTargetRef>> {
    let mut out = Vec::new();
    let targets = target_ref.map(|t| ("spec.targetRef".to_owned(), t));
    let indexed = target_refs
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("spec.targetRefs[{i}]"), t));
    for (path, t) in targets.into_iter().chain(indexed) {
        if let Some(ns) = t.namespace.as_ref().filter(|ns| **ns != key.namespace) {
            return Err((
                format!("{path}.namespace"),
                format!("must be the policy's own namespace, not {ns:?}"),
            ));
        }
        if !matches!(
            t.kind.as_str(),
            "Gateway" | "Service" | "ServiceEntry" | "GatewayClass"
        ) {
            return Err((
                format!("{path}.kind"),
                format!("unsupported target kind {:?}", t.kind),
            ));
        }
        out.push(m::PolicyTargetRef {
            group: t.group.clone().unwrap_or_default(),
            kind: t.kind.clone(),
            name: t.name.clone(),
            namespace: key.namespace.clone(),
        });
    }
    Ok(out)
}

fn authorization_policy(
    cx: &Context<'_>,
    key: &ObjectKey,
    spec: &sec::AuthorizationPolicySpec,
) -> Field<m::AuthorizationPolicy> {
    let action = match spec.action {
        None | Some(sec::Action::Allow) => m::AuthorizationAction::Allow,
        Some(sec::Action::Deny) => m::AuthorizationAction::Deny,
        Some(sec::Action::Audit) => m::AuthorizationAction::Audit,
        Some(sec::Action::Custom) => {
            return Err((
                "spec.action".to_owned(),
                "CUSTOM (external authorization) is not supported".to_owned(),
            ))
        }
    };
    let target_refs = target_refs(key, spec.target_ref.as_ref(), &spec.target_refs)?;
    if spec.selector.is_some() && !target_refs.is_empty() {
        return Err((
            "spec.selector".to_owned(),
            "selector and targetRefs are mutually exclusive".to_owned(),
        ));
    }
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        let mut from = Vec::new();
        for (j, f) in rule.from.iter().enumerate() {
            let p = format!("{path}.from[{j}].source");
            let s = &f.source;
            let mut principals = s.principals.clone();
            principals.extend(service_account_principals(
                &format!("{p}.serviceAccounts"),
                &s.service_accounts,
            )?);
            let mut not_principals = s.not_principals.clone();
            not_principals.extend(service_account_principals(
                &format!("{p}.notServiceAccounts"),
                &s.not_service_accounts,
            )?);
            parse_all(
                &format!("{p}.remoteIpBlocks"),
                &s.remote_ip_blocks,
                values::ip_block,
            )?;
            parse_all(
                &format!("{p}.notRemoteIpBlocks"),
                &s.not_remote_ip_blocks,
                values::ip_block,
            )?;
            from.push(m::Source {
                principals,
                not_principals,
                namespaces: s.namespaces.clone(),
                not_namespaces: s.not_namespaces.clone(),
                ip_blocks: parse_all(&format!("{p}.ipBlocks"), &s.ip_blocks, values::ip_block)?,
                not_ip_blocks: parse_all(
                    &format!("{p}.notIpBlocks"),
                    &s.not_ip_blocks,
                    values::ip_block,
                )?,
                request_principals: s.request_principals.clone(),
                not_request_principals: s.not_request_principals.clone(),
            });
        }
        let mut to = Vec::new();
        for (j, t) in rule.to.iter().enumerate() {
            let p = format!("{path}.to[{j}].operation");
            let o = &t.operation;
            to.push(m::Operation {
                ports: parse_all(&format!("{p}.ports"), &o.ports, values::port_str)?,
                not_ports: parse_all(&format!("{p}.notPorts"), &o.not_ports, values::port_str)?,
                methods: o.methods.clone(),
                paths: o.paths.clone(),
                hosts: o.hosts.clone(),
                not_methods: o.not_methods.clone(),
                not_paths: o.not_paths.clone(),
                not_hosts: o.not_hosts.clone(),
            });
        }
        let mut when: Vec<m::Condition> = rule
            .when
            .iter()
            .map(|c| m::Condition {
                key: c.key.clone(),
                values: c.values.clone(),
                not_values: c.not_values.clone(),
            })
            .collect();
        // Remote (X-Forwarded-For) addresses are only visible to a waypoint.
        for f in &rule.from {
            if !f.source.remote_ip_blocks.is_empty() || !f.source.not_remote_ip_blocks.is_empty() {
                when.push(m::Condition {
                    key: "remote.ip".to_owned(),
                    values: f.source.remote_ip_blocks.clone(),
                    not_values: f.source.not_remote_ip_blocks.clone(),
                });
            }
        }
        rules.push(m::AuthorizationRule { from, to, when });
    }
    let selector = spec.selector.as_ref().map(|s| s.match_labels.clone());
    Ok(m::AuthorizationPolicy {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        mesh_wide: key.namespace == cx.options.root_namespace
            && selector.is_none()
            && target_refs.is_empty(),
        selector,
        target_refs,
        action,
        rules,
        dry_run: false,
    })
}

fn mode(m: Option<sec::MtlsMode>) -> m::PeerAuthMode {
    match m {
        None | Some(sec::MtlsMode::Unset) => m::PeerAuthMode::Unset,
        Some(sec::MtlsMode::Disable) => m::PeerAuthMode::Disable,
        Some(sec::MtlsMode::Permissive) => m::PeerAuthMode::Permissive,
        Some(sec::MtlsMode::Strict) => m::PeerAuthMode::Strict,
    }
}

pub(super) fn peer_authentications(cx: &mut Context<'_>) -> Vec<m::PeerAuthentication> {
    let mut out = Vec::new();
    for (key, object) in cx.objects(Kind::PeerAuthentication) {
        let Object::PeerAuthentication(pa) = &*object else {
            continue;
        };
        let spec = &pa.spec;
        let mut port_level_mtls = std::collections::BTreeMap::new();
        let mut bad = None;
        for (port, tls) in &spec.port_level_mtls {
            match values::port_str(port) {
                Ok(p) => {
                    port_level_mtls.insert(p, mode(tls.mode));
                }
                Err(e) => {
                    bad = Some((format!("spec.portLevelMtls.{port}"), e));
                    break;
                }
            }
        }
        if bad.is_none() && !port_level_mtls.is_empty() && spec.selector.is_none() {
            bad = Some((
                "spec.portLevelMtls".to_owned(),
                "port-level settings need a selector".to_owned(),
            ));
        }
        if let Some((path, message)) = bad {
            cx.error(&key, &path, message);
            continue;
        }
        let selector = spec.selector.as_ref().map(|s| s.match_labels.clone());
        out.push(m::PeerAuthentication {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            mesh_wide: key.namespace == cx.options.root_namespace && selector.is_none(),
            selector,
            mode: mode(spec.mtls.as_ref().and_then(|t| t.mode)),
            port_level_mtls,
        });
    }
    out
}

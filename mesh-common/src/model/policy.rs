//! Security policies in the compact model: authorization (Istio AuthorizationPolicy) and peer
//! authentication (Istio PeerAuthentication), with the scope rules that pick the policies of a
//! workload.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::Workload;

/// Whether a policy applies mesh-wide, to a namespace, or to selected workloads.
fn scope_matches(
    policy_namespace: &str,
    mesh_wide: bool,
    selector: Option<&BTreeMap<String, String>>,
    workload: &Workload,
) -> bool {
    if !mesh_wide && policy_namespace != workload.namespace {
        return false;
    }
    selector.is_none_or(|sel| sel.iter().all(|(k, v)| workload.labels.get(k) == Some(v)))
}

/// What an authorization policy does when a rule matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationAction {
    /// Allow matching requests; once any ALLOW policy applies, non-matching requests are denied.
    #[default]
    Allow,
    /// Deny matching requests (checked before ALLOW).
    Deny,
    /// Record matching requests; no effect on the decision.
    Audit,
    /// An action this build does not know (from a newer controller): the policy denies every
    /// connection to the workloads it applies to, whatever its rules. It might be a stricter
    /// action, so it is never taken as ALLOW, nor ignored (see `compat`).
    #[serde(other)]
    Unknown,
}

/// An authorization policy (from an Istio AuthorizationPolicy).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    /// Policy name.
    pub name: String,
    /// Policy namespace.
    pub namespace: String,
    /// True when the policy is in the mesh root namespace and applies to every namespace.
    #[serde(default)]
    pub mesh_wide: bool,
    /// Workload label selector; `None` selects every workload in scope.
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    /// Waypoints or services the policy is attached to; non-empty means waypoints enforce it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetRef>,
    /// ALLOW, DENY or AUDIT.
    #[serde(default)]
    pub action: AuthorizationAction,
    /// Rules, any of which may match. An ALLOW policy with no rules allows nothing; a policy
    /// with one empty rule matches everything.
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
    /// Dry run (`istio.io/dry-run: "true"`): evaluated and reported, never enforced. Absent
    /// (false) in what older controllers send, so both sides stay compatible.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl AuthorizationPolicy {
    /// Whether the policy applies to the workload (agent-enforced policies, dry-run ones
    /// included: agents evaluate those too).
    pub fn applies_to(&self, workload: &Workload) -> bool {
        self.target_refs.is_empty()
            && scope_matches(
                &self.namespace,
                self.mesh_wide,
                self.selector.as_ref(),
                workload,
            )
    }

    /// Whether any rule matches a connection, looking at L4 attributes only. Rules that need L7
    /// attributes never match for ALLOW (fail closed) and match on their L4 part for DENY, as
    /// ztunnel does.
    pub fn matches_l4(&self, principal: Option<&str>, src: IpAddr, dst_port: u16) -> bool {
        self.rules.iter().any(|rule| {
            if rule.has_l7() && self.action != AuthorizationAction::Deny {
                return false;
            }
            rule.matches_l4(principal, src, dst_port)
        })
    }
}

/// A reference from a policy to the object it attaches to (`targetRefs`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// API group, e.g. `gateway.networking.k8s.io` or empty for core.
    #[serde(default)]
    pub group: String,
    /// Kind, e.g. `Gateway` or `Service`.
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace of the target (the policy's own).
    pub namespace: String,
}

/// One rule: all of `from`, `to` and `when` must match; within each, any entry may match.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationRule {
    /// Sources, any of which may match; empty matches any source.
    #[serde(default)]
    pub from: Vec<Source>,
    /// Operations, any of which may match; empty matches any operation.
    #[serde(default)]
    pub to: Vec<Operation>,
    /// Conditions (`when`), kept for waypoints as key -> allowed values; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// A `when` condition of an authorization rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Attribute name, e.g. `request.headers[version]` or `source.ip`.
    pub key: String,
    /// Values any of which may match.
    #[serde(default)]
    pub values: Vec<String>,
    /// Values none of which may match.
    #[serde(default)]
    pub not_values: Vec<String>,
}

impl AuthorizationRule {
    /// Whether the rule needs request attributes that only a waypoint sees.
    pub fn has_l7(&self) -> bool {
        !self.when.is_empty()
            || self
                .from
                .iter()
                .any(|s| !s.request_principals.is_empty() || !s.not_request_principals.is_empty())
            || self.to.iter().any(Operation::has_l7)
    }

    /// Whether the L4 attributes of the rule match.
    pub fn matches_l4(&self, principal: Option<&str>, src: IpAddr, dst_port: u16) -> bool {
        let from = self.from.is_empty() || self.from.iter().any(|s| s.matches(principal, src));
        let to = self.to.is_empty() || self.to.iter().any(|o| o.matches_port(dst_port));
        from && to
    }
}

/// Who a request comes from (`from.source`); every non-empty field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Peer identities without `spiffe://`, e.g. `cluster.local/ns/default/sa/sleep`; `*`
    /// prefix/suffix wildcards as in Istio.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Identities that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// Source namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Source address ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<IpBlock>,
    /// Address ranges that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<IpBlock>,
    /// JWT request principals (waypoint only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// JWT request principals that must not match (waypoint only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
}

/// Istio's string match: exact, `prefix*`, `*suffix` or `*`.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        pattern == value
    }
}

/// The namespace part of a `<td>/ns/<ns>/sa/<sa>` principal.
fn principal_namespace(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    while let Some(p) = parts.next() {
        if p == "ns" {
            return parts.next();
        }
    }
    None
}

impl Source {
    /// Whether a peer matches; `principal` is the peer identity without `spiffe://` (None for
    /// plaintext peers, which match no principal or namespace).
    pub fn matches(&self, principal: Option<&str>, src: IpAddr) -> bool {
        let any = |patterns: &[String], value: Option<&str>| {
            value.is_some_and(|v| patterns.iter().any(|p| wildcard_match(p, v)))
        };
        let ns = principal.and_then(principal_namespace);
        let in_blocks = |blocks: &[IpBlock]| blocks.iter().any(|b| b.contains(src));
        (self.principals.is_empty() || any(&self.principals, principal))
            && !any(&self.not_principals, principal)
            && (self.namespaces.is_empty() || any(&self.namespaces, ns))
            && !any(&self.not_namespaces, ns)
            && (self.ip_blocks.is_empty() || in_blocks(&self.ip_blocks))
            && !in_blocks(&self.not_ip_blocks)
    }
}

/// What a request is for (`to.operation`); every non-empty field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Destination ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Ports that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<u16>,
    /// HTTP methods (waypoint only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// HTTP paths (waypoint only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// HTTP hosts (waypoint only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// HTTP methods that must not match (waypoint only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// HTTP paths that must not match (waypoint only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
    /// HTTP hosts that must not match (waypoint only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
}

impl Operation {
    /// Whether the operation needs HTTP attributes.
    pub fn has_l7(&self) -> bool {
        !(self.methods.is_empty()
            && self.paths.is_empty()
            && self.hosts.is_empty()
            && self.not_methods.is_empty()
            && self.not_paths.is_empty()
            && self.not_hosts.is_empty())
    }
}

impl Operation {
    /// Whether the port parts match.
    pub fn matches_port(&self, port: u16) -> bool {
        (self.ports.is_empty() || self.ports.contains(&port)) && !self.not_ports.contains(&port)
    }
}

/// An address range (CIDR); a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    /// Network address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

impl IpBlock {
    /// Whether the range contains an address (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let len = u32::from(self.prefix_len.min(32));
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let len = u32::from(self.prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Mutual TLS mode of a peer authentication policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerAuthMode {
    /// Inherit from the enclosing scope.
    #[default]
    Unset,
    /// Accept both mTLS (HBONE) and plaintext.
    Permissive,
    /// Accept only mTLS (HBONE).
    Strict,
    /// Plaintext only (treated as permissive by ambient data planes).
    Disable,
    /// A mode this build does not know (from a newer controller): taken as STRICT, so plaintext
    /// is refused rather than let in (see `compat`).
    #[serde(other)]
    Unknown,
}

impl PeerAuthMode {
    /// The mode as enforced: an unknown mode is STRICT.
    fn enforced(self) -> PeerAuthMode {
        match self {
            PeerAuthMode::Unknown => PeerAuthMode::Strict,
            mode => mode,
        }
    }
}

/// A peer authentication policy (from an Istio PeerAuthentication).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// Policy name.
    pub name: String,
    /// Policy namespace.
    pub namespace: String,
    /// True when the policy is in the mesh root namespace without a selector.
    #[serde(default)]
    pub mesh_wide: bool,
    /// Workload label selector; `None` selects the whole namespace (or mesh).
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    /// Mode for all ports.
    #[serde(default)]
    pub mode: PeerAuthMode,
    /// Per-port modes (only honoured with a selector, as in Istio).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<u16, PeerAuthMode>,
}

/// Picks the effective mode: workload policy (port level first), namespace policy, mesh policy;
/// an unknown mode is enforced as STRICT.
pub(super) fn resolve_peer_auth(
    policies: &[PeerAuthentication],
    workload: &Workload,
    port: u16,
) -> PeerAuthMode {
    let applicable = |p: &&PeerAuthentication| {
        scope_matches(&p.namespace, p.mesh_wide, p.selector.as_ref(), workload)
    };
    let mut workload_level = None;
    let mut namespace_level = None;
    let mut mesh_level = None;
    for p in policies.iter().filter(applicable) {
        if p.selector.is_some() && !p.mesh_wide {
            if let Some(mode) = p
                .port_level_mtls
                .get(&port)
                .filter(|m| **m != PeerAuthMode::Unset)
            {
                return mode.enforced();
            }
            workload_level.get_or_insert(p.mode);
        } else if p.mesh_wide {
            mesh_level.get_or_insert(p.mode);
        } else {
            namespace_level.get_or_insert(p.mode);
        }
    }
    [workload_level, namespace_level, mesh_level]
        .into_iter()
        .flatten()
        .find(|m| *m != PeerAuthMode::Unset)
        .map_or(PeerAuthMode::Permissive, PeerAuthMode::enforced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            locality: Default::default(),
            workload_name: String::new(),
            uid: "prod/a".to_owned(),
            name: "a".to_owned(),
            namespace: "prod".to_owned(),
            service_account: "default".to_owned(),
            node: String::new(),
            addresses: vec![],
            meshed: true,
            labels: BTreeMap::from([("app".to_owned(), "a".to_owned())]),
            waypoint: None,
        }
    }

    fn policy(
        mode: PeerAuthMode,
        selector: bool,
        ports: &[(u16, PeerAuthMode)],
    ) -> PeerAuthentication {
        PeerAuthentication {
            name: "p".to_owned(),
            namespace: "prod".to_owned(),
            mesh_wide: false,
            selector: selector.then(|| BTreeMap::from([("app".to_owned(), "a".to_owned())])),
            mode,
            port_level_mtls: ports.iter().copied().collect(),
        }
    }

    #[test]
    fn an_unknown_peer_auth_mode_is_enforced_as_strict() {
        use PeerAuthMode::*;
        // (what, policies, port, effective mode)
        let cases = [
            ("no policy", vec![], 80, Permissive),
            (
                "namespace STRICT",
                vec![policy(Strict, false, &[])],
                80,
                Strict,
            ),
            (
                "namespace unknown",
                vec![policy(Unknown, false, &[])],
                80,
                Strict,
            ),
            (
                "workload unknown over namespace PERMISSIVE",
                vec![policy(Unknown, true, &[]), policy(Permissive, false, &[])],
                80,
                Strict,
            ),
            (
                "port-level unknown",
                vec![policy(Permissive, true, &[(8080, Unknown)])],
                8080,
                Strict,
            ),
            (
                "port-level unknown, other port",
                vec![policy(Permissive, true, &[(8080, Unknown)])],
                80,
                Permissive,
            ),
        ];
        for (what, policies, port, expected) in cases {
            assert_eq!(
                resolve_peer_auth(&policies, &workload(), port),
                expected,
                "{what}"
            );
        }
    }
}

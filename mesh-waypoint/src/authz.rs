//! L7 authorization at the waypoint: the AuthorizationPolicies attached with `targetRefs` to
//! this waypoint's Gateway, to the class `istio-waypoint`, or to the target Service, evaluated
//! in Istio's order (DENY, then ALLOW; AUDIT only reported; dry-run reported, never enforced).
//! Fail closed: an unknown action denies, and what cannot be evaluated (an unknown `when` key,
//! request attributes of opaque TCP) never matches for ALLOW and matches for DENY. JWT
//! attributes (`requestPrincipals`, `request.auth.*`) come from the token [`crate::jwt`]
//! verified; a request without one has none of them.

use std::collections::HashMap;
use std::net::IpAddr;

use mesh_common::model::{
    wildcard_match, AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Condition,
    IpBlock, Operation, Snapshot, Source, WAYPOINT_CLASS,
};
use regex::Regex;

use crate::error::ProxyError;
use crate::route::RequestView;
use crate::rules::{self, Warning};
use crate::table::{RouteTable, ServiceKey, SourceInfo, Target};

/// The outcome of one set of policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No policy applies: allowed.
    NoPolicy,
    /// Allowed by this ALLOW policy (`namespace/name`).
    Allowed(String),
    /// Allowed: only DENY policies apply and none matched.
    NotDenied,
    /// Denied by this DENY policy.
    Denied(String),
    /// Denied: ALLOW policies apply and none matched.
    NotAllowed,
    /// Denied: this policy has an action this build does not know.
    UnknownAction(String),
}

impl Verdict {
    /// Whether the request may go on.
    pub fn allows(&self) -> bool {
        matches!(
            self,
            Verdict::NoPolicy | Verdict::Allowed(_) | Verdict::NotDenied
        )
    }

    /// The deciding policy, if one decided.
    pub fn policy(&self) -> Option<&str> {
        match self {
            Verdict::Allowed(p) | Verdict::Denied(p) | Verdict::UnknownAction(p) => Some(p),
            _ => None,
        }
    }
}

/// What authorization decided for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzDecision {
    /// The enforced outcome.
    pub verdict: Verdict,
    /// AUDIT policies that matched (`namespace/name`), for the log.
    pub audit: Vec<String>,
    /// What the dry-run policies alone would decide, `None` when none applies.
    pub dry_run: Option<Verdict>,
}

impl AuthzDecision {
    /// The 403 `RBAC: access denied` to answer, when denied.
    pub fn error(&self) -> Option<ProxyError> {
        if self.verdict.allows() {
            return None;
        }
        let message = match &self.verdict {
            Verdict::Denied(p) => format!("denied by policy {p}"),
            Verdict::UnknownAction(p) => format!("policy {p} has an unknown action: denied"),
            _ => "no ALLOW policy matched".to_owned(),
        };
        Some(ProxyError::rbac_denied(message))
    }
}

/// The policies that apply at this waypoint, by what they target.
#[derive(Debug, Default)]
pub(crate) struct AuthzIndex {
    /// Attached to this waypoint (its Gateway or the waypoint class): every request.
    waypoint: Vec<usize>,
    /// Attached to a service.
    by_service: HashMap<ServiceKey, Vec<usize>>,
    /// `{*}`/`{**}` path templates, compiled.
    templates: HashMap<String, Regex>,
}

/// Compiles an Istio path template: `{*}` one segment, `{**}` any rest.
fn template(pattern: &str) -> Result<Regex, regex::Error> {
    let mut re = String::new();
    let mut rest = pattern;
    while let Some(at) = rest.find('{') {
        re.push_str(&regex::escape(&rest[..at]));
        let tail = &rest[at..];
        if let Some(t) = tail.strip_prefix("{**}") {
            re.push_str(".*");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("{*}") {
            re.push_str("[^/]+");
            rest = t;
        } else {
            re.push_str(&regex::escape("{"));
            rest = &tail[1..];
        }
    }
    re.push_str(&regex::escape(rest));
    rules::whole_match_regex(&re)
}

impl AuthzIndex {
    pub(crate) fn new(
        snapshot: &Snapshot,
        waypoint: (&str, &str),
        warn: &mut dyn FnMut(Warning),
    ) -> AuthzIndex {
        let mut out = AuthzIndex::default();
        for (i, p) in snapshot.authorization_policies.iter().enumerate() {
            let mut here = false;
            for t in &p.target_refs {
                match t.kind.as_str() {
                    "Gateway" if t.namespace == waypoint.0 && t.name == waypoint.1 => here = true,
                    "GatewayClass" if t.name == WAYPOINT_CLASS => here = true,
                    "Service" | "ServiceEntry" => {
                        let key = ServiceKey {
                            namespace: t.namespace.clone(),
                            name: t.name.clone(),
                        };
                        let list = out.by_service.entry(key).or_default();
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                    _ => {}
                }
            }
            if here {
                out.waypoint.push(i);
            }
            let paths = p
                .rules
                .iter()
                .flat_map(|r| &r.to)
                .flat_map(|o| o.paths.iter().chain(&o.not_paths));
            for path in paths.filter(|p| p.contains('{')) {
                match template(path) {
                    Ok(re) => {
                        out.templates.insert(path.clone(), re);
                    }
                    Err(e) => warn(Warning {
                        object: format!("authorization policy {}/{}", p.namespace, p.name),
                        message: format!(
                            "path template {path:?} does not compile ({e}); treated as not evaluable"
                        ),
                    }),
                }
            }
        }
        out
    }
}

/// The attributes of a request that policies read.
struct Attrs<'a> {
    req: &'a RequestView<'a>,
    principal: Option<String>,
    path: &'a str,
    templates: &'a HashMap<String, Regex>,
    /// An opaque TCP connection: request attributes (methods, paths, hosts, headers, request
    /// principals) cannot be evaluated; a rule needing them never allows and, in a DENY policy,
    /// matches on the rest (fail closed, as Istio treats TCP traffic).
    tcp: bool,
}

/// A condition or field outcome: `None` when it cannot be evaluated.
type Eval = Option<bool>;

fn any_of(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| wildcard_match(p, value))
}

/// Host match: case-insensitive, and a pattern without a port matches the host on any port.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    if wildcard_match(&pattern, &host) {
        return true;
    }
    let bare = match host.rsplit_once(':') {
        Some((h, p))
            if p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => return false,
    };
    wildcard_match(&pattern, bare)
}

fn parse_block(s: &str) -> Option<IpBlock> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let address: IpAddr = addr.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix_len = len.unwrap_or(max);
    (prefix_len <= max).then_some(IpBlock {
        address,
        prefix_len,
    })
}

impl Attrs<'_> {
    fn path_matches(&self, patterns: &[String]) -> Eval {
        let mut out = false;
        for p in patterns {
            if p.contains('{') {
                out |= self.templates.get(p)?.is_match(self.path);
            } else {
                out |= wildcard_match(p, self.path);
            }
        }
        Some(out)
    }

    fn source(&self, s: &Source, deny: bool) -> bool {
        let l4 = s.matches(self.principal.as_deref(), self.req.source.address);
        if self.tcp && (!s.request_principals.is_empty() || !s.not_request_principals.is_empty()) {
            return l4 && deny;
        }
        let principal = self.req.jwt.map(|j| j.principal.as_str());
        let matches = |patterns: &[String]| principal.is_some_and(|p| any_of(patterns, p));
        l4 && (s.request_principals.is_empty() || matches(&s.request_principals))
            && !matches(&s.not_request_principals)
    }

    /// A `request.auth.*` condition: values of the verified token (none without one); `None`
    /// for a key this build does not know.
    fn auth_condition(&self, key: &str, c: &Condition) -> Eval {
        let jwt = self.req.jwt;
        let values: Vec<String> = match key {
            "request.auth.principal" => jwt.map(|j| j.principal.clone()).into_iter().collect(),
            "request.auth.audiences" => jwt.map(|j| j.claim_strings(&["aud"])).unwrap_or_default(),
            "request.auth.presenter" => jwt.map(|j| j.claim_strings(&["azp"])).unwrap_or_default(),
            _ => {
                let path = claim_path(key.strip_prefix("request.auth.claims")?)?;
                jwt.map(|j| j.claim_strings(&path)).unwrap_or_default()
            }
        };
        let yes = c.values.is_empty() || values.iter().any(|v| any_of(&c.values, v));
        let no = values.iter().any(|v| any_of(&c.not_values, v));
        Some(yes && !no)
    }

    fn operation(&self, o: &Operation) -> Eval {
        if self.tcp && o.has_l7() {
            return None;
        }
        let method = self.req.method.as_str();
        let host = self.req.authority;
        let ok = o.matches_port(self.req.target.port())
            && (o.methods.is_empty() || any_of(&o.methods, method))
            && !any_of(&o.not_methods, method)
            && (o.hosts.is_empty() || o.hosts.iter().any(|p| host_matches(p, host)))
            && !o.not_hosts.iter().any(|p| host_matches(p, host));
        let paths = o.paths.is_empty() || self.path_matches(&o.paths)?;
        let not_paths = !o.not_paths.is_empty() && self.path_matches(&o.not_paths)?;
        Some(ok && paths && !not_paths)
    }

    /// A `when` condition; `None` when its key cannot be evaluated here.
    fn condition(&self, c: &Condition) -> Eval {
        let key = c.key.as_str();
        let ip_cond = |ip: IpAddr| -> Eval {
            let blocks = |vs: &[String]| -> Option<bool> {
                let mut any = false;
                for v in vs {
                    any |= parse_block(v)?.contains(ip);
                }
                Some(any)
            };
            Some((c.values.is_empty() || blocks(&c.values)?) && !blocks(&c.not_values)?)
        };
        let text = |value: Option<&str>| -> Eval {
            let yes = c.values.is_empty() || value.is_some_and(|v| any_of(&c.values, v));
            let no = value.is_some_and(|v| any_of(&c.not_values, v));
            Some(yes && !no)
        };
        if self.tcp && key.starts_with("request.") {
            return None;
        }
        if let Some(name) = key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        {
            let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            return text(rules::header_str(self.req.headers, &name).as_deref());
        }
        match key {
            "source.ip" | "remote.ip" => ip_cond(self.req.source.address),
            "destination.ip" => ip_cond(self.req.target.address()),
            "source.namespace" => text(self.req.source.namespace.as_deref()),
            "source.principal" => text(self.principal.as_deref()),
            "destination.port" => text(Some(&self.req.target.port().to_string())),
            k if k.starts_with("request.auth.") => self.auth_condition(k, c),
            _ => None,
        }
    }

    /// Whether a rule matches; what cannot be evaluated counts as `deny` (true for DENY).
    fn rule(&self, r: &AuthorizationRule, deny: bool) -> bool {
        let settle = |e: Eval| e.unwrap_or(deny);
        let from = r.from.is_empty() || r.from.iter().any(|s| self.source(s, deny));
        from && (r.to.is_empty() || r.to.iter().any(|o| settle(self.operation(o))))
            && r.when.iter().all(|c| settle(self.condition(c)))
    }

    fn policy(&self, p: &AuthorizationPolicy) -> bool {
        let deny = p.action == AuthorizationAction::Deny;
        p.rules.iter().any(|r| self.rule(r, deny))
    }
}

/// `[a][b]` as `["a", "b"]`; `None` when malformed.
fn claim_path(text: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (segment, tail) = rest.strip_prefix('[')?.split_once(']')?;
        if segment.is_empty() {
            return None;
        }
        out.push(segment);
        rest = tail;
    }
    (!out.is_empty()).then_some(out)
}

fn name(p: &AuthorizationPolicy) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// Istio's order over one set of policies (CUSTOM never reaches the waypoint).
fn evaluate<'p>(
    attrs: &Attrs<'_>,
    policies: impl Iterator<Item = &'p AuthorizationPolicy> + Clone,
) -> Verdict {
    for p in policies.clone() {
        match p.action {
            AuthorizationAction::Unknown => return Verdict::UnknownAction(name(p)),
            AuthorizationAction::Deny if attrs.policy(p) => return Verdict::Denied(name(p)),
            _ => {}
        }
    }
    let mut allow = policies
        .filter(|p| p.action == AuthorizationAction::Allow)
        .peekable();
    if allow.peek().is_none() {
        return Verdict::NoPolicy;
    }
    match allow.find(|p| attrs.policy(p)) {
        Some(p) => Verdict::Allowed(name(p)),
        None => Verdict::NotAllowed,
    }
}

impl RouteTable {
    /// Authorizes a request against the policies that apply at this waypoint.
    pub fn authorize(&self, req: &RequestView<'_>) -> AuthzDecision {
        self.authorize_as(req, false)
    }

    /// Authorizes an opaque TCP connection (no request attributes) to `target` from `source`.
    pub fn authorize_tcp(&self, target: &Target, source: &SourceInfo) -> AuthzDecision {
        let headers = http::HeaderMap::new();
        let view = RequestView {
            method: &http::Method::CONNECT,
            path_and_query: "",
            authority: "",
            headers: &headers,
            target,
            source,
            jwt: None,
        };
        self.authorize_as(&view, true)
    }

    fn authorize_as(&self, req: &RequestView<'_>, tcp: bool) -> AuthzDecision {
        let index = &self.authz;
        let ids = self.attached(&index.waypoint, &index.by_service, req.target);
        let all = &self.snapshot.authorization_policies;
        let policies = ids.iter().map(|i| &all[*i]);
        let attrs = Attrs {
            req,
            principal: req.source.identity.as_ref().map(|id| {
                format!(
                    "{}/ns/{}/sa/{}",
                    id.trust_domain, id.namespace, id.service_account
                )
            }),
            path: req.path(),
            templates: &index.templates,
            tcp,
        };
        let enforced = policies
            .clone()
            .filter(|p| !p.dry_run && p.action != AuthorizationAction::Audit);
        let verdict = if enforced.clone().next().is_none() {
            Verdict::NoPolicy
        } else {
            match evaluate(&attrs, enforced) {
                Verdict::NoPolicy => Verdict::NotDenied,
                v => v,
            }
        };
        let audit = policies
            .clone()
            .filter(|p| !p.dry_run && p.action == AuthorizationAction::Audit && attrs.policy(p))
            .map(name)
            .collect();
        let dry = policies.filter(|p| p.dry_run && p.action != AuthorizationAction::Audit);
        let dry_run = dry
            .clone()
            .next()
            .is_some()
            .then(|| match evaluate(&attrs, dry) {
                Verdict::NoPolicy => Verdict::NotDenied,
                v => v,
            });
        AuthzDecision {
            verdict,
            audit,
            dry_run,
        }
    }
}

#[cfg(test)]
mod tests;

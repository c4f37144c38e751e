//! The route decision, a pure function of the tables and the request: which rule of the target
//! service's route matches (first wins), then forward to a weighted destination (with rewrites
//! and header operations), redirect, or answer directly. No route for the host: forward to the
//! target itself.

use std::borrow::Cow;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use mesh_common::model::{RouteKind, RouteRule};

use crate::error::ProxyError;
use crate::jwt::Jwt;
use crate::rules::{self, Action, Dest, HeaderMutation, Match, Matcher, RedirectRule, Rule};
use crate::table::{RouteTable, ServiceKey, SourceInfo, Target};

/// What the route decision reads of a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path and query, as received (`/` when the request has none).
    pub path_and_query: &'a str,
    /// Authority: `:authority`, else `Host`.
    pub authority: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// What the CONNECT authority named.
    pub target: &'a Target,
    /// Who sent it.
    pub source: &'a SourceInfo,
    /// The request's verified JWT, if any.
    pub jwt: Option<&'a Jwt>,
}

impl RequestView<'_> {
    /// The path without the query.
    pub fn path(&self) -> &str {
        split_query(self.path_and_query).0
    }
}

fn split_query(pq: &str) -> (&str, Option<&str>) {
    match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    }
}

/// Where a request goes: a service host (with subset and port) or, with no route, the workload
/// that was dialed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The destination host as the rule names it (qualified), or the workload address.
    pub host: String,
    /// The service with that host, `None` when no service has it (then: 503 `NC`).
    pub service: Option<ServiceKey>,
    /// The workload dialed directly (a workload-addressed target with no route).
    pub workload: Option<String>,
    /// DestinationRule subset.
    pub subset: Option<String>,
    /// Service port (or the workload port).
    pub port: u16,
}

/// Forwarding, with what to change on the way.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The chosen destination.
    pub backend: Backend,
    /// The rule taken (`route <ns>/<name> rule <i> (<name>)`), `None` for the default route.
    pub route: Option<Arc<str>>,
    /// The rule as the model has it (timeout, retries, fault, mirror), `None` for the default.
    pub rule: Option<Arc<RouteRule>>,
    /// The retry policy (the rule's, compiled with the table; Istio's default without a rule).
    pub retry: Arc<crate::resilience::retry::Policy>,
    /// The rewritten path and query, if the rule rewrites it.
    pub path: Option<PathAndQuery>,
    /// The rewritten authority, if the rule rewrites it.
    pub authority: Option<Authority>,
    /// Request header operations, in order: the rule's, then the destination's.
    pub request_headers: Vec<Arc<HeaderMutation>>,
    /// Response header operations, in order: the rule's, then the destination's.
    pub response_headers: Vec<Arc<HeaderMutation>>,
}

impl Forward {
    fn default_for(backend: Backend) -> Forward {
        Forward {
            backend,
            route: None,
            rule: None,
            retry: crate::resilience::retry::Policy::shared_default(),
            path: None,
            authority: None,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }

    /// Applies rewrites, then header operations (the rule's, then the destination's).
    pub fn apply_request(&self, parts: &mut http::request::Parts) {
        if self.path.is_some() || self.authority.is_some() {
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            if let Some(p) = &self.path {
                uri.path_and_query = Some(p.clone());
            }
            if let Some(a) = &self.authority {
                if uri.authority.is_some() {
                    uri.authority = Some(a.clone());
                }
                if let Ok(host) = HeaderValue::from_str(a.as_str()) {
                    parts.headers.insert(http::header::HOST, host);
                }
            }
            if uri.path_and_query.is_none() && uri.scheme.is_some() {
                uri.path_and_query = Some(PathAndQuery::from_static("/"));
            }
            // The parts come from a valid URI with valid replacements: this cannot fail; if it
            // did, a bare path is still a valid request target.
            parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| {
                let path = self.path.clone().unwrap_or(PathAndQuery::from_static("/"));
                Uri::from(path)
            });
        }
        for ops in &self.request_headers {
            ops.apply(&mut parts.headers);
        }
    }

    /// Applies the response header operations (the rule's, then the destination's).
    pub fn apply_response(&self, headers: &mut HeaderMap) {
        for ops in &self.response_headers {
            ops.apply(headers);
        }
    }
}

/// What to do with a request.
#[derive(Clone, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "forwarding is the common case: boxing it would allocate per request for nothing"
)]
pub enum Decision {
    /// Send it upstream.
    Forward(Forward),
    /// Answer a redirect.
    Redirect {
        /// 3xx status.
        status: StatusCode,
        /// `Location`.
        location: String,
    },
    /// Answer directly.
    Direct {
        /// Status.
        status: StatusCode,
        /// Body (may be empty).
        body: String,
    },
}

/// A query parameter's first value, percent-decoded (Envoy matches the decoded value).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    query?
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .find(|(k, _)| percent_decode(k) == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

impl Match {
    fn matches(&self, req: &RequestView<'_>, path: &str, query: Option<&str>) -> bool {
        if let Some(uri) = &self.uri {
            if !uri.matches(Some(path), self.ignore_uri_case) {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(Some(req.method.as_str()), false) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(Some(req.authority), false) {
                return false;
            }
        }
        if self.port.is_some_and(|p| p != req.target.port()) {
            return false;
        }
        if self
            .source_namespace
            .as_ref()
            .is_some_and(|ns| req.source.namespace.as_ref() != Some(ns))
        {
            return false;
        }
        if !self
            .source_labels
            .iter()
            .all(|(k, v)| req.source.labels.get(k) == Some(v))
        {
            return false;
        }
        let header = |name| rules::header_str(req.headers, name);
        self.headers
            .iter()
            .all(|(name, m)| m.matches(header(name).as_deref(), false))
            && !self
                .without_headers
                .iter()
                .any(|(name, m)| header(name).is_some_and(|v| m.matches(Some(&v), false)))
            && self
                .query_params
                .iter()
                .all(|(name, m)| m.matches(query_param(query, name).as_deref(), false))
    }
}

impl Rule {
    /// The first match of the rule that matches (`Some(None)` for a rule without matches).
    fn matching<'r>(
        &'r self,
        req: &RequestView<'_>,
        path: &str,
        query: Option<&str>,
    ) -> Option<Option<&'r Match>> {
        if self.broken {
            return None;
        }
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches
            .iter()
            .find(|m| m.matches(req, path, query))
            .map(Some)
    }
}

/// Replaces the matched prefix of `path` (`prefix_len` bytes) with `with`, as Gateway API's
/// `ReplacePrefixMatch` does: whole segments, never a doubled or missing `/`.
fn replace_segment_prefix(path: &str, prefix_len: usize, with: &str) -> String {
    let rest = path.get(prefix_len..).unwrap_or("");
    match (with.ends_with('/'), rest.starts_with('/')) {
        _ if rest.is_empty() && with.is_empty() => "/".to_owned(),
        _ if rest.is_empty() => with.to_owned(),
        (true, true) => format!("{with}{}", &rest[1..]),
        (false, false) => format!("{with}/{rest}"),
        _ => format!("{with}{rest}"),
    }
}

/// The new path after a prefix-style replacement (Istio `rewrite.uri`, Gateway API
/// `ReplacePrefixMatch`) given what matched the path.
fn replace_prefix(kind: RouteKind, path: &str, matched: Option<&Matcher>, with: &str) -> String {
    match matched {
        Some(m) => match m.prefix_len() {
            Some(n) if matches!(m, Matcher::SegmentPrefix(_)) => {
                replace_segment_prefix(path, n, with)
            }
            Some(n) => format!("{with}{}", path.get(n..).unwrap_or("")),
            // an exact or regex match: the matched "prefix" is the whole path
            None => with.to_owned(),
        },
        // no path match: Istio matches prefix `/`, Gateway API `PathPrefix /`
        None if kind == RouteKind::HttpRoute => replace_segment_prefix(path, 0, with),
        None => format!("{with}{}", path.get(1..).unwrap_or("")),
    }
}

fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        if let Some(end) = authority.rfind("]:") {
            return (&authority[..=end], Some(&authority[end + 2..]));
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (authority, None),
    }
}

fn default_port(scheme: &str) -> Option<&'static str> {
    match scheme {
        "http" => Some("80"),
        "https" => Some("443"),
        _ => None,
    }
}

/// The `Location` of a redirect, as Envoy (VirtualService) or Gateway API (HTTPRoute) builds it.
fn location(
    kind: RouteKind,
    rd: &RedirectRule,
    req: &RequestView<'_>,
    matched: Option<&Matcher>,
) -> String {
    let request_scheme = req
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|s| matches!(*s, "http" | "https"))
        .unwrap_or("http");
    let scheme = rd.scheme.as_deref().unwrap_or(request_scheme);
    let (req_host, req_port) = split_host_port(req.authority);
    let (host, port) = if kind == RouteKind::HttpRoute {
        // Gateway API: the given port, else the scheme's well-known port, else the listener's
        // (the service port dialed); never a scheme's default port written out.
        let port = match (rd.port, &rd.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => Some(req.target.port()),
        };
        let port = port
            .map(|p| p.to_string())
            .filter(|p| Some(p.as_str()) != default_port(scheme));
        (rd.authority.as_deref().unwrap_or(req_host), port)
    } else if let Some(a) = &rd.authority {
        // Envoy: a new host drops the request's port
        (a.as_str(), rd.port.map(|p| p.to_string()))
    } else if let Some(p) = rd.port {
        (req_host, Some(p.to_string()))
    } else {
        // Envoy: the request's port, unless the scheme changes away from that port's scheme
        let drop = scheme != request_scheme && req_port == default_port(request_scheme);
        (req_host, req_port.filter(|_| !drop).map(str::to_owned))
    };
    let (path, query) = split_query(req.path_and_query);
    let path_and_query = match &rd.uri {
        None => req.path_and_query.to_owned(),
        Some(uri) if rd.replace_prefix => {
            with_query(replace_prefix(kind, path, matched, uri), query)
        }
        // a redirect path with its own query replaces the request's
        Some(uri) if uri.contains('?') => uri.clone(),
        Some(uri) => with_query(uri.clone(), query),
    };
    match port {
        Some(p) => format!("{scheme}://{host}:{p}{path_and_query}"),
        None => format!("{scheme}://{host}{path_and_query}"),
    }
}

/// The slot (in `0..total`) of the `n`-th request of a rule whose weights sum to `total`:
/// consecutive requests step through the slots by a stride coprime with `total` (near its golden
/// section), so every `total` consecutive requests land exactly in proportion, interleaved rather
/// than in runs (the property nginx's smooth weighted round robin has). A 90/10 split is then
/// 90/10 over any 100 requests, not only on average.
pub(crate) fn spread_draw(n: u64, total: u64) -> u64 {
    if total <= 1 {
        return 0;
    }
    let mut stride = ((total as f64) * 0.618_033_988_75) as u64;
    stride = stride.max(1);
    while gcd(stride, total) != 1 {
        stride += 1;
    }
    ((n % total) as u128 * stride as u128 % total as u128) as u64
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Picks a destination in proportion to the weights for the `n`-th request of the rule;
/// 0-weight destinations never.
fn pick_weighted(dests: &[Dest], n: u64) -> Option<&Dest> {
    let total: u64 = dests.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut at = spread_draw(n, total);
    for d in dests {
        let w = u64::from(d.weight);
        if at < w {
            return Some(d);
        }
        at -= w;
    }
    None
}

impl RouteTable {
    /// The route decision for a request; weighted destinations are spread by the rule's
    /// request count ([`spread_draw`]).
    pub fn decide(&self, req: &RequestView<'_>) -> Result<Decision, ProxyError> {
        let hostname = match req.target {
            Target::Service { hostname, .. } => hostname,
            Target::Workload { uid, address, port } => {
                // Routes bind to service hosts; a workload address goes to the workload.
                return Ok(Decision::Forward(Forward::default_for(Backend {
                    host: address.to_string(),
                    service: None,
                    workload: Some(uid.clone()),
                    subset: None,
                    port: *port,
                })));
            }
        };
        let Some(rules) = self.routes.get(hostname) else {
            let service = match req.target {
                Target::Service { service, .. } => Some(service.clone()),
                Target::Workload { .. } => None,
            };
            return Ok(Decision::Forward(Forward::default_for(Backend {
                host: hostname.clone(),
                service,
                workload: None,
                subset: None,
                port: req.target.port(),
            })));
        };
        let (path, query) = split_query(req.path_and_query);
        let Some((rule, matched)) = rules
            .iter()
            .find_map(|r| r.matching(req, path, query).map(|m| (r, m)))
        else {
            return Err(ProxyError::no_route(format!(
                "no rule of the routes for {hostname} matches {} {}",
                req.method, req.path_and_query
            )));
        };
        let matched_uri = matched.and_then(|m| m.uri.as_ref());
        match &rule.action {
            Action::Redirect(rd) => Ok(Decision::Redirect {
                status: rd.status,
                location: location(rule.kind, rd, req, matched_uri),
            }),
            Action::Direct { status, body } => Ok(Decision::Direct {
                status: *status,
                body: body.clone(),
            }),
            Action::Forward(dests) => {
                let n = rule
                    .requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dest = pick_weighted(dests, n).ok_or_else(|| {
                    ProxyError::no_cluster(format!(
                        "{}: no destination with a weight above 0",
                        rule.label
                    ))
                })?;
                Ok(Decision::Forward(self.forward(
                    rule,
                    dest,
                    req,
                    matched_uri,
                    path,
                    query,
                )?))
            }
        }
    }

    fn forward(
        &self,
        rule: &Rule,
        dest: &Dest,
        req: &RequestView<'_>,
        matched: Option<&Matcher>,
        path: &str,
        query: Option<&str>,
    ) -> Result<Forward, ProxyError> {
        let new_path = rule.rewrite.as_ref().and_then(|rw| {
            if let Some((re, with)) = &rw.regex {
                Some(re.replace_all(path, with.as_str()).into_owned())
            } else if rw.full_path {
                rw.uri.clone()
            } else {
                rw.uri
                    .as_deref()
                    .map(|uri| replace_prefix(rule.kind, path, matched, uri))
            }
        });
        let path = new_path
            .map(|p| {
                let p = if p.is_empty() { "/".to_owned() } else { p };
                with_query(p, query).parse::<PathAndQuery>().map_err(|_| {
                    ProxyError::internal(
                        "invalid_rewritten_path",
                        format!(
                            "{}: the rewritten path of {} is not a valid path",
                            rule.label, req.path_and_query
                        ),
                    )
                })
            })
            .transpose()?;
        Ok(Forward {
            backend: Backend {
                service: self.service_by_host(&dest.host).map(|s| ServiceKey {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                }),
                host: dest.host.clone(),
                workload: None,
                subset: dest.subset.clone(),
                port: dest.port.unwrap_or(req.target.port()),
            },
            route: Some(rule.label.clone()),
            rule: Some(rule.model.clone()),
            retry: rule.retry.clone(),
            path,
            authority: rule.authority_rewrite.clone(),
            request_headers: [&rule.request_headers, &dest.request_headers]
                .into_iter()
                .filter(|m| !m.is_empty())
                .cloned()
                .collect(),
            response_headers: [&rule.response_headers, &dest.response_headers]
                .into_iter()
                .filter(|m| !m.is_empty())
                .cloned()
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests;

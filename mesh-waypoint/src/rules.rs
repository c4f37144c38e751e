//! Route rules compiled once per model: string matchers with their regexes built, header
//! operations parsed into header names and values, redirect and rewrite checked. What cannot be
//! compiled makes its rule never match, with a warning naming route and rule.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mesh_common::model::{HeaderOps, HttpMatch, Route, RouteKind, RouteRule, StringMatch};
use regex::Regex;

use crate::hosts;

/// Regexes from the model are compiled with this limit (Envoy caps program size too): a huge
/// pattern is refused, with a warning, rather than let eat the waypoint's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Something in the model the waypoint cannot apply as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The object, e.g. `route apps/reviews rule 1 (jason)`.
    pub object: String,
    /// What is wrong and what the waypoint does instead.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// Compiles an RE2 pattern to match a whole value.
pub(crate) fn whole_match_regex(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// A compiled string match.
#[derive(Clone, Debug)]
pub(crate) enum Matcher {
    Exact(String),
    Prefix(String),
    /// Gateway API `PathPrefix`: whole path segments (the prefix without its trailing `/`).
    SegmentPrefix(String),
    Regex(Regex),
    /// Present (`true`) or absent (`false`).
    Present(bool),
}

impl Matcher {
    fn compile(m: &StringMatch) -> Result<Matcher, String> {
        Ok(match m {
            StringMatch::Exact(s) => Matcher::Exact(s.clone()),
            StringMatch::Prefix(s) => Matcher::Prefix(s.clone()),
            StringMatch::Regex(r) => Matcher::Regex(
                whole_match_regex(r).map_err(|e| format!("regex {r:?} does not compile: {e}"))?,
            ),
            StringMatch::Present(p) => Matcher::Present(*p),
            StringMatch::Unknown(tag) => {
                return Err(format!(
                    "string match kind {tag:?} is not known to this waypoint"
                ))
            }
        })
    }

    /// Whether a value (or its absence) matches.
    pub(crate) fn matches(&self, value: Option<&str>, ignore_case: bool) -> bool {
        let Some(v) = value else {
            return matches!(self, Matcher::Present(false));
        };
        let starts = |p: &str| {
            v.len() >= p.len()
                && if ignore_case {
                    v.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                } else {
                    v.as_bytes().starts_with(p.as_bytes())
                }
        };
        match self {
            Matcher::Exact(s) if ignore_case => v.eq_ignore_ascii_case(s),
            Matcher::Exact(s) => v == s,
            Matcher::Prefix(p) => starts(p),
            Matcher::SegmentPrefix(p) => {
                starts(p) && (v.len() == p.len() || v.as_bytes()[p.len()] == b'/')
            }
            Matcher::Regex(re) => re.is_match(v),
            Matcher::Present(p) => *p,
        }
    }

    /// The length of the path prefix this matcher consumed, for a prefix rewrite or redirect.
    pub(crate) fn prefix_len(&self) -> Option<usize> {
        match self {
            Matcher::Prefix(p) | Matcher::SegmentPrefix(p) => Some(p.len()),
            _ => None,
        }
    }
}

/// A compiled request match: every present field must match.
#[derive(Clone, Debug, Default)]
pub(crate) struct Match {
    pub uri: Option<Matcher>,
    pub ignore_uri_case: bool,
    pub method: Option<Matcher>,
    pub authority: Option<Matcher>,
    pub headers: Vec<(HeaderName, Matcher)>,
    pub without_headers: Vec<(HeaderName, Matcher)>,
    pub query_params: Vec<(String, Matcher)>,
    pub port: Option<u16>,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))
}

impl Match {
    fn compile(kind: RouteKind, m: &HttpMatch) -> Result<Match, String> {
        let uri = match &m.uri {
            // Gateway API path prefixes match whole segments; a trailing `/` is ignored.
            Some(StringMatch::Prefix(p)) if kind == RouteKind::HttpRoute => {
                Some(Matcher::SegmentPrefix(p.trim_end_matches('/').to_owned()))
            }
            Some(u) => Some(Matcher::compile(u).map_err(|e| format!("uri: {e}"))?),
            None => None,
        };
        let headers = |map: &BTreeMap<String, StringMatch>, field: &str| {
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        header_name(k).map_err(|e| format!("{field}: {e}"))?,
                        Matcher::compile(v).map_err(|e| format!("{field}[{k}]: {e}"))?,
                    ))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(Match {
            uri,
            ignore_uri_case: m.ignore_uri_case,
            method: m
                .method
                .as_ref()
                .map(Matcher::compile)
                .transpose()
                .map_err(|e| format!("method: {e}"))?,
            authority: m
                .authority
                .as_ref()
                .map(Matcher::compile)
                .transpose()
                .map_err(|e| format!("authority: {e}"))?,
            headers: headers(&m.headers, "headers")?,
            without_headers: headers(&m.without_headers, "withoutHeaders")?,
            query_params: m
                .query_params
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        Matcher::compile(v).map_err(|e| format!("queryParams[{k}]: {e}"))?,
                    ))
                })
                .collect::<Result<_, String>>()?,
            port: m.port,
            source_labels: m.source_labels.clone(),
            source_namespace: m.source_namespace.clone(),
        })
    }
}

/// The values of a header as one string, joined with `,` as Envoy matches them.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes());
    for v in values {
        let o = out.to_mut();
        o.push(',');
        o.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(out)
}

/// Header operations with names and values parsed: applied as remove, set, add (Envoy removes
/// first; Istio writes `set` before `add`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMutation {
    /// Removed.
    pub remove: Vec<HeaderName>,
    /// Overwritten (or added).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderMutation {
    /// Parses model header operations; an invalid name or value is left out with a warning.
    pub(crate) fn compile(ops: &HeaderOps, what: &str, warn: &mut dyn FnMut(String)) -> Self {
        let mut out = HeaderMutation::default();
        let mut pair = |k: &str, v: &str, op: &str| match (header_name(k), HeaderValue::from_str(v))
        {
            (Ok(k), Ok(v)) => Some((k, v)),
            (Err(e), _) => {
                warn(format!("{what}.{op}: {e}; left out"));
                None
            }
            (_, Err(_)) => {
                warn(format!(
                    "{what}.{op}[{k}]: invalid header value {v:?}; left out"
                ));
                None
            }
        };
        out.set = ops
            .set
            .iter()
            .filter_map(|(k, v)| pair(k, v, "set"))
            .collect();
        out.add = ops
            .add
            .iter()
            .filter_map(|(k, v)| pair(k, v, "add"))
            .collect();
        for name in &ops.remove {
            match header_name(name) {
                Ok(n) => out.remove.push(n),
                // no request can carry such a header: nothing to remove
                Err(e) => warn(format!("{what}.remove: {e}; left out")),
            }
        }
        out
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the operations.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// A weighted destination, host qualified.
#[derive(Clone, Debug)]
pub(crate) struct Dest {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
    pub weight: u32,
    pub request_headers: Arc<HeaderMutation>,
    pub response_headers: Arc<HeaderMutation>,
}

/// A path rewrite before forwarding.
#[derive(Clone, Debug, Default)]
pub(crate) struct PathRewrite {
    /// Replacement of the matched prefix (whole path after an exact or regex match).
    pub uri: Option<String>,
    /// Replace the whole path with `uri`.
    pub full_path: bool,
    /// Regex substitution over the path, replacement in `regex` crate syntax.
    pub regex: Option<(Regex, String)>,
}

/// A redirect.
#[derive(Clone, Debug)]
pub(crate) struct RedirectRule {
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u16>,
    pub uri: Option<String>,
    pub replace_prefix: bool,
    pub status: StatusCode,
}

/// What a rule does once matched.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    Forward(Vec<Dest>),
    Redirect(RedirectRule),
    Direct { status: StatusCode, body: String },
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    /// `route <ns>/<name> rule <i>[ (<name>)]`, for logs and warnings.
    pub label: Arc<str>,
    pub kind: RouteKind,
    pub matches: Vec<Match>,
    /// Something in the rule did not compile: it never matches.
    pub broken: bool,
    pub action: Action,
    pub rewrite: Option<PathRewrite>,
    pub authority_rewrite: Option<Authority>,
    pub request_headers: Arc<HeaderMutation>,
    pub response_headers: Arc<HeaderMutation>,
    /// The rule as the model has it (timeouts, retries, faults, mirrors for the layers).
    pub model: Arc<RouteRule>,
    /// Its retry policy, compiled once per model (Istio's default when it sets none).
    pub retry: Arc<crate::resilience::retry::Policy>,
    /// Requests decided by this rule so far (spreads its weighted destinations), starting at a
    /// random point so that instances do not all begin on the same destination.
    pub requests: Arc<std::sync::atomic::AtomicU64>,
}

/// Translates an RE2 replacement (`\1`) to the `regex` crate's (`${1}`), `$` kept literal.
fn replacement(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len());
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '\\' if chars.peek() == Some(&'\\') => {
                chars.next();
                out.push('\\');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// Compiles the rules of one route, warnings through `warn`; `known` are the service hosts
/// (for short names in destinations).
pub(crate) fn compile_route(
    route: &Route,
    known: &HashSet<String>,
    warn: &mut dyn FnMut(Warning),
) -> Vec<Arc<Rule>> {
    route
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| Arc::new(compile_rule(route, i, r, known, warn)))
        .collect()
}

fn compile_rule(
    route: &Route,
    index: usize,
    r: &RouteRule,
    known: &HashSet<String>,
    warn: &mut dyn FnMut(Warning),
) -> Rule {
    let label: Arc<str> = match &r.name {
        Some(name) => format!(
            "route {}/{} rule {index} ({name})",
            route.namespace, route.name
        ),
        None => format!("route {}/{} rule {index}", route.namespace, route.name),
    }
    .into();
    let mut broken = false;
    let mut problem = |message: String, breaks: bool| {
        broken |= breaks;
        let message = if breaks {
            format!("{message}; the rule never matches")
        } else {
            message
        };
        warn(Warning {
            object: label.to_string(),
            message,
        });
    };
    let mut matches = Vec::new();
    for (j, m) in r.matches.iter().enumerate() {
        match Match::compile(route.kind, m) {
            Ok(m) => matches.push(m),
            Err(e) => problem(format!("matches[{j}].{e}"), true),
        }
    }
    let rewrite = r.rewrite.as_ref().map(|rw| {
        let regex = rw.uri_regex.as_ref().and_then(|rr| {
            match regex::RegexBuilder::new(&rr.pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(re) => Some((re, replacement(&rr.rewrite))),
                Err(e) => {
                    problem(
                        format!("rewrite.uriRegex {:?} does not compile: {e}", rr.pattern),
                        true,
                    );
                    None
                }
            }
        });
        PathRewrite {
            uri: rw.uri.clone(),
            full_path: rw.full_path,
            regex,
        }
    });
    let authority_rewrite = r
        .rewrite
        .as_ref()
        .and_then(|rw| rw.authority.as_deref())
        .and_then(|a| match a.parse::<Authority>() {
            Ok(a) => Some(a),
            Err(_) => {
                problem(
                    format!("rewrite.authority {a:?} is not a valid authority"),
                    true,
                );
                None
            }
        });
    let mut ops = |ops: &HeaderOps, what: &str| {
        Arc::new(HeaderMutation::compile(ops, what, &mut |m| {
            problem(m, false)
        }))
    };
    let request_headers = ops(&r.request_headers, "headers.request");
    let response_headers = ops(&r.response_headers, "headers.response");
    let destinations: Vec<Dest> = r
        .destinations
        .iter()
        .enumerate()
        .map(|(j, d)| Dest {
            host: hosts::qualify(&d.host, &route.namespace, known),
            subset: d.subset.clone(),
            port: d.port,
            weight: d.weight,
            request_headers: ops(
                &d.request_headers,
                &format!("destinations[{j}].headers.request"),
            ),
            response_headers: ops(
                &d.response_headers,
                &format!("destinations[{j}].headers.response"),
            ),
        })
        .collect();
    let action = if let Some(rd) = &r.redirect {
        let default = match route.kind {
            RouteKind::HttpRoute => StatusCode::FOUND,
            _ => StatusCode::MOVED_PERMANENTLY,
        };
        let status = match StatusCode::from_u16(rd.code) {
            Ok(s) if s.is_redirection() => s,
            _ if rd.code == 0 => default,
            _ => {
                problem(
                    format!(
                        "redirect code {} is not a redirect; {default} is used",
                        rd.code
                    ),
                    false,
                );
                default
            }
        };
        if r.direct_response.is_some() || !destinations.is_empty() {
            problem(
                "redirect with destinations or a direct response: the redirect is used".into(),
                false,
            );
        }
        Action::Redirect(RedirectRule {
            scheme: rd.scheme.clone(),
            authority: rd.authority.clone(),
            port: rd.port,
            uri: rd.uri.clone(),
            replace_prefix: rd.replace_prefix,
            status,
        })
    } else if let Some(dr) = &r.direct_response {
        let status = StatusCode::from_u16(dr.status).unwrap_or_else(|_| {
            problem(
                format!(
                    "directResponse status {} is not valid; 500 is answered",
                    dr.status
                ),
                false,
            );
            StatusCode::INTERNAL_SERVER_ERROR
        });
        if !destinations.is_empty() {
            problem(
                "directResponse with destinations: the direct response is used".into(),
                false,
            );
        }
        Action::Direct {
            status,
            body: dr.body.clone().unwrap_or_default(),
        }
    } else {
        Action::Forward(destinations)
    };
    let retry = crate::resilience::retry::Policy::from_model(r.retries.as_ref());
    if !retry.unknown.is_empty() {
        tracing::warn!(rule = %label, conditions = ?retry.unknown, "retryOn conditions not understood; left out");
    }
    Rule {
        retry: Arc::new(retry),
        label,
        kind: route.kind,
        matches,
        broken,
        action,
        rewrite,
        authority_rewrite,
        request_headers,
        response_headers,
        model: Arc::new(r.clone()),
        requests: Arc::new(std::sync::atomic::AtomicU64::new(fastrand::u64(..))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_replacements_become_regex_crate_ones() {
        let cases = [
            (r"/v2/\1", "/v2/${1}"),
            (r"\1\2x", "${1}${2}x"),
            (r"\12", "${12}"),
            (r"cost $5", "cost $$5"),
            (r"a\\b", r"a\b"),
            (r"plain", "plain"),
        ];
        for (re2, want) in cases {
            assert_eq!(replacement(re2), want, "{re2}");
        }
    }

    #[test]
    fn matchers_match() {
        let re = |p: &str| Matcher::Regex(whole_match_regex(p).expect("test value"));
        #[rustfmt::skip]
        let cases: Vec<(&str, Matcher, Option<&str>, bool, bool)> = vec![
            ("exact", Matcher::Exact("/a".into()), Some("/a"), false, true),
            ("exact differs", Matcher::Exact("/a".into()), Some("/ab"), false, false),
            ("exact case", Matcher::Exact("/A".into()), Some("/a"), false, false),
            ("exact ignoring case", Matcher::Exact("/A".into()), Some("/a"), true, true),
            ("prefix", Matcher::Prefix("/api".into()), Some("/apiv2"), false, true),
            ("prefix ignoring case", Matcher::Prefix("/API".into()), Some("/api/x"), true, true),
            ("prefix longer than value", Matcher::Prefix("/api".into()), Some("/a"), false, false),
            ("segment prefix, same", Matcher::SegmentPrefix("/api".into()), Some("/api"), false, true),
            ("segment prefix, below", Matcher::SegmentPrefix("/api".into()), Some("/api/v1"), false, true),
            ("segment prefix, not a segment", Matcher::SegmentPrefix("/api".into()), Some("/apiv2"), false, false),
            ("segment prefix root", Matcher::SegmentPrefix("".into()), Some("/x"), false, true),
            ("regex is anchored", re("/v[0-9]"), Some("/v1"), false, true),
            ("regex must match the whole value", re("/v[0-9]"), Some("/v12"), false, false),
            ("regex alternation anchored as a whole", re("a|b"), Some("ab"), false, false),
            ("regex ignores ignoreUriCase", re("/a"), Some("/A"), true, false),
            ("present", Matcher::Present(true), Some(""), false, true),
            ("present, absent", Matcher::Present(true), None, false, false),
            ("absent", Matcher::Present(false), None, false, true),
            ("absent, present", Matcher::Present(false), Some("x"), false, false),
            ("exact, absent", Matcher::Exact("".into()), None, false, false),
        ];
        for (case, m, value, ignore_case, want) in cases {
            assert_eq!(m.matches(value, ignore_case), want, "{case}");
        }
    }

    #[test]
    fn header_operations_are_remove_set_add() {
        let ops = HeaderOps {
            set: BTreeMap::from([("x-a".into(), "set".into())]),
            add: BTreeMap::from([("x-a".into(), "added".into()), ("x-b".into(), "b".into())]),
            remove: vec!["x-a".into(), "x-c".into()],
        };
        let mut warnings = Vec::new();
        let m = HeaderMutation::compile(&ops, "headers.request", &mut |w| warnings.push(w));
        assert!(warnings.is_empty());
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        h.insert("x-c", HeaderValue::from_static("gone"));
        m.apply(&mut h);
        let a: Vec<_> = h
            .get_all("x-a")
            .iter()
            .map(|v| v.to_str().expect("test value"))
            .collect();
        assert_eq!(a, ["set", "added"]);
        assert_eq!(h.get("x-b").expect("test value"), "b");
        assert!(h.get("x-c").is_none());
    }

    #[test]
    fn invalid_header_operations_are_warned_and_left_out() {
        let ops = HeaderOps {
            set: BTreeMap::from([("bad name".into(), "v".into()), ("x-ok".into(), "v".into())]),
            add: BTreeMap::from([("x-nl".into(), "a\nb".into())]),
            remove: vec!["bad(".into()],
        };
        let mut warnings = Vec::new();
        let m = HeaderMutation::compile(&ops, "headers.request", &mut |w| warnings.push(w));
        assert_eq!(m.set.len(), 1);
        assert!(m.add.is_empty() && m.remove.is_empty());
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].starts_with("headers.request.set: invalid header name \"bad name\""));
    }
}

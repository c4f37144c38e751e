//! Delegate VirtualServices, merged into their root as Istio merges them
//! (`pilot/pkg/model/virtualservice.go`): each rule of the delegate becomes a rule of the root,
//! its matches combined with the root rule's (every delegate match must fit under some root
//! match: a path prefix within the root's, the same exact value, no regex on either side),
//! and what it leaves unset (rewrite, timeout, retries, fault, mirror, headers) taken from the
//! root rule. A delegate rule that fits under no root match is left out. Unlike Istio's sidecars,
//! a waypoint cannot have applied the root's `sourceLabels`/`sourceNamespace` beforehand, so
//! they are kept in the merged matches (and conflict when both sides set different values).

use mesh_common::model::{HttpMatch, RouteRule, StringMatch};

/// Whether `leaf` cannot narrow `root` (Istio's `stringMatchConflict`).
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    match (root, leaf) {
        (StringMatch::Regex(_), _) | (_, StringMatch::Regex(_)) => true,
        (StringMatch::Exact(r), StringMatch::Exact(l)) => r != l,
        (StringMatch::Exact(_), _) => true,
        (StringMatch::Prefix(r), StringMatch::Prefix(l) | StringMatch::Exact(l)) => {
            !l.starts_with(r.as_str())
        }
        (StringMatch::Present(true), StringMatch::Exact(_) | StringMatch::Prefix(_)) => false,
        (StringMatch::Present(r), StringMatch::Present(l)) => r != l,
        _ => true,
    }
}

/// Whether a delegate match cannot be merged under a root match (Istio's `hasConflict`).
fn conflict(root: &HttpMatch, leaf: &HttpMatch) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    // As Istio: the delegate's withoutHeaders are checked against the root's headers.
    if leaf
        .headers
        .iter()
        .chain(&leaf.without_headers)
        .any(|(k, l)| string_conflict(root.headers.get(k), Some(l)))
    {
        return true;
    }
    if leaf
        .query_params
        .iter()
        .any(|(k, l)| string_conflict(root.query_params.get(k), Some(l)))
    {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if matches!((root.port, leaf.port), (Some(r), Some(l)) if r != l) {
        return true;
    }
    if matches!((&root.source_namespace, &leaf.source_namespace), (Some(r), Some(l)) if r != l) {
        return true;
    }
    leaf.source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|r| r != v))
}

/// A delegate match under a root match (Istio's `mergeHTTPMatchRequest`).
fn merge_match(root: &HttpMatch, leaf: &HttpMatch) -> HttpMatch {
    let mut out = leaf.clone();
    out.uri = out.uri.or_else(|| root.uri.clone());
    out.method = out.method.or_else(|| root.method.clone());
    out.authority = out.authority.or_else(|| root.authority.clone());
    for (target, from_root) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        for (k, v) in from_root {
            target.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for (k, v) in &root.source_labels {
        out.source_labels
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    out.port = out.port.or(root.port);
    out.source_namespace = out
        .source_namespace
        .or_else(|| root.source_namespace.clone());
    out
}

/// The merged matches, or `None` when a delegate match fits under no root match (Istio's
/// `mergeHTTPMatchRequests`).
fn merge_matches(root: &[HttpMatch], leaf: &[HttpMatch]) -> Option<Vec<HttpMatch>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let before = out.len();
        out.extend(
            root.iter()
                .filter(|r| !conflict(r, l))
                .map(|r| merge_match(r, l)),
        );
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// One delegate rule under its root rule; `None` when its matches do not fit (left out).
pub(super) fn merge_rule(root: &RouteRule, mut leaf: RouteRule) -> Option<RouteRule> {
    leaf.matches = merge_matches(&root.matches, &leaf.matches)?;
    leaf.name = match (&root.name, leaf.name) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.or_else(|| r.clone()),
    };
    leaf.rewrite = leaf.rewrite.or_else(|| root.rewrite.clone());
    leaf.timeout_ms = leaf.timeout_ms.or(root.timeout_ms);
    leaf.retries = leaf.retries.or_else(|| root.retries.clone());
    leaf.fault = leaf.fault.or_else(|| root.fault.clone());
    if leaf.mirrors.is_empty() {
        leaf.mirrors.clone_from(&root.mirrors);
    }
    if leaf.request_headers.is_empty() && leaf.response_headers.is_empty() {
        leaf.request_headers = root.request_headers.clone();
        leaf.response_headers = root.response_headers.clone();
    }
    Some(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(m: StringMatch) -> HttpMatch {
        HttpMatch {
            uri: Some(m),
            ..HttpMatch::default()
        }
    }

    fn prefix(p: &str) -> StringMatch {
        StringMatch::Prefix(p.to_owned())
    }

    fn exact(p: &str) -> StringMatch {
        StringMatch::Exact(p.to_owned())
    }

    fn header(name: &str, m: StringMatch) -> HttpMatch {
        HttpMatch {
            headers: [(name.to_owned(), m)].into(),
            ..HttpMatch::default()
        }
    }

    /// (case, root matches, delegate matches, merged)
    type Case = (
        &'static str,
        Vec<HttpMatch>,
        Vec<HttpMatch>,
        Option<Vec<HttpMatch>>,
    );

    #[test]
    fn delegate_matches_fit_under_root_matches_or_are_left_out() {
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("no root match: the delegate's", vec![], vec![uri(prefix("/a"))], Some(vec![uri(prefix("/a"))])),
            ("no delegate match: the root's", vec![uri(prefix("/a"))], vec![], Some(vec![uri(prefix("/a"))])),
            ("prefix within the root prefix", vec![uri(prefix("/a"))], vec![uri(prefix("/a/b"))], Some(vec![uri(prefix("/a/b"))])),
            ("exact within the root prefix", vec![uri(prefix("/a"))], vec![uri(exact("/a/x"))], Some(vec![uri(exact("/a/x"))])),
            ("prefix outside the root prefix", vec![uri(prefix("/a/b"))], vec![uri(prefix("/a"))], None),
            ("same exact", vec![uri(exact("/a"))], vec![uri(exact("/a"))], Some(vec![uri(exact("/a"))])),
            ("other exact", vec![uri(exact("/a"))], vec![uri(exact("/b"))], None),
            ("prefix under exact", vec![uri(exact("/a"))], vec![uri(prefix("/a"))], None),
            ("regex never merges", vec![uri(StringMatch::Regex("/a.*".into()))], vec![uri(prefix("/a"))], None),
            ("root uri kept under a header match",
             vec![uri(prefix("/reviews"))], vec![header("end-user", exact("jason"))],
             Some(vec![HttpMatch { uri: Some(prefix("/reviews")), ..header("end-user", exact("jason")) }])),
            ("header conflict", vec![header("x", exact("1"))], vec![header("x", exact("2"))], None),
            ("header presence narrowed", vec![header("x", StringMatch::Present(true))], vec![header("x", exact("2"))], Some(vec![header("x", exact("2"))])),
            ("ignoreUriCase must agree", vec![uri(prefix("/a"))], vec![HttpMatch { ignore_uri_case: true, ..uri(prefix("/a")) }], None),
            ("ports conflict", vec![HttpMatch { port: Some(80), ..HttpMatch::default() }], vec![HttpMatch { port: Some(81), ..HttpMatch::default() }], None),
            ("root port inherited", vec![HttpMatch { port: Some(80), ..HttpMatch::default() }], vec![uri(prefix("/a"))], Some(vec![HttpMatch { port: Some(80), ..uri(prefix("/a")) }])),
            ("root source namespace kept", vec![HttpMatch { source_namespace: Some("a".into()), ..HttpMatch::default() }], vec![uri(prefix("/a"))],
             Some(vec![HttpMatch { source_namespace: Some("a".into()), ..uri(prefix("/a")) }])),
            ("one of two roots fits", vec![uri(prefix("/a")), uri(prefix("/b"))], vec![uri(prefix("/b/c"))], Some(vec![uri(prefix("/b/c"))])),
            ("each fitting root yields a match", vec![uri(prefix("/a")), header("x", exact("1"))], vec![uri(prefix("/a/c"))],
             Some(vec![uri(prefix("/a/c")), HttpMatch { uri: Some(prefix("/a/c")), ..header("x", exact("1")) }])),
            ("one delegate match fitting nowhere leaves the rule out", vec![uri(prefix("/a"))], vec![uri(prefix("/a/c")), uri(prefix("/z"))], None),
        ];
        for (case, root, leaf, want) in cases {
            assert_eq!(merge_matches(&root, &leaf), want, "{case}");
        }
    }

    #[test]
    fn delegate_rules_inherit_what_they_leave_unset() {
        let root = RouteRule {
            name: Some("root".into()),
            matches: vec![uri(prefix("/a"))],
            timeout_ms: Some(1_000),
            ..RouteRule::default()
        };
        let leaf = RouteRule {
            name: Some("leaf".into()),
            timeout_ms: None,
            ..RouteRule::default()
        };
        let merged = merge_rule(&root, leaf).expect("fits");
        assert_eq!(merged.name.as_deref(), Some("root-leaf"));
        assert_eq!(merged.timeout_ms, Some(1_000));
        assert_eq!(merged.matches, vec![uri(prefix("/a"))]);
        let own = RouteRule {
            timeout_ms: Some(5),
            ..RouteRule::default()
        };
        assert_eq!(merge_rule(&root, own).map(|r| r.timeout_ms), Some(Some(5)));
    }
}

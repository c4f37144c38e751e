use std::collections::HashMap;

use http::Request;

use super::*;
use crate::testdata::{summary, table, Req, BOOKINFO_ROUTES};

const REVIEWS: &str = "10.96.0.20:9080";

/// A route for reviews with one rule: `matches` (YAML flow list) to v2, else v1.
fn match_route(matches: &str) -> String {
    format!(
        "- name: r\n  namespace: bookinfo\n  hosts: [reviews]\n  rules:\n  - matches: {matches}\n    destinations: [{{host: reviews, subset: v2, weight: 100}}]\n  - destinations: [{{host: reviews, subset: v1, weight: 100}}]\n"
    )
}

fn decide(routes: &str, req: &Req) -> String {
    let t = table(routes, "");
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    req.with_view(&t, |v| summary(&t.decide(v)))
}

#[test]
fn bookinfo_jason_goes_to_v2_others_to_v1() {
    let t = table(BOOKINFO_ROUTES, "");
    #[rustfmt::skip]
    let cases = [
        ("jason", Req::get(REVIEWS, "/reviews/0").header("end-user", "jason"), "fwd reviews.bookinfo.svc.cluster.local/v2:9080"),
        ("someone else", Req::get(REVIEWS, "/reviews/0").header("end-user", "kim"), "fwd reviews.bookinfo.svc.cluster.local/v1:9080"),
        ("nobody", Req::get(REVIEWS, "/reviews/0"), "fwd reviews.bookinfo.svc.cluster.local/v1:9080"),
        ("JASON is not jason", Req::get(REVIEWS, "/").header("end-user", "JASON"), "fwd reviews.bookinfo.svc.cluster.local/v1:9080"),
        ("the other service port keeps its port", Req::get("10.96.0.20:80", "/"), "fwd reviews.bookinfo.svc.cluster.local/v1:80"),
        ("no route for ratings: to ratings itself", Req::get("10.96.0.30:9080", "/ratings/0"), "fwd ratings.bookinfo.svc.cluster.local:9080"),
        ("workload address: to the workload", Req::get("10.1.0.22:9080", "/"), "fwd 10.1.0.22:9080"),
    ];
    for (case, req, want) in cases {
        let got = req.with_view(&t, |v| summary(&t.decide(v)));
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn each_match_kind() {
    let v2 = "fwd reviews.bookinfo.svc.cluster.local/v2:9080";
    let v1 = "fwd reviews.bookinfo.svc.cluster.local/v1:9080";
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Req, &str)> = vec![
        ("uri exact", "[{uri: {exact: /a}}]", Req::get(REVIEWS, "/a"), v2),
        ("uri exact ignores the query", "[{uri: {exact: /a}}]", Req::get(REVIEWS, "/a?x=1"), v2),
        ("uri exact, other path", "[{uri: {exact: /a}}]", Req::get(REVIEWS, "/a/b"), v1),
        ("uri prefix", "[{uri: {prefix: /api}}]", Req::get(REVIEWS, "/api/v1"), v2),
        ("uri prefix is by characters in a VirtualService", "[{uri: {prefix: /api}}]", Req::get(REVIEWS, "/apiv2"), v2),
        ("uri prefix, other", "[{uri: {prefix: /api}}]", Req::get(REVIEWS, "/ap"), v1),
        ("uri regex", "[{uri: {regex: '/reviews/[0-9]+'}}]", Req::get(REVIEWS, "/reviews/42"), v2),
        ("uri regex is anchored", "[{uri: {regex: '/reviews/[0-9]+'}}]", Req::get(REVIEWS, "/x/reviews/42"), v1),
        ("ignoreUriCase exact", "[{uri: {exact: /Login}, ignoreUriCase: true}]", Req::get(REVIEWS, "/LOGIN"), v2),
        ("ignoreUriCase prefix", "[{uri: {prefix: /API}, ignoreUriCase: true}]", Req::get(REVIEWS, "/api/x"), v2),
        ("case matters without ignoreUriCase", "[{uri: {exact: /Login}}]", Req::get(REVIEWS, "/login"), v1),
        ("method", "[{method: {exact: POST}}]", Req::get(REVIEWS, "/").method("POST"), v2),
        ("method, other", "[{method: {exact: POST}}]", Req::get(REVIEWS, "/"), v1),
        ("method regex", "[{method: {regex: 'PUT|PATCH'}}]", Req::get(REVIEWS, "/").method("PATCH"), v2),
        ("authority exact", "[{authority: {exact: 'reviews:9080'}}]", Req::get(REVIEWS, "/"), v2),
        ("authority prefix", "[{authority: {prefix: reviews.bookinfo}}]", Req::get(REVIEWS, "/").host("reviews.bookinfo.svc.cluster.local:9080"), v2),
        ("authority, other", "[{authority: {exact: reviews}}]", Req::get(REVIEWS, "/"), v1),
        ("header prefix", "[{headers: {user-agent: {prefix: curl/}}}]", Req::get(REVIEWS, "/").header("user-agent", "curl/8.5"), v2),
        ("header regex", "[{headers: {x-version: {regex: 'v[23]'}}}]", Req::get(REVIEWS, "/").header("x-version", "v3"), v2),
        ("header regex whole value", "[{headers: {x-version: {regex: 'v[23]'}}}]", Req::get(REVIEWS, "/").header("x-version", "v33"), v1),
        ("header present", "[{headers: {x-debug: {present: true}}}]", Req::get(REVIEWS, "/").header("x-debug", ""), v2),
        ("header present, absent", "[{headers: {x-debug: {present: true}}}]", Req::get(REVIEWS, "/"), v1),
        ("header values are joined", "[{headers: {x-a: {exact: '1,2'}}}]", Req::get(REVIEWS, "/").header("x-a", "1").header("x-a", "2"), v2),
        ("every header must match", "[{headers: {x-a: {exact: '1'}, x-b: {exact: '2'}}}]", Req::get(REVIEWS, "/").header("x-a", "1"), v1),
        ("withoutHeaders, absent", "[{withoutHeaders: {x-canary: {exact: 'no'}}}]", Req::get(REVIEWS, "/"), v2),
        ("withoutHeaders, other value", "[{withoutHeaders: {x-canary: {exact: 'no'}}}]", Req::get(REVIEWS, "/").header("x-canary", "yes"), v2),
        ("withoutHeaders, matching value", "[{withoutHeaders: {x-canary: {exact: 'no'}}}]", Req::get(REVIEWS, "/").header("x-canary", "no"), v1),
        ("withoutHeaders present", "[{withoutHeaders: {x-canary: {present: true}}}]", Req::get(REVIEWS, "/").header("x-canary", "x"), v1),
        ("query exact", "[{queryParams: {version: {exact: '2'}}}]", Req::get(REVIEWS, "/?a=b&version=2"), v2),
        ("query first value counts", "[{queryParams: {version: {exact: '2'}}}]", Req::get(REVIEWS, "/?version=1&version=2"), v1),
        ("query is decoded", "[{queryParams: {q: {exact: 'a b'}}}]", Req::get(REVIEWS, "/?q=a%20b"), v2),
        ("query regex", "[{queryParams: {id: {regex: '[0-9]+'}}}]", Req::get(REVIEWS, "/?id=12"), v2),
        ("query absent", "[{queryParams: {id: {regex: '[0-9]*'}}}]", Req::get(REVIEWS, "/"), v1),
        ("query present without value", "[{queryParams: {debug: {present: true}}}]", Req::get(REVIEWS, "/?debug"), v2),
        ("port", "[{port: 9080}]", Req::get(REVIEWS, "/"), v2),
        ("port, other service port", "[{port: 9080}]", Req::get("10.96.0.20:80", "/"), "fwd reviews.bookinfo.svc.cluster.local/v1:80"),
        ("sourceNamespace", "[{sourceNamespace: other}]", Req::get(REVIEWS, "/"), v2),
        ("sourceNamespace, other", "[{sourceNamespace: bookinfo}]", Req::get(REVIEWS, "/"), v1),
        ("sourceLabels", "[{sourceLabels: {app: sleep}}]", Req::get(REVIEWS, "/"), v2),
        ("sourceLabels, missing label", "[{sourceLabels: {app: sleep, version: v1}}]", Req::get(REVIEWS, "/"), v1),
        ("sourceLabels need the address's identity", "[{sourceLabels: {app: sleep}}]",
         Req::get(REVIEWS, "/").from(Some("bookinfo/bookinfo-productpage"), "10.2.0.5"), v1),
        ("any match of a rule", "[{uri: {exact: /a}}, {uri: {exact: /b}}]", Req::get(REVIEWS, "/b"), v2),
        ("all fields of one match", "[{uri: {exact: /a}, method: {exact: POST}}]", Req::get(REVIEWS, "/a"), v1),
        ("empty match matches all", "[{}]", Req::get(REVIEWS, "/anything"), v2),
    ];
    for (case, matches, req, want) in cases {
        assert_eq!(decide(&match_route(matches), &req), want, "{case}");
    }
}

#[test]
fn gateway_api_path_prefixes_match_whole_segments() {
    let route = |prefix: &str| {
        format!(
            "- name: r\n  namespace: bookinfo\n  kind: httpRoute\n  hosts: [reviews]\n  rules:\n  - matches: [{{uri: {{prefix: '{prefix}'}}}}]\n    destinations: [{{host: reviews, subset: v2, weight: 1}}]\n"
        )
    };
    let v2 = "fwd reviews.bookinfo.svc.cluster.local/v2:9080";
    #[rustfmt::skip]
    let cases = [
        ("/api", "/api", v2),
        ("/api", "/api/v1", v2),
        ("/api", "/api?x", v2),
        ("/api", "/apiv2", "err NR 404"),
        ("/api/", "/api", v2),
        ("/api/", "/api/x", v2),
        ("/", "/anything", v2),
    ];
    for (prefix, path, want) in cases {
        assert_eq!(
            decide(&route(prefix), &Req::get(REVIEWS, path)),
            want,
            "{prefix} {path}"
        );
    }
}

#[test]
fn first_matching_rule_wins_and_no_match_is_nr() {
    let routes = r#"
- name: r
  namespace: bookinfo
  hosts: [reviews]
  rules:
  - matches: [{uri: {prefix: /a}}]
    destinations: [{host: reviews, subset: v1, weight: 1}]
  - matches: [{uri: {prefix: /a/b}}]
    destinations: [{host: reviews, subset: v2, weight: 1}]
"#;
    #[rustfmt::skip]
    let cases = [
        ("/a/b/c", "fwd reviews.bookinfo.svc.cluster.local/v1:9080"),
        ("/x", "err NR 404"),
    ];
    for (path, want) in cases {
        assert_eq!(decide(routes, &Req::get(REVIEWS, path)), want, "{path}");
    }
}

#[test]
fn hosts_exact_wildcard_and_short_names() {
    // (case, route hosts, target, expected)
    #[rustfmt::skip]
    let cases = [
        ("short name in its namespace", "[reviews]", REVIEWS, "fwd ratings.bookinfo.svc.cluster.local:9080"),
        ("namespace-qualified short name", "[reviews.bookinfo]", REVIEWS, "fwd ratings.bookinfo.svc.cluster.local:9080"),
        ("fqdn", "[reviews.bookinfo.svc.cluster.local]", REVIEWS, "fwd ratings.bookinfo.svc.cluster.local:9080"),
        ("wildcard", "['*.bookinfo.svc.cluster.local']", REVIEWS, "fwd ratings.bookinfo.svc.cluster.local:9080"),
        ("wildcard covers the other services", "['*.svc.cluster.local']", "10.96.0.40:9080", "fwd ratings.bookinfo.svc.cluster.local:9080"),
        ("service entry host", "[api.example.com]", "240.240.0.1:80", "fwd ratings.bookinfo.svc.cluster.local:80"),
        ("another host: the default", "[details]", REVIEWS, "fwd reviews.bookinfo.svc.cluster.local:9080"),
    ];
    for (case, hosts, target, want) in cases {
        let routes = format!(
            "- name: r\n  namespace: bookinfo\n  hosts: {hosts}\n  rules:\n  - destinations: [{{host: ratings, weight: 1}}]\n"
        );
        assert_eq!(decide(&routes, &Req::get(target, "/")), want, "{case}");
    }
    let other_ns = "- name: r\n  namespace: other\n  hosts: [reviews]\n  rules:\n  - destinations: [{host: ratings.bookinfo, weight: 1}]\n";
    assert_eq!(
        decide(other_ns, &Req::get(REVIEWS, "/")),
        "fwd reviews.bookinfo.svc.cluster.local:9080",
        "reviews in namespace other is reviews.other..."
    );
}

#[test]
fn the_most_specific_host_wins() {
    let routes = r#"
- name: all
  namespace: bookinfo
  hosts: ["*"]
  rules: [{destinations: [{host: details, weight: 1}]}]
- name: ns
  namespace: bookinfo
  hosts: ["*.bookinfo.svc.cluster.local"]
  rules: [{destinations: [{host: ratings, weight: 1}]}]
- name: exact
  namespace: bookinfo
  hosts: [reviews]
  rules: [{destinations: [{host: productpage, weight: 1}]}]
"#;
    #[rustfmt::skip]
    let cases = [
        (REVIEWS, "fwd productpage.bookinfo.svc.cluster.local:9080"),
        ("10.96.0.30:9080", "fwd ratings.bookinfo.svc.cluster.local:9080"),
        ("240.240.0.1:80", "fwd details.bookinfo.svc.cluster.local:80"),
    ];
    for (target, want) in cases {
        assert_eq!(decide(routes, &Req::get(target, "/")), want, "{target}");
    }
}

#[test]
fn routes_sharing_a_host_keep_model_order() {
    let routes = r#"
- name: first
  namespace: bookinfo
  hosts: [reviews]
  rules: [{matches: [{uri: {prefix: /a}}], destinations: [{host: reviews, subset: v1, weight: 1}]}]
- name: second
  namespace: bookinfo
  hosts: [reviews]
  rules: [{destinations: [{host: reviews, subset: v3, weight: 1}]}]
"#;
    let t = table(routes, "");
    for (path, want, route) in [
        (
            "/a",
            "fwd reviews.bookinfo.svc.cluster.local/v1:9080",
            "route bookinfo/first rule 0",
        ),
        (
            "/b",
            "fwd reviews.bookinfo.svc.cluster.local/v3:9080",
            "route bookinfo/second rule 0",
        ),
    ] {
        let d = Req::get(REVIEWS, path).with_view(&t, |v| t.decide(v));
        assert_eq!(summary(&d), want, "{path}");
        let Ok(Decision::Forward(f)) = d else {
            panic!("{path}")
        };
        assert_eq!(f.route.as_deref(), Some(route));
    }
}

type Shares<'a> = &'a [(&'a str, f64)];

#[test]
fn weights_split_traffic() {
    // (case, destinations, expected shares in percent by subset)
    #[rustfmt::skip]
    let cases: &[(&str, &str, Shares)] = &[
        ("90/10", "[{host: reviews, subset: v1, weight: 90}, {host: reviews, subset: v2, weight: 10}]", &[("v1", 90.0), ("v2", 10.0)]),
        ("50/50", "[{host: reviews, subset: v1, weight: 50}, {host: reviews, subset: v2, weight: 50}]", &[("v1", 50.0), ("v2", 50.0)]),
        ("relative weights", "[{host: reviews, subset: v1, weight: 1}, {host: reviews, subset: v2, weight: 3}]", &[("v1", 25.0), ("v2", 75.0)]),
        ("0 never picked", "[{host: reviews, subset: v1, weight: 0}, {host: reviews, subset: v2, weight: 100}, {host: reviews, subset: v3, weight: 0}]", &[("v1", 0.0), ("v2", 100.0), ("v3", 0.0)]),
        ("three ways", "[{host: reviews, subset: v1, weight: 20}, {host: reviews, subset: v2, weight: 30}, {host: reviews, subset: v3, weight: 50}]", &[("v1", 20.0), ("v2", 30.0), ("v3", 50.0)]),
    ];
    const N: u32 = 10_000;
    for (case, dests, want) in cases {
        let routes = format!(
            "- name: r\n  namespace: bookinfo\n  hosts: [reviews]\n  rules:\n  - destinations: {dests}\n"
        );
        let t = table(&routes, "");
        let mut counts: HashMap<String, u32> = HashMap::new();
        let req = Req::get(REVIEWS, "/");
        for _ in 0..N {
            let d = req.with_view(&t, |v| t.decide(v));
            let Ok(Decision::Forward(f)) = d else {
                panic!("{case}: {d:?}")
            };
            *counts
                .entry(f.backend.subset.unwrap_or_default())
                .or_default() += 1;
        }
        for (subset, share) in *want {
            let got = f64::from(counts.get(*subset).copied().unwrap_or(0)) * 100.0 / f64::from(N);
            // Spread picks are exact over every whole cycle of the weights.
            assert!(
                (got - share).abs() < 0.01,
                "{case}: {subset} got {got:.1}%, want {share}%"
            );
            if *share == 0.0 {
                assert_eq!(got, 0.0, "{case}: {subset}");
            }
        }
    }
}

#[test]
fn all_zero_weights_is_nc_not_a_pick() {
    let routes = "- name: r\n  namespace: bookinfo\n  hosts: [reviews]\n  rules:\n  - destinations: [{host: reviews, subset: v1, weight: 0}]\n";
    assert_eq!(decide(routes, &Req::get(REVIEWS, "/")), "err NC 503");
}

#[test]
fn destination_ports_and_unknown_hosts() {
    #[rustfmt::skip]
    let cases = [
        ("port given", "[{host: ratings, port: 9080, weight: 1}]", REVIEWS, "fwd ratings.bookinfo.svc.cluster.local:9080"),
        ("port defaults to the dialed one", "[{host: ratings, weight: 1}]", "10.96.0.20:80", "fwd ratings.bookinfo.svc.cluster.local:80"),
        ("unknown host is forwarded to, endpoints answer NC", "[{host: nope, weight: 1}]", REVIEWS, "fwd nope.bookinfo.svc.cluster.local:9080"),
    ];
    for (case, dests, target, want) in cases {
        let routes = format!("- name: r\n  namespace: bookinfo\n  hosts: [reviews]\n  rules:\n  - destinations: {dests}\n");
        assert_eq!(decide(&routes, &Req::get(target, "/")), want, "{case}");
    }
}

#[test]
fn rewrites() {
    // (case, kind, match, rewrite, request path, expected)
    #[rustfmt::skip]
    let cases = [
        ("prefix rewrite", "virtualService", "[{uri: {prefix: /v1/reviews}}]", "{uri: /reviews}", "/v1/reviews/0?x=1", "path=/reviews/0?x=1"),
        ("prefix rewrite to /", "virtualService", "[{uri: {prefix: /api}}]", "{uri: /}", "/api/x", "path=//x"),
        ("prefix rewrite, ignoring case", "virtualService", "[{uri: {prefix: /API}, ignoreUriCase: true}]", "{uri: /v2}", "/api/x", "path=/v2/x"),
        ("exact match: whole path", "virtualService", "[{uri: {exact: /old}}]", "{uri: /new}", "/old?q", "path=/new?q"),
        ("regex match: whole path", "virtualService", "[{uri: {regex: '/old/.*'}}]", "{uri: /new}", "/old/x", "path=/new"),
        ("no uri match: prefix /", "virtualService", "[{method: {exact: GET}}]", "{uri: /v2/}", "/x", "path=/v2/x"),
        ("regex rewrite with groups", "virtualService", "[{}]", "{uriRegex: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}", "/service/foo/v1/api?a=b", "path=/v1/api/instance/foo?a=b"),
        ("regex rewrite replaces every match", "virtualService", "[{}]", "{uriRegex: {match: 'a', rewrite: 'b'}}", "/aXa", "path=/bXb"),
        ("authority rewrite", "virtualService", "[{}]", "{authority: ratings.bookinfo:9080}", "/x", "authority=ratings.bookinfo:9080"),
        ("path and authority", "virtualService", "[{uri: {prefix: /a}}]", "{uri: /b, authority: ratings}", "/a", "path=/b authority=ratings"),
        ("gateway prefix: segments", "httpRoute", "[{uri: {prefix: /foo}}]", "{uri: /xyz}", "/foo/bar", "path=/xyz/bar"),
        ("gateway prefix: replacement with slash", "httpRoute", "[{uri: {prefix: /foo}}]", "{uri: /xyz/}", "/foo/bar", "path=/xyz/bar"),
        ("gateway prefix: to /", "httpRoute", "[{uri: {prefix: /foo}}]", "{uri: /}", "/foo/bar", "path=/bar"),
        ("gateway prefix: to / exactly", "httpRoute", "[{uri: {prefix: /foo}}]", "{uri: /}", "/foo", "path=/"),
        ("gateway prefix: trailing slash prefix", "httpRoute", "[{uri: {prefix: /foo/}}]", "{uri: /xyz}", "/foo/bar", "path=/xyz/bar"),
        ("gateway prefix: the prefix alone", "httpRoute", "[{uri: {prefix: /foo}}]", "{uri: /xyz}", "/foo", "path=/xyz"),
        ("gateway prefix /", "httpRoute", "[{uri: {prefix: /}}]", "{uri: /xyz}", "/foo", "path=/xyz/foo"),
        ("gateway full path", "httpRoute", "[{uri: {prefix: /foo}}]", "{uri: /one, fullPath: true}", "/foo/bar?q=1", "path=/one?q=1"),
    ];
    for (case, kind, matches, rewrite, path, want) in cases {
        let routes = format!(
            "- name: r\n  namespace: bookinfo\n  kind: {kind}\n  hosts: [reviews]\n  rules:\n  - matches: {matches}\n    rewrite: {rewrite}\n    destinations: [{{host: reviews, weight: 1}}]\n"
        );
        let got = decide(&routes, &Req::get(REVIEWS, path));
        assert_eq!(
            got,
            format!("fwd reviews.bookinfo.svc.cluster.local:9080 {want}"),
            "{case}"
        );
    }
}

#[test]
fn redirects() {
    // (case, kind, match, redirect, request host, path, expected)
    #[rustfmt::skip]
    let cases = [
        ("path, Istio keeps the query", "virtualService", "[{}]", "{uri: /new, code: 301}", "reviews:9080", "/old?a=1", "redirect 301 http://reviews:9080/new?a=1"),
        ("Istio replaces the whole path after a prefix", "virtualService", "[{uri: {prefix: /old}}]", "{uri: /new, code: 301}", "reviews", "/old/x", "redirect 301 http://reviews/new"),
        ("redirect query replaces the request's", "virtualService", "[{}]", "{uri: '/new?b=2', code: 302}", "reviews", "/old?a=1", "redirect 302 http://reviews/new?b=2"),
        ("authority drops the request port", "virtualService", "[{}]", "{authority: bookinfo.example.com, code: 301}", "reviews:9080", "/p", "redirect 301 http://bookinfo.example.com/p"),
        ("authority and port", "virtualService", "[{}]", "{authority: b.example.com, port: 8443, code: 301}", "reviews:9080", "/p", "redirect 301 http://b.example.com:8443/p"),
        ("port replaces the request port", "virtualService", "[{}]", "{port: 8080, code: 301}", "reviews:9080", "/p", "redirect 301 http://reviews:8080/p"),
        ("scheme from http on :80 drops the port", "virtualService", "[{}]", "{scheme: https, code: 301}", "reviews:80", "/p", "redirect 301 https://reviews/p"),
        ("scheme keeps another port", "virtualService", "[{}]", "{scheme: https, code: 301}", "reviews:9080", "/p", "redirect 301 https://reviews:9080/p"),
        ("Envoy writes a given port even if default", "virtualService", "[{}]", "{scheme: https, port: 443, code: 301}", "reviews", "/p", "redirect 301 https://reviews:443/p"),
        ("IPv6 host", "virtualService", "[{}]", "{port: 8080, code: 301}", "[fd00::1]:9080", "/p", "redirect 301 http://[fd00::1]:8080/p"),
        ("code 0 is Istio's 301", "virtualService", "[{}]", "{uri: /n, code: 0}", "reviews", "/", "redirect 301 http://reviews/n"),
        ("code 0 is Gateway API's 302", "httpRoute", "[{}]", "{uri: /n, code: 0}", "reviews", "/", "redirect 302 http://reviews:9080/n"),
        ("gateway: scheme means its well-known port", "httpRoute", "[{}]", "{scheme: https, code: 302}", "reviews:9080", "/p", "redirect 302 https://reviews/p"),
        ("gateway: default ports are left out", "httpRoute", "[{}]", "{scheme: https, port: 443, code: 302}", "reviews", "/p", "redirect 302 https://reviews/p"),
        ("gateway: a new hostname keeps the listener port", "httpRoute", "[{}]", "{authority: other.example.com, code: 302}", "reviews:9080", "/p", "redirect 302 http://other.example.com:9080/p"),
        ("gateway: the listener port, not the Host header's", "httpRoute", "[{}]", "{code: 302}", "reviews", "/p?q", "redirect 302 http://reviews:9080/p?q"),
        ("gateway: prefix replace", "httpRoute", "[{uri: {prefix: /foo}}]", "{uri: /bar, replacePrefix: true, code: 302}", "reviews", "/foo/x?q=1", "redirect 302 http://reviews:9080/bar/x?q=1"),
        ("gateway: full path", "httpRoute", "[{uri: {prefix: /foo}}]", "{uri: /bar, code: 302}", "reviews", "/foo/x", "redirect 302 http://reviews:9080/bar"),
        ("308", "virtualService", "[{}]", "{uri: /n, code: 308}", "reviews", "/", "redirect 308 http://reviews/n"),
    ];
    for (case, kind, matches, redirect, host, path, want) in cases {
        let routes = format!(
            "- name: r\n  namespace: bookinfo\n  kind: {kind}\n  hosts: [reviews]\n  rules:\n  - matches: {matches}\n    redirect: {redirect}\n"
        );
        assert_eq!(
            decide(&routes, &Req::get(REVIEWS, path).host(host)),
            want,
            "{case}"
        );
    }
    let routes = "- name: r\n  namespace: bookinfo\n  kind: httpRoute\n  hosts: [reviews]\n  rules:\n  - redirect: {authority: a.example.com, code: 302}\n";
    assert_eq!(
        decide(routes, &Req::get("10.96.0.20:80", "/p").host("reviews")),
        "redirect 302 http://a.example.com/p",
        "gateway: listener port 80 is left out"
    );
}

#[test]
fn direct_responses() {
    let routes = r#"
- name: r
  namespace: bookinfo
  hosts: [reviews]
  rules:
  - matches: [{uri: {exact: /maintenance}}]
    directResponse: {status: 503, body: "down for maintenance"}
  - matches: [{uri: {exact: /empty}}]
    directResponse: {status: 204}
"#;
    for (path, want) in [
        ("/maintenance", "direct 503 down for maintenance"),
        ("/empty", "direct 204 "),
        ("/other", "err NR 404"),
    ] {
        assert_eq!(decide(routes, &Req::get(REVIEWS, path)), want, "{path}");
    }
}

#[test]
fn header_operations_rule_then_destination() {
    let routes = r#"
- name: r
  namespace: bookinfo
  hosts: [reviews]
  rules:
  - requestHeaders: {set: {x-stage: rule, x-rule: "1"}, add: {x-trail: rule}, remove: [x-secret]}
    responseHeaders: {set: {x-served-by: rule}, remove: [server]}
    rewrite: {uri: /v2/, authority: reviews-v2}
    destinations:
    - host: reviews
      subset: v2
      weight: 1
      requestHeaders: {set: {x-stage: destination}, add: {x-trail: destination}, remove: [x-rule]}
      responseHeaders: {add: {x-served-by: v2}}
"#;
    let t = table(routes, "");
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    let d = Req::get(REVIEWS, "/reviews/1?u=2").with_view(&t, |v| t.decide(v));
    let Ok(Decision::Forward(f)) = d else {
        panic!("{d:?}")
    };
    let (mut parts, ()) = Request::builder()
        .uri("/reviews/1?u=2")
        .header("host", "reviews:9080")
        .header("x-secret", "s")
        .header("x-trail", "client")
        .body(())
        .expect("request")
        .into_parts();
    f.apply_request(&mut parts);
    let all = |h: &HeaderMap, n: &str| -> Vec<String> {
        h.get_all(n)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect()
    };
    assert_eq!(parts.uri.to_string(), "/v2/reviews/1?u=2");
    assert_eq!(all(&parts.headers, "host"), ["reviews-v2"]);
    assert_eq!(
        all(&parts.headers, "x-stage"),
        ["destination"],
        "destination set after the rule's"
    );
    assert_eq!(
        all(&parts.headers, "x-trail"),
        ["client", "rule", "destination"]
    );
    assert!(
        parts.headers.get("x-rule").is_none(),
        "destination removes what the rule set"
    );
    assert!(parts.headers.get("x-secret").is_none());

    let mut response = HeaderMap::new();
    response.insert("server", HeaderValue::from_static("envoy"));
    f.apply_response(&mut response);
    assert_eq!(all(&response, "x-served-by"), ["rule", "v2"]);
    assert!(response.get("server").is_none());
}

#[test]
fn apply_request_rewrites_an_absolute_uri() {
    let routes = "- name: r\n  namespace: bookinfo\n  hosts: [reviews]\n  rules:\n  - rewrite: {uri: /b, authority: 'ratings:9080'}\n    matches: [{uri: {prefix: /a}}]\n    destinations: [{host: ratings, weight: 1}]\n";
    let t = table(routes, "");
    let d = Req::get(REVIEWS, "/a/x").with_view(&t, |v| t.decide(v));
    let Ok(Decision::Forward(f)) = d else {
        panic!("{d:?}")
    };
    let (mut parts, ()) = Request::builder()
        .uri("http://reviews:9080/a/x")
        .body(())
        .expect("request")
        .into_parts();
    f.apply_request(&mut parts);
    assert_eq!(parts.uri.to_string(), "http://ratings:9080/b/x");
    assert_eq!(
        parts.headers.get("host").map(|h| h.as_bytes()),
        Some(&b"ratings:9080"[..])
    );
}

#[test]
fn rules_that_do_not_compile_never_match_and_are_warned() {
    let routes = r#"
- name: r
  namespace: bookinfo
  hosts: [reviews]
  rules:
  - name: bad-regex
    matches: [{uri: {regex: "/(unclosed"}}]
    destinations: [{host: reviews, subset: v3, weight: 1}]
  - name: unknown-kind
    matches: [{headers: {x: {glob: "a*"}}}]
    destinations: [{host: reviews, subset: v3, weight: 1}]
  - name: bad-rewrite
    rewrite: {uriRegex: {match: "[", rewrite: "x"}}
    destinations: [{host: reviews, subset: v3, weight: 1}]
  - destinations: [{host: reviews, subset: v1, weight: 1}]
"#;
    let t = table(routes, "");
    let warnings: Vec<String> = t.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(warnings[0].starts_with("route bookinfo/r rule 0 (bad-regex): matches[0].uri: regex \"/(unclosed\" does not compile"), "{}", warnings[0]);
    assert!(warnings[0].ends_with("the rule never matches"));
    assert!(warnings[1].starts_with("route bookinfo/r rule 1 (unknown-kind): matches[0].headers[x]: string match kind \"glob\""), "{}", warnings[1]);
    assert!(
        warnings[2].starts_with("route bookinfo/r rule 2 (bad-rewrite): rewrite.uriRegex"),
        "{}",
        warnings[2]
    );
    let got = Req::get(REVIEWS, "/(unclosed")
        .header("x", "a*")
        .with_view(&t, |v| summary(&t.decide(v)));
    assert_eq!(got, "fwd reviews.bookinfo.svc.cluster.local/v1:9080");
}

#[test]
fn query_params_are_percent_decoded() {
    #[rustfmt::skip]
    let cases = [
        (Some("a=1&b=2"), "b", Some("2")),
        (Some("a=1&b=2"), "c", None),
        (Some("flag"), "flag", Some("")),
        (Some("n%61me=v%2Fx"), "name", Some("v/x")),
        (Some("a=%zz%4"), "a", Some("%zz%4")),
        (Some("a=%41%"), "a", Some("A%")),
        (None, "a", None),
    ];
    for (query, name, want) in cases {
        assert_eq!(
            query_param(query, name).as_deref(),
            want,
            "{query:?} {name}"
        );
    }
}

#[test]
fn spread_draws_cover_every_slot_once_per_cycle_and_interleave() {
    for total in [1u64, 2, 3, 10, 90, 100, 101, 1000] {
        let mut seen: Vec<u64> = (0..total).map(|n| spread_draw(n, total)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..total).collect::<Vec<_>>(), "total {total}");
    }
    // 50/50: never more than two requests in a row to one side.
    let sides: Vec<bool> = (0..100).map(|n| spread_draw(n, 100) < 50).collect();
    assert!(
        sides.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
        "{sides:?}"
    );
    // 90/10: the 10 % is spread over the cycle, not bunched.
    let minority: Vec<u64> = (0..100).filter(|n| spread_draw(*n, 100) >= 90).collect();
    assert!(
        minority.windows(2).all(|w| w[1] - w[0] >= 5),
        "{minority:?}"
    );
}

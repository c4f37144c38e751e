use std::collections::BTreeMap;

use mesh_common::identity::Identity;

use super::*;
use crate::testdata::table;

const ROUTES: &str = r#"
- name: details-l4
  namespace: bookinfo
  hosts: [details]
  tcp:
  - name: from-sleep
    matches: [{port: 9080, sourceNamespace: other, sourceLabels: {app: sleep}}]
    destinations: [{host: reviews, subset: v3, weight: 100}]
  - name: split
    matches: [{port: 9080}]
    destinations: [{host: reviews, weight: 80}, {host: ratings, port: 9080, weight: 20}]
  tls:
  - name: by-name
    matches: [{sniHosts: [a.example.com]}]
    destinations: [{host: productpage, weight: 100}]
  - name: wildcard
    matches: [{sniHosts: ["*.wild.test"], port: 9080}]
    destinations: [{host: ratings, weight: 100}]
- name: reviews-zero
  namespace: bookinfo
  hosts: [reviews]
  tcp:
  - destinations: [{host: ratings, weight: 0}]
- name: ratings-http
  namespace: bookinfo
  hosts: [ratings]
  rules:
  - destinations: [{host: reviews, weight: 100}]
"#;

fn target(t: &RouteTable, authority: &str) -> Target {
    t.target(authority.parse().expect("addr")).expect("target")
}

fn source(t: &RouteTable, ns: &str, sa: &str, ip: &str) -> SourceInfo {
    t.source_info(
        Some(Identity::new("cluster.local", ns, sa)),
        ip.parse().expect("ip"),
    )
}

#[test]
fn opaque_connections_follow_tcp_and_tls_rules() {
    let t = table(ROUTES, "");
    let sleep = source(&t, "other", "sleep", "10.2.0.5");
    let product = source(&t, "bookinfo", "bookinfo-productpage", "10.1.0.10");
    let to = |host: &str, subset: Option<&str>, port: u16, route: &str| {
        let host = format!("{host}.bookinfo.svc.cluster.local");
        (
            host,
            subset.map(str::to_owned),
            port,
            (!route.is_empty()).then(|| route.to_owned()),
        )
    };
    let details = target(&t, "10.96.0.40:9080");
    let (ratings, productpage) = (target(&t, "10.96.0.30:9080"), target(&t, "10.96.0.10:9080"));
    // (case, target, source, seen, want (host, subset, port, route))
    #[rustfmt::skip]
    let cases = vec![
        ("tcp: source labels and namespace", &details, &sleep, Seen::Opaque, to("reviews", Some("v3"), 9080, "tcp route bookinfo/details-l4 rule 0 (from-sleep)")),
        ("tls by SNI", &details, &product, Seen::Tls(Some("a.example.com")), to("productpage", None, 9080, "tls route bookinfo/details-l4 rule 0 (by-name)")),
        ("tls wildcard SNI", &details, &product, Seen::Tls(Some("x.wild.test")), to("ratings", None, 9080, "tls route bookinfo/details-l4 rule 1 (wildcard)")),
        ("tls, wildcard is not the bare suffix: the tcp rules", &details, &sleep, Seen::Tls(Some("wild.test")), to("reviews", Some("v3"), 9080, "tcp route bookinfo/details-l4 rule 0 (from-sleep)")),
        ("tls without SNI: the tcp rules", &details, &sleep, Seen::Tls(None), to("reviews", Some("v3"), 9080, "tcp route bookinfo/details-l4 rule 0 (from-sleep)")),
        ("opaque: tls rules are not looked at", &details, &sleep, Seen::Opaque, to("reviews", Some("v3"), 9080, "tcp route bookinfo/details-l4 rule 0 (from-sleep)")),
        ("a host with HTTP rules only: the original destination", &ratings, &sleep, Seen::Opaque, to("ratings", None, 9080, "")),
        ("a host without routes: the original destination", &productpage, &sleep, Seen::Tls(Some("a.example.com")), to("productpage", None, 9080, "")),
    ];
    for (case, target, source, seen, (host, subset, port, route)) in cases {
        let got = t.decide_l4(target, source, seen).expect(case);
        assert_eq!(got.backend.host, host, "{case}");
        assert_eq!(got.backend.subset, subset, "{case}");
        assert_eq!(got.backend.port, port, "{case}");
        assert_eq!(got.route.as_deref(), route.as_deref(), "{case}");
        assert!(got.backend.service.is_some(), "{case}: a known service");
    }
    // No rule matches (another port on a workload address): the workload dialed.
    let workload = target(&t, "10.1.0.21:7000");
    let got = t
        .decide_l4(&workload, &sleep, Seen::Opaque)
        .expect("workload");
    assert_eq!(got.backend.workload.as_deref(), Some("bookinfo/reviews-v1"));
    assert_eq!(got.route, None);
    // All weights 0: refused, not sent somewhere.
    let zero = t.decide_l4(&target(&t, "10.96.0.20:9080"), &sleep, Seen::Opaque);
    assert!(zero.is_err());
    assert!(t.has_tls_routes(&details));
    assert!(!t.has_tls_routes(&target(&t, "10.96.0.20:9080")));
}

#[test]
fn weights_split_connections_exactly_per_cycle() {
    let t = table(ROUTES, "");
    let details = target(&t, "10.96.0.40:9080");
    let product = source(&t, "bookinfo", "bookinfo-productpage", "10.1.0.10");
    let mut seen: BTreeMap<(String, u16), u32> = BTreeMap::new();
    for _ in 0..500 {
        let d = t
            .decide_l4(&details, &product, Seen::Opaque)
            .expect("decides");
        assert_eq!(
            d.route.as_deref(),
            Some("tcp route bookinfo/details-l4 rule 1 (split)")
        );
        *seen.entry((d.backend.host, d.backend.port)).or_default() += 1;
    }
    let reviews = ("reviews.bookinfo.svc.cluster.local".to_owned(), 9080);
    let ratings = ("ratings.bookinfo.svc.cluster.local".to_owned(), 9080);
    assert_eq!(seen.get(&reviews), Some(&400), "{seen:?}");
    assert_eq!(seen.get(&ratings), Some(&100), "{seen:?}");
}

#[test]
fn tcp_only_routes_leave_http_alone_and_unused_fields_warn() {
    let t = table(
        r#"
- name: odd
  namespace: bookinfo
  hosts: [details]
  tcp:
  - matches: [{sniHosts: [x.test]}]
    destinations: [{host: reviews, weight: 1, requestHeaders: {set: {a: b}}}]
"#,
        "",
    );
    let warnings: Vec<String> = t.warnings().iter().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("tcp route bookinfo/odd rule 0") && w.contains("sniHosts")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("destinations[0].headers")),
        "{warnings:?}"
    );
    assert!(
        t.routes.get("details.bookinfo.svc.cluster.local").is_none(),
        "a route with tcp rules only adds no HTTP rules"
    );
}

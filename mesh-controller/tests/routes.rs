//! VirtualServices and HTTPRoutes into the model's routes, feature by feature: YAML in, the
//! translated rule (or the error or warning, naming file, object and field) out.

use mesh_common::model::{
    DirectResponse, HeaderOps, HttpMatch, L4Match, L4Rule, Redirect, RegexRewrite, Rewrite, Route,
    RouteDestination, RouteKind, Snapshot, StringMatch,
};
use mesh_controller::controller::{Change, Controller};
use mesh_controller::load::parse_yaml;
use mesh_controller::translate::TranslateOptions;

/// reviews (subsets v1, v2 from a wildcard DestinationRule), ratings, and waypoint `wp` that
/// reviews uses.
const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {istio.io/use-waypoint: wp}}
spec: {clusterIP: 10.96.0.13, ports: [{name: http, port: 9080}], selector: {app: reviews}}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {clusterIP: 10.96.0.14, ports: [{name: http, port: 9080}], selector: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all}
spec:
  host: "*.default.svc.cluster.local"
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
"#;

fn load(case: &str) -> (Snapshot, Vec<String>) {
    let controller = Controller::new(TranslateOptions::default());
    controller
        .apply(vec![
            Change::ReplaceUnit {
                unit: "base.yaml".to_owned(),
                parsed: parse_yaml("base.yaml", BASE),
            },
            Change::ReplaceUnit {
                unit: "case.yaml".to_owned(),
                parsed: parse_yaml("case.yaml", case),
            },
        ])
        .expect("apply");
    let current = controller.current();
    let errors = current
        .errors
        .iter()
        .filter(|e| !e.message.contains("no waypoint runs"))
        .map(ToString::to_string)
        .collect();
    ((*current.snapshot).clone(), errors)
}

fn vs(body: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n{body}")
}

fn route<'a>(s: &'a Snapshot, name: &str) -> &'a Route {
    s.routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("route {name} translated: {:#?}", s.routes))
}

/// The only rule of route `vs`, with no error or warning.
fn only_rule(case: &str) -> mesh_common::model::RouteRule {
    let (s, errors) = load(case);
    assert!(errors.is_empty(), "{errors:#?}");
    let r = route(&s, "vs");
    assert_eq!(r.rules.len(), 1, "{:#?}", r.rules);
    r.rules[0].clone()
}

/// The one message for `case`, which must contain each of `parts`; `translated`: whether the
/// route is still in the model.
fn one_message(case: &str, translated: bool, parts: &[&str]) {
    let (s, errors) = load(case);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    for part in parts {
        assert!(errors[0].contains(part), "{part:?} not in {:?}", errors[0]);
    }
    assert!(
        errors[0].starts_with("case.yaml (document "),
        "{:?}",
        errors[0]
    );
    assert_eq!(
        s.routes.iter().any(|r| r.name == "vs"),
        translated,
        "{errors:#?}"
    );
}

#[test]
fn direct_responses_with_text_or_base64_bodies() {
    let rule = only_rule(&vs(
        "  hosts: [reviews]\n  http: [{directResponse: {status: 503, body: {string: down}}}]\n",
    ));
    assert_eq!(
        rule.direct_response,
        Some(DirectResponse {
            status: 503,
            body: Some("down".into())
        })
    );
    let rule = only_rule(&vs(
        "  hosts: [reviews]\n  http: [{directResponse: {status: 200, body: {bytes: aGVsbG8=}}}]\n",
    ));
    assert_eq!(
        rule.direct_response.and_then(|d| d.body).as_deref(),
        Some("hello")
    );
    let rule = only_rule(&vs(
        "  hosts: [reviews]\n  http: [{directResponse: {status: 204}}]\n",
    ));
    assert_eq!(
        rule.direct_response,
        Some(DirectResponse {
            status: 204,
            body: None
        })
    );
    one_message(
        &vs("  hosts: [reviews]\n  http: [{directResponse: {status: 99}}]\n"),
        false,
        &[
            "VirtualService default/vs",
            "spec.http[0].directResponse.status",
            "invalid HTTP status 99",
        ],
    );
    one_message(
        &vs("  hosts: [reviews]\n  http: [{directResponse: {status: 503}, route: [{destination: {host: reviews}}]}]\n"),
        false,
        &["spec.http[0]", "only one of route, redirect and directResponse"],
    );
    one_message(
        &vs("  hosts: [reviews]\n  http: [{directResponse: {status: 200, body: {bytes: \"!!\"}}}]\n"),
        false,
        &["spec.http[0].directResponse.body.bytes", "invalid base64"],
    );
    one_message(
        &vs("  hosts: [reviews]\n  http: [{timeout: 1s}]\n"),
        false,
        &[
            "spec.http[0]",
            "one of route, redirect, directResponse or delegate is required",
        ],
    );
}

#[test]
fn per_destination_headers() {
    let rule = only_rule(&vs(
        "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n      headers: {request: {set: {x-canary: \"no\"}}, response: {remove: [x-debug]}}\n    - destination: {host: reviews, subset: v2}\n      weight: 10\n",
    ));
    let d = &rule.destinations;
    assert_eq!(
        d[0].request_headers.set.get("x-canary").map(String::as_str),
        Some("no")
    );
    assert_eq!(d[0].response_headers.remove, vec!["x-debug".to_owned()]);
    assert_eq!(d[1].request_headers, HeaderOps::default());
    assert_eq!((d[0].weight, d[1].weight), (90, 10));
}

#[test]
fn redirects_with_scheme_port_and_derived_port() {
    let rule = only_rule(&vs(
        "  hosts: [reviews]\n  http: [{redirect: {uri: /v2, authority: new, scheme: https, port: 8443, redirectCode: 308}}]\n",
    ));
    assert_eq!(
        rule.redirect,
        Some(Redirect {
            scheme: Some("https".into()),
            port: Some(8443),
            replace_prefix: false,
            uri: Some("/v2".into()),
            authority: Some("new".into()),
            code: 308
        })
    );
    let rule = only_rule(&vs("  hosts: [reviews]\n  http: [{redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}}]\n"));
    assert_eq!(
        rule.redirect.map(|r| (r.port, r.code)),
        Some((Some(443), 301))
    );
    let rule = only_rule(&vs(
        "  hosts: [reviews]\n  http: [{redirect: {uri: /x, derivePort: FROM_REQUEST_PORT}}]\n",
    ));
    assert_eq!(rule.redirect.and_then(|r| r.port), None);
    one_message(
        &vs("  hosts: [reviews]\n  http: [{redirect: {uri: /x, derivePort: FROM_PROTOCOL_DEFAULT}}]\n"),
        true,
        &["spec.http[0].redirect.derivePort", "warning: not supported yet"],
    );
    one_message(
        &vs("  hosts: [reviews]\n  http: [{redirect: {uri: /x, redirectCode: 200}}]\n"),
        false,
        &[
            "spec.http[0].redirect.redirectCode",
            "invalid redirect code 200",
        ],
    );
}

#[test]
fn regex_rewrites() {
    let rule = only_rule(&vs(
        "  hosts: [reviews]\n  http: [{rewrite: {uriRegexRewrite: {match: \"^/v1/(.*)$\", rewrite: \"/v2/\\\\1\"}}, route: [{destination: {host: reviews}}]}]\n",
    ));
    assert_eq!(
        rule.rewrite,
        Some(Rewrite {
            uri_regex: Some(RegexRewrite {
                pattern: "^/v1/(.*)$".into(),
                rewrite: "/v2/\\1".into()
            }),
            ..Rewrite::default()
        })
    );
    one_message(
        &vs("  hosts: [reviews]\n  http: [{rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}, route: [{destination: {host: reviews}}]}]\n"),
        false,
        &["spec.http[0].rewrite.uriRegexRewrite", "only one of uri and uriRegexRewrite"],
    );
}

#[test]
fn matches_on_absence_presence_source_and_case() {
    let rule = only_rule(&vs(
        "  hosts: [reviews]\n  http:\n  - match:\n    - uri: {prefix: /API}\n      ignoreUriCase: true\n      headers: {X-Debug: {}, end-user: {exact: jason}}\n      withoutHeaders: {x-block: {}}\n      sourceLabels: {app: productpage}\n      sourceNamespace: front\n    route: [{destination: {host: reviews}}]\n",
    ));
    let m = &rule.matches[0];
    assert!(m.ignore_uri_case);
    assert_eq!(m.headers.get("x-debug"), Some(&StringMatch::Present(true)));
    assert_eq!(
        m.headers.get("end-user"),
        Some(&StringMatch::Exact("jason".into()))
    );
    assert_eq!(
        m.without_headers.get("x-block"),
        Some(&StringMatch::Present(true))
    );
    assert_eq!(
        m.source_labels.get("app").map(String::as_str),
        Some("productpage")
    );
    assert_eq!(m.source_namespace.as_deref(), Some("front"));
    // A scheme match holds for every request (http) or none.
    let rule = only_rule(&vs(
        "  hosts: [reviews]\n  http: [{match: [{scheme: {exact: http}, uri: {prefix: /a}}], route: [{destination: {host: reviews}}]}]\n",
    ));
    assert_eq!(
        rule.matches,
        vec![HttpMatch {
            uri: Some(StringMatch::Prefix("/a".into())),
            ..HttpMatch::default()
        }]
    );
    let (s, errors) = load(&vs(
        "  hosts: [reviews]\n  http:\n  - {match: [{scheme: {exact: https}}], route: [{destination: {host: reviews, subset: v2}}]}\n  - route: [{destination: {host: reviews, subset: v1}}]\n",
    ));
    assert_eq!(
        route(&s, "vs").rules.len(),
        1,
        "the https-only rule never applies"
    );
    assert!(
        errors.len() == 1
            && errors[0].contains("spec.http[0].match[0].scheme: warning: never matches"),
        "{errors:#?}"
    );
}

#[test]
fn gateway_bindings_apply_to_the_mesh_only() {
    one_message(
        &vs("  hosts: [reviews]\n  gateways: [bookinfo-gateway]\n  http: [{route: [{destination: {host: reviews}}]}]\n"),
        false,
        &["spec.gateways: warning: bound to gateways [\"bookinfo-gateway\"] only, not \"mesh\": not applied", "ingress gateways are not built yet"],
    );
    one_message(
        &vs("  hosts: [reviews]\n  gateways: [mesh, bookinfo-gateway]\n  http: [{route: [{destination: {host: reviews}}]}]\n"),
        true,
        &["spec.gateways: warning: gateways [\"bookinfo-gateway\"] not applied"],
    );
    let (s, errors) = load(&vs(
        "  hosts: [reviews]\n  http:\n  - {match: [{gateways: [ingress], uri: {prefix: /in}}], route: [{destination: {host: reviews, subset: v2}}]}\n  - route: [{destination: {host: reviews, subset: v1}}]\n",
    ));
    let rules = &route(&s, "vs").rules;
    assert_eq!(
        rules.len(),
        1,
        "the ingress-only rule is left out, not widened: {rules:#?}"
    );
    assert_eq!(rules[0].destinations[0].subset.as_deref(), Some("v1"));
    assert!(
        errors.len() == 1 && errors[0].contains("spec.http[0].match[0].gateways: warning"),
        "{errors:#?}"
    );
}

#[test]
fn export_to_and_unsupported_fields() {
    let (s, errors) = load(&vs("  hosts: [reviews]\n  exportTo: [\".\", other]\n  http: [{route: [{destination: {host: reviews}}]}]\n"));
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        route(&s, "vs").export_to,
        vec!["default".to_owned(), "other".to_owned()]
    );
    one_message(
        &vs("  hosts: [reviews]\n  http: [{corsPolicy: {allowOrigins: [{exact: \"https://a\"}]}, route: [{destination: {host: reviews}}]}]\n"),
        true,
        &["VirtualService default/vs", "spec.http[0].corsPolicy: warning: not supported yet"],
    );
}

#[test]
fn wildcard_destination_rules_define_subsets() {
    let (s, errors) = load(&vs(
        "  hosts: [ratings]\n  http: [{route: [{destination: {host: ratings, subset: v2}}]}]\n",
    ));
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        route(&s, "vs").rules[0].destinations[0].subset.as_deref(),
        Some("v2")
    );
    let dr = s
        .destination_policies
        .iter()
        .find(|d| d.name == "all")
        .expect("wildcard rule");
    assert_eq!(dr.host, "*.default.svc.cluster.local");
}

const DELEGATE: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-delegate}
spec:
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /other}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;

#[test]
fn delegates_are_merged_under_their_root_rule() {
    let root = vs("  hosts: [reviews]\n  http:\n  - name: root\n    match: [{uri: {prefix: /reviews}}]\n    timeout: 2s\n    delegate: {name: reviews-delegate}\n");
    let (s, errors) = load(&format!("{root}{DELEGATE}"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("VirtualService default/vs: spec.http[0].delegate: warning: rule spec.http[1] of delegate VirtualService default/reviews-delegate does not fit"),
        "{errors:#?}"
    );
    let rules = &route(&s, "vs").rules;
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert_eq!(rules[0].name.as_deref(), Some("root-jason"));
    assert_eq!(
        rules[0].matches,
        vec![HttpMatch {
            uri: Some(StringMatch::Prefix("/reviews".into())),
            headers: [("end-user".to_owned(), StringMatch::Exact("jason".into()))].into(),
            ..HttpMatch::default()
        }]
    );
    assert_eq!(rules[0].destinations[0].subset.as_deref(), Some("v2"));
    assert_eq!(
        rules[1].matches[0].uri,
        Some(StringMatch::Prefix("/reviews".into()))
    );
    assert_eq!(rules[1].destinations[0].subset.as_deref(), Some("v1"));
    assert!(
        rules.iter().all(|r| r.timeout_ms == Some(2_000)),
        "the root's timeout is inherited"
    );
    assert_eq!(s.routes.len(), 1, "a delegate is no route of its own");
}

#[test]
fn broken_delegations_are_reported_on_the_root() {
    let root = |extra: &str| {
        vs(&format!(
            "  hosts: [reviews]\n  http:\n  - delegate: {{name: d{extra}}}\n"
        ))
    };
    one_message(
        &root(""),
        false,
        &[
            "VirtualService default/vs",
            "spec.http[0].delegate.name",
            "delegate VirtualService default/d not found",
        ],
    );
    let with_hosts = "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d}\nspec: {hosts: [ratings], http: [{route: [{destination: {host: ratings}}]}]}\n";
    one_message(
        &format!("{}{with_hosts}", root("")),
        false,
        &[
            "spec.http[0].delegate",
            "has hosts (spec.hosts): a delegate must have none",
        ],
    );
    let cycle = "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d}\nspec: {http: [{delegate: {name: vs}}]}\n";
    one_message(
        &format!("{}{cycle}", root("")),
        false,
        &["delegates again at spec.http[0].delegate (back to this VirtualService: a cycle)"],
    );
    let hidden = "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d, namespace: other}\nspec: {exportTo: [\".\"], http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]}\n";
    one_message(
        &vs(&format!(
            "  hosts: [reviews]\n  http:\n  - delegate: {{name: d, namespace: other}}\n{hidden}"
        )),
        false,
        &["delegate VirtualService other/d is not exported to namespace default"],
    );
    let bad = "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d}\nspec: {http: [{route: [{destination: {host: reviews, port: {number: 70000}}}]}]}\n";
    one_message(
        &format!("{}{bad}", root("")),
        false,
        &[
            "spec.http[0].delegate",
            "delegate VirtualService default/d: spec.http[0].route[0].destination.port.number",
        ],
    );
    let orphan = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec: {http: [{route: [{destination: {host: reviews}}]}]}\n";
    one_message(
        orphan,
        false,
        &["spec.hosts: warning: no hosts, and no VirtualService delegates to it"],
    );
}

fn http_route(body: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: vs}}\nspec:\n{body}")
}

#[test]
fn http_route_parents() {
    // A waypoint parent without hostnames: the services assigned to the waypoint.
    let (s, errors) = load(&http_route(
        "  parentRefs: [{name: wp}]\n  rules: [{backendRefs: [{name: reviews, port: 9080}]}]\n",
    ));
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        route(&s, "vs").hosts,
        vec!["reviews.default.svc.cluster.local".to_owned()]
    );
    // A Service parent with a port: that port only.
    let (s, errors) = load(&http_route("  parentRefs: [{group: \"\", kind: Service, name: ratings, port: 9080}]\n  rules: [{matches: [{path: {value: /a}}], backendRefs: [{name: ratings}]}, {backendRefs: [{name: ratings}]}]\n"));
    assert!(errors.is_empty(), "{errors:#?}");
    let r = route(&s, "vs");
    assert_eq!(r.kind, RouteKind::HttpRoute);
    assert_eq!(
        r.hosts,
        vec!["ratings.default.svc.cluster.local".to_owned()]
    );
    assert!(
        r.rules
            .iter()
            .all(|rule| !rule.matches.is_empty()
                && rule.matches.iter().all(|m| m.port == Some(9080))),
        "{r:#?}"
    );
    // An ingress Gateway parent: accepted, not applied.
    let ingress = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: bookinfo-gateway}\nspec: {gatewayClassName: istio, listeners: [{name: http, port: 80, protocol: HTTP}]}\n---\n";
    one_message(
        &format!("{ingress}{}", http_route("  parentRefs: [{name: bookinfo-gateway}]\n  rules: [{backendRefs: [{name: ratings, port: 9080}]}]\n")),
        false,
        &["HTTPRoute default/vs: spec.parentRefs[0]: warning: Gateway default/bookinfo-gateway (class \"istio\") is an ingress gateway: not applied"],
    );
}

#[test]
fn http_route_filters() {
    let parent = "  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n";
    let rule_of = |rules: &str| only_rule(&http_route(&format!("{parent}  rules:\n{rules}")));
    let r = rule_of("  - matches: [{path: {type: PathPrefix, value: /v1}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]\n    backendRefs: [{name: reviews}]\n");
    assert_eq!(
        r.rewrite,
        Some(Rewrite {
            uri: Some("/v2".into()),
            ..Rewrite::default()
        })
    );
    let r = rule_of("  - filters: [{type: URLRewrite, urlRewrite: {hostname: new, path: {type: ReplaceFullPath, replaceFullPath: /only}}}]\n    backendRefs: [{name: reviews}]\n");
    assert_eq!(
        r.rewrite,
        Some(Rewrite {
            uri: Some("/only".into()),
            full_path: true,
            authority: Some("new".into()),
            ..Rewrite::default()
        })
    );
    let r = rule_of("  - matches: [{path: {value: /old}}]\n    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}}]\n");
    assert_eq!(
        r.redirect,
        Some(Redirect {
            scheme: Some("https".into()),
            port: Some(8443),
            replace_prefix: true,
            uri: Some("/new".into()),
            authority: None,
            code: 301
        })
    );
    assert_eq!(r.direct_response, None, "a redirect needs no backend");
    let r = rule_of("  - backendRefs:\n    - name: reviews\n      filters:\n      - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Version, value: v1}]}}\n      - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [X-Debug]}}\n");
    assert_eq!(
        r.destinations[0]
            .request_headers
            .set
            .get("x-version")
            .map(String::as_str),
        Some("v1")
    );
    assert_eq!(
        r.destinations[0].response_headers.remove,
        vec!["x-debug".to_owned()]
    );
    let r = rule_of("  - matches: [{path: {value: /gone}}]\n");
    assert_eq!(
        r.direct_response,
        Some(DirectResponse {
            status: 500,
            body: None
        }),
        "no backend: 500"
    );
    let (s, errors) = load(&http_route(&format!("{parent}  rules:\n  - filters: [{{type: ExtensionRef, extensionRef: {{group: x, kind: Y, name: z}}}}, {{type: CORS, cors: {{allowOrigins: [\"*\"]}}}}]\n    backendRefs: [{{name: reviews}}]\n")));
    assert_eq!(
        route(&s, "vs").rules[0]
            .direct_response
            .as_ref()
            .map(|d| d.status),
        Some(500)
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("spec.rules[0].filters[0]: warning: ExtensionRef filters are not supported: every request this rule matches is answered 500"), "{errors:#?}");
    assert!(
        errors[1].contains("spec.rules[0].filters[1]: warning: not supported yet"),
        "{errors:#?}"
    );
    one_message(
        &http_route(&format!("{parent}  rules:\n  - matches: [{{path: {{type: Exact, value: /a}}}}]\n    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /b}}}}}}]\n    backendRefs: [{{name: reviews}}]\n")),
        false,
        &["spec.rules[0].filters[0].urlRewrite.path.type", "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"],
    );
    let r = rule_of("  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: ratings, port: 9080}, fraction: {numerator: 1, denominator: 4}}}]\n    backendRefs: [{name: reviews}]\n");
    assert_eq!(r.mirrors.first().map(|m| m.percentage), Some(25.0));
}

fn l4(s: &Snapshot, name: &str) -> (Vec<L4Rule>, Vec<L4Rule>) {
    let r = route(s, name);
    (r.tcp.clone(), r.tls.clone())
}

fn dest(host: &str, subset: Option<&str>, port: Option<u16>, weight: u32) -> RouteDestination {
    RouteDestination {
        host: format!("{host}.default.svc.cluster.local"),
        subset: subset.map(str::to_owned),
        port,
        weight,
        ..Default::default()
    }
}

#[test]
fn virtual_service_tcp_and_tls_rules() {
    // (case, tcp rules, tls rules)
    let cases: Vec<(String, Vec<L4Rule>, Vec<L4Rule>)> = vec![
        (
            vs("  hosts: [reviews]\n  tcp: [{route: [{destination: {host: reviews}}]}]\n"),
            vec![L4Rule {
                name: None,
                matches: vec![],
                destinations: vec![dest("reviews", None, None, 100)],
            }],
            vec![],
        ),
        (
            vs("  hosts: [reviews]\n  tcp:\n  - match: [{port: 9080, sourceLabels: {app: productpage}, sourceNamespace: front}]\n    route:\n    - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 80}\n    - {destination: {host: reviews, subset: v2}, weight: 20}\n"),
            vec![L4Rule {
                name: None,
                matches: vec![L4Match {
                    port: Some(9080),
                    sni_hosts: vec![],
                    source_labels: [("app".to_owned(), "productpage".to_owned())].into(),
                    source_namespace: Some("front".to_owned()),
                }],
                destinations: vec![
                    dest("reviews", Some("v1"), Some(9080), 80),
                    dest("reviews", Some("v2"), None, 20),
                ],
            }],
            vec![],
        ),
        (
            vs("  hosts: [reviews.default.svc.cluster.local, \"*.example.com\"]\n  tls:\n  - match: [{port: 443, sniHosts: [reviews.default.svc.cluster.local, A.example.com]}]\n    route: [{destination: {host: reviews, port: {number: 9443}}}]\n"),
            vec![],
            vec![L4Rule {
                name: None,
                matches: vec![L4Match {
                    port: Some(443),
                    sni_hosts: vec![
                        "reviews.default.svc.cluster.local".to_owned(),
                        "a.example.com".to_owned(),
                    ],
                    ..Default::default()
                }],
                destinations: vec![dest("reviews", None, Some(9443), 100)],
            }],
        ),
        // A short host name: the SNI host is matched as written.
        (
            vs("  hosts: [reviews]\n  tls: [{match: [{sniHosts: [reviews]}], route: [{destination: {host: reviews}}]}]\n"),
            vec![],
            vec![L4Rule {
                name: None,
                matches: vec![L4Match {
                    sni_hosts: vec!["reviews".to_owned()],
                    ..Default::default()
                }],
                destinations: vec![dest("reviews", None, None, 100)],
            }],
        ),
    ];
    for (case, tcp, tls) in cases {
        let (s, errors) = load(&case);
        assert!(errors.is_empty(), "{case}: {errors:#?}");
        assert_eq!(l4(&s, "vs"), (tcp, tls), "{case}");
    }
}

#[test]
fn virtual_service_tcp_and_tls_problems() {
    // (case, whether the route stays, message parts)
    let cases: Vec<(String, bool, Vec<&str>)> = vec![
        (
            vs("  hosts: [reviews]\n  tls: [{route: [{destination: {host: reviews}}]}]\n"),
            false,
            vec!["spec.tls[0].match", "needs at least one match"],
        ),
        (
            vs("  hosts: [reviews]\n  tls: [{match: [{port: 443}], route: [{destination: {host: reviews}}]}]\n"),
            false,
            vec!["spec.tls[0].match[0].sniHosts", "at least one SNI host"],
        ),
        (
            vs("  hosts: [reviews]\n  tls: [{match: [{sniHosts: [other.example.com]}], route: [{destination: {host: reviews}}]}]\n"),
            false,
            vec!["spec.tls[0].match[0].sniHosts[0]", "not one of the VirtualService's hosts"],
        ),
        (
            vs("  hosts: [reviews]\n  tcp: [{match: [{port: 70000}], route: [{destination: {host: reviews}}]}]\n"),
            false,
            vec!["spec.tcp[0].match[0].port"],
        ),
        (
            vs("  hosts: [reviews]\n  tcp: [{route: [{destination: {host: reviews}, weight: 101}]}]\n"),
            false,
            vec!["spec.tcp[0].route[0].weight", "invalid weight 101"],
        ),
        (
            vs("  hosts: [reviews]\n  tcp: [{}]\n"),
            false,
            vec!["spec.tcp[0].route", "at least one destination"],
        ),
        (
            vs("  hosts: [reviews]\n  tcp: [{match: [{destinationSubnets: [10.0.0.0/8]}], route: [{destination: {host: reviews}}]}]\n"),
            true,
            vec!["spec.tcp[0].match[0].destinationSubnets: warning: not supported yet; this match is left out"],
        ),
        (
            vs("  hosts: [reviews]\n  tcp: [{match: [{gateways: [ingress]}], route: [{destination: {host: reviews}}]}]\n"),
            true,
            vec!["spec.tcp[0].match[0].gateways: warning: bound to gateways"],
        ),
        (
            vs("  hosts: [reviews]\n  tcp: [{route: [{destination: {host: nowhere}}]}]\n"),
            true,
            vec!["spec.tcp[0].route[0].destination.host: warning", "not found in the mesh"],
        ),
    ];
    for (case, translated, parts) in cases {
        one_message(&case, translated, &parts);
    }
    // Matches left out are not widened: that rule is gone, the next one stays.
    let (s, _) = load(&vs("  hosts: [reviews]\n  tcp:\n  - {match: [{sourceSubnet: 10.0.0.0/8}], route: [{destination: {host: reviews, subset: v2}}]}\n  - {route: [{destination: {host: reviews, subset: v1}}]}\n"));
    let (tcp, _) = l4(&s, "vs");
    assert_eq!(tcp.len(), 1, "{tcp:#?}");
    assert_eq!(tcp[0].destinations[0].subset.as_deref(), Some("v1"));
}

fn gateway_l4(kind: &str, version: &str, body: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/{version}\nkind: {kind}\nmetadata: {{name: vs}}\nspec:\n{body}")
}

#[test]
fn tcp_and_tls_routes() {
    // A TCPRoute on a Service port, weighted backends.
    let (s, errors) = load(&gateway_l4(
        "TCPRoute",
        "v1alpha2",
        "  parentRefs: [{group: \"\", kind: Service, name: reviews, port: 9080}]\n  rules: [{backendRefs: [{name: reviews, port: 9080, weight: 3}, {name: ratings, port: 9080}]}]\n",
    ));
    assert!(errors.is_empty(), "{errors:#?}");
    let r = route(&s, "vs");
    assert_eq!(r.kind, RouteKind::TcpRoute);
    assert_eq!(
        r.hosts,
        vec!["reviews.default.svc.cluster.local".to_owned()]
    );
    assert!(r.rules.is_empty() && r.tls.is_empty());
    assert_eq!(
        r.tcp,
        vec![L4Rule {
            name: None,
            matches: vec![L4Match {
                port: Some(9080),
                ..Default::default()
            }],
            destinations: vec![
                dest("reviews", None, Some(9080), 3),
                dest("ratings", None, Some(9080), 1),
            ],
        }]
    );
    // A TCPRoute on the waypoint: the services assigned to it.
    let (s, errors) = load(&gateway_l4(
        "TCPRoute",
        "v1alpha2",
        "  parentRefs: [{name: wp}]\n  rules: [{name: all, backendRefs: [{name: reviews, port: 9080}]}]\n",
    ));
    assert!(errors.is_empty(), "{errors:#?}");
    let r = route(&s, "vs");
    assert_eq!(
        r.hosts,
        vec!["reviews.default.svc.cluster.local".to_owned()]
    );
    assert_eq!(r.tcp[0].name.as_deref(), Some("all"));
    assert!(r.tcp[0].matches.is_empty(), "{r:#?}");
    // TLSRoutes (both versions): hostnames are the SNI match.
    for version in ["v1alpha2", "v1alpha3"] {
        let (s, errors) = load(&gateway_l4(
            "TLSRoute",
            version,
            "  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n  hostnames: [Reviews.Example.com, \"*.reviews.example.com\"]\n  rules: [{backendRefs: [{name: reviews, port: 9443}]}]\n",
        ));
        assert!(errors.is_empty(), "{version}: {errors:#?}");
        let r = route(&s, "vs");
        assert_eq!(r.kind, RouteKind::TlsRoute);
        assert_eq!(
            r.hosts,
            vec!["reviews.default.svc.cluster.local".to_owned()]
        );
        assert!(r.tcp.is_empty());
        assert_eq!(
            r.tls[0].matches,
            vec![L4Match {
                sni_hosts: vec![
                    "reviews.example.com".to_owned(),
                    "*.reviews.example.com".to_owned()
                ],
                ..Default::default()
            }],
            "{version}"
        );
    }
    // Problems.
    let cases: Vec<(String, bool, Vec<&str>)> = vec![
        (
            gateway_l4("TCPRoute", "v1alpha2", "  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n  rules: [{backendRefs: [{name: nowhere, port: 1}]}]\n"),
            false,
            vec!["TCPRoute default/vs", "spec.rules[0].backendRefs[0].name", "not found"],
        ),
        (
            gateway_l4("TCPRoute", "v1alpha2", "  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n  rules: [{}]\n"),
            false,
            vec!["spec.rules[0].backendRefs", "at least one backend"],
        ),
        (
            gateway_l4("TCPRoute", "v1alpha2", "  rules: [{backendRefs: [{name: reviews, port: 9080}]}]\n"),
            false,
            vec!["spec.parentRefs", "at least one parent"],
        ),
        (
            gateway_l4("TLSRoute", "v1alpha2", "  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n  hostnames: [\"a:443\"]\n  rules: [{backendRefs: [{name: reviews, port: 9443}]}]\n"),
            false,
            vec!["TLSRoute default/vs", "spec.hostnames[0]", "invalid host name"],
        ),
        (
            gateway_l4("TCPRoute", "v1alpha2", "  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n  useDefaultGateways: All\n  rules: [{backendRefs: [{name: reviews, port: 9080}]}]\n"),
            true,
            vec!["spec.useDefaultGateways: warning"],
        ),
        (
            gateway_l4("TCPRoute", "v1alpha2", "  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n  rules: [{backendRefs: [{name: reviews, port: 9080, filters: []}]}]\n"),
            false,
            vec!["spec.rules[0].backendRefs[0].filters", "unknown field"],
        ),
    ];
    for (case, translated, parts) in cases {
        one_message(&case, translated, &parts);
    }
}

#[test]
fn virtual_service_retries_faults_and_mirrors() {
    let rule = only_rule(&vs("  hosts: [reviews]\n  http:\n  - retries: {attempts: 2, perTryTimeout: 1s, retryOn: \"5xx, reset,503,unavailable,retriable-status-codes\", retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 50ms}\n    fault: {abort: {grpcStatus: unavailable, percentage: {value: 10}}}\n    mirrors: [{destination: {host: ratings}, percentage: {value: 5}}, {destination: {host: reviews, subset: v2}}]\n    route: [{destination: {host: reviews}}]\n"));
    assert_eq!(
        rule.retries,
        Some(mesh_common::model::RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: Some(1_000),
            retry_on: [
                "5xx",
                "reset",
                "503",
                "unavailable",
                "retriable-status-codes"
            ]
            .map(str::to_owned)
            .to_vec(),
            retry_remote_localities: true,
            retry_ignore_previous_hosts: Some(false),
            backoff_base_ms: Some(50),
        })
    );
    let abort = rule.fault.and_then(|f| f.abort).expect("abort");
    assert_eq!(
        (
            abort.http_status,
            abort.grpc_status.as_deref(),
            abort.percentage
        ),
        (0, Some("UNAVAILABLE"), 10.0)
    );
    let mirrors: Vec<(String, Option<String>, f64)> = rule
        .mirrors
        .iter()
        .map(|m| {
            (
                m.destination.host.clone(),
                m.destination.subset.clone(),
                m.percentage,
            )
        })
        .collect();
    assert_eq!(
        mirrors,
        vec![
            ("ratings.default.svc.cluster.local".to_owned(), None, 5.0),
            (
                "reviews.default.svc.cluster.local".to_owned(),
                Some("v2".to_owned()),
                100.0
            ),
        ]
    );
    // mirror + mirrorPercentage.
    let rule = only_rule(&vs("  hosts: [reviews]\n  http: [{mirror: {host: ratings}, mirrorPercentage: {value: 12.5}, route: [{destination: {host: reviews}}]}]\n"));
    assert_eq!(rule.mirrors.len(), 1);
    assert_eq!(rule.mirrors[0].percentage, 12.5);
    // Problems: (http rule body, translated, message parts).
    let cases: Vec<(&str, bool, Vec<&str>)> = vec![
        ("retries: {attempts: 1, retryOn: \"5xx,sometimes\"}", true, vec!["spec.http[0].retries.retryOn: warning", "unknown retry condition \"sometimes\""]),
        ("retries: {attempts: 1, backoff: soon}", false, vec!["spec.http[0].retries.backoff", "invalid duration"]),
        ("retries: {attempts: 1, backoff: 0s}", false, vec!["spec.http[0].retries.backoff", "at least 1ms"]),
        ("retries: {attempts: -1}", false, vec!["spec.http[0].retries.attempts"]),
        ("fault: {abort: {grpcStatus: SOMETIMES}}", false, vec!["spec.http[0].fault.abort.grpcStatus", "unknown gRPC status"]),
        ("fault: {abort: {grpcStatus: UNAVAILABLE, httpStatus: 503}}", false, vec!["spec.http[0].fault.abort", "exactly one of"]),
        ("fault: {abort: {percentage: {value: 5}}}", false, vec!["spec.http[0].fault.abort", "exactly one of"]),
        ("fault: {abort: {http2Error: REFUSED_STREAM}}", true, vec!["spec.http[0].fault.abort.http2Error: warning: not supported yet"]),
        ("mirrors: [{destination: {host: ratings}}, {destination: {host: ratings}, percentage: {value: 101}}]", false, vec!["spec.http[0].mirrors[1].percentage.value", "must be 0-100"]),
        ("mirror: {host: ratings}\n    mirrors: [{destination: {host: ratings}}]", false, vec!["spec.http[0].mirrors", "only one of mirror and mirrors"]),
        ("mirrorPercentage: {value: 5}", true, vec!["spec.http[0].mirrorPercentage: warning", "ignored without mirror"]),
    ];
    for (body, translated, parts) in cases {
        one_message(
            &vs(&format!("  hosts: [reviews]\n  http:\n  - {body}\n    route: [{{destination: {{host: reviews}}}}]\n")),
            translated,
            &parts,
        );
    }
}

#[test]
fn http_route_mirrors_and_retry() {
    let (s, errors) = load(&http_route("  parentRefs: [{group: \"\", kind: Service, name: reviews}]\n  rules:\n  - backendRefs: [{name: reviews, port: 9080}]\n    filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: ratings, port: 9080}, percent: 20}}\n    - {type: RequestMirror, requestMirror: {backendRef: {name: reviews, port: 9080}, fraction: {numerator: 1, denominator: 4}}}\n    timeouts: {request: 5s, backendRequest: 1s}\n    retry: {codes: [503, 504], attempts: 3, backoff: 100ms}\n"));
    assert!(errors.is_empty(), "{errors:#?}");
    let rule = &route(&s, "vs").rules[0];
    let shares: Vec<(String, f64)> = rule
        .mirrors
        .iter()
        .map(|m| (m.destination.host.clone(), m.percentage))
        .collect();
    assert_eq!(
        shares,
        vec![
            ("ratings.default.svc.cluster.local".to_owned(), 20.0),
            ("reviews.default.svc.cluster.local".to_owned(), 25.0),
        ]
    );
    assert_eq!(rule.timeout_ms, Some(5_000));
    let retries = rule.retries.as_ref().expect("retries");
    assert_eq!(
        (
            retries.attempts,
            retries.per_try_timeout_ms,
            retries.retry_on.clone(),
            retries.backoff_base_ms
        ),
        (
            3,
            Some(1_000),
            vec!["503".to_owned(), "504".to_owned()],
            Some(100)
        )
    );
    for (retry, parts) in [
        (
            "{codes: [200]}",
            vec!["spec.rules[0].retry.codes[0]", "must be 400-599"],
        ),
        (
            "{backoff: later}",
            vec!["spec.rules[0].retry.backoff", "invalid duration"],
        ),
    ] {
        one_message(
            &http_route(&format!("  parentRefs: [{{group: \"\", kind: Service, name: reviews}}]\n  rules: [{{backendRefs: [{{name: reviews, port: 9080}}], retry: {retry}}}]\n")),
            false,
            &parts,
        );
    }
}

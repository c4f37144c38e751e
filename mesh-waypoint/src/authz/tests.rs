use super::*;
use crate::testdata::{table, Req};

const REVIEWS: &str = "10.96.0.20:9080";
const GATEWAY: &str =
    "{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint, namespace: bookinfo}";

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::NoPolicy => "none".into(),
        Verdict::Allowed(p) => format!("allow {p}"),
        Verdict::NotDenied => "allow".into(),
        Verdict::Denied(p) => format!("deny {p}"),
        Verdict::NotAllowed => "deny".into(),
        Verdict::UnknownAction(p) => format!("deny-unknown {p}"),
    }
}

/// `<verdict>[ audit=a,b][ dry=<verdict>]`.
fn summary(d: &AuthzDecision) -> String {
    let mut s = verdict(&d.verdict);
    if !d.audit.is_empty() {
        s.push_str(&format!(" audit={}", d.audit.join(",")));
    }
    if let Some(dry) = &d.dry_run {
        s.push_str(&format!(" dry={}", verdict(dry)));
    }
    s
}

fn authorize(policies: &str, req: &Req) -> String {
    let t = table("  []", &format!("authorizationPolicies:\n{policies}"));
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    req.with_view(&t, |v| {
        let d = t.authorize(v);
        assert_eq!(d.error().is_none(), d.verdict.allows());
        summary(&d)
    })
}

/// One policy `p` on the waypoint's Gateway with one rule (YAML flow mapping).
fn one(action: &str, rule: &str) -> String {
    format!("- {{name: p, namespace: bookinfo, targetRefs: [{GATEWAY}], action: {action}, rules: [{rule}]}}\n")
}

/// Claims of a verified token (see `jwt::tests` for verification itself).
const ALICE: &str = r#"{"iss":"iss","sub":"alice","aud":["reviews","ratings"],"azp":"web-app","groups":["dev","admin"],"org":{"team":"books"},"level":3}"#;

#[test]
fn every_rule_field() {
    let get = |path| Req::get(REVIEWS, path);
    let jwt = |claims| get("/").jwt(claims);
    // (case, action, rule, request, expected)
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, &str, Req, &str)> = vec![
        ("empty rule matches all", "ALLOW", "{}", get("/"), "allow bookinfo/p"),
        ("principal", "ALLOW", "{from: [{principals: [cluster.local/ns/other/sa/sleep]}]}", get("/"), "allow bookinfo/p"),
        ("principal, other", "ALLOW", "{from: [{principals: [cluster.local/ns/other/sa/curl]}]}", get("/"), "deny"),
        ("principal suffix wildcard", "ALLOW", "{from: [{principals: ['*/sa/sleep']}]}", get("/"), "allow bookinfo/p"),
        ("principal prefix wildcard", "ALLOW", "{from: [{principals: ['cluster.local/ns/other/*']}]}", get("/"), "allow bookinfo/p"),
        ("no certificate matches no principal", "ALLOW", "{from: [{principals: ['*']}]}", get("/").from(None, "10.2.0.5"), "deny"),
        ("notPrincipals", "ALLOW", "{from: [{notPrincipals: [cluster.local/ns/other/sa/sleep]}]}", get("/"), "deny"),
        ("namespaces", "ALLOW", "{from: [{namespaces: [other]}]}", get("/"), "allow bookinfo/p"),
        ("namespaces, other", "ALLOW", "{from: [{namespaces: [bookinfo]}]}", get("/"), "deny"),
        ("notNamespaces", "DENY", "{from: [{notNamespaces: [bookinfo]}]}", get("/"), "deny bookinfo/p"),
        ("ipBlocks", "ALLOW", "{from: [{ipBlocks: [{address: 10.2.0.0, prefixLen: 16}]}]}", get("/"), "allow bookinfo/p"),
        ("ipBlocks, other", "ALLOW", "{from: [{ipBlocks: [{address: 10.3.0.0, prefixLen: 16}]}]}", get("/"), "deny"),
        ("notIpBlocks", "DENY", "{from: [{notIpBlocks: [{address: 10.1.0.0, prefixLen: 16}]}]}", get("/"), "deny bookinfo/p"),
        ("requestPrincipals need a JWT", "ALLOW", "{from: [{requestPrincipals: ['*']}]}", get("/"), "deny"),
        ("requestPrincipals: no JWT matches none, for DENY too", "DENY", "{from: [{requestPrincipals: ['*']}]}", get("/"), "allow"),
        ("notRequestPrincipals '*' denies requests without a JWT", "DENY", "{from: [{notRequestPrincipals: ['*']}]}", get("/"), "deny bookinfo/p"),
        ("any source of a rule", "ALLOW", "{from: [{namespaces: [x]}, {namespaces: [other]}]}", get("/"), "allow bookinfo/p"),
        ("every field of a source", "ALLOW", "{from: [{namespaces: [other], principals: [cluster.local/ns/other/sa/curl]}]}", get("/"), "deny"),
        ("path exact", "ALLOW", "{to: [{paths: [/reviews]}]}", get("/reviews"), "allow bookinfo/p"),
        ("path without the query", "ALLOW", "{to: [{paths: [/reviews]}]}", get("/reviews?x=1"), "allow bookinfo/p"),
        ("path exact, other", "ALLOW", "{to: [{paths: [/reviews]}]}", get("/reviews/1"), "deny"),
        ("path prefix", "DENY", "{to: [{paths: ['/admin*']}]}", get("/admin/users"), "deny bookinfo/p"),
        ("path prefix, other", "DENY", "{to: [{paths: ['/admin*']}]}", get("/"), "allow"),
        ("path suffix", "ALLOW", "{to: [{paths: ['*.json']}]}", get("/a/b.json"), "allow bookinfo/p"),
        ("path template one segment", "ALLOW", "{to: [{paths: ['/books/{*}/reviews']}]}", get("/books/12/reviews"), "allow bookinfo/p"),
        ("path template is one segment only", "ALLOW", "{to: [{paths: ['/books/{*}/reviews']}]}", get("/books/1/2/reviews"), "deny"),
        ("path template rest", "DENY", "{to: [{paths: ['/admin/{**}']}]}", get("/admin/a/b"), "deny bookinfo/p"),
        ("notPaths", "ALLOW", "{to: [{notPaths: ['/private*']}]}", get("/private/x"), "deny"),
        ("notPaths, other", "ALLOW", "{to: [{notPaths: ['/private*']}]}", get("/public"), "allow bookinfo/p"),
        ("methods", "ALLOW", "{to: [{methods: [GET, HEAD]}]}", get("/"), "allow bookinfo/p"),
        ("methods, other", "ALLOW", "{to: [{methods: [GET]}]}", get("/").method("POST"), "deny"),
        ("notMethods", "DENY", "{to: [{notMethods: [GET]}]}", get("/").method("DELETE"), "deny bookinfo/p"),
        ("hosts with the port", "ALLOW", "{to: [{hosts: ['reviews:9080']}]}", get("/"), "allow bookinfo/p"),
        ("hosts without a port match any port", "ALLOW", "{to: [{hosts: [reviews]}]}", get("/"), "allow bookinfo/p"),
        ("hosts are case-insensitive", "ALLOW", "{to: [{hosts: [REVIEWS]}]}", get("/").host("Reviews:9080"), "allow bookinfo/p"),
        ("hosts wildcard", "ALLOW", "{to: [{hosts: ['*.bookinfo.svc.cluster.local']}]}", get("/").host("reviews.bookinfo.svc.cluster.local:9080"), "allow bookinfo/p"),
        ("hosts with another port", "ALLOW", "{to: [{hosts: ['reviews:80']}]}", get("/"), "deny"),
        ("hosts, IPv6 host with a port", "ALLOW", "{to: [{hosts: ['[fd00::1]']}]}", get("/").host("[fd00::1]:9080"), "allow bookinfo/p"),
        ("notHosts", "DENY", "{to: [{notHosts: [reviews]}]}", get("/").host("evil"), "deny bookinfo/p"),
        ("ports are the service port", "ALLOW", "{to: [{ports: [9080]}]}", get("/"), "allow bookinfo/p"),
        ("ports, other", "ALLOW", "{to: [{ports: [80]}]}", get("/"), "deny"),
        ("notPorts", "DENY", "{to: [{notPorts: [80]}]}", get("/"), "deny bookinfo/p"),
        ("every field of an operation", "ALLOW", "{to: [{methods: [GET], paths: [/x]}]}", get("/"), "deny"),
        ("from and to together", "ALLOW", "{from: [{namespaces: [other]}], to: [{paths: [/ok]}]}", get("/no"), "deny"),
        ("header condition", "ALLOW", "{when: [{key: 'request.headers[x-token]', values: [abc]}]}", get("/").header("x-token", "abc"), "allow bookinfo/p"),
        ("header condition wildcard", "ALLOW", "{when: [{key: 'request.headers[x-token]', values: ['ab*']}]}", get("/").header("x-token", "abc"), "allow bookinfo/p"),
        ("header condition, absent", "ALLOW", "{when: [{key: 'request.headers[x-token]', values: [abc]}]}", get("/"), "deny"),
        ("header notValues, absent", "ALLOW", "{when: [{key: 'request.headers[x-token]', notValues: [bad]}]}", get("/"), "allow bookinfo/p"),
        ("header notValues, matching", "ALLOW", "{when: [{key: 'request.headers[x-token]', notValues: [bad]}]}", get("/").header("x-token", "bad"), "deny"),
        ("source.principal", "ALLOW", "{when: [{key: source.principal, values: ['cluster.local/ns/other/*']}]}", get("/"), "allow bookinfo/p"),
        ("source.namespace", "ALLOW", "{when: [{key: source.namespace, values: [bookinfo]}]}", get("/"), "deny"),
        ("source.ip CIDR", "ALLOW", "{when: [{key: source.ip, values: [10.2.0.0/24]}]}", get("/"), "allow bookinfo/p"),
        ("source.ip address", "ALLOW", "{when: [{key: source.ip, values: [10.2.0.6]}]}", get("/"), "deny"),
        ("source.ip notValues", "DENY", "{when: [{key: source.ip, notValues: [10.1.0.0/16]}]}", get("/"), "deny bookinfo/p"),
        ("remote.ip is the source here", "ALLOW", "{when: [{key: remote.ip, values: [10.2.0.5]}]}", get("/"), "allow bookinfo/p"),
        ("destination.ip is the VIP", "ALLOW", "{when: [{key: destination.ip, values: [10.96.0.20]}]}", get("/"), "allow bookinfo/p"),
        ("destination.port", "ALLOW", "{when: [{key: destination.port, values: ['9080']}]}", get("/"), "allow bookinfo/p"),
        ("every condition", "ALLOW", "{when: [{key: destination.port, values: ['9080']}, {key: source.namespace, values: [x]}]}", get("/"), "deny"),
        ("JWT claims: no JWT has none", "ALLOW", "{when: [{key: 'request.auth.claims[iss]', values: ['*']}]}", get("/"), "deny"),
        ("JWT claims: no JWT has none, for DENY too", "DENY", "{when: [{key: 'request.auth.claims[groups]', values: [admin]}]}", get("/"), "allow"),
        ("JWT claim notValues: absent is not a listed value", "DENY", "{when: [{key: 'request.auth.claims[iss]', notValues: [issuer]}]}", get("/"), "deny bookinfo/p"),
        ("requestPrincipals exact", "ALLOW", "{from: [{requestPrincipals: [iss/alice]}]}", jwt(ALICE), "allow bookinfo/p"),
        ("requestPrincipals, other", "ALLOW", "{from: [{requestPrincipals: [iss/bob]}]}", jwt(ALICE), "deny"),
        ("requestPrincipals prefix", "ALLOW", "{from: [{requestPrincipals: ['iss/*']}]}", jwt(ALICE), "allow bookinfo/p"),
        ("requestPrincipals DENY", "DENY", "{from: [{requestPrincipals: ['*/alice']}]}", jwt(ALICE), "deny bookinfo/p"),
        ("notRequestPrincipals '*' lets a JWT through", "DENY", "{from: [{notRequestPrincipals: ['*']}]}", jwt(ALICE), "allow"),
        ("notRequestPrincipals, matching", "ALLOW", "{from: [{notRequestPrincipals: [iss/alice]}]}", jwt(ALICE), "deny"),
        ("requestPrincipals and principals together", "ALLOW", "{from: [{requestPrincipals: ['*'], principals: [cluster.local/ns/other/sa/curl]}]}", jwt(ALICE), "deny"),
        ("request.auth.principal", "ALLOW", "{when: [{key: request.auth.principal, values: [iss/alice]}]}", jwt(ALICE), "allow bookinfo/p"),
        ("request.auth.audiences, one of a list", "ALLOW", "{when: [{key: request.auth.audiences, values: [ratings]}]}", jwt(ALICE), "allow bookinfo/p"),
        ("request.auth.audiences, a string", "ALLOW", "{when: [{key: request.auth.audiences, values: [web]}]}", jwt(r#"{"iss":"i","aud":"web"}"#), "allow bookinfo/p"),
        ("request.auth.presenter", "ALLOW", "{when: [{key: request.auth.presenter, values: [web-app]}]}", jwt(ALICE), "allow bookinfo/p"),
        ("request.auth.presenter, other", "ALLOW", "{when: [{key: request.auth.presenter, values: [cli]}]}", jwt(ALICE), "deny"),
        ("string claim", "ALLOW", "{when: [{key: 'request.auth.claims[iss]', values: [iss]}]}", jwt(ALICE), "allow bookinfo/p"),
        ("list claim: any item", "ALLOW", "{when: [{key: 'request.auth.claims[groups]', values: [admin]}]}", jwt(ALICE), "allow bookinfo/p"),
        ("list claim: none of the items", "ALLOW", "{when: [{key: 'request.auth.claims[groups]', values: [ops]}]}", jwt(ALICE), "deny"),
        ("list claim notValues: an item matches", "DENY", "{when: [{key: 'request.auth.claims[groups]', notValues: [dev]}]}", jwt(ALICE), "allow"),
        ("list claim notValues: no item matches", "DENY", "{when: [{key: 'request.auth.claims[groups]', notValues: [ops]}]}", jwt(ALICE), "deny bookinfo/p"),
        ("nested claim", "ALLOW", "{when: [{key: 'request.auth.claims[org][team]', values: [books]}]}", jwt(ALICE), "allow bookinfo/p"),
        ("nested claim, absent level", "ALLOW", "{when: [{key: 'request.auth.claims[org][site]', values: ['*']}]}", jwt(ALICE), "deny"),
        ("number claim as text", "ALLOW", "{when: [{key: 'request.auth.claims[level]', values: ['3']}]}", jwt(ALICE), "allow bookinfo/p"),
        ("malformed claim key: DENY fails closed", "DENY", "{when: [{key: 'request.auth.claims[groups', values: [x]}]}", jwt(ALICE), "deny bookinfo/p"),
        ("unknown request.auth key: ALLOW never matches", "ALLOW", "{when: [{key: request.auth.type, values: ['*']}]}", jwt(ALICE), "deny"),
        ("unknown key: ALLOW never matches", "ALLOW", "{when: [{key: connection.sni, values: ['*']}]}", get("/"), "deny"),
        ("unknown key: DENY matches", "DENY", "{when: [{key: experimental.envoy.filters.x, values: [y]}]}", get("/"), "deny bookinfo/p"),
        ("unknown key: DENY's other fields still apply", "DENY", "{to: [{paths: [/admin]}], when: [{key: connection.sni, values: [x]}]}", get("/"), "allow"),
        ("bad address: ALLOW fails closed", "ALLOW", "{when: [{key: source.ip, values: [not-an-ip]}]}", get("/"), "deny"),
        ("bad address: DENY fails closed", "DENY", "{when: [{key: source.ip, values: [10.0.0.0/99]}]}", get("/"), "deny bookinfo/p"),
        ("bad header name: DENY fails closed", "DENY", "{when: [{key: 'request.headers[bad name]', values: [x]}]}", get("/"), "deny bookinfo/p"),
    ];
    for (case, action, rule, req, want) in cases {
        assert_eq!(authorize(&one(action, rule), &req), want, "{case}");
    }
}

#[test]
fn istio_order_and_applicability() {
    let svc = "{kind: Service, name: reviews, namespace: bookinfo}";
    let pol = |name: &str, action: &str, target: &str, rules: &str, extra: &str| {
        format!("- {{name: {name}, namespace: bookinfo, targetRefs: [{target}], action: {action}, rules: {rules}{extra}}}\n")
    };
    let all = "[{}]";
    let admin = "[{to: [{paths: ['/admin*']}]}]";
    let dry = ", dryRun: true";
    let get = |target, path| Req::get(target, path);
    // (case, policies, request, expected)
    #[rustfmt::skip]
    let cases: Vec<(&str, String, Req, &str)> = vec![
        ("no policy", String::new(), get(REVIEWS, "/"), "none"),
        ("DENY beats ALLOW", pol("allow", "ALLOW", GATEWAY, all, "") + &pol("deny", "DENY", GATEWAY, admin, ""), get(REVIEWS, "/admin"), "deny bookinfo/deny"),
        ("ALLOW when DENY does not match", pol("allow", "ALLOW", GATEWAY, all, "") + &pol("deny", "DENY", GATEWAY, admin, ""), get(REVIEWS, "/"), "allow bookinfo/allow"),
        ("one ALLOW of several", pol("a", "ALLOW", GATEWAY, admin, "") + &pol("b", "ALLOW", GATEWAY, all, ""), get(REVIEWS, "/"), "allow bookinfo/b"),
        ("ALLOW without rules allows nothing", pol("a", "ALLOW", GATEWAY, "[]", ""), get(REVIEWS, "/"), "deny"),
        ("DENY without rules denies nothing", pol("d", "DENY", GATEWAY, "[]", ""), get(REVIEWS, "/"), "allow"),
        ("AUDIT is only reported", pol("audit", "AUDIT", GATEWAY, admin, ""), get(REVIEWS, "/admin"), "none audit=bookinfo/audit"),
        ("AUDIT not matching is not reported", pol("audit", "AUDIT", GATEWAY, admin, ""), get(REVIEWS, "/"), "none"),
        ("AUDIT alongside ALLOW", pol("audit", "AUDIT", GATEWAY, all, "") + &pol("a", "ALLOW", GATEWAY, all, ""), get(REVIEWS, "/"), "allow bookinfo/a audit=bookinfo/audit"),
        ("unknown action denies whatever its rules", pol("u", "REDIRECT_TO_MARS", GATEWAY, "[]", "") + &pol("a", "ALLOW", GATEWAY, all, ""), get(REVIEWS, "/"), "deny-unknown bookinfo/u"),
        ("dry-run DENY is reported, not enforced", pol("d", "DENY", GATEWAY, admin, dry), get(REVIEWS, "/admin"), "none dry=deny bookinfo/d"),
        ("dry-run DENY not matching", pol("d", "DENY", GATEWAY, admin, dry), get(REVIEWS, "/"), "none dry=allow"),
        ("dry-run ALLOW not matching", pol("a", "ALLOW", GATEWAY, admin, dry), get(REVIEWS, "/"), "none dry=deny"),
        ("dry-run ALLOW does not make ALLOW apply", pol("a", "ALLOW", GATEWAY, admin, dry) + &pol("d", "DENY", GATEWAY, admin, ""), get(REVIEWS, "/"), "allow dry=deny"),
        ("dry-run unknown action", pol("u", "NEW", GATEWAY, all, dry), get(REVIEWS, "/"), "none dry=deny-unknown bookinfo/u"),
        ("enforced and dry-run side by side", pol("a", "ALLOW", GATEWAY, all, "") + &pol("d", "DENY", GATEWAY, all, dry), get(REVIEWS, "/"), "allow bookinfo/a dry=deny bookinfo/d"),
        ("the waypoint class", pol("c", "DENY", "{kind: GatewayClass, name: istio-waypoint, namespace: istio-system}", all, ""), get(REVIEWS, "/"), "deny bookinfo/c"),
        ("another class", pol("c", "DENY", "{kind: GatewayClass, name: istio, namespace: istio-system}", all, ""), get(REVIEWS, "/"), "none"),
        ("another waypoint", pol("g", "DENY", "{kind: Gateway, name: other, namespace: bookinfo}", all, ""), get(REVIEWS, "/"), "none"),
        ("a same-named waypoint elsewhere", pol("g", "DENY", "{kind: Gateway, name: waypoint, namespace: other}", all, ""), get(REVIEWS, "/"), "none"),
        ("the target service", pol("s", "DENY", svc, all, ""), get(REVIEWS, "/"), "deny bookinfo/s"),
        ("another service", pol("s", "DENY", svc, all, ""), get("10.96.0.30:9080", "/"), "none"),
        ("a ServiceEntry", pol("s", "DENY", "{kind: ServiceEntry, name: api, namespace: bookinfo}", all, ""), get("240.240.0.1:80", "/"), "deny bookinfo/s"),
        ("service policies apply to the address of an endpoint (dialing the pod skips none)", pol("s", "DENY", svc, all, ""), get("10.1.0.22:9080", "/"), "deny bookinfo/s"),
        ("waypoint policies apply to a workload address", pol("g", "DENY", GATEWAY, all, ""), get("10.1.0.22:9080", "/"), "deny bookinfo/g"),
        ("a policy with several targets counts once", pol("s", "ALLOW", &format!("{GATEWAY}, {svc}"), admin, ""), get(REVIEWS, "/"), "deny"),
        ("selector policies are the agents'", "- {name: sel, namespace: bookinfo, selector: {app: reviews}, action: DENY, rules: [{}]}\n".to_owned(), get(REVIEWS, "/"), "none"),
    ];
    for (case, policies, req, want) in cases {
        let policies = if policies.is_empty() {
            "  []".to_owned()
        } else {
            policies
        };
        assert_eq!(authorize(&policies, &req), want, "{case}");
    }
}

#[test]
fn a_deny_answers_403_rbac_access_denied() {
    let t = table(
        "  []",
        &format!(
            "authorizationPolicies:\n{}",
            one("DENY", "{to: [{paths: ['/admin*']}]}")
        ),
    );
    let d = Req::get(REVIEWS, "/admin").with_view(&t, |v| t.authorize(v));
    let e = d.error().expect("denied");
    assert_eq!(
        e.response_parts(),
        (http::StatusCode::FORBIDDEN, "RBAC: access denied")
    );
    assert_eq!((e.flag, e.details), ("-", "rbac_access_denied"));
    assert_eq!(e.message, "denied by policy bookinfo/p");
    assert_eq!(d.verdict.policy(), Some("bookinfo/p"));
    let ok = Req::get(REVIEWS, "/").with_view(&t, |v| t.authorize(v));
    assert!(ok.error().is_none());
}

#[test]
fn templates_are_compiled() {
    #[rustfmt::skip]
    let cases = [
        ("/a/{*}", "/a/b", true),
        ("/a/{*}", "/a/", false),
        ("/a/{*}", "/a/b/c", false),
        ("/a/{**}", "/a/b/c", true),
        ("/a/{**}", "/a/", true),
        ("/{*}/x.{*}", "/d/x.json", true),
        ("/a.b/{*}", "/aXb/c", false),
        ("/a/{x}", "/a/{x}", true),
    ];
    for (pattern, path, want) in cases {
        assert_eq!(
            template(pattern).expect("compiles").is_match(path),
            want,
            "{pattern} {path}"
        );
    }
}

/// Opaque TCP: only the source and the port can be evaluated. A rule needing request
/// attributes never allows, and in a DENY policy matches on the rest (fail closed).
#[test]
fn tcp_connections_are_judged_on_what_they_show() {
    let req = Req::get(REVIEWS, "/");
    // (case, action, rule, expected)
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str)] = &[
        ("ALLOW on the principal", "ALLOW", "{from: [{principals: [cluster.local/ns/other/sa/sleep]}]}", "allow bookinfo/p"),
        ("ALLOW on another principal", "ALLOW", "{from: [{principals: [cluster.local/ns/other/sa/curl]}]}", "deny"),
        ("ALLOW needing a path never allows", "ALLOW", "{to: [{paths: [/]}]}", "deny"),
        ("ALLOW needing a header never allows", "ALLOW", "{when: [{key: 'request.headers[x]', values: [a]}]}", "deny"),
        ("DENY on a path denies TCP", "DENY", "{to: [{paths: [/admin]}]}", "deny bookinfo/p"),
        ("DENY on a path of another source does not", "DENY", "{from: [{principals: [cluster.local/ns/x/sa/y]}], to: [{paths: [/admin]}]}", "allow"),
        ("DENY on request principals denies TCP", "DENY", "{from: [{requestPrincipals: ['*']}]}", "deny bookinfo/p"),
        ("DENY on a port only", "DENY", "{to: [{ports: [9080]}]}", "deny bookinfo/p"),
        ("DENY on another port", "DENY", "{to: [{ports: [1]}]}", "allow"),
    ];
    for (case, action, rule, want) in cases {
        let t = table(
            "  []",
            &format!("authorizationPolicies:\n{}", one(action, rule)),
        );
        assert!(t.warnings().is_empty(), "{case}: {:?}", t.warnings());
        let target = req.target_in(&t);
        let source = req.source_in(&t);
        let d = t.authorize_tcp(&target, &source);
        assert_eq!(summary(&d), *want, "{case}");
    }
}

//! RequestAuthentication: JWT rules translated for the waypoints they are attached to, sent in
//! those waypoints' views only, and every field checked with the file, object and field named.

use mesh_common::api::config::ClientKind;
use mesh_common::model::{ClaimToHeader, JwtHeader, JwtRule};
use mesh_controller::controller::{Change, Controller, Published};
use mesh_controller::load::parse_yaml;
use mesh_controller::server::view::view;
use mesh_controller::translate::TranslateOptions;

fn load(yaml: &str) -> std::sync::Arc<Published> {
    let controller = Controller::new(TranslateOptions::default());
    controller
        .apply(vec![Change::ReplaceUnit {
            unit: "case.yaml".to_owned(),
            parsed: parse_yaml("case.yaml", yaml),
        }])
        .expect("apply");
    controller.current()
}

/// Namespace `apps` with waypoint `wp` (one instance) used by Service `web`; Service `plain`
/// without a waypoint.
const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: apps}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Pod
metadata: {name: wp-1, namespace: apps, labels: {gateway.networking.k8s.io/gateway-name: wp}}
spec: {nodeName: node-b, serviceAccountName: wp, containers: [{name: wp, image: mesh-waypoint}]}
status: {phase: Running, podIP: 10.244.2.5}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps, labels: {istio.io/use-waypoint: wp}}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}], selector: {app: web}}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: apps}
spec: {clusterIP: 10.96.0.13, ports: [{port: 80}]}
"#;

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"a","y":"b"}]}"#;

fn policy(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: apps}}\nspec: {spec}\n"
    )
}

/// `<object> <path>[ warning]: <message>` for every report.
fn reports(current: &Published) -> Vec<String> {
    current
        .errors
        .iter()
        .map(|e| {
            let object = e.object.as_ref().map(ToString::to_string);
            let warning = if e.warning { " warning" } else { "" };
            format!(
                "{} {}{warning}: {}",
                object.unwrap_or_default(),
                e.path,
                e.message
            )
        })
        .collect()
}

#[test]
fn every_field_is_translated_and_the_waypoint_gets_it() {
    let spec = format!(
        r#"
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: wp}}]
  jwtRules:
  - issuer: https://issuer.example
    audiences: [web, api]
    jwks: '{JWKS}'
    fromHeaders: [{{name: X-Token, prefix: "Bearer "}}, {{name: x-raw}}]
    fromParams: [access_token]
    fromCookies: [session]
    outputPayloadToHeader: X-Jwt-Payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{{header: x-sub, claim: sub}}]
    timeout: 5s
  - issuer: file-issuer
    jwksUri: file:///etc/mesh/jwks.json
  - issuer: http-issuer
    jwksUri: http://keys.auth:8080/jwks.json
"#
    );
    let current = load(&format!(
        "{CLUSTER}{}{}",
        policy("jwt", &spec),
        policy(
            "on-web",
            &format!("{{targetRef: {{kind: Service, group: \"\", name: web}}, jwtRules: [{{issuer: b, jwks: '{JWKS}'}}]}}")
        )
    ));
    assert_eq!(reports(&current), Vec::<String>::new());
    let ra = &current.snapshot.request_authentications;
    assert_eq!(ra.len(), 2);
    assert_eq!(ra[0].name, "jwt");
    assert_eq!(ra[0].target_refs[0].kind, "Gateway");
    assert_eq!(
        ra[0].jwt_rules,
        [
            JwtRule {
                issuer: "https://issuer.example".to_owned(),
                audiences: vec!["web".to_owned(), "api".to_owned()],
                jwks: Some(JWKS.to_owned()),
                jwks_uri: None,
                from_headers: vec![
                    JwtHeader {
                        name: "x-token".to_owned(),
                        prefix: "Bearer ".to_owned()
                    },
                    JwtHeader {
                        name: "x-raw".to_owned(),
                        prefix: String::new()
                    },
                ],
                from_params: vec!["access_token".to_owned()],
                from_cookies: vec!["session".to_owned()],
                output_payload_to_header: Some("x-jwt-payload".to_owned()),
                forward_original_token: true,
                output_claim_to_headers: vec![ClaimToHeader {
                    header: "x-sub".to_owned(),
                    claim: "sub".to_owned()
                }],
                timeout_ms: Some(5000),
            },
            JwtRule {
                issuer: "file-issuer".to_owned(),
                jwks_uri: Some("file:///etc/mesh/jwks.json".to_owned()),
                ..JwtRule::default()
            },
            JwtRule {
                issuer: "http-issuer".to_owned(),
                jwks_uri: Some("http://keys.auth:8080/jwks.json".to_owned()),
                ..JwtRule::default()
            },
        ]
    );
    let of = |kind, principal: &str| -> Vec<String> {
        let snapshot = view(&current.snapshot, &current.resources, kind, principal)
            .to_snapshot("v")
            .expect("decodes");
        snapshot
            .request_authentications
            .iter()
            .map(|r| r.name.clone())
            .collect()
    };
    assert_eq!(
        of(ClientKind::Waypoint, "waypoint/apps/wp"),
        ["jwt", "on-web"]
    );
    assert_eq!(
        of(ClientKind::Waypoint, "waypoint/apps/other"),
        Vec::<String>::new()
    );
    assert_eq!(of(ClientKind::Agent, "node-b"), Vec::<String>::new());
}

#[test]
fn what_cannot_be_applied_is_reported_with_its_field() {
    let gw = "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]";
    let rule = |fields: &str| format!("{{{gw}, jwtRules: [{{issuer: iss, {fields}}}]}}");
    let jwks = format!("jwks: '{JWKS}'");
    // (case, spec, report, kept in the model)
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str, bool)> = vec![
        ("selector: sidecars only", format!("{{selector: {{matchLabels: {{app: web}}}}, jwtRules: [{{issuer: iss, {jwks}}}]}}"),
         "RequestAuthentication apps/p spec.selector warning: not applied: the mesh applies RequestAuthentication at waypoints only", false),
        ("neither selector nor targets", format!("{{jwtRules: [{{issuer: iss, {jwks}}}]}}"),
         "RequestAuthentication apps/p spec.targetRefs warning: not applied: the mesh applies RequestAuthentication at waypoints only", false),
        ("selector and targets", format!("{{selector: {{matchLabels: {{app: web}}}}, {gw}}}"),
         "RequestAuthentication apps/p spec.selector: selector and targetRefs are mutually exclusive", false),
        ("target in another namespace", "{targetRefs: [{kind: Gateway, name: wp, namespace: other}]}".to_owned(),
         "RequestAuthentication apps/p spec.targetRefs[0].namespace: must be the policy's own namespace", false),
        ("target kind", "{targetRefs: [{kind: Pod, name: wp}]}".to_owned(),
         "RequestAuthentication apps/p spec.targetRefs[0].kind: unsupported target kind \"Pod\"", false),
        ("Service without a waypoint", format!("{{targetRefs: [{{kind: Service, name: plain}}], jwtRules: [{{issuer: iss, {jwks}}}]}}"),
         "RequestAuthentication apps/p spec.targetRefs[0] warning: not applied: no running waypoint serves Service plain", true),
        ("empty issuer", format!("{{{gw}, jwtRules: [{{issuer: '', {jwks}}}]}}"),
         "RequestAuthentication apps/p spec.jwtRules[0].issuer: must not be empty", false),
        ("jwks not JSON", rule("jwks: 'nope'"),
         "RequestAuthentication apps/p spec.jwtRules[0].jwks: not JSON", false),
        ("jwks without keys", rule("jwks: '{\"k\": 1}'"),
         "RequestAuthentication apps/p spec.jwtRules[0].jwks: not a JSON Web Key Set", false),
        ("https jwksUri not fetched", rule("jwksUri: 'https://issuer/keys'"),
         "RequestAuthentication apps/p spec.jwtRules[0].jwksUri warning: \"https://issuer/keys\": https is not fetched yet: tokens of issuer \"iss\" are rejected (401)", true),
        ("relative file", rule("jwksUri: 'file://keys.json'"),
         "RequestAuthentication apps/p spec.jwtRules[0].jwksUri: \"file://keys.json\": a file:// URI needs an absolute path", false),
        ("other scheme", rule("jwksUri: 'ftp://x/keys'"),
         "RequestAuthentication apps/p spec.jwtRules[0].jwksUri: \"ftp://x/keys\": expected an http://, https:// or file:// URI", false),
        ("no keys at all", rule("audiences: [a]"),
         "RequestAuthentication apps/p spec.jwtRules[0].jwksUri warning: neither jwks nor jwksUri given", true),
        ("both key sources", rule(&format!("{jwks}, jwksUri: 'file:///k'")),
         "RequestAuthentication apps/p spec.jwtRules[0].jwksUri warning: not used: jwks is given inline", true),
        ("header name", rule(&format!("{jwks}, fromHeaders: [{{name: 'bad header'}}]")),
         "RequestAuthentication apps/p spec.jwtRules[0].fromHeaders[0].name: invalid header name \"bad header\"", false),
        ("claim header name", rule(&format!("{jwks}, outputClaimToHeaders: [{{header: '', claim: sub}}]")),
         "RequestAuthentication apps/p spec.jwtRules[0].outputClaimToHeaders[0].header: invalid header name", false),
        ("empty claim", rule(&format!("{jwks}, outputClaimToHeaders: [{{header: x, claim: ''}}]")),
         "RequestAuthentication apps/p spec.jwtRules[0].outputClaimToHeaders[0].claim: must not be empty", false),
        ("empty param", rule(&format!("{jwks}, fromParams: ['']")),
         "RequestAuthentication apps/p spec.jwtRules[0].fromParams[0]: must not be empty", false),
        ("timeout", rule(&format!("{jwks}, timeout: soon")),
         "RequestAuthentication apps/p spec.jwtRules[0].timeout: invalid duration \"soon\"", false),
        ("unknown field", rule(&format!("{jwks}, jwksUriz: x")),
         "jwksUriz", false),
    ];
    for (case, spec, want, kept) in cases {
        let current = load(&format!("{CLUSTER}{}", policy("p", &spec)));
        let got = reports(&current);
        assert_eq!(got.len(), 1, "{case}: {got:#?}");
        assert!(got[0].contains(want), "{case}: {got:#?}");
        assert_eq!(
            current.snapshot.request_authentications.len(),
            usize::from(kept),
            "{case}"
        );
    }
}

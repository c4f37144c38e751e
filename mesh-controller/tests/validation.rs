//! One case per kind of configuration error: each must name the file, the object and the field
//! path, and must not stop the valid objects around it.

use mesh_controller::controller::{Change, Controller};
use mesh_controller::error::ConfigError;
use mesh_controller::load::parse_yaml;
use mesh_controller::translate::TranslateOptions;
use rstest::rstest;

/// Valid objects every case starts from: a service with pods and subsets.
const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  clusterIP: 10.96.0.13
  ports: [{port: 9080}]
  selector: {app: reviews}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec: {nodeName: node-a, containers: [{name: reviews, image: reviews}]}
status: {phase: Running, podIP: 10.244.1.12}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"#;

const VS_HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n  hosts: [reviews]\n";

fn vs(http: &str) -> String {
    format!("{VS_HEAD}  http:\n{http}")
}

/// Loads BASE plus the case file and returns the errors.
fn errors_for(case: &str) -> (Vec<ConfigError>, mesh_common::model::Snapshot) {
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
    (current.errors.to_vec(), (*current.snapshot).clone())
}

#[rstest]
#[case::bad_duration(
    vs("  - timeout: 10 seconds\n    route: [{destination: {host: reviews}}]\n"),
    "VirtualService default/bad",
    "spec.http[0].timeout",
    "invalid duration"
)]
#[case::unknown_field(
    vs("  - route: [{destination: {hots: reviews}}]\n"),
    "VirtualService default/bad",
    "spec.http[0].route[0].destination.hots",
    "unknown field `hots`"
)]
#[case::unknown_top_level_field(
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspecs: {}\n".to_owned(),
    "VirtualService default/bad", "specs", "unknown field `specs`")]
#[case::wrong_type(
    vs("  - route: [{destination: {host: reviews}, weight: heavy}]\n"),
    "VirtualService default/bad",
    "spec.http[0].route[0].weight",
    "invalid type"
)]
#[case::missing_host(
    vs("  - route: [{destination: {host: nope}}]\n"),
    "VirtualService default/bad",
    "spec.http[0].route[0].destination.host",
    "not found"
)]
#[case::missing_subset(
    vs("  - route: [{destination: {host: reviews, subset: v9}}]\n"),
    "VirtualService default/bad",
    "spec.http[0].route[0].destination.subset",
    "subset \"v9\""
)]
#[case::bad_weight(
    vs("  - route: [{destination: {host: reviews}, weight: -5}]\n"),
    "VirtualService default/bad",
    "spec.http[0].route[0].weight",
    "must be 0-100"
)]
#[case::bad_port(
    vs("  - route: [{destination: {host: reviews, port: {number: 70000}}}]\n"),
    "VirtualService default/bad",
    "spec.http[0].route[0].destination.port.number",
    "invalid port"
)]
#[case::ambiguous_string_match(
    vs("  - match: [{uri: {exact: /a, prefix: /b}}]\n    route: [{destination: {host: reviews}}]\n"),
    "VirtualService default/bad", "spec.http[0].match[0].uri", "exactly one")]
#[case::bad_abort_status(
    vs("  - fault: {abort: {httpStatus: 700}}\n    route: [{destination: {host: reviews}}]\n"),
    "VirtualService default/bad",
    "spec.http[0].fault.abort.httpStatus",
    "invalid HTTP status"
)]
#[case::bad_fault_percentage(
    vs("  - fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}\n    route: [{destination: {host: reviews}}]\n"),
    "VirtualService default/bad", "spec.http[0].fault.delay.percentage.value", "invalid percentage")]
#[case::dr_missing_host(
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad}\nspec: {host: ghost}\n".to_owned(),
    "DestinationRule default/bad", "spec.host", "not found")]
#[case::dr_bad_load_balancer(
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad}\nspec:\n  host: reviews\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n".to_owned(),
    "DestinationRule default/bad", "spec.trafficPolicy.loadBalancer.simple", "invalid load balancer")]
#[case::dr_bad_outlier_interval(
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad}\nspec:\n  host: reviews\n  trafficPolicy: {outlierDetection: {interval: soon}}\n".to_owned(),
    "DestinationRule default/bad", "spec.trafficPolicy.outlierDetection.interval", "invalid duration")]
#[case::dr_duplicate_subset(
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad}\nspec:\n  host: reviews\n  subsets: [{name: a}, {name: a}]\n".to_owned(),
    "DestinationRule default/bad", "spec.subsets[1].name", "duplicate subset")]
#[case::ap_bad_action(
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad}\nspec: {action: PERMIT}\n".to_owned(),
    "AuthorizationPolicy default/bad", "spec.action", "unknown variant `PERMIT`")]
#[case::ap_bad_port(
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad}\nspec:\n  rules: [{to: [{operation: {ports: [http]}}]}]\n".to_owned(),
    "AuthorizationPolicy default/bad", "spec.rules[0].to[0].operation.ports[0]", "invalid port")]
#[case::ap_bad_cidr(
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad}\nspec:\n  rules: [{from: [{source: {ipBlocks: [10.0.0.0/40]}}]}]\n".to_owned(),
    "AuthorizationPolicy default/bad", "spec.rules[0].from[0].source.ipBlocks[0]", "invalid IP address or CIDR")]
#[case::ap_unknown_source_field(
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad}\nspec:\n  rules: [{from: [{source: {principal: [x]}}]}]\n".to_owned(),
    "AuthorizationPolicy default/bad", "spec.rules[0].from[0].source.principal", "unknown field `principal`")]
#[case::pa_bad_mode(
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: bad}\nspec: {mtls: {mode: MAYBE}}\n".to_owned(),
    "PeerAuthentication default/bad", "spec.mtls.mode", "unknown variant `MAYBE`")]
#[case::pa_bad_port_key(
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: bad}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  portLevelMtls: {http: {mode: STRICT}}\n".to_owned(),
    "PeerAuthentication default/bad", "spec.portLevelMtls.http", "invalid port")]
#[case::httproute_missing_backend(
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad}\nspec:\n  parentRefs: [{kind: Service, group: \"\", name: reviews}]\n  rules: [{backendRefs: [{name: ghost, port: 9080}]}]\n".to_owned(),
    "HTTPRoute default/bad", "spec.rules[0].backendRefs[0].name", "Service default/ghost not found")]
#[case::httproute_bad_path_type(
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad}\nspec:\n  parentRefs: [{kind: Service, group: \"\", name: reviews}]\n  rules: [{matches: [{path: {type: Glob, value: /x}}], backendRefs: [{name: reviews}]}]\n".to_owned(),
    "HTTPRoute default/bad", "spec.rules[0].matches[0].path.type", "invalid path match type")]
#[case::httproute_missing_parent(
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad}\nspec:\n  parentRefs: [{name: no-such-gateway}]\n".to_owned(),
    "HTTPRoute default/bad", "spec.parentRefs[0].name", "Gateway default/no-such-gateway not found")]
#[case::pod_bad_container_port(
    "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers: [{name: c, ports: [{containerPort: eighty}]}]\n".to_owned(),
    "Pod default/bad", "spec.containers[0].ports[0].containerPort", "invalid type")]
#[case::service_bad_port(
    "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 0}]}\n".to_owned(),
    "Service default/bad", "spec.ports[0].port", "invalid port")]
#[case::pod_missing_waypoint(
    "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, labels: {istio.io/use-waypoint: ghost}}\nspec: {containers: [{name: c}]}\nstatus: {podIP: 10.244.1.99}\n".to_owned(),
    "Pod default/bad", "metadata.labels[istio.io/use-waypoint]", "waypoint Gateway default/ghost not found")]
#[case::missing_name(
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {namespace: default}\nspec: {hosts: [reviews]}\n".to_owned(),
    "VirtualService default/", "metadata.name", "missing or empty")]
fn each_error_names_file_object_and_field(
    #[case] case: String,
    #[case] object: &str,
    #[case] path: &str,
    #[case] message: &str,
) {
    let (errors, snapshot) = errors_for(&case);
    assert_eq!(
        errors.len(),
        1,
        "exactly one error expected, got {errors:#?}"
    );
    let error = &errors[0];
    assert!(
        error.origin.starts_with("case.yaml"),
        "origin names the file: {error}"
    );
    let named = error
        .object
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert_eq!(named, object, "object in {error}");
    assert_eq!(error.path, path, "field path in {error}");
    assert!(
        error.message.contains(message),
        "message {:?} should contain {message:?}",
        error.message
    );
    assert!(
        error.to_string().contains(object),
        "display names the object: {error}"
    );
    // The base objects are untouched by the bad one.
    assert!(snapshot.service("default", "reviews").is_some());
    assert!(snapshot.workload("default/reviews-v1").is_some());
    assert!(snapshot
        .destination_policies
        .iter()
        .any(|d| d.name == "reviews"));
}

#[rstest]
#[case::unknown_istio_kind(
    "apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: x}\n",
    "kind",
    "unknown kind VirtualServce"
)]
#[case::not_a_mapping("- just\n- a list\n", "", "must be a mapping")]
#[case::no_kind(
    "apiVersion: v1\nmetadata: {name: x}\n",
    "",
    "missing apiVersion or kind"
)]
#[case::invalid_yaml(
    "apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n",
    "",
    "invalid YAML"
)]
fn document_errors_name_file_and_document(
    #[case] case: &str,
    #[case] path: &str,
    #[case] message: &str,
) {
    let (errors, _) = errors_for(case);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].origin, "case.yaml (document 1)");
    assert_eq!(errors[0].path, path);
    assert!(
        errors[0].message.contains(message),
        "{:?}",
        errors[0].message
    );
}

#[test]
fn one_bad_object_never_stops_the_good_ones_in_the_same_file() {
    let case = format!(
        "{}---\n{}---\n{}",
        vs("  - route: [{destination: {host: reviews, port: {number: 70000}}}]\n"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: good}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews, subset: v1}}]}]\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: also-good}\nspec: {nodeName: node-b, containers: [{name: c}]}\nstatus: {podIP: 10.244.2.2}\n"
    );
    let (errors, snapshot) = errors_for(&case);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].origin, "case.yaml (document 1)");
    assert!(snapshot.routes.iter().any(|r| r.name == "good"));
    assert!(!snapshot.routes.iter().any(|r| r.name == "bad"));
    assert!(snapshot.workload("default/also-good").is_some());
}

#[test]
fn duplicate_objects_across_files_are_reported_and_the_first_kept() {
    let (errors, snapshot) = errors_for(
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {clusterIP: 10.96.9.9, ports: [{port: 1}]}\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0]
        .message
        .contains("duplicate object, already defined in base.yaml"));
    let reviews = snapshot.service("default", "reviews").expect("kept");
    assert_eq!(reviews.ports[0].port, 9080);
}

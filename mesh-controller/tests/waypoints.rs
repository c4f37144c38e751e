//! Declaring and using waypoints: which Services and pods get a waypoint (`istio.io/use-waypoint`
//! on the object or its namespace, `istio.io/use-waypoint-namespace`, `none`, and the
//! waypoint's `istio.io/waypoint-for`), what is reported for them, what `/errors` no longer
//! reports once the waypoint has an instance, and what a waypoint's config stream carries.

use mesh_common::api::config::ClientKind;
use mesh_controller::controller::{Change, Controller, Published};
use mesh_controller::load::parse_yaml;
use mesh_controller::server::view::view;
use mesh_controller::translate::TranslateOptions;
use rstest::rstest;

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

/// A namespace (with `ns_labels`), waypoint `wp` (Gateway labels `gw_labels`; an instance pod
/// when `instance`), Service `web` (labels `svc_labels`) and its pod `web-1` (`pod_labels`).
fn cluster(
    ns_labels: &str,
    gw_labels: &str,
    svc_labels: &str,
    pod_labels: &str,
    instance: bool,
) -> String {
    let mut yaml = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: apps, labels: {{istio.io/dataplane-mode: ambient, {ns_labels}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: wp, namespace: apps, labels: {{{gw_labels}}}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: apps, labels: {{{svc_labels}}}}}
spec:
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 80, targetPort: 8080}}]
  selector: {{app: web}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: apps, labels: {{app: web, {pod_labels}}}}}
spec: {{nodeName: node-a, containers: [{{name: web, image: web}}]}}
status: {{phase: Running, podIP: 10.244.1.10}}
"#
    );
    if instance {
        yaml.push_str(
            r#"---
apiVersion: v1
kind: Pod
metadata: {name: wp-1, namespace: apps, labels: {gateway.networking.k8s.io/gateway-name: wp}}
spec: {nodeName: node-b, serviceAccountName: wp, containers: [{name: wp, image: mesh-waypoint}]}
status: {phase: Running, podIP: 10.244.2.5}
"#,
        );
    }
    yaml
}

const USE: &str = "istio.io/use-waypoint: wp";

#[rstest]
#[case::service_label_default_for("", "", USE, "", true, false, None)]
#[case::service_label_for_service("", "istio.io/waypoint-for: service", USE, "", true, false, None)]
#[case::service_label_for_all("", "istio.io/waypoint-for: all", USE, "", true, false, None)]
#[case::service_label_for_workload(
    "", "istio.io/waypoint-for: workload", USE, "", false, false,
    Some("Service apps/web: metadata.labels[istio.io/use-waypoint]: warning: waypoint apps/wp is for workload traffic")
)]
#[case::service_label_for_none(
    "", "istio.io/waypoint-for: none", USE, "", false, false,
    Some("Service apps/web: metadata.labels[istio.io/use-waypoint]: warning: waypoint apps/wp is for none traffic")
)]
#[case::pod_label_for_workload("", "istio.io/waypoint-for: workload", "", USE, false, true, None)]
#[case::pod_label_for_all("", "istio.io/waypoint-for: all", "", USE, false, true, None)]
#[case::pod_label_for_service(
    "", "", "", USE, false, false,
    Some("Pod apps/web-1: metadata.labels[istio.io/use-waypoint]: warning: waypoint apps/wp is for service traffic")
)]
#[case::namespace_label_for_service(USE, "", "", "", true, false, None)]
#[case::namespace_label_for_workload(
    USE,
    "istio.io/waypoint-for: workload",
    "",
    "",
    false,
    true,
    None
)]
#[case::namespace_label_for_all(USE, "istio.io/waypoint-for: all", "", "", true, true, None)]
#[case::namespace_label_for_none(
    USE, "istio.io/waypoint-for: none", "", "", false, false,
    Some("Namespace apps: metadata.labels[istio.io/use-waypoint]: warning: waypoint apps/wp is for none traffic")
)]
#[case::service_opts_out(USE, "", "istio.io/use-waypoint: none", "", false, false, None)]
#[case::pod_opts_out(
    USE,
    "istio.io/waypoint-for: all",
    "",
    "istio.io/use-waypoint: none",
    true,
    false,
    None
)]
#[case::invalid_waypoint_for(
    "", "istio.io/waypoint-for: pods", USE, "", true, false,
    Some("Gateway.gateway.networking.k8s.io apps/wp: metadata.labels[istio.io/waypoint-for]: warning: invalid value \"pods\"")
)]
fn waypoint_for_decides_what_a_label_assigns(
    #[case] ns_labels: &str,
    #[case] gw_labels: &str,
    #[case] svc_labels: &str,
    #[case] pod_labels: &str,
    #[case] service_gets_it: bool,
    #[case] pod_gets_it: bool,
    #[case] report: Option<&str>,
) {
    let current = load(&cluster(ns_labels, gw_labels, svc_labels, pod_labels, true));
    let s = &current.snapshot;
    let service = s.service("apps", "web").expect("service");
    let pod = s.workload("apps/web-1").expect("pod");
    assert_eq!(service.waypoint.is_some(), service_gets_it, "service");
    assert_eq!(pod.waypoint.is_some(), pod_gets_it, "pod");
    let errors: Vec<String> = current.errors.iter().map(ToString::to_string).collect();
    match report {
        None => assert!(errors.is_empty(), "{errors:#?}"),
        Some(want) => {
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert!(errors[0].starts_with("case.yaml (document "), "{errors:#?}");
            assert!(errors[0].contains(want), "{errors:#?}");
        }
    }
}

#[test]
fn a_label_naming_another_namespace_or_a_non_waypoint_gateway() {
    let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shared}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: shared}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: apps}
spec: {gatewayClassName: istio, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: apps, labels: {istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: shared}}
spec: {clusterIP: 10.96.0.11, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: apps, labels: {istio.io/use-waypoint: ingress}}
spec: {clusterIP: 10.96.0.12, ports: [{port: 80}]}
"#;
    let current = load(yaml);
    let a = current.snapshot.service("apps", "a").expect("a");
    let wp = a.waypoint.as_ref().expect("waypoint in another namespace");
    assert_eq!((wp.namespace.as_str(), wp.name.as_str()), ("shared", "wp"));
    assert!(current
        .snapshot
        .service("apps", "b")
        .expect("b")
        .waypoint
        .is_none());
    let messages: Vec<String> = current.errors.iter().map(ToString::to_string).collect();
    assert!(
        messages.iter().any(|m| m.contains("Service apps/b: metadata.labels[istio.io/use-waypoint]: Gateway apps/ingress is not a waypoint (gatewayClassName \"istio\"")),
        "{messages:#?}"
    );
    // shared/wp has no instance: its assignment is reported as unenforced.
    assert!(
        messages
            .iter()
            .any(|m| m.contains("Service apps/a uses waypoint shared/wp: no waypoint runs")),
        "{messages:#?}"
    );
}

const POLICIES: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: on-service, namespace: apps}
spec: {targetRefs: [{kind: Service, group: "", name: web}], action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: on-gateway, namespace: apps}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}], action: ALLOW, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: on-class, namespace: istio-system}
spec: {targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}], action: DENY, rules: [{to: [{operation: {methods: [TRACE]}}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: apps}
spec: {clusterIP: 10.96.0.13, ports: [{port: 80}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: on-plain, namespace: apps}
spec: {targetRefs: [{kind: Service, group: "", name: plain}], action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: selector, namespace: apps}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
"#;

fn reports(current: &Published) -> Vec<String> {
    let mut out: Vec<String> = current
        .errors
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.object
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                e.path
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn without_an_instance_what_the_waypoint_would_enforce_is_reported() {
    let current = load(&format!("{}{POLICIES}", cluster("", "", USE, "", false)));
    assert_eq!(
        reports(&current),
        [
            "AuthorizationPolicy apps/on-gateway spec.targetRefs[0]",
            "AuthorizationPolicy apps/on-plain spec.targetRefs[0]",
            "AuthorizationPolicy apps/on-service spec.targetRefs[0]",
            "AuthorizationPolicy istio-system/on-class spec.targetRefs[0]",
            "Service apps/web metadata.labels[istio.io/use-waypoint]",
        ]
    );
}

#[test]
fn with_an_instance_only_what_no_waypoint_enforces_is_reported() {
    let current = load(&format!("{}{POLICIES}", cluster("", "", USE, "", true)));
    assert_eq!(
        reports(&current),
        ["AuthorizationPolicy apps/on-plain spec.targetRefs[0]"]
    );
    let wp = current.waypoints.get("apps", "wp").expect("declared");
    assert_eq!(wp.instances.len(), 1);
    assert_eq!(wp.instances[0].service_account, "wp");
    let instance = current
        .snapshot
        .workload("apps/wp-1")
        .expect("instance workload");
    assert!(!instance.meshed, "waypoint instances are not captured");
    assert!(instance.waypoint.is_none());
}

#[test]
fn a_waypoint_gets_routes_and_the_policies_attached_to_it() {
    let routes = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public, namespace: apps}
spec: {hosts: [web], http: [{route: [{destination: {host: web}}]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private, namespace: apps}
spec: {hosts: [web], exportTo: ["."], http: [{route: [{destination: {host: web}}]}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: other}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
"#;
    let current = load(&format!(
        "{}{POLICIES}{routes}",
        cluster("", "", USE, "", true)
    ));
    let names = |principal: &str| {
        let snapshot = view(
            &current.snapshot,
            &current.resources,
            ClientKind::Waypoint,
            principal,
        )
        .to_snapshot("v")
        .expect("decodes");
        let mut policies: Vec<String> = snapshot
            .authorization_policies
            .iter()
            .map(|p| p.name.clone())
            .collect();
        policies.sort();
        let mut routes: Vec<String> = snapshot.routes.iter().map(|r| r.name.clone()).collect();
        routes.sort();
        (
            policies,
            routes,
            snapshot.services.len(),
            snapshot.peer_authentications.len(),
        )
    };
    let (policies, routes, services, _) = names("waypoint/apps/wp");
    assert_eq!(policies, ["on-class", "on-gateway", "on-service"]);
    assert_eq!(routes, ["private", "public"]);
    assert_eq!(services, 2);
    let (policies, routes, _, _) = names("waypoint/other/wp");
    assert_eq!(
        policies,
        ["on-class"],
        "other/wp serves nothing but gets the class's policies"
    );
    assert_eq!(
        routes,
        ["public"],
        "exportTo: . hides the route from other namespaces"
    );
    let (policies, routes, services, _) = names("node-a");
    assert!(
        policies.is_empty() && routes.is_empty() && services == 0,
        "a node principal never gets a waypoint view"
    );
}

#[test]
fn a_waypoint_gets_tcp_and_tls_routes_for_its_hosts() {
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp-web, namespace: apps}
spec: {parentRefs: [{group: "", kind: Service, name: web}], rules: [{backendRefs: [{name: web, port: 80}]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-web, namespace: apps}
spec: {hosts: [web.apps.svc.cluster.local], tls: [{match: [{sniHosts: [web.apps.svc.cluster.local]}], route: [{destination: {host: web}}]}]}
"#;
    let current = load(&format!("{}{routes}", cluster("", "", USE, "", true)));
    let snapshot = view(
        &current.snapshot,
        &current.resources,
        ClientKind::Waypoint,
        "waypoint/apps/wp",
    )
    .to_snapshot("v")
    .expect("decodes");
    let mut got: Vec<(String, usize, usize)> = snapshot
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.tcp.len(), r.tls.len()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("tcp-web".to_owned(), 1, 0), ("tls-web".to_owned(), 0, 1)]
    );
}

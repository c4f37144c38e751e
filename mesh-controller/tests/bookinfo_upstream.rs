//! Bookinfo's own routing files (`tests/data/bookinfo-upstream`, verbatim copies of Istio's
//! samples) on top of the Bookinfo cluster of `tests/data/bookinfo`: each loads without an
//! error, translates into the routes Istio's tasks describe, and what cannot apply to waypoints
//! yet (the ingress gateway files) is accepted with a warning naming the field.

use std::path::{Path, PathBuf};

use mesh_common::model::{Route, RouteKind, Snapshot, StringMatch};
use mesh_controller::controller::{Change, Controller};
use mesh_controller::load::parse_yaml;
use mesh_controller::translate::TranslateOptions;

const FQDN: &str = "default.svc.cluster.local";

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// The waypoint `reviews` uses, as `istioctl waypoint apply` writes it (the cluster's
/// `waypoint-5d9c7c8b9-x2x7q` pod is its instance).
const WAYPOINT: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\n  labels: {istio.io/waypoint-for: service}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n";

/// The cluster, its waypoint and one upstream file: the model and every message.
fn load(upstream: &str) -> (Snapshot, Vec<String>) {
    let controller = Controller::new(TranslateOptions::default());
    let files = [
        "bookinfo/00-cluster.yaml",
        "bookinfo/01-pods.yaml",
        "bookinfo/destination-rule-all.yaml",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("bookinfo-upstream/{upstream}")]);
    let mut changes: Vec<Change> = files
        .map(|f| {
            let text = std::fs::read_to_string(data(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            Change::ReplaceUnit {
                unit: f.clone(),
                parsed: parse_yaml(&f, &text),
            }
        })
        .collect();
    changes.push(Change::ReplaceUnit {
        unit: "waypoint.yaml".to_owned(),
        parsed: parse_yaml("waypoint.yaml", WAYPOINT),
    });
    controller.apply(changes).expect("apply");
    let current = controller.current();
    let messages = current.errors.iter().map(ToString::to_string).collect();
    ((*current.snapshot).clone(), messages)
}

fn reviews(s: &Snapshot, kind: RouteKind) -> &Route {
    s.routes
        .iter()
        .find(|r| r.name == "reviews" && r.kind == kind)
        .unwrap_or_else(|| panic!("reviews {kind:?} route: {:#?}", s.routes))
}

fn subsets(route: &Route, rule: usize) -> Vec<(Option<&str>, u32)> {
    route.rules[rule]
        .destinations
        .iter()
        .map(|d| (d.subset.as_deref(), d.weight))
        .collect()
}

#[test]
fn jason_goes_to_reviews_v2_and_everyone_else_to_v1() {
    let (s, messages) = load("networking/virtual-service-reviews-test-v2.yaml");
    assert!(messages.is_empty(), "{messages:#?}");
    let route = reviews(&s, RouteKind::VirtualService);
    assert_eq!(route.hosts, vec![format!("reviews.{FQDN}")]);
    assert_eq!(route.rules.len(), 2);
    assert_eq!(
        route.rules[0].matches[0].headers.get("end-user"),
        Some(&StringMatch::Exact("jason".to_owned()))
    );
    assert_eq!(subsets(route, 0), [(Some("v2"), 100)]);
    assert!(route.rules[1].matches.is_empty(), "the default rule");
    assert_eq!(subsets(route, 1), [(Some("v1"), 100)]);
}

#[test]
fn ninety_ten_over_subsets() {
    let (s, messages) = load("networking/virtual-service-reviews-90-10.yaml");
    assert!(messages.is_empty(), "{messages:#?}");
    let route = reviews(&s, RouteKind::VirtualService);
    assert_eq!(subsets(route, 0), [(Some("v1"), 90), (Some("v2"), 10)]);
    let dr = s
        .destination_policies
        .iter()
        .find(|d| d.name == "reviews")
        .expect("reviews DestinationRule");
    let names: Vec<&str> = dr.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["v1", "v2", "v3"]);
}

#[test]
fn ninety_ten_over_services_with_the_gateway_api() {
    let (s, messages) = load("gateway-api/route-reviews-90-10.yaml");
    assert!(messages.is_empty(), "{messages:#?}");
    let route = reviews(&s, RouteKind::HttpRoute);
    assert_eq!(route.hosts, vec![format!("reviews.{FQDN}")]);
    let dests: Vec<(String, Option<u16>, u32)> = route.rules[0]
        .destinations
        .iter()
        .map(|d| (d.host.clone(), d.port, d.weight))
        .collect();
    assert_eq!(
        dests,
        [
            (format!("reviews-v1.{FQDN}"), Some(9080), 90),
            (format!("reviews-v2.{FQDN}"), Some(9080), 10)
        ]
    );
    assert_eq!(
        route.rules[0].matches[0].port,
        Some(9080),
        "parentRefs[0].port binds the route to the service port"
    );
}

#[test]
fn a_service_parent_without_a_group_is_the_core_service() {
    let (s, messages) = load("gateway-api/route-reviews-v1.yaml");
    assert!(messages.is_empty(), "{messages:#?}");
    let route = reviews(&s, RouteKind::HttpRoute);
    assert_eq!(route.hosts, vec![format!("reviews.{FQDN}")]);
    assert_eq!(
        route.rules[0].destinations[0].host,
        format!("reviews-v1.{FQDN}")
    );
}

#[test]
fn the_ingress_files_are_accepted_and_reported_as_not_applied() {
    let (s, messages) = load("gateway-api/bookinfo-gateway.yaml");
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].starts_with("bookinfo-upstream/gateway-api/bookinfo-gateway.yaml (document 2): HTTPRoute default/bookinfo: spec.parentRefs[0]: warning: Gateway default/bookinfo-gateway (class \"istio\") is an ingress gateway: not applied"),
        "{messages:#?}"
    );
    assert!(s.routes.iter().all(|r| r.name != "bookinfo"));
    let (s, messages) = load("networking/bookinfo-gateway.yaml");
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].contains("VirtualService default/bookinfo: spec.gateways: warning: bound to gateways [\"bookinfo-gateway\"] only"),
        "{messages:#?}"
    );
    assert!(s.routes.iter().all(|r| r.name != "bookinfo"));
}

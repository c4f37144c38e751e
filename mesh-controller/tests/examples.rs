//! Loads the real-world Istio and Gateway API examples in `tests/data/bookinfo` and checks the
//! translated model field by field.

use std::path::Path;
use std::sync::Arc;

use mesh_common::model::{
    AuthorizationAction, LoadBalancer, PeerAuthMode, RouteKind, Snapshot, StringMatch,
};
use mesh_controller::controller::{Controller, Published};
use mesh_controller::source::dir::DirSource;
use mesh_controller::translate::TranslateOptions;

const FQDN: &str = "default.svc.cluster.local";

fn load() -> Arc<Published> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bookinfo");
    let controller = Controller::new(TranslateOptions::default());
    DirSource::new(&dir, controller.clone())
        .scan()
        .expect("example directory loads");
    controller.current()
}

/// The examples produce no report: `reviews` uses a waypoint, and the waypoint has an instance
/// (pod `waypoint-5d9c7c8b9-x2x7q`) to carry its traffic.
fn assert_no_errors(published: &Published) {
    assert!(
        published.errors.is_empty(),
        "unexpected errors: {:#?}",
        published.errors
    );
}

fn snapshot() -> Arc<Snapshot> {
    let published = load();
    assert_no_errors(&published);
    published.snapshot.clone()
}

#[test]
fn examples_load_without_errors_and_ignore_other_kinds() {
    let published = load();
    assert_no_errors(&published);
    assert_eq!(
        *published.ignored,
        vec!["Deployment productpage-v1".to_owned()]
    );
    assert_eq!(published.snapshot.version, published.version);
    assert_eq!(published.version.len(), 16);
}

#[test]
fn workloads_have_identity_node_addresses_and_mesh_membership() {
    let s = snapshot();
    assert_eq!(s.workloads.len(), 8);
    let pp = s
        .workload("default/productpage-v1")
        .expect("productpage workload");
    assert_eq!(pp.node, "node-a");
    assert_eq!(
        pp.addresses,
        vec!["10.244.1.10".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert!(pp.meshed, "namespace label enrolls the pod");
    assert_eq!(
        pp.identity("cluster.local").to_string(),
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    let httpbin = s.workload("default/httpbin").expect("httpbin workload");
    assert!(
        !httpbin.meshed,
        "pod label dataplane-mode=none overrides the namespace"
    );
    let waypoint = s
        .workload("default/waypoint-5d9c7c8b9-x2x7q")
        .expect("waypoint pod");
    assert!(!waypoint.meshed, "waypoint pods are not captured");
}

#[test]
fn services_have_vips_ports_endpoints_and_waypoints() {
    let s = snapshot();
    let reviews = s.service("default", "reviews").expect("reviews service");
    assert_eq!(reviews.hostname, format!("reviews.{FQDN}"));
    assert_eq!(
        reviews.vips,
        vec!["10.96.0.13".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(reviews.ports.len(), 1);
    assert_eq!(reviews.ports[0].port, 9080);
    let mut endpoints: Vec<&str> = reviews
        .endpoints
        .iter()
        .map(|e| e.workload_uid.as_str())
        .collect();
    endpoints.sort();
    assert_eq!(
        endpoints,
        [
            "default/reviews-v1",
            "default/reviews-v2",
            "default/reviews-v3"
        ]
    );
    let waypoint = reviews
        .waypoint
        .as_ref()
        .expect("reviews uses the waypoint");
    assert_eq!(
        (waypoint.namespace.as_str(), waypoint.name.as_str()),
        ("default", "waypoint")
    );
    assert_eq!(
        waypoint.addresses,
        vec!["10.96.0.20".parse::<std::net::IpAddr>().expect("ip")]
    );
    let v1 = s.service("default", "reviews-v1").expect("reviews-v1");
    assert_eq!(v1.endpoints.len(), 1);
    assert!(v1.waypoint.is_none());
    let httpbin = s.service("default", "httpbin").expect("httpbin");
    assert_eq!(
        httpbin.ports[0].target_port,
        Some(8080),
        "named target port resolved"
    );
}

#[test]
fn virtual_service_weights_become_weighted_subset_destinations() {
    let s = snapshot();
    let route = s
        .routes
        .iter()
        .find(|r| r.name == "reviews" && r.kind == RouteKind::VirtualService)
        .expect("reviews VS");
    assert_eq!(route.hosts, vec![format!("reviews.{FQDN}")]);
    let dests: Vec<(Option<&str>, u32)> = route.rules[0]
        .destinations
        .iter()
        .map(|d| (d.subset.as_deref(), d.weight))
        .collect();
    assert_eq!(dests, [(Some("v1"), 50), (Some("v3"), 50)]);
}

#[test]
fn virtual_service_fault_and_header_match() {
    let s = snapshot();
    let route = s
        .routes
        .iter()
        .find(|r| r.name == "ratings")
        .expect("ratings VS");
    assert_eq!(route.rules.len(), 2);
    let rule = &route.rules[0];
    assert_eq!(
        rule.matches[0].headers.get("end-user"),
        Some(&StringMatch::Exact("jason".to_owned()))
    );
    let delay = rule
        .fault
        .as_ref()
        .and_then(|f| f.delay.as_ref())
        .expect("delay");
    assert_eq!(delay.fixed_delay_ms, 7_000);
    assert!((delay.percentage - 100.0).abs() < f64::EPSILON);
    assert_eq!(
        rule.destinations[0].weight, 100,
        "a lone destination takes all traffic"
    );
    assert!(route.rules[1].fault.is_none());
}

#[test]
fn virtual_service_retries_and_timeout() {
    let s = snapshot();
    let rule = &s
        .routes
        .iter()
        .find(|r| r.name == "details")
        .expect("details VS")
        .rules[0];
    assert_eq!(rule.timeout_ms, Some(10_000));
    let retries = rule.retries.as_ref().expect("retries");
    assert_eq!(retries.attempts, 3);
    assert_eq!(retries.per_try_timeout_ms, Some(2_000));
    assert_eq!(retries.retry_on.len(), 5);
    assert_eq!(retries.retry_on[0], "connect-failure");
}

#[test]
fn destination_rules_become_subsets_and_outlier_detection() {
    let s = snapshot();
    let reviews = s
        .destination_policies
        .iter()
        .find(|d| d.name == "reviews")
        .expect("reviews DR");
    assert_eq!(reviews.host, format!("reviews.{FQDN}"));
    let names: Vec<&str> = reviews.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["v1", "v2", "v3"]);
    assert_eq!(
        reviews.subsets[2].labels.get("version").map(String::as_str),
        Some("v3")
    );
    let httpbin = s
        .destination_policies
        .iter()
        .find(|d| d.name == "httpbin")
        .expect("httpbin DR");
    let od = httpbin
        .traffic_policy
        .outlier_detection
        .as_ref()
        .expect("outlier detection");
    assert_eq!(od.consecutive_5xx_errors, Some(1));
    assert_eq!(od.interval_ms, Some(1_000));
    assert_eq!(od.base_ejection_time_ms, Some(180_000));
    assert_eq!(od.max_ejection_percent, Some(100));
    let pool = httpbin
        .traffic_policy
        .connection_pool
        .as_ref()
        .expect("connection pool");
    assert_eq!(pool.max_connections, Some(1));
    assert_eq!(pool.http1_max_pending_requests, Some(1));
    assert_eq!(pool.max_requests_per_connection, Some(1));
    assert_ne!(
        httpbin.traffic_policy.load_balancer,
        Some(LoadBalancer::Random)
    );
}

#[test]
fn authorization_policies_select_workloads_and_match_l4() {
    let s = snapshot();
    let pp = s.workload("default/productpage-v1").expect("productpage");
    let reviews = s.workload("default/reviews-v1").expect("reviews");
    let viewer = s
        .authorization_policies
        .iter()
        .find(|p| p.name == "productpage-viewer")
        .expect("viewer");
    assert_eq!(viewer.action, AuthorizationAction::Allow);
    assert!(viewer.applies_to(pp));
    assert!(!viewer.applies_to(reviews));
    let src: std::net::IpAddr = "10.244.2.99".parse().expect("ip");
    assert!(viewer.matches_l4(Some("cluster.local/ns/default/sa/curl"), src, 9080));
    assert!(!viewer.matches_l4(Some("cluster.local/ns/default/sa/other"), src, 9080));
    assert!(
        !viewer.matches_l4(None, src, 9080),
        "plaintext peers have no principal"
    );

    let deny = s
        .authorization_policies
        .iter()
        .find(|p| p.name == "deny-from-outside")
        .expect("deny");
    assert_eq!(deny.action, AuthorizationAction::Deny);
    assert!(
        deny.applies_to(pp) && deny.applies_to(reviews),
        "no selector: whole namespace"
    );
    let outside: std::net::IpAddr = "10.9.9.9".parse().expect("ip");
    assert!(deny.matches_l4(Some("cluster.local/ns/other/sa/x"), outside, 9080));
    assert!(!deny.matches_l4(Some("cluster.local/ns/default/sa/x"), outside, 9080));
    assert!(
        !deny.matches_l4(Some("cluster.local/ns/other/sa/x"), outside, 8080),
        "port"
    );
    assert!(!deny.matches_l4(
        Some("cluster.local/ns/other/sa/x"),
        "192.168.1.1".parse().expect("ip"),
        9080
    ));
    assert_eq!(s.authorization_policies_for(pp).count(), 2);
    assert_eq!(s.authorization_policies_for(reviews).count(), 1);
}

#[test]
fn peer_authentication_resolves_mesh_workload_and_port_levels() {
    let s = snapshot();
    let pp = s.workload("default/productpage-v1").expect("productpage");
    let httpbin = s.workload("default/httpbin").expect("httpbin");
    let mesh = s
        .peer_authentications
        .iter()
        .find(|p| p.name == "default")
        .expect("mesh PA");
    assert!(mesh.mesh_wide);
    assert_eq!(s.peer_auth_mode(pp, 9080), PeerAuthMode::Strict);
    assert_eq!(s.peer_auth_mode(httpbin, 8080), PeerAuthMode::Permissive);
    assert_eq!(s.peer_auth_mode(httpbin, 9999), PeerAuthMode::Strict);
}

#[test]
fn http_route_binds_to_service_and_splits_backends() {
    let s = snapshot();
    let route = s
        .routes
        .iter()
        .find(|r| r.kind == RouteKind::HttpRoute)
        .expect("HTTPRoute");
    assert_eq!(route.hosts, vec![format!("reviews.{FQDN}")]);
    let rule = &route.rules[0];
    assert_eq!(
        rule.matches[0].uri,
        Some(StringMatch::Prefix("/reviews".to_owned()))
    );
    assert_eq!(
        rule.matches[0].headers.get("end-user"),
        Some(&StringMatch::Exact("jason".to_owned()))
    );
    let dests: Vec<(String, Option<u16>, u32)> = rule
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
    assert_eq!(rule.timeout_ms, Some(500));
}

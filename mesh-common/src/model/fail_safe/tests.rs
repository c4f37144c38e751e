use super::*;

/// `apps/wp` runs one instance (`apps/wp-1`, service account `wp`), `apps/wp2` one
/// (`apps/wp2-1`, service account `wp2`); `apps/gone` has none, `apps/ghost` only a pod without
/// an address, and `other/wp`'s labelled pod is in another namespace than `apps/wp`.
const MODEL: &str = "
workloads:
- {uid: apps/echo-1, name: echo-1, namespace: apps, addresses: [198.18.1.10], meshed: true}
- {uid: apps/echo-2, name: echo-2, namespace: apps, addresses: [198.18.2.10], meshed: true}
- {uid: apps/db, name: db, namespace: apps, addresses: [198.18.2.11], meshed: true, waypoint: {name: wp, namespace: apps}}
- {uid: apps/cache, name: cache, namespace: apps, addresses: [198.18.2.13], meshed: true, waypoint: {name: gone, namespace: apps}}
- {uid: apps/attic, name: attic, namespace: apps, addresses: [198.18.2.14], meshed: true, waypoint: {name: ghost, namespace: apps}}
- {uid: apps/both, name: both, namespace: apps, addresses: [198.18.2.15], meshed: true}
- {uid: apps/mixed, name: mixed, namespace: apps, addresses: [198.18.2.16], meshed: true}
- {uid: other/x, name: x, namespace: other, addresses: [198.18.2.12], meshed: true}
- {uid: apps/wp-1, name: wp-1, namespace: apps, serviceAccount: wp, addresses: [198.18.1.50], labels: {gateway.networking.k8s.io/gateway-name: wp}}
- {uid: apps/wp2-1, name: wp2-1, namespace: apps, serviceAccount: wp2, addresses: [198.18.1.51], labels: {gateway.networking.k8s.io/gateway-name: wp2}}
- {uid: apps/ghost-1, name: ghost-1, namespace: apps, serviceAccount: ghost, addresses: [], labels: {gateway.networking.k8s.io/gateway-name: ghost}}
- {uid: other/wp-1, name: wp-1, namespace: other, serviceAccount: wp, addresses: [198.18.1.52], labels: {gateway.networking.k8s.io/gateway-name: wp}}
services:
- name: echo
  namespace: apps
  vips: [198.19.0.10]
  ports: [{port: 80, targetPort: 8080}]
  endpoints: [{workloadUid: apps/echo-1, address: 198.18.1.10}, {workloadUid: apps/echo-2, address: 198.18.2.10}]
- name: web
  namespace: apps
  vips: [198.19.0.11]
  ports: [{port: 80}]
  endpoints: [{workloadUid: apps/echo-2, address: 198.18.2.10}, {workloadUid: apps/both, address: 198.18.2.15}, {workloadUid: apps/mixed, address: 198.18.2.16}]
  waypoint: {name: wp, namespace: apps}
- name: api
  namespace: apps
  vips: [198.19.0.12]
  ports: [{port: 8000, targetPort: 80}]
  endpoints: [{workloadUid: apps/both, address: 198.18.2.15}]
  waypoint: {name: wp2, namespace: apps}
- name: old
  namespace: apps
  vips: [198.19.0.13]
  ports: [{port: 80}]
  endpoints: [{workloadUid: apps/mixed, address: 198.18.2.16}]
  waypoint: {name: gone, namespace: apps}
";

fn model(policies: &str) -> Snapshot {
    yaml_serde::from_str(&format!("{MODEL}authorizationPolicies:\n{policies}")).expect("test model")
}

const CLIENT: &str = "spiffe://cluster.local/ns/apps/sa/client";
const WP: &str = "spiffe://cluster.local/ns/apps/sa/wp";
const WP2: &str = "spiffe://cluster.local/ns/apps/sa/wp2";
/// The waypoint's service account name in another namespace: not the waypoint.
const WP_ELSEWHERE: &str = "spiffe://cluster.local/ns/other/sa/wp";

const NOT_FROM: &str = "only its instances are admitted; traffic around it is denied";
const NO_WAYPOINT: &str = "traffic to it is denied";

/// (case, policies, workload, port, peer, refused by: (cause prefix, suffix))
type Case<'a> = (
    &'a str,
    String,
    &'a str,
    u16,
    Option<&'a str>,
    Option<(&'a str, &'a str)>,
);

#[test]
fn admission_by_target_and_peer() {
    let on_echo = "targetRefs: [{kind: Service, name: echo, namespace: apps}]";
    let on_web = "targetRefs: [{kind: Service, name: web, namespace: apps}]";
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("nothing applies", "  []".into(), "apps/echo-1", 8080, Some(CLIENT), None),
        ("workload waypoint: a client is refused on every port", "  []".into(), "apps/db", 5432, Some(CLIENT), Some(("workload apps/db uses waypoint apps/wp", NOT_FROM))),
        ("workload waypoint: plaintext is refused", "  []".into(), "apps/db", 5432, None, Some(("workload apps/db uses waypoint apps/wp", NOT_FROM))),
        ("workload waypoint: its instance is admitted", "  []".into(), "apps/db", 5432, Some(WP), None),
        ("workload waypoint: the instance's account in another namespace is not", "  []".into(), "apps/db", 5432, Some(WP_ELSEWHERE), Some(("workload apps/db", NOT_FROM))),
        ("workload waypoint: another waypoint's instance is not", "  []".into(), "apps/db", 1, Some(WP2), Some(("workload apps/db", NOT_FROM))),
        ("waypoint without instance: even its would-be identity is refused", "  []".into(), "apps/cache", 6379, Some("spiffe://cluster.local/ns/apps/sa/gone"), Some(("workload apps/cache uses waypoint apps/gone: no waypoint runs", NO_WAYPOINT))),
        ("waypoint whose only pod has no address: none runs", "  []".into(), "apps/attic", 1, Some("spiffe://cluster.local/ns/apps/sa/ghost"), Some(("workload apps/attic uses waypoint apps/ghost: no waypoint runs", NO_WAYPOINT))),
        ("service waypoint: its endpoint refuses a client on its ports", "  []".into(), "apps/echo-2", 80, Some(CLIENT), Some(("Service apps/web uses waypoint apps/wp", NOT_FROM))),
        ("service waypoint: its instance is admitted", "  []".into(), "apps/echo-2", 80, Some(WP), None),
        ("service waypoint: other ports pass", "  []".into(), "apps/echo-2", 9090, Some(CLIENT), None),
        ("two services, two waypoints on one port: the first's instance", "  []".into(), "apps/both", 80, Some(WP), None),
        ("two services, two waypoints on one port: the second's instance", "  []".into(), "apps/both", 80, Some(WP2), None),
        ("two services, two waypoints on one port: a client", "  []".into(), "apps/both", 80, Some(CLIENT), Some(("Service apps/web uses waypoint apps/wp", NOT_FROM))),
        ("a covering waypoint without instance refuses even another's instance", "  []".into(), "apps/mixed", 80, Some(WP), Some(("Service apps/old uses waypoint apps/gone: no waypoint runs", NO_WAYPOINT))),
        ("Service target without a waypoint: endpoint refused on the target port, waypoint or not",
         format!("- {{name: p, namespace: apps, {on_echo}, action: DENY, rules: [{{}}]}}"), "apps/echo-1", 8080, Some(WP), Some(("policy apps/p targets Service apps/echo: no waypoint runs", NO_WAYPOINT))),
        ("Service target without a waypoint: another port passes",
         format!("- {{name: p, namespace: apps, {on_echo}, action: ALLOW, rules: [{{}}]}}"), "apps/echo-1", 9090, Some(CLIENT), None),
        ("Service target without a waypoint: ALLOW refuses too",
         format!("- {{name: p, namespace: apps, {on_echo}, action: ALLOW, rules: [{{}}]}}"), "apps/echo-1", 8080, Some(CLIENT), Some(("policy apps/p targets Service apps/echo", NO_WAYPOINT))),
        ("Service target without a waypoint: not an endpoint",
         format!("- {{name: p, namespace: apps, {on_echo}, action: DENY}}"), "other/x", 8080, Some(CLIENT), None),
        ("Service target with a waypoint: the waypoint enforces it and is admitted",
         format!("- {{name: p, namespace: apps, {on_web}, action: DENY, rules: [{{}}]}}"), "apps/echo-2", 80, Some(WP), None),
        ("Service target with a waypoint: a client is refused as not from the waypoint",
         format!("- {{name: p, namespace: apps, {on_web}, action: DENY, rules: [{{}}]}}"), "apps/echo-2", 80, Some(CLIENT), Some(("Service apps/web uses waypoint apps/wp", NOT_FROM))),
        ("Gateway target: the waypoint enforces it",
         "- {name: g, namespace: apps, targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp, namespace: apps}], action: DENY}".into(), "apps/db", 1, Some(WP), None),
        ("Gateway target: what uses the waypoint still admits only it",
         "- {name: g, namespace: apps, targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp, namespace: apps}], action: DENY}".into(), "apps/db", 1, Some(CLIENT), Some(("workload apps/db", NOT_FROM))),
        ("waypoint class target: refuses nothing",
         "- {name: g, namespace: apps, targetRefs: [{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint, namespace: apps}], action: DENY}".into(), "apps/echo-1", 8080, Some(CLIENT), None),
        ("dry run is never enforced",
         format!("- {{name: p, namespace: apps, dryRun: true, {on_echo}, action: DENY}}"), "apps/echo-1", 8080, Some(CLIENT), None),
        ("AUDIT never decides",
         format!("- {{name: p, namespace: apps, {on_echo}, action: AUDIT}}"), "apps/echo-1", 8080, Some(CLIENT), None),
        ("unknown kind: its namespace",
         "- {name: p, namespace: other, targetRefs: [{kind: Mystery, name: m, namespace: other}], action: DENY}".into(), "other/x", 1, Some(CLIENT), Some(("policy other/p targets Mystery other/m", NO_WAYPOINT))),
    ];
    for (case, policies, uid, port, peer, want) in cases {
        let fs = FailSafe::new(&model(&policies));
        let peer: Option<Identity> = peer.map(|p| p.parse().expect("identity"));
        let got = fs
            .refusal(uid, port, peer.as_ref())
            .map(|r| r.cause.to_string());
        match want {
            None => assert_eq!(got, None, "{case}"),
            Some((prefix, suffix)) => {
                let got = got.unwrap_or_default();
                assert!(got.starts_with(prefix), "{case}: {got}");
                assert!(got.ends_with(suffix), "{case}: {got}");
            }
        }
    }
}

#[test]
fn the_waypoint_of_a_pod_address() {
    let fs = FailSafe::new(&model("  []"));
    // (case, workload, port, waypoint)
    #[rustfmt::skip]
    let cases = [
        ("own waypoint: every port", "apps/db", 5432, Some("apps/wp")),
        ("own waypoint without instance: still that one", "apps/cache", 1, Some("apps/gone")),
        ("endpoint of a service with a waypoint, on its target port", "apps/echo-2", 80, Some("apps/wp")),
        ("another port of that endpoint", "apps/echo-2", 8080, None),
        ("two services: the first in model order", "apps/both", 80, Some("apps/wp")),
        ("endpoint of a service without waypoint", "apps/echo-1", 8080, None),
        ("unknown workload", "apps/nobody", 80, None),
    ];
    for (case, uid, port, want) in cases {
        let got = fs
            .waypoint(uid, port)
            .map(|w| format!("{}/{}", w.namespace, w.name));
        assert_eq!(got.as_deref(), want, "{case}");
    }
    // A workload's own waypoint comes before its services'.
    let mut snapshot = model("  []");
    for w in snapshot
        .workloads
        .iter_mut()
        .filter(|w| w.uid == "apps/echo-2")
    {
        w.waypoint = Some(WaypointRef {
            name: "wp2".into(),
            namespace: "apps".into(),
            addresses: Vec::new(),
        });
    }
    let fs = FailSafe::new(&snapshot);
    assert_eq!(
        fs.waypoint("apps/echo-2", 80).map(|w| w.name.as_str()),
        Some("wp2")
    );
}

#[test]
fn instances_are_the_labelled_pods_of_the_namespace_with_an_address() {
    let mut snapshot = model("  []");
    // A second instance, listed before the first: instances come in uid order.
    snapshot.workloads.insert(
        0,
        yaml_serde::from_str(
            "{uid: apps/wp-2, name: wp-2, namespace: apps, serviceAccount: wp, addresses: ['fd18:1::53'], labels: {gateway.networking.k8s.io/gateway-name: wp}}",
        )
        .expect("workload"),
    );
    let instances = WaypointInstances::new(&snapshot);
    let uids = |ns: &str, name: &str| -> Vec<&str> {
        let wp = WaypointRef {
            name: name.into(),
            namespace: ns.into(),
            addresses: Vec::new(),
        };
        instances
            .get(&wp)
            .iter()
            .map(|&i| snapshot.workloads[i].uid.as_str())
            .collect()
    };
    assert_eq!(uids("apps", "wp"), vec!["apps/wp-1", "apps/wp-2"]);
    assert_eq!(uids("other", "wp"), vec!["other/wp-1"]);
    assert_eq!(uids("apps", "ghost"), Vec::<&str>::new());
    assert_eq!(uids("apps", "gone"), Vec::<&str>::new());
}

#[test]
fn causes_list_what_nothing_enforces() {
    let fs = FailSafe::new(&model(
        "- {name: p, namespace: apps, targetRefs: [{kind: Service, name: echo, namespace: apps}], action: DENY}\n\
         - {name: q, namespace: apps, targetRefs: [{kind: Service, name: web, namespace: apps}], action: DENY}\n\
         - {name: g, namespace: apps, targetRefs: [{kind: Gateway, name: wp, namespace: apps}], action: DENY}\n\
         - {name: c, namespace: apps, targetRefs: [{kind: GatewayClass, name: other-class, namespace: apps}], action: DENY}",
    ));
    let causes: Vec<String> = fs.causes().iter().map(ToString::to_string).collect();
    assert_eq!(
        causes,
        vec![
            "workload apps/cache uses waypoint apps/gone: no waypoint runs to carry its traffic; traffic to it is denied",
            "workload apps/attic uses waypoint apps/ghost: no waypoint runs to carry its traffic; traffic to it is denied",
            "Service apps/old uses waypoint apps/gone: no waypoint runs to carry its traffic; traffic to it is denied",
            "policy apps/p targets Service apps/echo: no waypoint runs to enforce it; traffic to it is denied",
            "policy apps/c targets GatewayClass apps/other-class: no waypoint runs to enforce it; traffic to it is denied",
        ]
    );
    assert!(fs.policy_refuses("apps/echo-2", "apps/p"));
    assert!(
        !fs.policy_refuses("apps/echo-2", "apps/q"),
        "its waypoint enforces it"
    );
    assert!(!fs.policy_refuses("other/x", "apps/p"));
}

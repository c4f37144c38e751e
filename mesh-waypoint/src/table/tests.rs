use super::*;
use crate::testdata::{snapshot, table};

fn key(ns: &str, name: &str) -> ServiceKey {
    ServiceKey {
        namespace: ns.to_owned(),
        name: name.to_owned(),
    }
}

#[test]
fn connect_authorities_resolve_to_targets() {
    let t = table("  []", "");
    let service = |name: &str, host: &str, vip: &str, port| {
        Some(Target::Service {
            service: key("bookinfo", name),
            hostname: host.to_owned(),
            vip: vip.parse().expect("ip"),
            port,
        })
    };
    #[rustfmt::skip]
    let cases = [
        ("service VIP and port", "10.96.0.20:9080", service("reviews", "reviews.bookinfo.svc.cluster.local", "10.96.0.20", 9080)),
        ("the service's other port", "10.96.0.20:80", service("reviews", "reviews.bookinfo.svc.cluster.local", "10.96.0.20", 80)),
        ("a port the service does not have", "10.96.0.20:81", None),
        ("no hostname in the model: the Kubernetes name", "10.96.0.30:9080", service("ratings", "ratings.bookinfo.svc.cluster.local", "10.96.0.30", 9080)),
        ("service entry host", "240.240.0.1:80", service("api", "api.example.com", "240.240.0.1", 80)),
        ("IPv4-mapped VIP", "[::ffff:10.96.0.20]:9080", service("reviews", "reviews.bookinfo.svc.cluster.local", "10.96.0.20", 9080)),
        ("workload address, any port", "10.1.0.22:15000", Some(Target::Workload { uid: "bookinfo/reviews-v2".into(), address: "10.1.0.22".parse().expect("ip"), port: 15000 })),
        ("unknown address", "10.9.9.9:80", None),
    ];
    for (case, authority, want) in cases {
        assert_eq!(t.target(authority.parse().expect("addr")), want, "{case}");
    }
}

#[test]
fn declared_protocols() {
    let t = table("  []", "");
    #[rustfmt::skip]
    let cases = [
        ("http port", "10.96.0.10:9080", Some(PortProtocol::Http)),
        ("undeclared", "10.96.0.20:9080", None),
        ("grpc", "10.96.0.30:9080", Some(PortProtocol::Grpc)),
        ("tcp", "10.96.0.40:9080", Some(PortProtocol::Tcp)),
        ("workload: its service's target port", "10.1.0.30:9081", Some(PortProtocol::Grpc)),
        ("workload: another port", "10.1.0.30:9080", None),
    ];
    for (case, authority, want) in cases {
        let target = t.target(authority.parse().expect("addr")).expect("target");
        assert_eq!(t.protocol(&target), want, "{case}");
    }
}

#[test]
fn sources_take_namespace_from_the_identity_and_labels_from_the_matching_workload() {
    let t = table("  []", "");
    let id = |ns: &str, sa: &str| Some(Identity::new("cluster.local", ns, sa));
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    #[rustfmt::skip]
    let cases = [
        ("the workload at the address", id("other", "sleep"), "10.2.0.5", Some("other"), labels(&[("app", "sleep")])),
        ("another identity at the address: no labels", id("bookinfo", "bookinfo-reviews"), "10.2.0.5", Some("bookinfo"), labels(&[])),
        ("unknown address", id("other", "sleep"), "10.9.9.9", Some("other"), labels(&[])),
        ("no identity: the workload's", None, "10.1.0.21", Some("bookinfo"), labels(&[("app", "reviews"), ("version", "v1")])),
        ("no identity, unknown address", None, "10.9.9.9", None, labels(&[])),
    ];
    for (case, identity, addr, namespace, want_labels) in cases {
        let s = t.source_info(identity.clone(), addr.parse().expect("ip"));
        assert_eq!(s.identity, identity, "{case}");
        assert_eq!(s.namespace.as_deref(), namespace, "{case}");
        assert_eq!(s.labels, want_labels, "{case}");
    }
}

#[test]
fn lookups_and_warnings() {
    // appended to BOOKINFO's last list, its destination policies
    let dup = snapshot(
        "- name: dup\n  namespace: bookinfo\n  host: reviews.bookinfo.svc.cluster.local\n",
    );
    let t = RouteTable::new(Arc::new(dup), "cluster.local", ("bookinfo", "waypoint"));
    assert_eq!(t.warnings().len(), 1, "{:?}", t.warnings());
    assert_eq!(
        t.warnings()[0].to_string(),
        "destination policy bookinfo/dup: host reviews.bookinfo.svc.cluster.local already has destination policy bookinfo/reviews; this one is not used"
    );
    assert_eq!(t.waypoint(), ("bookinfo", "waypoint"));
    assert_eq!(t.trust_domain(), "cluster.local");
    assert_eq!(
        t.service(&key("bookinfo", "reviews"))
            .map(|s| s.vips.clone()),
        Some(vec!["10.96.0.20".parse().expect("ip")])
    );
    assert_eq!(
        t.service_by_host("Ratings.bookinfo.svc.cluster.local.")
            .map(|s| s.name.as_str()),
        Some("ratings")
    );
    assert_eq!(
        t.workload("other/sleep")
            .map(|w| w.service_account.as_str()),
        Some("sleep")
    );
    assert!(t
        .workload_at("10.1.0.99".parse().expect("ip"))
        .is_some_and(|w| !w.meshed));
}

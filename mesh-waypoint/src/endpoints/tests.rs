use super::*;
use crate::testdata::{seeded, table};

fn backend(host: &str, subset: Option<&str>, port: u16) -> Backend {
    Backend {
        host: host.to_owned(),
        service: None,
        workload: None,
        subset: subset.map(str::to_owned),
        port,
    }
}

/// `addr[ identity]` per upstream, or `err <flag>`.
fn summary(r: Result<Vec<Upstream>, ProxyError>) -> Vec<String> {
    match r {
        Ok(ups) => ups
            .iter()
            .map(|u| match &u.identity {
                Some(id) => format!("{} {id}", u.addr),
                None => format!(
                    "{} plaintext uid={:?} meshed={}",
                    u.addr, u.workload_uid, u.meshed
                ),
            })
            .collect(),
        Err(e) => vec![format!("err {} {}", e.flag, e.message)],
    }
}

#[test]
fn endpoints_by_subset_and_port() {
    let extra = "- name: ratings-subsets\n  namespace: bookinfo\n  host: ratings.bookinfo.svc.cluster.local\n  subsets: [{name: v2, labels: {version: v2}}, {name: all}]\n";
    let t = crate::table::RouteTable::new(
        std::sync::Arc::new(crate::testdata::snapshot(extra)),
        "cluster.local",
        ("bookinfo", "waypoint"),
    );
    let reviews = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews";
    let ratings = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings";
    #[rustfmt::skip]
    let cases: Vec<(&str, Backend, Vec<String>)> = vec![
        ("whole service", backend("reviews.bookinfo.svc.cluster.local", None, 9080),
         vec![format!("10.1.0.21:9080 {reviews}"), format!("10.1.0.22:9080 {reviews}"), format!("10.1.0.23:9080 {reviews}")]),
        ("subset v2", backend("reviews.bookinfo.svc.cluster.local", Some("v2"), 9080), vec![format!("10.1.0.22:9080 {reviews}")]),
        ("service port 80 maps to target port 9080", backend("reviews.bookinfo.svc.cluster.local", Some("v3"), 80), vec![format!("10.1.0.23:9080 {reviews}")]),
        ("targetPort", backend("ratings.bookinfo.svc.cluster.local", None, 9080),
         vec![format!("10.1.0.30:9081 {ratings}"), format!("10.1.0.31:9081 {ratings}")]),
        ("the exact host's policy beats the wildcard", backend("ratings.bookinfo.svc.cluster.local", Some("v2"), 9080), vec![format!("10.1.0.31:9081 {ratings}")]),
        ("a subset without labels is the whole service", backend("ratings.bookinfo.svc.cluster.local", Some("all"), 9080),
         vec![format!("10.1.0.30:9081 {ratings}"), format!("10.1.0.31:9081 {ratings}")]),
        ("subset of the exact policy only", backend("ratings.bookinfo.svc.cluster.local", Some("v1"), 9080),
         vec!["err UH destination policy bookinfo/ratings-subsets has no subset v1".into()]),
        ("wildcard policy host", backend("productpage.bookinfo.svc.cluster.local", Some("v1"), 9080), vec!["10.1.0.10:9080 spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage".into()]),
        ("wildcard subset that selects nothing", backend("productpage.bookinfo.svc.cluster.local", Some("v9"), 9080),
         vec!["err UH service bookinfo/productpage has no endpoint in subset v9".into()]),
        ("unknown subset", backend("reviews.bookinfo.svc.cluster.local", Some("v4"), 9080),
         vec!["err UH destination policy bookinfo/reviews has no subset v4".into()]),
        ("subset with no policy for the host", backend("api.example.com", Some("v1"), 80),
         vec!["err UH subset v1 of api.example.com: no destination policy for the host".into()]),
        ("unknown host", backend("nope.bookinfo.svc.cluster.local", None, 9080), vec!["err NC no service has host nope.bookinfo.svc.cluster.local".into()]),
        ("unknown port", backend("reviews.bookinfo.svc.cluster.local", None, 9999), vec!["err NC service bookinfo/reviews has no port 9999".into()]),
        ("no endpoints", backend("empty.bookinfo.svc.cluster.local", None, 80), vec!["err UH service bookinfo/empty has no endpoint".into()]),
        ("non-meshed endpoint is flagged", backend("details.bookinfo.svc.cluster.local", None, 9080),
         vec!["10.1.0.40:9080 plaintext uid=\"bookinfo/details-v1\" meshed=false".into()]),
        ("endpoint outside the workloads", backend("api.example.com", None, 80), vec!["93.184.216.34:80 plaintext uid=\"\" meshed=false".into()]),
    ];
    for (case, b, want) in cases {
        assert_eq!(summary(t.endpoints(&b)), want, "{case}");
    }
}

#[test]
fn a_workload_target_is_its_own_endpoint() {
    let t = table("  []", "");
    let mut b = backend("10.1.0.22", None, 15001);
    b.workload = Some("bookinfo/reviews-v2".into());
    assert_eq!(
        summary(t.endpoints(&b)),
        ["10.1.0.22:15001 spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"]
    );
    b.workload = Some("bookinfo/gone".into());
    assert_eq!(
        summary(t.endpoints(&b)),
        ["err UH workload bookinfo/gone is no longer in the model"]
    );
}

#[test]
fn pick_spreads_over_endpoints() {
    let t = table("  []", "");
    let ups = t
        .endpoints(&backend("reviews.bookinfo.svc.cluster.local", None, 9080))
        .expect("endpoints");
    let mut rand = seeded(3);
    let mut counts = [0u32; 3];
    for _ in 0..3000 {
        let u = pick(&ups, &mut rand).expect("one");
        let i = ups.iter().position(|x| x == u).expect("from the list");
        counts[i] += 1;
    }
    assert!(
        counts.iter().all(|c| (900..=1100).contains(c)),
        "{counts:?}"
    );
    assert_eq!(pick(&[], &mut rand), None);
}

#[test]
fn pick_like_prefers_the_dialed_family() {
    let up = |addr: &str| Upstream {
        addr: addr.parse().expect("addr"),
        identity: None,
        meshed: false,
        workload_uid: String::new(),
    };
    let dual = [
        up("10.1.0.1:80"),
        up("[fd00::1]:80"),
        up("10.1.0.2:80"),
        up("[fd00::2]:80"),
    ];
    let v6_only = [up("[fd00::1]:80")];
    let mut rand = seeded(3);
    // (upstreams, dialed, want v4)
    let cases: [(&[Upstream], &str, bool); 4] = [
        (&dual, "198.19.0.1", true),
        (&dual, "fd19::1", false),
        (&dual, "::ffff:198.19.0.1", true),
        (&v6_only, "198.19.0.1", false),
    ];
    for (upstreams, dialed, want_v4) in cases {
        for _ in 0..20 {
            let got = pick_like(upstreams, dialed.parse().expect("ip"), &mut rand).expect("one");
            assert_eq!(got.addr.is_ipv4(), want_v4, "{dialed}: {}", got.addr);
        }
    }
    assert!(pick_like(&[], "198.19.0.1".parse().expect("ip"), &mut rand).is_none());
}

#![allow(clippy::type_complexity)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;

const MODEL: &str = r#"
workloads:
- {uid: ns/w1, name: w1, namespace: ns, addresses: [10.0.0.1], meshed: true, labels: {app: web, tier: gold}, locality: {region: us, zone: a, subzone: x}}
- {uid: ns/w2, name: w2, namespace: ns, addresses: [10.0.0.2], meshed: true, labels: {app: web}, locality: {region: us, zone: a, subzone: y}}
- {uid: ns/w3, name: w3, namespace: ns, addresses: [10.0.0.3], meshed: true, labels: {app: web}, locality: {region: us, zone: b, subzone: x}}
- {uid: ns/w4, name: w4, namespace: ns, addresses: [10.0.0.4], meshed: true, labels: {app: web}, locality: {region: eu, zone: a, subzone: x}}
- {uid: ns/w5, name: w5, namespace: ns, addresses: [10.0.0.5], meshed: true, labels: {app: web}, locality: {region: ap, zone: a, subzone: x}}
- {uid: ns/d6, name: d6, namespace: ns, addresses: [fd00::6], meshed: true, labels: {app: dual}}
- {uid: ns/client, name: client, namespace: ns, addresses: [10.9.0.1], meshed: true, labels: {app: client, tier: gold}, locality: {region: us, zone: a, subzone: x}}
services:
- name: web
  namespace: ns
  hostname: web.ns.svc.cluster.local
  vips: [10.96.1.1]
  ports: [{port: 80}]
  endpoints: ENDPOINTS
- name: dual
  namespace: ns
  hostname: dual.ns.svc.cluster.local
  vips: [10.96.1.2]
  ports: [{port: 80}]
  endpoints: [{workloadUid: ns/w1, address: 10.0.0.1}, {workloadUid: ns/d6, address: "fd00::6"}]
destinationPolicies:
- name: web
  namespace: ns
  host: web.ns.svc.cluster.local
  trafficPolicy: POLICY
"#;

fn endpoints(ids: &[u8]) -> String {
    let list: Vec<String> = ids
        .iter()
        .map(|i| format!("{{workloadUid: ns/w{i}, address: 10.0.0.{i}}}"))
        .collect();
    format!("[{}]", list.join(", "))
}

fn table_with(policy: &str, ids: &[u8]) -> RouteTable {
    let yaml = MODEL
        .replace("POLICY", policy)
        .replace("ENDPOINTS", &endpoints(ids));
    let snapshot: Snapshot = yaml_serde::from_str(&yaml).expect("model");
    RouteTable::new(Arc::new(snapshot), "cluster.local", ("ns", "waypoint"))
}

fn table(policy: &str) -> RouteTable {
    table_with(policy, &[1, 2, 3, 4])
}

fn web() -> Backend {
    Backend {
        host: "web.ns.svc.cluster.local".into(),
        service: None,
        workload: None,
        subset: None,
        port: 80,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

const US_A_X: Locality = Locality {
    region: String::new(),
    zone: String::new(),
    subzone: String::new(),
};

fn client_locality() -> Locality {
    Locality {
        region: "us".into(),
        zone: "a".into(),
        subzone: "x".into(),
    }
}

fn cx<'a>(locality: &'a Locality, headers: Option<&'a HeaderMap>) -> PickContext<'a> {
    PickContext {
        headers,
        query: None,
        source: ip("10.9.0.1"),
        source_locality: locality,
        dialed: ip("10.96.1.1"),
        tried: &[],
        remote_localities: false,
    }
}

/// The last octet of the picked address, or the error's flag.
fn pick(b: &Balancers, t: &RouteTable, cx: &PickContext<'_>) -> String {
    match b.pick(t, &web(), cx) {
        Ok(p) => p
            .endpoint
            .addr
            .ip()
            .to_string()
            .rsplit('.')
            .next()
            .unwrap_or("?")
            .to_owned(),
        Err(e) => format!("err {}", e.flag),
    }
}

fn shares(b: &Balancers, t: &RouteTable, cx: &PickContext<'_>, n: usize) -> BTreeMap<String, f64> {
    let mut c = BTreeMap::new();
    for _ in 0..n {
        *c.entry(pick(b, t, cx)).or_insert(0.0) += 1.0 / n as f64;
    }
    c
}

fn assert_shares(name: &str, got: &BTreeMap<String, f64>, want: &[(&str, f64)], tol: f64) {
    let keys: Vec<&str> = got.keys().map(String::as_str).collect();
    let want_keys: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, want_keys, "{name}: {got:?}");
    for (k, w) in want {
        assert!(
            (got[*k] - w).abs() <= tol + 1e-9,
            "{name}: {got:?}, want {want:?} ± {tol}"
        );
    }
}

fn clocked() -> (Arc<ManualClock>, Balancers, Metrics) {
    let clock = Arc::new(ManualClock::default());
    let metrics = Metrics::default();
    let b = Balancers::with_clock(clock.clone(), Some(&metrics));
    (clock, b, metrics)
}

#[test]
fn algorithms_share_traffic() {
    fastrand::seed(7);
    let none = US_A_X;
    #[rustfmt::skip]
    let cases = [
        ("default is round robin, exact", "{}", 0.0),
        ("round robin", "{loadBalancer: roundRobin}", 0.0),
        ("random", "{loadBalancer: random}", 0.02),
        ("least request with nothing active", "{loadBalancer: leastRequest}", 0.02),
        ("an unknown algorithm is round robin", "{loadBalancer: fancy}", 0.0),
        ("consistent hash on the source address: one endpoint", "{loadBalancer: {consistentHash: {sourceIp: true}}}", -1.0),
    ];
    for (name, policy, tol) in cases {
        let t = table(policy);
        let b = Balancers::default();
        let got = shares(&b, &t, &cx(&none, None), 4_000);
        if tol < 0.0 {
            assert_eq!(got.len(), 1, "{name}: {got:?}");
        } else {
            assert_shares(
                name,
                &got,
                &[("1", 0.25), ("2", 0.25), ("3", 0.25), ("4", 0.25)],
                tol,
            );
        }
    }
}

#[test]
fn least_request_avoids_a_busy_endpoint() {
    fastrand::seed(3);
    let t = table("{loadBalancer: leastRequest}");
    let b = Balancers::default();
    let none = US_A_X;
    let mut held = Vec::new();
    let mut on_1 = 0;
    for _ in 0..4_000 {
        let Ok(p) = b.pick(&t, &web(), &cx(&none, None)) else {
            panic!("pick");
        };
        if p.endpoint.addr.ip() == ip("10.0.0.1") {
            on_1 += 1;
            held.push(p); // endpoint 1 never finishes: its active count grows
        }
    }
    assert!((1..=3).contains(&on_1), "{on_1} picks of the busy endpoint");
    drop(held);
    // Once its requests end it takes its share again.
    let got = shares(&b, &t, &cx(&none, None), 4_000);
    assert!(got["1"] > 0.2, "{got:?}");
}

#[test]
fn consistent_hash_keys() {
    fastrand::seed(11);
    let none = US_A_X;
    let mut h = HeaderMap::new();
    h.insert("x-user", HeaderValue::from_static("alice"));
    h.insert("cookie", HeaderValue::from_static("a=b; session=s-42"));
    #[rustfmt::skip]
    let cases: [(&str, &str, Option<&str>, usize); 8] = [
        ("header present: one endpoint", "{consistentHash: {header: x-user}}", None, 1),
        ("header present, maglev", "{consistentHash: {header: x-user, maglevTableSize: 0}}", None, 1),
        ("header present, small ring", "{consistentHash: {header: x-user, minimumRingSize: 16}}", None, 1),
        ("header absent: random", "{consistentHash: {header: x-other}}", None, 4),
        ("cookie present", "{consistentHash: {cookie: {name: session}}}", None, 1),
        ("cookie absent, no ttl: random", "{consistentHash: {cookie: {name: other}}}", None, 4),
        ("query parameter", "{consistentHash: {queryParameter: u}}", Some("a=1&u=bob"), 1),
        ("query parameter absent: random", "{consistentHash: {queryParameter: u}}", Some("a=1"), 4),
    ];
    for (name, lb, query, spread) in cases {
        let t = table(&format!("{{loadBalancer: {lb}}}"));
        let b = Balancers::default();
        let mut c = cx(&none, Some(&h));
        c.query = query;
        let got = shares(&b, &t, &c, 1_000);
        assert_eq!(got.len(), spread, "{name}: {got:?}");
    }
    // Different header values spread over the endpoints.
    let t = table("{loadBalancer: {consistentHash: {header: x-user}}}");
    let b = Balancers::default();
    let mut seen = std::collections::BTreeSet::new();
    for u in 0..200 {
        let mut h = HeaderMap::new();
        h.insert(
            "x-user",
            HeaderValue::from_str(&format!("user-{u}")).expect("value"),
        );
        seen.insert(pick(&b, &t, &cx(&none, Some(&h))));
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

#[test]
fn hash_cookie_is_issued_and_then_sticks() {
    let none = US_A_X;
    let t =
        table("{loadBalancer: {consistentHash: {cookie: {name: sticky, path: /, ttlMs: 60000}}}}");
    let b = Balancers::default();
    let first = b.pick(&t, &web(), &cx(&none, None)).expect("pick");
    let set = first.set_cookie.clone().expect("a cookie is issued");
    let set = set.to_str().expect("ascii").to_owned();
    let re =
        regex::Regex::new("^sticky=([0-9a-f]{16}); Path=/; Max-Age=60; HttpOnly$").expect("re");
    let value = re
        .captures(&set)
        .expect("cookie format")
        .get(1)
        .expect("value")
        .as_str()
        .to_owned();
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        HeaderValue::from_str(&format!("sticky={value}")).expect("value"),
    );
    for _ in 0..50 {
        let again = b.pick(&t, &web(), &cx(&none, Some(&h))).expect("pick");
        assert_eq!(again.endpoint.addr, first.endpoint.addr);
        assert!(again.set_cookie.is_none());
    }
}

#[test]
fn hashing_moves_only_the_removed_endpoints_keys() {
    let none = US_A_X;
    for lb in [
        "{consistentHash: {header: x-user}}",
        "{consistentHash: {header: x-user, maglevTableSize: 65537}}",
    ] {
        let policy = format!("{{loadBalancer: {lb}}}");
        let (before, after) = (
            table_with(&policy, &[1, 2, 3, 4]),
            table_with(&policy, &[1, 2, 3]),
        );
        let b = Balancers::default();
        let run = |t: &RouteTable| -> Vec<String> {
            (0..1_000)
                .map(|u| {
                    let mut h = HeaderMap::new();
                    h.insert(
                        "x-user",
                        HeaderValue::from_str(&format!("user-{u}")).expect("value"),
                    );
                    pick(&b, t, &cx(&none, Some(&h)))
                })
                .collect()
        };
        let (x, y) = (run(&before), run(&after));
        let moved = x
            .iter()
            .zip(&y)
            .filter(|(x, y)| *x != "4" && x != y)
            .count();
        assert!(
            x.iter().filter(|x| *x == "4").count() > 150,
            "{lb}: endpoint 4 had its share"
        );
        assert!(moved <= 20, "{lb}: {moved} of 1000 keys moved");
        // Requests still on the previous model use its state and do not rebuild back.
        assert_eq!(run(&before), x, "{lb}: the previous model's picks");
        assert!(b.current.load().snapshot.as_ptr() == Arc::as_ptr(&after.snapshot));
    }
}

#[test]
fn passthrough_goes_to_the_dialed_endpoint_or_refuses() {
    let none = US_A_X;
    let t = table("{loadBalancer: passthrough}");
    let b = Balancers::default();
    let mut c = cx(&none, None);
    c.dialed = ip("10.0.0.3");
    assert_eq!(pick(&b, &t, &c), "3");
    c.dialed = ip("10.96.1.1");
    assert_eq!(pick(&b, &t, &c), "err UH");
}

#[test]
fn retries_avoid_tried_endpoints_and_keep_the_family() {
    fastrand::seed(5);
    let none = US_A_X;
    let t = table("{loadBalancer: random}");
    let b = Balancers::default();
    let tried: Vec<SocketAddr> = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
        .iter()
        .map(|s| s.parse().expect("addr"))
        .collect();
    let mut c = cx(&none, None);
    c.tried = &tried;
    assert_shares("three tried", &shares(&b, &t, &c, 200), &[("4", 1.0)], 0.0);
    let all: Vec<SocketAddr> = (1..=4)
        .map(|i| format!("10.0.0.{i}:80").parse().expect("addr"))
        .collect();
    c.tried = &all;
    assert_eq!(shares(&b, &t, &c, 400).len(), 4, "every one tried: any");
    // Dual stack: the dialed family only.
    let dual = Backend {
        host: "dual.ns.svc.cluster.local".into(),
        ..web()
    };
    for (dialed, want) in [("10.96.1.2", "10.0.0.1"), ("fd00::96", "fd00::6")] {
        let mut c = cx(&none, None);
        c.dialed = ip(dialed);
        let tried_v4: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().expect("addr")];
        c.tried = &tried_v4;
        for _ in 0..20 {
            let p = b.pick(&t, &dual, &c).expect("pick");
            assert_eq!(p.endpoint.addr.ip(), ip(want), "dialed {dialed}");
        }
    }
}

fn outlier(extra: &str) -> String {
    format!("{{loadBalancer: roundRobin, outlierDetection: {{consecutive5xxErrors: 5, intervalMs: 1000, baseEjectionTimeMs: 3000{extra}}}, localityLb: {{enabled: false}}}}")
}

fn fail(b: &Balancers, t: &RouteTable, on: &str, status: u16, times: usize) {
    let none = US_A_X;
    let mut n = 0;
    for _ in 0..times * 50 {
        let p = b.pick(t, &web(), &cx(&none, None)).expect("pick");
        if p.endpoint.addr.ip() == ip(on) {
            p.report(TryOutcome::Status(status));
            n += 1;
            if n == times {
                return;
            }
        } else {
            p.report(TryOutcome::Success);
        }
    }
    panic!("{on} was not picked {times} times");
}

#[test]
fn ejection_and_return_timing() {
    let none = US_A_X;
    let t = table(&outlier(", maxEjectionPercent: 100"));
    let (clock, b, metrics) = clocked();
    fail(&b, &t, "10.0.0.1", 500, 4);
    assert_eq!(
        shares(&b, &t, &cx(&none, None), 400).len(),
        4,
        "four 5xx: not ejected"
    );
    fail(&b, &t, "10.0.0.1", 503, 1);
    let got = shares(&b, &t, &cx(&none, None), 300);
    assert!(!got.contains_key("1"), "ejected at once: {got:?}");
    let labels = HostLabels {
        host: "web.ns.svc.cluster.local".into(),
    };
    assert_eq!(metrics.outlier_ejections.get_or_create(&labels).get(), 1);
    assert_eq!(metrics.outlier_ejected.get_or_create(&labels).get(), 1);
    // Epoch at 1 ms, ejected at 1 ms for 3 s: back on the tick at 3001 ms.
    clock.advance(2_999);
    assert!(
        !shares(&b, &t, &cx(&none, None), 100).contains_key("1"),
        "still out before the tick"
    );
    clock.advance(1);
    assert!(
        shares(&b, &t, &cx(&none, None), 100).contains_key("1"),
        "back on the tick"
    );
    assert_eq!(metrics.outlier_ejected.get_or_create(&labels).get(), 0);
    // Ejected again at once: twice as long.
    fail(&b, &t, "10.0.0.1", 500, 5);
    clock.advance(5_999);
    assert!(
        !shares(&b, &t, &cx(&none, None), 100).contains_key("1"),
        "second ejection is 6 s"
    );
    clock.advance(1);
    assert!(shares(&b, &t, &cx(&none, None), 100).contains_key("1"));
    assert_eq!(metrics.outlier_ejections.get_or_create(&labels).get(), 2);
}

#[test]
fn ejection_share_limits_and_panic() {
    let none = US_A_X;
    #[rustfmt::skip]
    let cases: [(&str, &str, &[&str], &str); 4] = [
        ("default 10 %: one of four", "", &["10.0.0.1", "10.0.0.2"], "2 3 4"),
        ("50 %: two of four", ", maxEjectionPercent: 50", &["10.0.0.1", "10.0.0.2", "10.0.0.3"], "3 4"),
        ("all ejected: 503 UH", ", maxEjectionPercent: 100", &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], "err UH"),
        ("below minHealthPercent: every endpoint", ", maxEjectionPercent: 100, minHealthPercent: 50", &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], "1 2 3 4"),
    ];
    for (name, extra, failing, want) in cases {
        let t = table(&outlier(extra));
        let (_clock, b, _) = clocked();
        for f in failing {
            // An endpoint ejected already is never picked again: fail only those picked.
            let none = US_A_X;
            let mut n = 0;
            for _ in 0..200 {
                let Ok(p) = b.pick(&t, &web(), &cx(&none, None)) else {
                    break;
                };
                if p.endpoint.addr.ip() == ip(f) {
                    p.report(TryOutcome::Status(502));
                    n += 1;
                    if n == 5 {
                        break;
                    }
                }
            }
        }
        let got: Vec<String> = shares(&b, &t, &cx(&none, None), 200).into_keys().collect();
        assert_eq!(got.join(" "), want, "{name}");
    }
}

#[test]
fn model_updates_keep_state_of_endpoints_that_stay() {
    let none = US_A_X;
    let policy = outlier(", maxEjectionPercent: 100");
    let t = table_with(&policy, &[1, 2, 3, 4]);
    let (_clock, b, metrics) = clocked();
    fail(&b, &t, "10.0.0.1", 500, 5);
    fail(&b, &t, "10.0.0.2", 500, 5);
    let labels = HostLabels {
        host: "web.ns.svc.cluster.local".into(),
    };
    assert_eq!(metrics.outlier_ejected.get_or_create(&labels).get(), 2);
    // A new model without endpoint 2 and with 5: 1 stays ejected, 2's state is gone.
    let t2 = table_with(&policy, &[1, 3, 4, 5]);
    let got: Vec<String> = shares(&b, &t2, &cx(&none, None), 200).into_keys().collect();
    assert_eq!(got, ["3", "4", "5"]);
    assert_eq!(metrics.outlier_ejected.get_or_create(&labels).get(), 1);
    // A model without the service's destination policy drops the backend's ejection.
    let generation = b.current.load();
    assert_eq!(
        generation.by_host.values().flatten().count(),
        1,
        "state only for the backend picked"
    );
    assert_eq!(generation.find(&web()).map(|s| s.members.len()), Some(4));
}

#[test]
fn slow_start_ramps_a_new_endpoint() {
    fastrand::seed(9);
    let none = US_A_X;
    let policy = "{loadBalancer: roundRobin, warmupMs: 10000}";
    let (clock, b, _) = clocked();
    let t = table_with(policy, &[1, 2, 3, 4]);
    shares(&b, &t, &cx(&none, None), 10);
    let t2 = table_with(policy, &[1, 2, 3, 4, 5]);
    // Weights 1000 × 4 and the new one's: 10 % floor, 50 % at half time, full after.
    #[rustfmt::skip]
    let cases = [(0, 100.0 / 4100.0), (5_000, 500.0 / 4500.0), (5_000, 0.2)];
    for (advance, want) in cases {
        clock.advance(advance);
        let got = shares(&b, &t2, &cx(&none, None), 20_000);
        assert!(
            (got["5"] - want).abs() < 0.01,
            "after +{advance} ms: {got:?}, want {want}"
        );
    }
}

fn locality_policy(lb: &str) -> String {
    format!("{{outlierDetection: {{consecutive5xxErrors: 5, maxEjectionPercent: 100}}, localityLb: {lb}}}")
}

#[test]
fn locality_levels_and_failover() {
    fastrand::seed(13);
    let src = client_locality();
    #[rustfmt::skip]
    let cases: [(&str, &str, &[&str], &[(&str, f64)]); 6] = [
        ("same subzone first", "{}", &[], &[("1", 1.0)]),
        ("then same zone", "{}", &["10.0.0.1"], &[("2", 1.0)]),
        ("then same region", "{}", &["10.0.0.1", "10.0.0.2"], &[("3", 1.0)]),
        ("then the rest", "{}", &["10.0.0.1", "10.0.0.2", "10.0.0.3"], &[("4", 0.5), ("5", 0.5)]),
        ("then the failover region", "{failover: [{from: us, to: ap}]}", &["10.0.0.1", "10.0.0.2", "10.0.0.3"], &[("5", 1.0)]),
        ("failoverPriority labels", "{failoverPriority: [tier]}", &[], &[("1", 1.0)]),
    ];
    for (name, lb, ejected, want) in cases {
        let t = table_with(&locality_policy(lb), &[1, 2, 3, 4, 5]);
        let (_clock, b, _) = clocked();
        for e in ejected {
            // Fail the endpoint by name: with the level above ejected it takes the traffic.
            let mut n = 0;
            for _ in 0..100 {
                let p = b.pick(&t, &web(), &cx(&src, None)).expect("pick");
                if p.endpoint.addr.ip() == ip(e) {
                    p.report(TryOutcome::Status(500));
                    n += 1;
                    if n == 5 {
                        break;
                    }
                }
            }
            assert_eq!(n, 5, "{name}: {e} not failed");
        }
        assert_shares(name, &shares(&b, &t, &cx(&src, None), 2_000), want, 0.04);
    }
}

#[test]
fn locality_spills_by_overprovisioning() {
    fastrand::seed(17);
    // Two endpoints in the client's subzone (1 and 6 → reuse w1 and a twin in us/a/x).
    let yaml_policy = locality_policy("{}");
    let t = table_with(&yaml_policy, &[1, 2]);
    let src = Locality {
        region: "us".into(),
        zone: "a".into(),
        subzone: "x".into(),
    };
    let (_c, b, _) = clocked();
    // Level 0 is {1}, level 1 {2}: with 1 healthy all go to 1.
    assert_shares(
        "healthy",
        &shares(&b, &t, &cx(&src, None), 1_000),
        &[("1", 1.0)],
        0.0,
    );
    // A source with no locality spreads evenly.
    let none = US_A_X;
    assert_shares(
        "no source locality",
        &shares(&b, &t, &cx(&none, None), 2_000),
        &[("1", 0.5), ("2", 0.5)],
        0.0,
    );
}

#[test]
fn distribute_80_20() {
    fastrand::seed(19);
    let src = client_locality();
    let lb = r#"{distribute: [{from: "us/a/*", to: {"us/a/x": 80, "us/b/*": 20}}]}"#;
    let t = table_with(&locality_policy(lb), &[1, 2, 3, 4]);
    let (_c, b, _) = clocked();
    assert_shares(
        "80/20",
        &shares(&b, &t, &cx(&src, None), 20_000),
        &[("1", 0.8), ("3", 0.2)],
        0.01,
    );
    // A source no rule covers: priorities as usual.
    let eu = Locality {
        region: "eu".into(),
        zone: "a".into(),
        subzone: "x".into(),
    };
    assert_shares(
        "not covered",
        &shares(&b, &t, &cx(&eu, None), 500),
        &[("4", 1.0)],
        0.0,
    );
}

#[test]
fn retries_stay_in_the_first_locality_unless_allowed() {
    fastrand::seed(23);
    let src = client_locality();
    let t = table_with(&locality_policy("{}"), &[1, 2, 3]);
    let (_c, b, _) = clocked();
    let tried: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().expect("addr")];
    let mut c = cx(&src, None);
    c.tried = &tried;
    // Level 0 has only endpoint 1, already tried: it is retried there (stays local).
    assert_shares("stay", &shares(&b, &t, &c, 200), &[("1", 1.0)], 0.0);
    c.remote_localities = true;
    assert_shares(
        "remote allowed: next level",
        &shares(&b, &t, &c, 200),
        &[("2", 1.0)],
        0.0,
    );
}

#[test]
fn source_info_carries_the_trusted_workloads_locality() {
    let t = table("{}");
    let id = |sa: &str| {
        Some(mesh_common::identity::Identity::new(
            "cluster.local",
            "ns",
            sa,
        ))
    };
    #[rustfmt::skip]
    let cases = [
        ("the workload's locality", id("default"), client_locality()),
        ("another identity: unknown", id("other"), Locality::default()),
    ];
    for (name, identity, want) in cases {
        assert_eq!(
            t.source_info(identity, ip("10.9.0.1")).locality,
            want,
            "{name}"
        );
    }
}

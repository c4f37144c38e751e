//! Test models (Bookinfo-like, as the controller sends them) and request builders.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use mesh_common::identity::Identity;
use mesh_common::model::Snapshot;

use crate::route::{Decision, RequestView};
use crate::table::{RouteTable, SourceInfo, Target};

/// Bookinfo in namespace `bookinfo` behind waypoint `bookinfo/waypoint`, a client in `other`.
pub const BOOKINFO: &str = r#"
workloads:
- {uid: bookinfo/productpage-v1, name: productpage-v1, namespace: bookinfo, serviceAccount: bookinfo-productpage,
   addresses: [10.1.0.10], meshed: true, labels: {app: productpage, version: v1}}
- {uid: bookinfo/reviews-v1, name: reviews-v1, namespace: bookinfo, serviceAccount: bookinfo-reviews,
   addresses: [10.1.0.21], meshed: true, labels: {app: reviews, version: v1}}
- {uid: bookinfo/reviews-v2, name: reviews-v2, namespace: bookinfo, serviceAccount: bookinfo-reviews,
   addresses: [10.1.0.22], meshed: true, labels: {app: reviews, version: v2}}
- {uid: bookinfo/reviews-v3, name: reviews-v3, namespace: bookinfo, serviceAccount: bookinfo-reviews,
   addresses: [10.1.0.23], meshed: true, labels: {app: reviews, version: v3}}
- {uid: bookinfo/ratings-v1, name: ratings-v1, namespace: bookinfo, serviceAccount: bookinfo-ratings,
   addresses: [10.1.0.30], meshed: true, labels: {app: ratings, version: v1}}
- {uid: bookinfo/ratings-v2, name: ratings-v2, namespace: bookinfo, serviceAccount: bookinfo-ratings,
   addresses: [10.1.0.31], meshed: true, labels: {app: ratings, version: v2}}
- {uid: bookinfo/details-v1, name: details-v1, namespace: bookinfo, serviceAccount: bookinfo-details,
   addresses: [10.1.0.40], meshed: false, labels: {app: details, version: v1}}
- {uid: bookinfo/waypoint-7d9f, name: waypoint-7d9f, namespace: bookinfo, serviceAccount: waypoint,
   addresses: [10.1.0.99], labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
- {uid: other/sleep, name: sleep, namespace: other, serviceAccount: sleep,
   addresses: [10.2.0.5], meshed: true, labels: {app: sleep}}
services:
- name: productpage
  namespace: bookinfo
  hostname: productpage.bookinfo.svc.cluster.local
  vips: [10.96.0.10]
  ports: [{port: 9080, protocol: http}]
  endpoints: [{workloadUid: bookinfo/productpage-v1, address: 10.1.0.10}]
  waypoint: {name: waypoint, namespace: bookinfo}
- name: reviews
  namespace: bookinfo
  hostname: reviews.bookinfo.svc.cluster.local
  vips: [10.96.0.20]
  ports: [{port: 9080}, {port: 80, targetPort: 9080}]
  endpoints:
  - {workloadUid: bookinfo/reviews-v1, address: 10.1.0.21}
  - {workloadUid: bookinfo/reviews-v2, address: 10.1.0.22}
  - {workloadUid: bookinfo/reviews-v3, address: 10.1.0.23}
  waypoint: {name: waypoint, namespace: bookinfo}
- name: ratings
  namespace: bookinfo
  vips: [10.96.0.30]
  ports: [{port: 9080, targetPort: 9081, protocol: grpc}]
  endpoints:
  - {workloadUid: bookinfo/ratings-v1, address: 10.1.0.30}
  - {workloadUid: bookinfo/ratings-v2, address: 10.1.0.31}
  waypoint: {name: waypoint, namespace: bookinfo}
- name: details
  namespace: bookinfo
  hostname: details.bookinfo.svc.cluster.local
  vips: [10.96.0.40]
  ports: [{port: 9080, protocol: tcp}]
  endpoints: [{workloadUid: bookinfo/details-v1, address: 10.1.0.40}]
- name: empty
  namespace: bookinfo
  vips: [10.96.0.50]
  ports: [{port: 80}]
- name: api
  namespace: bookinfo
  hostname: api.example.com
  vips: [240.240.0.1]
  ports: [{port: 80}]
  endpoints: [{workloadUid: "", address: 93.184.216.34}]
destinationPolicies:
- name: reviews
  namespace: bookinfo
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
- name: everything
  namespace: bookinfo
  host: "*.bookinfo.svc.cluster.local"
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v9, labels: {version: v9}}
"#;

/// Bookinfo's own routes: `end-user: jason` to reviews v2, the rest to v1.
pub const BOOKINFO_ROUTES: &str = r#"
- name: reviews
  namespace: bookinfo
  hosts: [reviews]
  rules:
  - name: jason
    matches: [{headers: {end-user: {exact: jason}}}]
    destinations: [{host: reviews, subset: v2, weight: 100}]
  - destinations: [{host: reviews, subset: v1, weight: 100}]
"#;

/// The Bookinfo model with `extra` appended (YAML for further top-level keys).
pub fn snapshot(extra: &str) -> Snapshot {
    yaml_serde::from_str(&format!("{BOOKINFO}{extra}")).expect("test model")
}

/// Tables for the Bookinfo model with `routes` (a YAML list) and `extra`.
pub fn table(routes: &str, extra: &str) -> RouteTable {
    let snapshot = snapshot(&format!("routes:\n{routes}\n{extra}"));
    RouteTable::new(
        Arc::new(snapshot),
        "cluster.local",
        ("bookinfo", "waypoint"),
    )
}

/// A request as the data path sees it.
#[derive(Clone, Debug)]
pub struct Req {
    pub target: &'static str,
    pub method: Method,
    pub path: &'static str,
    pub host: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    /// `namespace/serviceaccount` of the peer certificate.
    pub identity: Option<&'static str>,
    pub source: &'static str,
    /// The verified JWT the request carries.
    pub jwt: Option<crate::jwt::Jwt>,
}

impl Req {
    /// `GET path` to `target` from `other/sleep`.
    pub fn get(target: &'static str, path: &'static str) -> Req {
        Req {
            target,
            method: Method::GET,
            path,
            host: "reviews:9080",
            headers: Vec::new(),
            identity: Some("other/sleep"),
            source: "10.2.0.5",
            jwt: None,
        }
    }

    pub fn method(mut self, m: &str) -> Req {
        self.method = m.parse().expect("method");
        self
    }

    pub fn host(mut self, h: &'static str) -> Req {
        self.host = h;
        self
    }

    pub fn header(mut self, k: &'static str, v: &'static str) -> Req {
        self.headers.push((k, v));
        self
    }

    /// A verified JWT with these claims (JSON object text).
    pub fn jwt(mut self, claims: &str) -> Req {
        let claims = serde_json::from_str(claims).expect("claims");
        self.jwt = Some(crate::jwt::Jwt::new(claims));
        self
    }

    pub fn from(mut self, identity: Option<&'static str>, addr: &'static str) -> Req {
        self.identity = identity;
        self.source = addr;
        self
    }

    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in &self.headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    pub fn target_in(&self, t: &RouteTable) -> Target {
        let addr: SocketAddr = self.target.parse().expect("target");
        t.target(addr).expect("target in the model")
    }

    pub fn source_in(&self, t: &RouteTable) -> SourceInfo {
        let identity = self.identity.map(|id| {
            let (ns, sa) = id.split_once('/').expect("ns/sa");
            Identity::new("cluster.local", ns, sa)
        });
        t.source_info(identity, self.source.parse().expect("source"))
    }

    /// Runs `f` on the request's view in `t`.
    pub fn with_view<R>(&self, t: &RouteTable, f: impl FnOnce(&RequestView<'_>) -> R) -> R {
        let headers = self.headers();
        let target = self.target_in(t);
        let source = self.source_in(t);
        let view = RequestView {
            method: &self.method,
            path_and_query: self.path,
            authority: self.host,
            headers: &headers,
            target: &target,
            source: &source,
            jwt: self.jwt.as_ref(),
        };
        f(&view)
    }
}

/// A decision in one line: `fwd <host>[/<subset>]:<port>[ path=..][ authority=..]`,
/// `redirect <code> <location>`, `direct <code> <body>` or `err <flag> <status>`.
pub fn summary(d: &Result<Decision, crate::error::ProxyError>) -> String {
    match d {
        Ok(Decision::Forward(f)) => {
            let b = &f.backend;
            let mut s = format!("fwd {}", b.host);
            if let Some(subset) = &b.subset {
                s.push_str(&format!("/{subset}"));
            }
            s.push_str(&format!(":{}", b.port));
            if let Some(p) = &f.path {
                s.push_str(&format!(" path={p}"));
            }
            if let Some(a) = &f.authority {
                s.push_str(&format!(" authority={a}"));
            }
            s
        }
        Ok(Decision::Redirect { status, location }) => {
            format!("redirect {} {location}", status.as_u16())
        }
        Ok(Decision::Direct { status, body }) => format!("direct {} {body}", status.as_u16()),
        Err(e) => format!("err {} {}", e.flag, e.status.as_u16()),
    }
}

/// A deterministic source of randomness.
pub fn seeded(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    move || rng.u64(..)
}

//! JWT key sets at in-mesh `http://` URLs (a rule's `jwksUri`), fetched by the waypoint itself
//! (the controller fetches nothing): the URL's host is a service of the model, reached like any
//! upstream (HBONE with the waypoint's identity to a meshed endpoint), each fetch bounded by its
//! rule's `timeout` (default [`DEFAULT_TIMEOUT`]) and [`MAX_JWKS_BYTES`]. Fetched sets are kept
//! in [`KeySets`], which the route tables read; a set is fetched again every [`REFRESH`] (a
//! failure retries after [`RETRY`] and keeps the last good set). Until a set is fetched, the
//! issuer's tokens are refused (401).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use mesh_common::model::Snapshot;

use crate::endpoints::pick;
use crate::hosts;
use crate::jwt::MAX_JWKS_BYTES;
use crate::route::Backend;
use crate::state::State;
use crate::table::{service_hostname, RouteTable, ServiceKey};
use crate::upstream::{Endpoint, Protocol, Upstreams};

/// Time for one fetch when the rule sets none (Istio's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a fetched set is fetched again (Istio's default refresh interval).
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// How soon a failed fetch is tried again.
pub const RETRY: Duration = Duration::from_secs(10);

/// The key sets fetched so far, by URL.
#[derive(Debug, Default)]
pub struct KeySets {
    sets: Mutex<HashMap<String, Arc<str>>>,
}

impl KeySets {
    /// The set fetched from `uri`, if any.
    pub fn get(&self, uri: &str) -> Option<Arc<str>> {
        self.sets.lock().ok()?.get(uri).cloned()
    }

    /// Keeps `text` as the set of `uri`; whether it changed.
    pub fn put(&self, uri: &str, text: &str) -> bool {
        let Ok(mut sets) = self.sets.lock() else {
            return false;
        };
        if sets.get(uri).is_some_and(|old| **old == *text) {
            return false;
        }
        sets.insert(uri.to_owned(), Arc::from(text));
        true
    }
}

/// A key set URL to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// The URL as the rule has it (the cache key).
    pub uri: String,
    /// Its host (a service host name, short names qualified in `namespace`).
    pub host: String,
    /// Its port (80 by default).
    pub port: u16,
    /// Path and query.
    pub path: String,
    /// Namespace of the rule's policy.
    pub namespace: String,
    /// The rule's timeout.
    pub timeout: Duration,
}

/// Splits an `http://host[:port]/path` URL; `None` for anything else.
fn parse(uri: &str) -> Option<(String, u16, String)> {
    let parsed: Uri = uri.parse().ok()?;
    if parsed.scheme_str() != Some("http") {
        return None;
    }
    let authority = parsed.authority()?;
    let path = parsed.path_and_query().map_or("/", |p| p.as_str());
    Some((
        authority.host().to_owned(),
        authority.port_u16().unwrap_or(80),
        path.to_owned(),
    ))
}

/// The `http://` key set URLs of the model's rules that have no inline set, once each.
pub fn remotes(snapshot: &Snapshot) -> Vec<Remote> {
    let mut out: Vec<Remote> = Vec::new();
    for policy in &snapshot.request_authentications {
        for rule in policy.jwt_rules.iter().filter(|r| r.jwks.is_none()) {
            let Some(uri) = &rule.jwks_uri else { continue };
            let Some((host, port, path)) = parse(uri) else {
                continue;
            };
            if out.iter().any(|r| r.uri == *uri) {
                continue;
            }
            out.push(Remote {
                uri: uri.clone(),
                host,
                port,
                path,
                namespace: policy.namespace.clone(),
                timeout: rule
                    .timeout_ms
                    .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
            });
        }
    }
    out
}

/// Fetches one key set.
pub async fn fetch(
    table: &RouteTable,
    upstreams: &Upstreams,
    remote: &Remote,
) -> Result<String, String> {
    let short = hosts::service_fqdn(&remote.namespace, &remote.host);
    let service = [
        remote.host.clone(),
        format!("{}.svc.cluster.local", remote.host),
        short,
    ]
    .iter()
    .find_map(|h| table.service_by_host(h))
    .ok_or_else(|| format!("no service has host {}", remote.host))?;
    let backend = Backend {
        host: service_hostname(service),
        service: Some(ServiceKey::of(service)),
        workload: None,
        subset: None,
        port: remote.port,
    };
    let candidates = table.endpoints(&backend).map_err(|e| e.message)?;
    let chosen = pick(&candidates, &mut || fastrand::u64(..)).ok_or("no endpoint")?;
    let endpoint = Endpoint {
        addr: chosen.addr,
        identity: chosen.identity.clone(),
    };
    let request = Request::get(remote.path.as_str())
        .header(
            http::header::HOST,
            format!("{}:{}", remote.host, remote.port),
        )
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .map_err(|e| e.to_string())?;
    // Outside any destination's circuit breaker: a fetch of its own, with default limits.
    let limits = crate::pool_limits::Limits::default();
    let destination = std::sync::Arc::default();
    let budget = crate::upstream::Budget {
        limits: &limits,
        destination: &destination,
    };
    let exchange = async {
        let response = upstreams
            .send(&endpoint, Protocol::Http1, request, budget)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        let limit = usize::try_from(MAX_JWKS_BYTES).unwrap_or(usize::MAX);
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_owned())
    };
    tokio::time::timeout(remote.timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", remote.timeout))?
}

/// Keeps the key sets of the current model fetched: on every model applied and when a set is
/// due, until the state's updates end. A changed set rebuilds the route table.
pub async fn run(state: Arc<State>, upstreams: Arc<Upstreams>) {
    let mut applied = state.subscribe();
    let mut due: HashMap<String, Instant> = HashMap::new();
    loop {
        let table = state.table();
        let remotes = remotes(table.snapshot());
        due.retain(|uri, _| remotes.iter().any(|r| r.uri == *uri));
        let mut changed = false;
        for remote in &remotes {
            if due.get(&remote.uri).is_some_and(|at| *at > Instant::now()) {
                continue;
            }
            match fetch(&table, &upstreams, remote).await {
                Ok(text) => {
                    changed |= state.key_sets().put(&remote.uri, &text);
                    due.insert(remote.uri.clone(), Instant::now() + REFRESH);
                }
                Err(e) => {
                    tracing::warn!(uri = remote.uri, error = e, "JWT key set not fetched");
                    due.insert(remote.uri.clone(), Instant::now() + RETRY);
                }
            }
        }
        if changed {
            state.reapply();
        }
        let next = due.values().min().copied();
        let wait = next.map_or(REFRESH, |at| at.saturating_duration_since(Instant::now()));
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_key_sets_of_a_model() {
        let snapshot: Snapshot = yaml_serde::from_str(
            r#"
requestAuthentications:
- name: a
  namespace: apps
  jwtRules:
  - {issuer: i1, jwksUri: "http://keys:8080/jwks.json?v=1", timeoutMs: 1500}
  - {issuer: i2, jwksUri: "http://keys.auth.svc.cluster.local/jwks"}
  - {issuer: i3, jwksUri: "https://idp.example/jwks"}
  - {issuer: i4, jwksUri: "file:///keys.json"}
  - {issuer: i5, jwksUri: "http://ignored/jwks", jwks: '{"keys":[]}'}
- name: b
  namespace: other
  jwtRules:
  - {issuer: i6, jwksUri: "http://keys:8080/jwks.json?v=1"}
"#,
        )
        .expect("model");
        let got: Vec<(String, u16, String, String, u64)> = remotes(&snapshot)
            .into_iter()
            .map(|r| {
                let ms = u64::try_from(r.timeout.as_millis()).unwrap_or(0);
                (r.host, r.port, r.path, r.namespace, ms)
            })
            .collect();
        let want = [
            ("keys", 8080, "/jwks.json?v=1", "apps", 1500),
            ("keys.auth.svc.cluster.local", 80, "/jwks", "apps", 5000),
        ];
        let want: Vec<(String, u16, String, String, u64)> = want
            .iter()
            .map(|(h, p, path, ns, ms)| (h.to_string(), *p, path.to_string(), ns.to_string(), *ms))
            .collect();
        assert_eq!(got, want);
    }

    /// A key server on loopback answering each request with `answer` (`None`: never answers),
    /// in the Bookinfo model as service `keys` (port 8080, endpoint outside the mesh).
    async fn key_server(answer: Option<&'static str>) -> RouteTable {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let Some(response) = answer else {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    };
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        let extra = format!(
            "- {{name: keys, namespace: bookinfo, vips: [10.96.0.77], ports: [{{port: 8080, targetPort: {port}}}], endpoints: [{{workloadUid: '', address: 127.0.0.1}}]}}\n"
        );
        let mut snapshot = crate::testdata::snapshot("");
        let keys: Vec<mesh_common::model::Service> = yaml_serde::from_str(&extra).expect("service");
        snapshot.services.extend(keys);
        RouteTable::new(
            Arc::new(snapshot),
            "cluster.local",
            ("bookinfo", "waypoint"),
        )
    }

    fn upstreams() -> Arc<Upstreams> {
        use mesh_hbone::ca::{CaConfig, CertificateAuthority};
        use mesh_hbone::certs::{CertManager, CertManagerConfig};
        use mesh_hbone::hbone::{HboneClientConfig, HbonePool};
        let ca = CertificateAuthority::generate(CaConfig::new("cluster.local")).expect("CA");
        let bundle = ca.trust_bundle();
        let certs = CertManager::new(Arc::new(ca), CertManagerConfig::default());
        let pool = HbonePool::new(certs, bundle, HboneClientConfig::default());
        let own = mesh_common::identity::Identity::new("cluster.local", "bookinfo", "waypoint");
        Upstreams::new(pool, own)
    }

    #[tokio::test]
    async fn fetches_over_the_upstreams_with_a_timeout() {
        let remote = |host: &str, timeout_ms| Remote {
            uri: format!("http://{host}:8080/jwks"),
            host: host.to_owned(),
            port: 8080,
            path: "/jwks".to_owned(),
            namespace: "bookinfo".to_owned(),
            timeout: Duration::from_millis(timeout_ms),
        };
        let jwks = "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"keys\":[]}";
        let missing = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        // (case, server answer, host, timeout, result)
        let cases = [
            ("short name", Some(jwks), "keys", 2000, Ok("{\"keys\":[]}")),
            (
                "qualified name",
                Some(jwks),
                "keys.bookinfo.svc.cluster.local",
                2000,
                Ok("{\"keys\":[]}"),
            ),
            (
                "not found",
                Some(missing),
                "keys",
                2000,
                Err("answered 404 Not Found"),
            ),
            (
                "no such service",
                Some(jwks),
                "nokeys",
                2000,
                Err("no service has host nokeys"),
            ),
            (
                "no answer",
                None,
                "keys",
                200,
                Err("no answer within 200ms"),
            ),
        ];
        let upstreams = upstreams();
        for (case, answer, host, timeout, want) in cases {
            let table = key_server(answer).await;
            let got = fetch(&table, &upstreams, &remote(host, timeout)).await;
            assert_eq!(got.as_deref().map_err(String::as_str), want, "{case}");
        }
    }

    #[test]
    fn key_sets_change_only_with_new_text() {
        let sets = KeySets::default();
        assert!(sets.get("u").is_none());
        assert!(sets.put("u", "a"));
        assert!(!sets.put("u", "a"));
        assert!(sets.put("u", "b"));
        assert_eq!(sets.get("u").as_deref(), Some("b"));
    }
}

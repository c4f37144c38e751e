//! The controller's admin endpoint (HTTP/1.1, JSON):
//! - `GET /clients`: the current version and each connected client with the version it
//!   acknowledged (what `meshctl status` prints);
//! - `GET /config_dump`: the full translated model;
//! - `GET /errors`: every current configuration error;
//! - `GET /healthz`;
//! - `GET /metrics`: the controller's health (`mesh_controller_*`, see [`crate::metrics`]) and
//!   the bounds of this endpoint's own server (Prometheus text).
//!
//! It runs on the bounded HTTP/1 server shared with the agent (connection caps, header-read,
//! idle and response timeouts, head and body limits; `mesh_common::http_server`), with its
//! default limits.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use mesh_common::http_server::{self, HttpResponse, Limits, ListenerMetrics};
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::net::TcpListener;

use crate::controller::Controller;
use crate::metrics::{self, CaMetrics, Sources, STALE_AFTER};
use crate::server::{ClientInfo, Registry};

/// Body of `GET /clients`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Version the controller publishes.
    pub version: String,
    /// Number of configuration errors.
    pub errors: usize,
    /// The first [`STATUS_ERRORS`] of them, as text (all of them: `GET /errors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_messages: Vec<String>,
    /// Connected clients.
    pub clients: Vec<ClientInfo>,
}

/// Errors listed in the `/clients` report (and so by `meshctl status`).
pub const STATUS_ERRORS: usize = 20;

/// Shared state of the admin endpoint.
#[derive(Debug, Clone)]
pub struct Admin {
    controller: Arc<Controller>,
    registry: Arc<Registry>,
    limits: Limits,
    server_metrics: ListenerMetrics,
    sources: Sources,
    metrics: Arc<MetricsRegistry>,
}

impl Admin {
    /// An admin endpoint over a controller and its client registry (the CA's metrics, until
    /// [`with_ca_metrics`](Self::with_ca_metrics), are those of a CA that signed nothing).
    pub fn new(controller: Arc<Controller>, registry: Arc<Registry>) -> Self {
        let server_metrics = ListenerMetrics::default();
        let sources = Sources {
            controller: controller.clone(),
            registry: registry.clone(),
            ca: Arc::default(),
            stale_after: STALE_AFTER,
        };
        Admin {
            controller,
            registry,
            limits: Limits::default(),
            metrics: Arc::new(metrics_registry(&server_metrics, &sources)),
            server_metrics,
            sources,
        }
    }

    /// The same endpoint reporting the certificate authority's metrics `ca` (the observer of
    /// the certificate service).
    pub fn with_ca_metrics(mut self, ca: Arc<CaMetrics>) -> Self {
        self.sources.ca = ca;
        self.metrics = Arc::new(metrics_registry(&self.server_metrics, &self.sources));
        self
    }

    /// The same endpoint counting clients as stale after `after` (default [`STALE_AFTER`]).
    pub fn with_stale_after(mut self, after: std::time::Duration) -> Self {
        self.sources.stale_after = after;
        self.metrics = Arc::new(metrics_registry(&self.server_metrics, &self.sources));
        self
    }

    /// The same endpoint with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The counters of the endpoint's server.
    pub fn server_metrics(&self) -> &ListenerMetrics {
        &self.server_metrics
    }

    /// The `/clients` report.
    pub fn status(&self) -> StatusReport {
        let current = self.controller.current();
        StatusReport {
            version: current.version.clone(),
            errors: current.errors.len(),
            error_messages: current
                .errors
                .iter()
                .take(STATUS_ERRORS)
                .map(ToString::to_string)
                .collect(),
            clients: self.registry.list(),
        }
    }

    /// Serves forever on a bound listener.
    pub async fn serve(self, listener: TcpListener) {
        let (limits, metrics) = (self.limits, self.server_metrics.clone());
        http_server::serve(listener, "admin", limits, metrics, move |req| {
            let admin = self.clone();
            async move { admin.handle(&req) }
        })
        .await;
    }

    fn handle(&self, req: &Request<Bytes>) -> HttpResponse {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        let current = self.controller.current();
        match req.uri().path() {
            "/clients" => json(&self.status()),
            "/config_dump" => json(&*current.snapshot),
            "/errors" => json(&*current.errors),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/metrics" => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.metrics) {
                    Ok(()) => http_server::text(StatusCode::OK, body),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "try /clients, /config_dump, /errors, /metrics\n",
            ),
        }
    }
}

/// The health metrics and the server's counters as `mesh_controller_http_*{listener="admin"}`,
/// named as the agent's.
fn metrics_registry(m: &ListenerMetrics, sources: &Sources) -> MetricsRegistry {
    let mut registry = MetricsRegistry::default();
    let label = |k: &'static str, v: &'static str| (Cow::Borrowed(k), Cow::Borrowed(v));
    let prefixed = registry.sub_registry_with_prefix("mesh_controller");
    metrics::register(prefixed, sources);
    let sub = prefixed.sub_registry_with_label(label("listener", "admin"));
    sub.register(
        "http_connections_open",
        "Connections open on the controller's admin endpoint",
        m.open.clone(),
    );
    sub.register(
        "http_header_read_timeouts",
        "HTTP connections closed because a request head was not complete in time",
        m.header_read_timeouts.clone(),
    );
    sub.register(
        "http_idle_closes",
        "HTTP keep-alive connections closed after the idle timeout",
        m.idle_closes.clone(),
    );
    sub.register(
        "http_response_timeouts",
        "HTTP connections closed because a response was not ready in time",
        m.response_timeouts.clone(),
    );
    sub.register(
        "http_oversized_requests",
        "HTTP requests refused for a head or body over the limits (431, 413)",
        m.oversized.clone(),
    );
    for (cap, counter) in [
        ("listener", &m.refused_listener_cap),
        ("peer", &m.refused_peer_cap),
    ] {
        sub.sub_registry_with_label(label("cap", cap)).register(
            "http_connections_refused",
            "HTTP connections closed at accept over the listener's or the client address's cap",
            counter.clone(),
        );
    }
    registry
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::translate::TranslateOptions;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .expect("answer in time")
            .expect("read");
        response
    }

    #[tokio::test]
    async fn the_admin_endpoint_closes_silent_clients_and_counts_them() {
        let admin = Admin::new(
            Controller::new(TranslateOptions::default()),
            Arc::new(Registry::default()),
        )
        .with_limits(Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _server = tokio::spawn(admin.clone().serve(listener));
        let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        assert_eq!(admin.server_metrics().header_read_timeouts.get(), 1);
        let response = get(addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        assert!(
            response
                .contains("mesh_controller_http_header_read_timeouts_total{listener=\"admin\"} 1"),
            "{response}"
        );
        assert!(
            response.contains(
                "mesh_controller_http_connections_refused_total{listener=\"admin\",cap=\"peer\"} 0"
            ),
            "{response}"
        );
        assert!(get(addr, "/clients").await.starts_with("HTTP/1.0 200"));
    }

    #[tokio::test]
    async fn the_health_metrics_are_exposed() {
        use mesh_hbone::ca_service::{SigningFailure, SigningObserver};

        let controller = Controller::new(TranslateOptions::default());
        controller
            .apply(vec![crate::controller::Change::ReplaceUnit {
                unit: "c.yaml".to_owned(),
                parsed: crate::load::parse_yaml(
                    "c.yaml",
                    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: a}\nspec: {action: PERMIT}\n",
                ),
            }])
            .expect("apply");
        let version = controller.current().version.clone();
        let registry = Arc::new(Registry::default());
        let ca = Arc::new(CaMetrics::default());
        let admin = Admin::new(controller, registry.clone())
            .with_ca_metrics(ca.clone())
            .with_stale_after(Duration::ZERO);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _server = tokio::spawn(admin.serve(listener));

        let id = registry.add(ClientInfo::default(), metrics::Kind::Agent);
        registry.sent(id, &version, 3, true, Duration::from_millis(2));
        let identity: mesh_common::identity::Identity = "spiffe://cluster.local/ns/a/sa/b"
            .parse()
            .expect("identity");
        let not_after = std::time::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        ca.signed(&identity, not_after);
        ca.failed(SigningFailure::NotAuthorized);
        // The push is not acknowledged: stale at once with a zero threshold.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let response = get(addr, "/metrics").await;
        for line in [
            "mesh_controller_clients_connected{kind=\"agent\"} 1",
            "mesh_controller_clients_connected{kind=\"waypoint\"} 0",
            "mesh_controller_clients_stale{kind=\"agent\"} 1",
            "mesh_controller_config_pushes_total{kind=\"agent\",type=\"full\"} 1",
            "mesh_controller_config_pushes_total{kind=\"waypoint\",type=\"incremental\"} 0",
            "mesh_controller_config_push_latency_seconds_count{kind=\"agent\"} 1",
            "mesh_controller_config_errors{kind=\"AuthorizationPolicy\"} 1",
            "mesh_controller_ca_certificates_signed_total 1",
            "mesh_controller_ca_signing_failures_total{reason=\"not_authorized\"} 1",
            "mesh_controller_ca_signing_failures_total{reason=\"bad_csr\"} 0",
            "mesh_controller_ca_certificate_expiry_timestamp_seconds{identity=\"spiffe://cluster.local/ns/a/sa/b\"} 4000000000",
            "mesh_controller_http_connections_open{listener=\"admin\"} 1",
        ] {
            assert!(response.contains(line), "{line} in {response}");
        }
        assert!(
            response.contains("# TYPE mesh_controller_config_warnings gauge"),
            "{response}"
        );
        // Acknowledged: no longer stale; the ack is counted.
        registry.acked(id, version, Vec::new());
        let response = get(addr, "/metrics").await;
        for line in [
            "mesh_controller_clients_stale{kind=\"agent\"} 0",
            "mesh_controller_config_acks_total{kind=\"agent\"} 1",
        ] {
            assert!(response.contains(line), "{line} in {response}");
        }
        // Gone: not connected.
        registry.remove(id);
        let response = get(addr, "/metrics").await;
        assert!(
            response.contains("mesh_controller_clients_connected{kind=\"agent\"} 0"),
            "{response}"
        );
    }
}

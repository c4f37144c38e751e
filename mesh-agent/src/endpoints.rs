//! The agent's three HTTP listeners, separated as Istio separates them: Prometheus metrics only
//! (`--metrics-addr`, 15020, every address), readiness only (`--readiness-addr`, 15021, every
//! address, for the kubelet) and admin (`--admin-addr`, 15000, loopback only: its switches must
//! not be reachable from pods). Here: their limits from the flags, the admin address check and
//! what the metrics listener answers.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{Method, StatusCode};
use mesh_common::http_server::{self, Limits};

/// The limits of the agent's HTTP listeners (each listener has its own places).
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct HttpFlags {
    /// Time a client has to send a whole request head (from its connection, or from the first
    /// byte of a later request) on the metrics, readiness and admin listeners.
    #[arg(long, env = "MESH_HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = http_server::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64)]
    pub http_header_read_timeout_ms: u64,
    /// Time a keep-alive connection may stay idle between requests.
    #[arg(long, env = "MESH_HTTP_IDLE_TIMEOUT_MS", default_value_t = http_server::DEFAULT_IDLE_TIMEOUT.as_millis() as u64)]
    pub http_idle_timeout_ms: u64,
    /// Connections open at once on each listener; more are closed at accept.
    #[arg(long, env = "MESH_HTTP_MAX_CONNECTIONS", default_value_t = http_server::DEFAULT_MAX_CONNECTIONS)]
    pub http_max_connections: usize,
    /// Connections open at once from one client address on each listener.
    #[arg(long, env = "MESH_HTTP_MAX_CONNECTIONS_PER_PEER", default_value_t = http_server::DEFAULT_MAX_CONNECTIONS_PER_PEER)]
    pub http_max_connections_per_peer: usize,
}

impl HttpFlags {
    /// The limits these flags give (the response, head and body bounds are fixed: the
    /// endpoints take no bodies and answer from memory).
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(self.http_header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
            max_connections: self.http_max_connections,
            max_connections_per_peer: self.http_max_connections_per_peer,
            ..Limits::default()
        }
    }
}

/// Why the listeners cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The admin address is reachable from other hosts or pods.
    #[error("--admin-addr {0} is not a loopback address: the admin endpoint can switch the kernel fast path and dumps the configuration, so it listens on loopback only (127.0.0.1 or ::1); metrics are on --metrics-addr, readiness on --readiness-addr")]
    AdminNotLoopback(SocketAddr),
}

/// Refuses an admin address other than loopback.
pub fn check_admin_addr(addr: SocketAddr) -> Result<(), EndpointError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(EndpointError::AdminNotLoopback(addr))
    }
}

/// What the metrics listener does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsRoute {
    /// `GET /metrics`: the Prometheus text.
    Metrics,
    /// Any other path: 404.
    NotFound,
    /// `/metrics` with another method: 405.
    MethodNotAllowed,
}

/// The metrics listener serves `GET /metrics` and nothing else.
pub fn metrics_route(method: &Method, path: &str) -> MetricsRoute {
    match (path, method) {
        ("/metrics", &Method::GET) => MetricsRoute::Metrics,
        ("/metrics", _) => MetricsRoute::MethodNotAllowed,
        _ => MetricsRoute::NotFound,
    }
}

/// The response of the metrics listener for `route`, with `render` giving the metrics text.
pub fn metrics_response(
    route: MetricsRoute,
    render: impl FnOnce() -> Result<String, std::fmt::Error>,
) -> http_server::HttpResponse {
    match route {
        MetricsRoute::Metrics => match render() {
            Ok(body) => http_server::text(StatusCode::OK, body),
            Err(e) => http_server::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
        MetricsRoute::NotFound => http_server::text(
            StatusCode::NOT_FOUND,
            "this port serves GET /metrics only\n",
        ),
        MetricsRoute::MethodNotAllowed => {
            let mut response =
                http_server::text(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n");
            response.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("GET"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_admin_addresses_are_accepted() {
        let cases = [
            ("127.0.0.1:15000", true),
            ("127.0.0.2:15000", true),
            ("[::1]:15000", true),
            ("0.0.0.0:15000", false),
            ("[::]:15000", false),
            ("198.18.0.1:15000", false),
            ("[::ffff:127.0.0.1]:15000", false),
        ];
        for (addr, ok) in cases {
            let addr: SocketAddr = addr.parse().expect("test literal");
            assert_eq!(check_admin_addr(addr).is_ok(), ok, "{addr}");
        }
        let message = check_admin_addr("0.0.0.0:15000".parse().expect("literal"))
            .expect_err("refused")
            .to_string();
        assert!(message.contains("not a loopback address"), "{message}");
    }

    #[test]
    fn the_metrics_listener_serves_get_metrics_only() {
        let cases = [
            (Method::GET, "/metrics", MetricsRoute::Metrics),
            (Method::POST, "/metrics", MetricsRoute::MethodNotAllowed),
            (Method::HEAD, "/metrics", MetricsRoute::MethodNotAllowed),
            (Method::GET, "/config_dump", MetricsRoute::NotFound),
            (Method::GET, "/pods", MetricsRoute::NotFound),
            (Method::GET, "/fastpath", MetricsRoute::NotFound),
            (Method::POST, "/fastpath", MetricsRoute::NotFound),
            (Method::GET, "/healthz/ready", MetricsRoute::NotFound),
            (Method::GET, "/", MetricsRoute::NotFound),
            (Method::GET, "/metrics/", MetricsRoute::NotFound),
        ];
        for (method, path, want) in cases {
            assert_eq!(metrics_route(&method, path), want, "{method} {path}");
        }
        let status = |route| metrics_response(route, || Ok("m 1\n".into())).status();
        assert_eq!(status(MetricsRoute::Metrics), StatusCode::OK);
        assert_eq!(status(MetricsRoute::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            status(MetricsRoute::MethodNotAllowed),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}

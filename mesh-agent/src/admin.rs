//! The agent's admin endpoint (`--admin-addr`, loopback only): enrolled pods with their attached
//! programs, the configuration, the data-plane model, the fast-path switches, readiness and the
//! metrics; and the handler of the metrics-only listener.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use mesh_common::http_server::{self, HttpResponse, Limits, ListenerMetrics};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::endpoints::{metrics_response, metrics_route};
use crate::metrics::render;
use crate::readiness::Readiness;
use crate::registry::Registry;
use crate::state::State;

/// What the admin endpoint reads.
#[derive(Debug)]
pub struct Admin {
    /// The pods.
    pub registry: Arc<Registry>,
    /// The model.
    pub state: Arc<State>,
    /// The agent's configuration.
    pub config: Config,
    /// The metrics registry.
    pub registry_metrics: prometheus_client::registry::Registry,
    /// The metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The tunnel, whose pool counters the metrics report.
    pub tunnel: Option<Arc<crate::tunnel::Tunnel>>,
    /// The same-node fast path: its verdicts, counters and switch.
    pub fastpath: Arc<crate::fastpath::FastPath>,
    /// Readiness, also answered here.
    pub readiness: Arc<Readiness>,
}

/// Serves the admin endpoint on `listener` until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    metrics: ListenerMetrics,
    admin: Arc<Admin>,
) {
    http_server::serve(listener, "admin", limits, metrics, move |req| {
        let admin = admin.clone();
        async move { route(req, &admin).await }
    })
    .await;
}

/// Serves `GET /metrics` (and nothing else) on `listener` until the task is aborted.
pub async fn serve_metrics(
    listener: TcpListener,
    limits: Limits,
    metrics: ListenerMetrics,
    admin: Arc<Admin>,
) {
    http_server::serve(listener, "metrics", limits, metrics, move |req| {
        let admin = admin.clone();
        async move {
            metrics_response(metrics_route(req.method(), req.uri().path()), || {
                metrics_text(&admin)
            })
        }
    })
    .await;
}

/// Serves `GET /healthz/ready` (and nothing else) on `listener` until the task is aborted.
pub async fn serve_readiness(
    listener: TcpListener,
    limits: Limits,
    metrics: ListenerMetrics,
    readiness: Arc<Readiness>,
) {
    http_server::serve(listener, "readiness", limits, metrics, move |req| {
        let readiness = readiness.clone();
        async move {
            match (req.method(), req.uri().path()) {
                (&Method::GET, "/healthz/ready") => readiness.respond().await,
                (_, "/healthz/ready") => text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"),
                _ => text(
                    StatusCode::NOT_FOUND,
                    "this port serves GET /healthz/ready only\n",
                ),
            }
        }
    })
    .await;
}

async fn route(req: Request<Bytes>, admin: &Admin) -> HttpResponse {
    if req.uri().path() == "/fastpath" && req.method() == Method::POST {
        return switch_fastpath(req.uri().query(), admin);
    }
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is supported (and POST /fastpath?enabled=true|false)\n",
        );
    }
    match req.uri().path() {
        "/fastpath" => json(&serde_json::json!({
            "enabled": admin.fastpath.enabled(),
            "splice": admin.fastpath.splicing(),
            "loopback_splice": admin.fastpath.loopback_splice(),
            "verdicts": admin.fastpath.list(),
        })),
        "/pods" => json(&admin.registry.list().await),
        "/config_dump" => json(&serde_json::json!({
            "config": admin.config,
            "model": *admin.state.snapshot(),
        })),
        "/healthz/ready" => admin.readiness.respond().await,
        "/metrics" => match metrics_text(admin) {
            Ok(body) => text(StatusCode::OK, &body),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        "/" => text(
            StatusCode::OK,
            "endpoints: /pods /config_dump /fastpath /healthz/ready /metrics\n",
        ),
        other => text(
            StatusCode::NOT_FOUND,
            &format!("no admin endpoint {other}\n"),
        ),
    }
}

/// `POST /fastpath?enabled=true|false` switches the kernel fast path (off withdraws every
/// verdict); `POST /fastpath?splice=true|false` the splice. Connections already decided or
/// spliced stay as they are.
fn switch_fastpath(query: Option<&str>, admin: &Admin) -> HttpResponse {
    let fastpath = &admin.fastpath;
    match query {
        Some("enabled=true") => fastpath.set_enabled(true),
        Some("enabled=false") => fastpath.set_enabled(false),
        Some("splice=true") => fastpath.set_splice(true),
        Some("splice=false") => fastpath.set_splice(false),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "expected one query of enabled=true|false or splice=true|false\n",
            )
        }
    }
    let (enabled, splice) = (fastpath.enabled(), fastpath.splicing());
    tracing::info!(
        enabled,
        splice,
        "kernel fast path switched from the admin endpoint"
    );
    text(
        StatusCode::OK,
        &format!("fast path enabled: {enabled}, splice: {splice}\n"),
    )
}

fn metrics_text(admin: &Admin) -> Result<String, std::fmt::Error> {
    if let Some(tunnel) = &admin.tunnel {
        admin.metrics.sync_pool(&tunnel.pool.stats());
    }
    admin.fastpath.sync_metrics(&admin.metrics);
    render(&admin.registry_metrics)
}

fn json(value: &impl serde::Serialize) -> HttpResponse {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> HttpResponse {
    http_server::text(status, body)
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

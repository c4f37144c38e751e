//! The agent's admin endpoint: enrolled pods with their attached programs, the configuration,
//! the data-plane model, and readiness.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::config::Config;
use crate::metrics::render;
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
}

/// Serves the admin endpoint on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(route(req, &admin).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "admin connection");
            }
        });
    }
}

async fn route(req: Request<Incoming>, admin: &Admin) -> Response<Full<Bytes>> {
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
        "/healthz/ready" => text(StatusCode::OK, "ready\n"),
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
fn switch_fastpath(query: Option<&str>, admin: &Admin) -> Response<Full<Bytes>> {
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

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

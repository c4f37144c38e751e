//! The controller's admin endpoint (HTTP/1.1, JSON):
//! - `GET /clients`: the current version and each connected client with the version it
//!   acknowledged (what `meshctl status` prints);
//! - `GET /config_dump`: the full translated model;
//! - `GET /errors`: every current configuration error;
//! - `GET /healthz`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::controller::Controller;
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
}

impl Admin {
    /// An admin endpoint over a controller and its client registry.
    pub fn new(controller: Arc<Controller>, registry: Arc<Registry>) -> Self {
        Admin {
            controller,
            registry,
        }
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
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(&req)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "admin connection");
                }
            });
        }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        let current = self.controller.current();
        match req.uri().path() {
            "/clients" => json(&self.status()),
            "/config_dump" => json(&*current.snapshot),
            "/errors" => json(&*current.errors),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "try /clients, /config_dump, /errors\n",
            ),
        }
    }
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

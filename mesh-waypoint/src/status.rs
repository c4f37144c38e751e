//! The status port (15021): `GET /healthz/ready` (ready once a model and the certificate are
//! there, so agents are only sent to an instance that can route) and `GET /metrics`.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use mesh_common::http_server::{self, text, HttpResponse, Limits, ListenerMetrics};
use mesh_hbone::certs::CertManager;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::state::State;

/// What the status port reads.
pub struct Status {
    /// The model.
    pub state: Arc<State>,
    /// The waypoint's certificate.
    pub certs: CertManager,
    /// The registered metrics.
    pub registry: Registry,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status").finish_non_exhaustive()
    }
}

impl Status {
    /// Why the instance is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.state.applied() == 0 {
            return Some("no configuration from the controller yet");
        }
        if self
            .certs
            .current(&self.state.instance().identity)
            .is_none()
        {
            return Some("no certificate yet");
        }
        None
    }

    fn respond(&self, method: &Method, path: &str) -> HttpResponse {
        match (method, path) {
            (&Method::GET, "/healthz/ready") => match self.not_ready() {
                None => text(StatusCode::OK, "ready\n"),
                Some(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            (&Method::GET, "/metrics") => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => text(StatusCode::OK, body),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            (_, "/healthz/ready" | "/metrics") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "this port serves GET /healthz/ready and GET /metrics\n",
            ),
        }
    }
}

/// Serves the status port until the task is aborted.
pub async fn serve(listener: TcpListener, status: Arc<Status>) {
    http_server::serve(
        listener,
        "status",
        Limits::default(),
        ListenerMetrics::default(),
        move |req| {
            let status = status.clone();
            async move { status.respond(req.method(), req.uri().path()) }
        },
    )
    .await;
}

//! The enrolment API: a Unix socket through which the node's pod registry (in Kubernetes, the
//! chained CNI plugin) tells the agent about pods.
//!
//! Protocol: newline-delimited JSON, one request per line, one response line each.
//! - `{"op":"add","pod":{"uid":..,"name":..,"namespace":..,"serviceAccount":..,"netns":..,
//!   "cgroup":..,"addresses":[..],"labels":{..},"namespaceLabels":{..}}}`
//!   -> `{"ok":true,"captured":true|false}`
//! - `{"op":"remove","uid":".."}` -> `{"ok":true}`
//! - `{"op":"list"}` -> `{"ok":true,"pods":[..]}`
//! - any error -> `{"ok":false,"error":"<what is wrong>"}`; the connection stays usable.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use crate::pod_info::PodInfo;
use crate::registry::{PodStatus, Registry};

/// The longest request line accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// After an oversized request, how much more input is drained before closing.
const DRAIN_BYTES: u64 = 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// A request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// With `add`: the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodInfo>,
    /// With `remove`: the pod's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Operations of the enrolment API.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Add or update a pod.
    Add,
    /// Remove a pod.
    Remove,
    /// List the pods.
    List,
}

/// A response line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// With `add`: whether the pod is captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured: Option<bool>,
    /// With `list`: the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Vec<serde_json::Value>>,
    /// On failure: what is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            captured: None,
            pods: None,
            error: Some(message.into()),
        }
    }
    fn ok() -> Response {
        Response {
            ok: true,
            captured: None,
            pods: None,
            error: None,
        }
    }
}

/// Binds the socket (replacing a stale one) and serves until the task is aborted.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Serves enrolment connections.
pub async fn serve(listener: UnixListener, registry: Arc<Registry>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let registry = registry.clone();
                tokio::spawn(async move { serve_connection(stream, &registry).await });
            }
            Err(e) => {
                warn!(error = %e, "enrolment accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: UnixStream, registry: &Registry) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_REQUEST_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        let response = match read {
            Ok(0) => return,
            Ok(_) if line.len() > MAX_REQUEST_BYTES => {
                let response =
                    Response::error(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
                let _ = write_response(&mut write, &response).await;
                // The rest of the line cannot be resynchronised: close, but first drain what the
                // client is still sending (bounded), so the close does not reset the connection
                // and destroy the response before the client reads it.
                let _ = write.shutdown().await;
                let mut rest = (&mut reader).take(DRAIN_BYTES);
                let mut sink = tokio::io::sink();
                let _ =
                    tokio::time::timeout(DRAIN_TIME, tokio::io::copy(&mut rest, &mut sink)).await;
                return;
            }
            Ok(_) => handle_line(&line, registry).await,
            Err(e) => {
                debug!(error = %e, "enrolment connection read failed");
                return;
            }
        };
        if write_response(&mut write, &response).await.is_err() {
            return;
        }
    }
}

async fn write_response(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

/// Handles one request line.
pub async fn handle_line(line: &[u8], registry: &Registry) -> Response {
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => return Response::error(format!("malformed request: {e}")),
    };
    match request.op {
        Op::Add => {
            let Some(pod) = request.pod else {
                return Response::error("op add needs field pod");
            };
            match registry.add(pod).await {
                Ok(captured) => Response {
                    captured: Some(captured),
                    ..Response::ok()
                },
                Err(e) => Response::error(error_chain(&e)),
            }
        }
        Op::Remove => {
            let Some(uid) = request.uid else {
                return Response::error("op remove needs field uid");
            };
            match registry.remove(&uid).await {
                Ok(()) => Response::ok(),
                Err(e) => Response::error(e.to_string()),
            }
        }
        Op::List => {
            let pods: Vec<PodStatus> = registry.list().await;
            let pods = pods
                .into_iter()
                .filter_map(|p| serde_json::to_value(p).ok())
                .collect();
            Response {
                pods: Some(pods),
                ..Response::ok()
            }
        }
    }
}

/// An error with all its causes, `a: b: c`, so the caller sees the kernel's reason too.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

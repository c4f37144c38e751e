//! The config stream client used by agents and waypoints. It runs in the background, publishes
//! every good snapshot on a `watch` channel, acknowledges what it applied, and reconnects with
//! backoff. While the controller is away the last good snapshot stays published, so the data
//! plane keeps working; each reconnect starts with a full update, so the client resyncs. The
//! channel and the node's credential come from a [`Transport`] (TLS with pinned roots, bearer
//! token), so the controller knows which node is asking.

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::config::config_request::Request;
use super::config::config_service_client::ConfigServiceClient;
use super::config::{Ack, ClientKind, ConfigRequest, Hello, Nack};
use super::model_set::ModelSet;
use crate::model::Snapshot;

/// How a client reaches the controller: the channel (TLS, verified against the roots the node
/// was installed with) and the node's credential. The control plane accepts nothing else, so
/// there is no plaintext transport; `mesh_hbone::ca_service::ControlPlaneTransport` is the one
/// the agent uses.
#[tonic::async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug + 'static {
    /// The controller's URL (`https://host:port`).
    fn uri(&self) -> &str;
    /// Connects `endpoint` (built from [`uri`](Self::uri), with the client's timeouts).
    async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error>;
    /// Adds the node's credential (and its name) to a request's metadata.
    async fn authorize(&self, metadata: &mut MetadataMap) -> Result<(), String>;
}

/// How to reach the controller and who this client is.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The channel to the controller and the node's credential.
    pub transport: Arc<dyn Transport>,
    /// Stable, unique client id (e.g. `agent/<node>`).
    pub client_id: String,
    /// Node this client runs on.
    pub node: String,
    /// Agent or waypoint.
    pub kind: ClientKind,
    /// Config to serve until the first update arrives (e.g. loaded from a local file).
    pub initial: Option<Snapshot>,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// TCP connect timeout, also the HTTP/2 keep-alive timeout that detects a dead controller.
    pub timeout: Duration,
}

impl ClientOptions {
    /// Options with the default timings.
    pub fn new(
        transport: Arc<dyn Transport>,
        client_id: &str,
        node: &str,
        kind: ClientKind,
    ) -> Self {
        ClientOptions {
            transport,
            client_id: client_id.to_owned(),
            node: node.to_owned(),
            kind,
            initial: None,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

/// What the client is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// Whether a stream is open and has delivered its first (full) update.
    pub connected: bool,
    /// Version of the published snapshot (empty before the first update).
    pub version: String,
    /// Streams attempted so far (the first and every reconnect).
    pub connections: u64,
    /// Updates rejected (answered with a Nack) so far.
    pub nacks: u64,
    /// When the published snapshot was applied from an update (`None`: not from the controller).
    pub applied_at: Option<std::time::SystemTime>,
    /// Last stream or decode error.
    pub last_error: Option<String>,
    /// What the published snapshot holds that this build does not understand (unknown fields
    /// and enum values, bounded as in the acknowledgement that carried them).
    pub warnings: Vec<String>,
}

/// A running config stream client; dropping it stops the background task.
#[derive(Debug)]
pub struct ConfigClient {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    status: watch::Receiver<ClientStatus>,
    task: JoinHandle<()>,
}

impl ConfigClient {
    /// Starts the client on the current tokio runtime.
    pub fn spawn(options: ClientOptions) -> Self {
        let initial = options.initial.clone().unwrap_or_default();
        let status = ClientStatus {
            version: initial.version.clone(),
            ..ClientStatus::default()
        };
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(initial));
        let (status_tx, status) = watch::channel(status);
        let task = tokio::spawn(run(options, snapshot_tx, status_tx));
        ConfigClient {
            snapshot,
            status,
            task,
        }
    }

    /// The last good snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees every new good snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The current status.
    pub fn status(&self) -> ClientStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn status_watch(&self) -> watch::Receiver<ClientStatus> {
        self.status.clone()
    }
}

impl Drop for ConfigClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why one stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("invalid endpoint: {0}")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("credential: {0}")]
    Credential(String),
    #[error("stream closed by the controller")]
    Closed,
    #[error("first update on a stream was not a full one")]
    NotFull,
}

async fn run(
    options: ClientOptions,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    status_tx: watch::Sender<ClientStatus>,
) {
    let mut set = ModelSet::default();
    let mut delay = options.reconnect_min;
    loop {
        status_tx.send_modify(|s| s.connections += 1);
        let result = stream_once(&options, &mut set, &snapshot_tx, &status_tx).await;
        let synced = status_tx.borrow().connected;
        let message = match result {
            Ok(()) => StreamError::Closed.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(client = %options.client_id, error = %message, "config stream ended; keeping last config");
        status_tx.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(message);
        });
        if synced {
            delay = options.reconnect_min;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(options.reconnect_max);
    }
}

async fn stream_once(
    options: &ClientOptions,
    set: &mut ModelSet,
    snapshot_tx: &watch::Sender<Arc<Snapshot>>,
    status_tx: &watch::Sender<ClientStatus>,
) -> Result<(), StreamError> {
    let endpoint = Endpoint::from_shared(options.transport.uri().to_owned())
        .map_err(StreamError::Endpoint)?
        .connect_timeout(options.timeout)
        .http2_keep_alive_interval(options.timeout)
        .keep_alive_timeout(options.timeout)
        .keep_alive_while_idle(true);
    let channel = options
        .transport
        .connect(endpoint)
        .await
        .map_err(StreamError::Connect)?;
    let mut client = ConfigServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let hello = Hello {
        client_id: options.client_id.clone(),
        node: options.node.clone(),
        kind: options.kind as i32,
        last_version: snapshot_tx.borrow().version.clone(),
    };
    // The receiver lives in the request stream below, so this send cannot fail yet.
    let _ = tx
        .send(ConfigRequest {
            request: Some(Request::Hello(hello)),
        })
        .await;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    options
        .transport
        .authorize(request.metadata_mut())
        .await
        .map_err(StreamError::Credential)?;
    let mut updates = client.stream_config(request).await?.into_inner();
    let mut first = true;
    while let Some(update) = updates.message().await? {
        if first && !update.full {
            return Err(StreamError::NotFull);
        }
        first = false;
        let reply = match set.apply(&update) {
            Ok(applied) => {
                log_warnings(&update.version, &applied.new_warnings);
                let warnings = set.warnings();
                snapshot_tx.send_replace(Arc::new(applied.snapshot));
                status_tx.send_modify(|s| {
                    s.connected = true;
                    s.version = update.version.clone();
                    s.warnings = warnings.clone();
                    s.applied_at = Some(std::time::SystemTime::now());
                });
                Request::Ack(Ack {
                    version: update.version,
                    warnings,
                })
            }
            Err(e) => {
                tracing::warn!(version = %update.version, error = %e, "rejected config update; keeping last config");
                status_tx.send_modify(|s| {
                    s.last_error = Some(e.to_string());
                    s.nacks += 1;
                });
                Request::Nack(Nack {
                    version: update.version,
                    error: e.to_string(),
                    resource_kind: e.resource_kind() as i32,
                })
            }
        };
        if tx
            .send(ConfigRequest {
                request: Some(reply),
            })
            .await
            .is_err()
        {
            return Err(StreamError::Closed);
        }
    }
    Ok(())
}

/// At most this many warning lines per applied version; the rest are counted in one line.
const MAX_LOGGED_WARNINGS: usize = 20;

/// Logs what an update carried that this build does not understand: once per version (each
/// resource is decoded once per update that carries it), bounded.
fn log_warnings(version: &str, warnings: &[String]) {
    for warning in warnings.iter().take(MAX_LOGGED_WARNINGS) {
        tracing::warn!(%version, %warning, "config applied with parts this build does not know (newer controller?)");
    }
    if warnings.len() > MAX_LOGGED_WARNINGS {
        tracing::warn!(%version, more = warnings.len() - MAX_LOGGED_WARNINGS, "more config warnings in this version");
    }
}

//! The gRPC config stream server. Each stream starts with the client's Hello; the server then
//! sends a full update of the client's view, and on every new configuration the difference
//! (or an empty update carrying the new version, so acknowledgements track the controller's
//! version). Acks and nacks are recorded in the [`Registry`].

pub mod registry;
pub mod view;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mesh_common::api::config::config_request::Request;
use mesh_common::api::config::config_service_server::{ConfigService, ConfigServiceServer};
use mesh_common::api::config::{ClientKind, ConfigRequest, ConfigUpdate, Hello};
use mesh_common::api::{bounded, ResourceSet};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use crate::controller::Controller;
pub use registry::{ClientInfo, Registry};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The config service.
#[derive(Debug, Clone)]
pub struct ConfigServer {
    controller: Arc<Controller>,
    registry: Arc<Registry>,
    shutdown: watch::Receiver<bool>,
}

impl ConfigServer {
    /// A server publishing the controller's configuration; streams end when `shutdown` turns
    /// true.
    pub fn new(
        controller: Arc<Controller>,
        registry: Arc<Registry>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        ConfigServer {
            controller,
            registry,
            shutdown,
        }
    }

    /// The tonic service.
    pub fn into_service(self) -> ConfigServiceServer<Self> {
        ConfigServiceServer::new(self)
    }

    /// Serves on a bound listener until `shutdown` turns true.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
    ) -> Result<(), tonic::transport::Error> {
        let mut shutdown = self.shutdown.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(incoming, async move { stopped(&mut shutdown).await })
            .await
    }
}

/// Resolves once shutdown is requested; never if the sender is gone without requesting it.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigService for ConfigServer {
    type StreamConfigStream = UpdateStream;

    async fn stream_config(
        &self,
        request: GrpcRequest<Streaming<ConfigRequest>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(ConfigRequest {
                request: Some(Request::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello")),
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ))
            }
        };
        if hello.client_id.is_empty() {
            return Err(Status::invalid_argument("Hello.client_id is required"));
        }
        let (tx, rx) = mpsc::channel(4);
        let session = Session {
            controller: self.controller.clone(),
            registry: self.registry.clone(),
            shutdown: self.shutdown.clone(),
            tx,
        };
        tokio::spawn(session.run(hello, peer, inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One client's stream.
struct Session {
    controller: Arc<Controller>,
    registry: Arc<Registry>,
    shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<ConfigUpdate, Status>>,
}

impl Session {
    async fn run(
        mut self,
        hello: Hello,
        peer: Option<SocketAddr>,
        mut inbound: Streaming<ConfigRequest>,
    ) {
        let kind = ClientKind::try_from(hello.kind).unwrap_or(ClientKind::Agent);
        let id = self.registry.add(ClientInfo {
            client_id: hello.client_id.clone(),
            node: hello.node.clone(),
            kind: match kind {
                ClientKind::Waypoint => "waypoint".to_owned(),
                _ => "agent".to_owned(),
            },
            peer: peer.map(|p| p.to_string()).unwrap_or_default(),
            previous_version: hello.last_version.clone(),
            ..ClientInfo::default()
        });
        tracing::info!(client = %hello.client_id, node = %hello.node, ?kind, "config client connected");
        let mut published = self.controller.subscribe();
        let mut sent: Option<(String, ResourceSet)> = None;
        loop {
            let current = published.borrow_and_update().clone();
            if sent.as_ref().map(|(v, _)| v) != Some(&current.version) {
                let set = view::view(&current.snapshot, &current.resources, kind, &hello.node);
                let update = set.diff(sent.as_ref().map(|(_, s)| s), &current.version);
                self.registry.update(id, |c| {
                    c.sent_version = current.version.clone();
                    c.resources = set.len();
                });
                if self.tx.send(Ok(update)).await.is_err() {
                    break;
                }
                sent = Some((current.version.clone(), set));
            }
            tokio::select! {
                changed = published.changed() => if changed.is_err() { break },
                message = inbound.message() => match message {
                    Ok(Some(ConfigRequest { request: Some(Request::Ack(ack)) })) => {
                        if !ack.warnings.is_empty() {
                            tracing::warn!(client = %hello.client_id, version = %ack.version, warnings = ack.warnings.len(), first = ?ack.warnings.first(), "client applied config it does not fully understand (version skew)");
                        }
                        // Bounded again here: the client is not trusted to have bounded them.
                        let warnings = bounded(&ack.warnings);
                        self.registry.update(id, |c| {
                            c.acked_version = ack.version;
                            c.warnings = warnings;
                        });
                    }
                    Ok(Some(ConfigRequest { request: Some(Request::Nack(nack)) })) => {
                        tracing::warn!(client = %hello.client_id, version = %nack.version, error = %nack.error, "client rejected config");
                        self.registry.update(id, |c| c.last_nack = Some(format!("{}: {}", nack.version, nack.error)));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                },
                () = stopped(&mut self.shutdown) => {
                    let _ = self.tx.send(Err(Status::unavailable("controller shutting down"))).await;
                    break;
                }
            }
        }
        self.registry.remove(id);
        tracing::info!(client = %hello.client_id, "config client disconnected");
    }
}

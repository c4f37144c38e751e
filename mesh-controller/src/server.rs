//! The gRPC config stream server, over the control plane's TLS. Every stream is authenticated
//! like a certificate request (the node's bearer token, checked by the controller's node
//! authenticator), and its Hello must name that node ([`admit`]). Each stream starts with the client's Hello; the server then
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
use mesh_hbone::ca_service::transport::tls_incoming;
use mesh_hbone::ca_service::{authenticate_metadata, HandshakeStats, NodeAuthenticator};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use crate::controller::Controller;
pub use registry::{ClientInfo, Registry};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The config service.
#[derive(Clone)]
pub struct ConfigServer {
    controller: Arc<Controller>,
    registry: Arc<Registry>,
    shutdown: watch::Receiver<bool>,
    authenticator: Arc<dyn NodeAuthenticator>,
}

impl std::fmt::Debug for ConfigServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigServer").finish_non_exhaustive()
    }
}

/// Why a Hello was refused after its node authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloRefusal {
    /// No client id.
    #[error("Hello.client_id is required")]
    NoClientId,
    /// The Hello names another node than the credential proves.
    #[error("Hello.node {claimed:?} is not the authenticated node {authenticated:?}")]
    WrongNode {
        /// The node the credential proves.
        authenticated: String,
        /// The node the Hello claims.
        claimed: String,
    },
    /// A waypoint's view (every route and policy) is asked for with a node's credential.
    #[error(
        "kind WAYPOINT is refused: a waypoint needs a waypoint credential, which this \
         controller does not issue yet, and a node's credential is entitled to its node's view \
         only"
    )]
    Waypoint,
    /// A kind this controller does not know.
    #[error("unknown client kind {0}")]
    UnknownKind(i32),
}

impl HelloRefusal {
    fn status(&self) -> Status {
        match self {
            HelloRefusal::NoClientId | HelloRefusal::UnknownKind(_) => {
                Status::invalid_argument(self.to_string())
            }
            HelloRefusal::WrongNode { .. } | HelloRefusal::Waypoint => {
                Status::permission_denied(self.to_string())
            }
        }
    }
}

/// Whether the node `authenticated` may open the stream `hello` asks for, and as which kind: an
/// agent of its own node only.
pub fn admit(authenticated: &str, hello: &Hello) -> Result<ClientKind, HelloRefusal> {
    if hello.client_id.is_empty() {
        return Err(HelloRefusal::NoClientId);
    }
    match ClientKind::try_from(hello.kind) {
        Ok(ClientKind::Agent | ClientKind::Unspecified) => {}
        Ok(ClientKind::Waypoint) => return Err(HelloRefusal::Waypoint),
        Err(_) => return Err(HelloRefusal::UnknownKind(hello.kind)),
    }
    if hello.node != authenticated {
        return Err(HelloRefusal::WrongNode {
            authenticated: authenticated.to_owned(),
            claimed: hello.node.clone(),
        });
    }
    Ok(ClientKind::Agent)
}

impl ConfigServer {
    /// A server publishing the controller's configuration to the nodes `authenticator` accepts;
    /// streams end when `shutdown` turns true.
    pub fn new(
        controller: Arc<Controller>,
        registry: Arc<Registry>,
        shutdown: watch::Receiver<bool>,
        authenticator: Arc<dyn NodeAuthenticator>,
    ) -> Self {
        ConfigServer {
            controller,
            registry,
            shutdown,
            authenticator,
        }
    }

    /// The tonic service.
    pub fn into_service(self) -> ConfigServiceServer<Self> {
        ConfigServiceServer::new(self)
    }

    /// Serves on a bound listener, over TLS with `tls`, until `shutdown` turns true;
    /// connections without a TLS handshake are refused (counted in `stats`).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        stats: Arc<HandshakeStats>,
    ) -> Result<(), tonic::transport::Error> {
        let mut shutdown = self.shutdown.clone();
        let incoming = tls_incoming(listener, tls, "config stream", stats);
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
        // Authenticate before reading anything the client says about itself.
        let node = authenticate_metadata(
            self.authenticator.as_ref(),
            request.metadata(),
            "config stream",
        )
        .await?;
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
        let kind = admit(&node, &hello).map_err(|refusal| {
            tracing::warn!(%node, claimed = %hello.node, client = %hello.client_id, ?peer, reason = %refusal, "refused a config stream");
            refusal.status()
        })?;
        let (tx, rx) = mpsc::channel(4);
        let session = Session {
            controller: self.controller.clone(),
            registry: self.registry.clone(),
            shutdown: self.shutdown.clone(),
            tx,
        };
        tokio::spawn(session.run(hello, kind, peer, inbound));
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
        kind: ClientKind,
        peer: Option<SocketAddr>,
        mut inbound: Streaming<ConfigRequest>,
    ) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: &str, kind: i32) -> Hello {
        Hello {
            client_id: format!("agent/{node}"),
            node: node.to_owned(),
            kind,
            last_version: String::new(),
        }
    }

    #[test]
    fn a_node_is_admitted_as_its_own_agent_only() {
        let agent = ClientKind::Agent as i32;
        let waypoint = ClientKind::Waypoint as i32;
        let wrong_node = |claimed: &str| HelloRefusal::WrongNode {
            authenticated: "node1".to_owned(),
            claimed: claimed.to_owned(),
        };
        let cases: &[(Hello, Result<ClientKind, HelloRefusal>)] = &[
            (hello("node1", agent), Ok(ClientKind::Agent)),
            (hello("node1", 0), Ok(ClientKind::Agent)),
            (hello("node2", agent), Err(wrong_node("node2"))),
            (hello("", agent), Err(wrong_node(""))),
            (hello("Node1", agent), Err(wrong_node("Node1"))),
            (hello("node1", waypoint), Err(HelloRefusal::Waypoint)),
            (hello("node2", waypoint), Err(HelloRefusal::Waypoint)),
            (hello("node1", 7), Err(HelloRefusal::UnknownKind(7))),
            (
                Hello {
                    client_id: String::new(),
                    ..hello("node1", agent)
                },
                Err(HelloRefusal::NoClientId),
            ),
        ];
        for (hello, expected) in cases {
            assert_eq!(&admit("node1", hello), expected, "{hello:?}");
        }
    }

    #[test]
    fn refusals_are_answered_with_the_right_code() {
        assert_eq!(
            HelloRefusal::Waypoint.status().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            HelloRefusal::NoClientId.status().code(),
            tonic::Code::InvalidArgument
        );
    }
}

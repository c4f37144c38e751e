//! The gRPC config stream server, over the control plane's TLS. Every stream is authenticated
//! like a certificate request (the principal's bearer token, checked by the controller's
//! authenticator: a node, or a waypoint `waypoint/<namespace>/<name>`), and its Hello must name
//! that principal and the kind it may open ([`admit`]). Each stream starts with the client's Hello; the server then
//! sends a full update of the client's view, and on every new configuration the difference
//! (or an empty update carrying the new version, so acknowledgements track the controller's
//! version). Acks and nacks are recorded in the [`Registry`].

pub mod registry;
pub mod view;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::metrics::Kind;
use crate::principal::{Principal, PrincipalError};
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

/// Why a Hello was refused after its principal authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloRefusal {
    /// No client id.
    #[error("Hello.client_id is required")]
    NoClientId,
    /// The Hello names another principal than the credential proves.
    #[error("Hello.node {claimed:?} is not the authenticated principal {authenticated:?}")]
    WrongNode {
        /// The principal the credential proves.
        authenticated: String,
        /// The node the Hello claims.
        claimed: String,
    },
    /// A waypoint's view is asked for with a node's credential.
    #[error(
        "kind WAYPOINT is refused for node {0:?}: a node's credential is entitled to its \
         node's view only; a waypoint authenticates as waypoint/<namespace>/<name>"
    )]
    Waypoint(String),
    /// An agent's view is asked for with a waypoint's credential.
    #[error(
        "kind AGENT is refused for {0:?}: a waypoint's credential opens kind WAYPOINT streams \
         only"
    )]
    WaypointAsAgent(String),
    /// The authenticated principal is not a node name or a waypoint principal.
    #[error("{0}")]
    BadPrincipal(#[from] PrincipalError),
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
            HelloRefusal::WrongNode { .. }
            | HelloRefusal::Waypoint(_)
            | HelloRefusal::WaypointAsAgent(_)
            | HelloRefusal::BadPrincipal(_) => Status::permission_denied(self.to_string()),
        }
    }
}

/// Whether the principal `authenticated` may open the stream `hello` asks for, and as which
/// kind. `Hello.node` must name the authenticated principal in every case (a node name, or
/// `waypoint/<namespace>/<name>` for a waypoint: the same string as the credential's
/// `x-mesh-node`). A node opens AGENT streams only (UNSPECIFIED, from older agents, counts as
/// AGENT); a waypoint principal opens WAYPOINT streams only.
pub fn admit(authenticated: &str, hello: &Hello) -> Result<ClientKind, HelloRefusal> {
    if hello.client_id.is_empty() {
        return Err(HelloRefusal::NoClientId);
    }
    let kind =
        ClientKind::try_from(hello.kind).map_err(|_| HelloRefusal::UnknownKind(hello.kind))?;
    let principal: Principal = authenticated.parse()?;
    if hello.node != authenticated {
        return Err(HelloRefusal::WrongNode {
            authenticated: authenticated.to_owned(),
            claimed: hello.node.clone(),
        });
    }
    match (principal, kind) {
        (Principal::Node(_), ClientKind::Agent | ClientKind::Unspecified) => Ok(ClientKind::Agent),
        (Principal::Node(node), ClientKind::Waypoint) => Err(HelloRefusal::Waypoint(node)),
        (Principal::Waypoint { .. }, ClientKind::Waypoint) => Ok(ClientKind::Waypoint),
        (p @ Principal::Waypoint { .. }, ClientKind::Agent | ClientKind::Unspecified) => {
            Err(HelloRefusal::WaypointAsAgent(p.to_string()))
        }
    }
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
        let id = self.registry.add(
            ClientInfo {
                client_id: hello.client_id.clone(),
                node: hello.node.clone(),
                peer: peer.map(|p| p.to_string()).unwrap_or_default(),
                previous_version: hello.last_version.clone(),
                ..ClientInfo::default()
            },
            Kind::of(kind),
        );
        let opened = Instant::now();
        tracing::info!(client = %hello.client_id, node = %hello.node, ?kind, "config client connected");
        let mut published = self.controller.subscribe();
        let mut sent: Option<(String, ResourceSet)> = None;
        loop {
            let current = published.borrow_and_update().clone();
            if sent.as_ref().map(|(v, _)| v) != Some(&current.version) {
                let set = view::view(&current.snapshot, &current.resources, kind, &hello.node);
                let update = set.diff(sent.as_ref().map(|(_, s)| s), &current.version);
                let full = update.full;
                if self.tx.send(Ok(update)).await.is_err() {
                    break;
                }
                // Waiting since the configuration was there for this client to have.
                let waited = current.published_at.max(opened).elapsed();
                self.registry
                    .sent(id, &current.version, set.len(), full, waited);
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
                        self.registry.acked(id, ack.version, warnings);
                    }
                    Ok(Some(ConfigRequest { request: Some(Request::Nack(nack)) })) => {
                        tracing::warn!(client = %hello.client_id, version = %nack.version, error = %nack.error, "client rejected config");
                        self.registry.nacked(id, &nack.version, &nack.error, nack.resource_kind);
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
    fn principals_are_admitted_as_their_own_kind_only() {
        let agent = ClientKind::Agent as i32;
        let waypoint = ClientKind::Waypoint as i32;
        let wp = "waypoint/apps/wp";
        let wrong = |authenticated: &str, claimed: &str| {
            Err(HelloRefusal::WrongNode {
                authenticated: authenticated.to_owned(),
                claimed: claimed.to_owned(),
            })
        };
        // (authenticated principal, Hello, expected)
        #[rustfmt::skip]
        let cases: Vec<(&str, Hello, Result<ClientKind, HelloRefusal>)> = vec![
            ("node1", hello("node1", agent), Ok(ClientKind::Agent)),
            ("node1", hello("node1", 0), Ok(ClientKind::Agent)),
            ("node1", hello("node2", agent), wrong("node1", "node2")),
            ("node1", hello("", agent), wrong("node1", "")),
            ("node1", hello("Node1", agent), wrong("node1", "Node1")),
            ("node1", hello("node1", waypoint), Err(HelloRefusal::Waypoint("node1".to_owned()))),
            ("node1", hello("node2", waypoint), wrong("node1", "node2")),
            ("node1", hello(wp, waypoint), wrong("node1", wp)),
            ("node1", hello("node1", 7), Err(HelloRefusal::UnknownKind(7))),
            ("node1", Hello { client_id: String::new(), ..hello("node1", agent) }, Err(HelloRefusal::NoClientId)),
            (wp, hello(wp, waypoint), Ok(ClientKind::Waypoint)),
            (wp, hello(wp, agent), Err(HelloRefusal::WaypointAsAgent(wp.to_owned()))),
            (wp, hello(wp, 0), Err(HelloRefusal::WaypointAsAgent(wp.to_owned()))),
            (wp, hello("waypoint/apps/other", waypoint), wrong(wp, "waypoint/apps/other")),
            (wp, hello("node1", waypoint), wrong(wp, "node1")),
            (wp, hello("", waypoint), wrong(wp, "")),
            ("waypoint/apps", hello("waypoint/apps", waypoint),
             Err(HelloRefusal::BadPrincipal(PrincipalError::BadWaypoint("waypoint/apps".to_owned())))),
        ];
        for (principal, hello, expected) in &cases {
            assert_eq!(&admit(principal, hello), expected, "{principal} {hello:?}");
        }
    }

    #[test]
    fn refusals_are_answered_with_the_right_code() {
        assert_eq!(
            HelloRefusal::Waypoint("node1".to_owned()).status().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            HelloRefusal::WaypointAsAgent("waypoint/a/b".to_owned())
                .status()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            HelloRefusal::NoClientId.status().code(),
            tonic::Code::InvalidArgument
        );
    }
}

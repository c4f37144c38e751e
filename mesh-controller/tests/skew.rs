//! Version skew on the config stream, in process: the real controller and the real
//! `ConfigClient`, with a proxy between them that rewrites the controller's resources the way a
//! controller one release newer (one field more) or older (fewer fields) would send them; and a
//! client one release newer whose Ack carries a protobuf field this controller does not know.
//! Loopback only, every wait bounded.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

#[path = "support/pki.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod pki;
use pki::Pki;

use mesh_common::api::config::config_request::Request;
use mesh_common::api::config::config_service_client::ConfigServiceClient;
use mesh_common::api::config::config_service_server::{ConfigService, ConfigServiceServer};
use mesh_common::api::config::{ClientKind, ConfigRequest, ConfigUpdate, Hello, ResourceKind};
use mesh_common::api::{ClientOptions, ConfigClient, Transport};
use mesh_controller::admin::Admin;
use mesh_controller::controller::{Change, Controller};
use mesh_controller::load::parse_yaml;
use mesh_controller::server::{ClientInfo, ConfigServer, Registry};
use mesh_controller::translate::TranslateOptions;
use mesh_hbone::ca_service::transport::tls_incoming;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{port: 80}]}\n";

fn pod(name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec: {{nodeName: n1, serviceAccountName: web, containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIP: 10.244.1.{}}}\n",
        name.len()
    )
}

/// A controller with a config of one service and the given pods, serving on loopback.
struct Running {
    addr: SocketAddr,
    pki: Arc<Pki>,
    controller: Arc<Controller>,
    registry: Arc<Registry>,
    _stop: watch::Sender<bool>,
}

async fn controller(pods: &[&str]) -> Running {
    let controller = Controller::new(TranslateOptions::default());
    set_config(&controller, pods);
    let registry = Arc::new(Registry::default());
    let (stop, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let pki = Arc::new(Pki::new(&["n1"]));
    let security = pki.security();
    tokio::spawn(
        ConfigServer::new(
            controller.clone(),
            registry.clone(),
            stop_rx,
            security.authenticator,
        )
        .serve(listener, security.tls, security.handshakes),
    );
    Running {
        addr,
        pki,
        controller,
        registry,
        _stop: stop,
    }
}

fn set_config(controller: &Controller, pods: &[&str]) {
    let text = pods
        .iter()
        .map(|p| pod(p))
        .fold(SERVICE.to_owned(), |acc, p| acc + &p);
    controller
        .apply(vec![Change::ReplaceUnit {
            unit: "c.yaml".to_owned(),
            parsed: parse_yaml("c.yaml", &text),
        }])
        .expect("apply");
}

/// How the proxy changes each resource's JSON object on its way to the client.
type Rewrite = fn(ResourceKind, &mut Map<String, Value>);

/// A config service that forwards each stream to `upstream` and rewrites the resources of every
/// update: what a controller of another release would have sent.
struct SkewProxy {
    /// The controller, reached over TLS with node n1's credential.
    upstream: Arc<dyn Transport>,
    rewrite: Rewrite,
}

type Updates = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigService for SkewProxy {
    type StreamConfigStream = Updates;

    async fn stream_config(
        &self,
        request: tonic::Request<Streaming<ConfigRequest>>,
    ) -> Result<tonic::Response<Updates>, Status> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.upstream.uri().to_owned())
            .map_err(|e| Status::internal(e.to_string()))?;
        let channel = self
            .upstream
            .connect(endpoint)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut upstream = ConfigServiceClient::new(channel);
        // Requests (Hello, Acks) pass unchanged: the controller sees what the client sent.
        let mut requests = tonic::Request::new(request.into_inner().filter_map(Result::ok));
        self.upstream
            .authorize(requests.metadata_mut())
            .await
            .map_err(Status::unauthenticated)?;
        let updates = upstream.stream_config(requests).await?.into_inner();
        let rewrite = self.rewrite;
        let rewritten = updates.map(move |update| {
            update.map(|mut update| {
                for resource in &mut update.upserts {
                    let kind =
                        ResourceKind::try_from(resource.kind).unwrap_or(ResourceKind::Unspecified);
                    let mut value: Value =
                        serde_json::from_slice(&resource.json).expect("controller sends JSON");
                    let object = value.as_object_mut().expect("resources are objects");
                    rewrite(kind, object);
                    resource.json = serde_json::to_vec(&value).expect("encode").into();
                }
                update
            })
        });
        Ok(tonic::Response::new(Box::pin(rewritten)))
    }
}

async fn proxy(running: &Running, rewrite: Rewrite) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let service = ConfigServiceServer::new(SkewProxy {
        upstream: running.pki.transport(running.addr, "n1"),
        rewrite,
    });
    // The proxy presents the controller's own serving certificate, so the client's pinned root
    // and node credential work through it unchanged.
    let incoming = tls_incoming(
        listener,
        running.pki.tls(),
        "skew proxy",
        running.pki.handshakes.clone(),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    addr
}

fn client(running: &Running, addr: SocketAddr) -> ConfigClient {
    let mut options = ClientOptions::new(
        running.pki.transport(addr, "n1"),
        "agent/n1",
        "n1",
        ClientKind::Agent,
    );
    options.reconnect_min = Duration::from_millis(20);
    options.reconnect_max = Duration::from_millis(100);
    options.timeout = Duration::from_secs(1);
    ConfigClient::spawn(options)
}

/// Waits until the registry shows the client having acknowledged `version`.
async fn acked(registry: &Registry, version: &str) -> ClientInfo {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let clients = registry.list();
        if let Some(c) = clients.iter().find(|c| c.acked_version == version) {
            return c.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ack of {version}: {clients:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn applied(client: &ConfigClient, version: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.snapshot().version != version {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client did not apply {version}: {:?}",
            client.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A newer controller: every workload and service carries a field this build does not know.
fn newer(kind: ResourceKind, object: &mut Map<String, Value>) {
    if matches!(kind, ResourceKind::Workload | ResourceKind::Service) {
        object.insert(
            "sessionAffinityConfig".to_owned(),
            serde_json::json!({"preferClose": true}),
        );
    }
}

/// An older controller: none of the fields added after the first release.
fn older(kind: ResourceKind, object: &mut Map<String, Value>) {
    let added: &[&str] = match kind {
        ResourceKind::Workload => &["serviceAccount", "labels", "waypoint"],
        ResourceKind::Service => &["hostname", "waypoint"],
        _ => &[],
    };
    for field in added {
        object.remove(*field);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_agent_applies_a_newer_controllers_updates_and_reports_the_field() {
    let running = controller(&["web-a"]).await;
    let via = proxy(&running, newer).await;
    let agent = client(&running, via);

    let v1 = running.controller.current().version.clone();
    applied(&agent, &v1).await;
    let snapshot = agent.snapshot();
    assert!(
        snapshot.service("default", "web").is_some(),
        "applied, not rejected"
    );
    assert!(snapshot.workload("default/web-a").is_some());
    // In (kind, key) order: workloads, then services.
    let expected = [
        "Workload default/web-a: unknown field sessionAffinityConfig",
        "Service default/web: unknown field sessionAffinityConfig",
    ];
    assert_eq!(agent.status().warnings, expected);
    assert_eq!(agent.status().last_error, None, "nothing was rejected");

    // The Ack carries the warnings; the admin endpoint's `/clients` shows them.
    let info = acked(&running.registry, &v1).await;
    assert_eq!(info.warnings, expected);
    assert_eq!(info.last_nack, None);
    let report = Admin::new(running.controller.clone(), running.registry.clone()).status();
    let shown = serde_json::to_value(&report).expect("report JSON");
    assert_eq!(
        shown["clients"][0]["warnings"][1],
        "Service default/web: unknown field sessionAffinityConfig"
    );

    // Later updates (a delta) keep being applied; the warnings follow what the client holds.
    set_config(&running.controller, &["web-a", "web-bb"]);
    let v2 = running.controller.current().version.clone();
    assert_ne!(v1, v2);
    applied(&agent, &v2).await;
    assert!(agent.snapshot().workload("default/web-bb").is_some());
    let info = acked(&running.registry, &v2).await;
    assert_eq!(info.warnings.len(), 3, "{:?}", info.warnings);
    assert!(info
        .warnings
        .contains(&"Workload default/web-bb: unknown field sessionAffinityConfig".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_agent_applies_an_older_controllers_updates_with_defaults() {
    let running = controller(&["web-a"]).await;
    // What this controller sends has the fields that the older one lacks: the test would prove
    // nothing otherwise.
    let full = running.controller.current();
    assert_eq!(
        full.snapshot.services[0].hostname,
        "web.default.svc.cluster.local"
    );
    assert_eq!(full.snapshot.workloads[0].service_account, "web");

    let via = proxy(&running, older).await;
    let agent = client(&running, via);
    let v1 = full.version.clone();
    applied(&agent, &v1).await;
    let snapshot = agent.snapshot();
    let service = snapshot.service("default", "web").expect("service applied");
    assert_eq!(service.hostname, "", "default for a missing hostname");
    assert_eq!(service.vips, full.snapshot.services[0].vips);
    let workload = snapshot
        .workload("default/web-a")
        .expect("workload applied");
    assert_eq!(workload.service_account, "default");
    assert!(workload.labels.is_empty());
    let info = acked(&running.registry, &v1).await;
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

/// The Ack of a client one release newer than this controller: a field this build's proto
/// does not have (tag 15).
#[derive(Clone, PartialEq, prost::Message)]
struct NewerAck {
    #[prost(string, tag = "1")]
    version: String,
    #[prost(string, repeated, tag = "2")]
    warnings: Vec<String>,
    #[prost(uint64, tag = "15")]
    apply_micros: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NewerRequest {
    #[prost(oneof = "NewerMessage", tags = "1, 2")]
    request: Option<NewerMessage>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum NewerMessage {
    #[prost(message, tag = "1")]
    Hello(Hello),
    #[prost(message, tag = "2")]
    Ack(NewerAck),
}

#[tokio::test]
async fn the_controller_records_a_newer_clients_ack() {
    let running = controller(&["web-a"]).await;
    let transport = running.pki.transport(running.addr, "n1");
    let endpoint =
        tonic::transport::Endpoint::from_shared(transport.uri().to_owned()).expect("endpoint");
    let channel = transport.connect(endpoint).await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (tx, rx) = mpsc::channel(4);
    tx.send(NewerRequest {
        request: Some(NewerMessage::Hello(Hello {
            client_id: "agent/n1".to_owned(),
            node: "n1".to_owned(),
            kind: ClientKind::Agent as i32,
            last_version: String::new(),
        })),
    })
    .await
    .expect("queue hello");
    let codec = tonic_prost::ProstCodec::<NewerRequest, ConfigUpdate>::default();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    transport
        .authorize(request.metadata_mut())
        .await
        .expect("credential");
    let path = http::uri::PathAndQuery::from_static("/mesh.config.v1.ConfigService/StreamConfig");
    let mut updates = grpc
        .streaming(request, path, codec)
        .await
        .expect("stream")
        .into_inner();
    let first = tokio::time::timeout(WAIT, updates.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an update");
    assert!(first.full);
    tx.send(NewerRequest {
        request: Some(NewerMessage::Ack(NewerAck {
            version: first.version.clone(),
            warnings: vec!["Service default/web: unknown field x".to_owned()],
            apply_micros: 1234,
        })),
    })
    .await
    .expect("send ack");
    let info = acked(&running.registry, &first.version).await;
    assert_eq!(info.warnings, ["Service default/web: unknown field x"]);
    assert_eq!(info.last_nack, None);

    // The same bytes decode as this build's request: the unknown field is skipped, not an error.
    let bytes = prost::Message::encode_to_vec(&NewerRequest {
        request: Some(NewerMessage::Ack(NewerAck {
            version: "v".to_owned(),
            warnings: vec![],
            apply_micros: 7,
        })),
    });
    let decoded: ConfigRequest = prost::Message::decode(bytes.as_slice()).expect("decodes");
    assert!(matches!(decoded.request, Some(Request::Ack(ack)) if ack.version == "v"));
}

//! The config stream at the protocol level, with the generated client over the control
//! plane's TLS: the first update is full, a Nack is recorded for the status page and counted
//! (with the push and the ack) in the push metrics, a stream without Hello is refused; a stream
//! without valid credentials, one whose Hello claims another node, and one asking for the
//! waypoint's view with a node's credential are refused; a waypoint's credential opens a
//! waypoint stream (routes, no agent-only policy) and no agent stream; plaintext is refused
//! before gRPC.

#[path = "support/pki.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod pki;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_common::api::config::config_request::Request;
use mesh_common::api::config::config_service_client::ConfigServiceClient;
use mesh_common::api::config::{
    Ack, ClientKind, ConfigRequest, ConfigUpdate, Hello, Nack, ResourceKind,
};
use mesh_controller::controller::{Change, Controller};
use mesh_controller::load::parse_yaml;
use mesh_controller::metrics::{Kind, KindLabels, NackLabels, PushLabels, PushType};
use mesh_controller::server::{ConfigServer, Registry};
use mesh_controller::translate::TranslateOptions;
use pki::{token_of, Pki};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(10);

const CONFIG: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  http: [{timeout: 1s, route: [{destination: {host: web}}]}]\n---\n\
apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict}\nspec: {mtls: {mode: STRICT}}\n";

/// The waypoint principal the fixture has a token for.
const WAYPOINT: &str = "waypoint/default/wp";

async fn start() -> (
    SocketAddr,
    std::sync::Arc<Registry>,
    watch::Sender<bool>,
    Pki,
) {
    let controller = Controller::new(TranslateOptions::default());
    controller
        .apply(vec![Change::ReplaceUnit {
            unit: "c.yaml".to_owned(),
            parsed: parse_yaml("c.yaml", CONFIG),
        }])
        .expect("apply");
    let registry = std::sync::Arc::new(Registry::default());
    let (stop, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let pki = Pki::new(&["n1", "n2", WAYPOINT]);
    let security = pki.security();
    tokio::spawn(
        ConfigServer::new(
            controller,
            registry.clone(),
            stop_rx,
            security.authenticator,
        )
        .serve(listener, security.tls, security.handshakes),
    );
    (addr, registry, stop, pki)
}

fn hello(id: &str, kind: ClientKind) -> ConfigRequest {
    hello_as(id, "n1", kind)
}

fn hello_as(id: &str, node: &str, kind: ClientKind) -> ConfigRequest {
    ConfigRequest {
        request: Some(Request::Hello(Hello {
            client_id: id.to_owned(),
            node: node.to_owned(),
            kind: kind as i32,
            last_version: String::new(),
        })),
    }
}

/// A TLS client of the config service trusting `pki`'s root.
async fn connect(addr: SocketAddr, pki: &Pki) -> ConfigServiceClient<tonic::transport::Channel> {
    let transport = pki.transport(addr, "n1");
    let endpoint =
        tonic::transport::Endpoint::from_shared(transport.uri().to_owned()).expect("endpoint");
    let channel = tokio::time::timeout(WAIT, transport.connect(endpoint))
        .await
        .expect("in time")
        .expect("connect");
    ConfigServiceClient::new(channel)
}

/// Opens a stream with `first` as its first request, authenticated as `node` with `token`
/// (none: no credentials at all).
async fn open(
    addr: SocketAddr,
    pki: &Pki,
    credential: Option<(&str, &str)>,
    first: ConfigRequest,
) -> Result<(mpsc::Sender<ConfigRequest>, tonic::Streaming<ConfigUpdate>), tonic::Status> {
    let mut client = connect(addr, pki).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(first).await.expect("queue");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some((node, token)) = credential {
        pki.transport_with(addr, node, token)
            .authorize(request.metadata_mut())
            .await
            .expect("credential");
    }
    let updates = tokio::time::timeout(WAIT, client.stream_config(request))
        .await
        .expect("in time")?
        .into_inner();
    Ok((tx, updates))
}

/// Opens a config stream as `id` and waits for its first update: returns the sender for the
/// next requests, the stream and that update.
async fn subscribe(
    addr: SocketAddr,
    pki: &Pki,
    id: &str,
    kind: ClientKind,
) -> (
    mpsc::Sender<ConfigRequest>,
    tonic::Streaming<ConfigUpdate>,
    ConfigUpdate,
) {
    let token = token_of("n1");
    let (tx, mut updates) = open(addr, pki, Some(("n1", &token)), hello(id, kind))
        .await
        .expect("stream");
    let first = tokio::time::timeout(WAIT, updates.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an update");
    (tx, updates, first)
}

#[tokio::test]
async fn first_update_is_full_and_nacks_are_recorded() {
    let (addr, registry, stop, pki) = start().await;
    let (tx, mut updates, first) = subscribe(addr, &pki, "agent/n1", ClientKind::Agent).await;
    assert!(first.full);
    let kinds: Vec<i32> = first.upserts.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [ResourceKind::Service as i32],
        "agents get no routes"
    );

    tx.send(ConfigRequest {
        request: Some(Request::Nack(Nack {
            version: first.version.clone(),
            error: "bad".to_owned(),
            resource_kind: ResourceKind::Service as i32,
        })),
    })
    .await
    .expect("send nack");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let clients = registry.list();
        if clients.first().and_then(|c| c.last_nack.clone()).is_some() {
            assert_eq!(
                clients[0].last_nack.as_deref(),
                Some(format!("{}: bad", first.version).as_str())
            );
            assert!(clients[0].acked_version.is_empty());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nack not recorded: {clients:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(ConfigRequest {
        request: Some(Request::Ack(Ack {
            version: first.version.clone(),
            warnings: vec![],
        })),
    })
    .await
    .expect("send ack");
    let deadline = tokio::time::Instant::now() + WAIT;
    while registry.list().first().map(|c| c.acked_version.clone()) != Some(first.version.clone()) {
        assert!(tokio::time::Instant::now() < deadline, "ack not recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The push, the Nack (with the kind it names) and the ack are counted for kind agent.
    let metrics = registry.metrics();
    let agent = KindLabels { kind: Kind::Agent };
    let push = |push_type| PushLabels {
        kind: Kind::Agent,
        push_type,
    };
    assert_eq!(metrics.pushes.get_or_create(&push(PushType::Full)).get(), 1);
    assert_eq!(
        metrics
            .pushes
            .get_or_create(&push(PushType::Incremental))
            .get(),
        0
    );
    let nack = |resource_kind| NackLabels {
        kind: Kind::Agent,
        resource_kind,
    };
    assert_eq!(metrics.nacks.get_or_create(&nack("Service")).get(), 1);
    assert_eq!(metrics.nacks.get_or_create(&nack("unknown")).get(), 0);
    assert_eq!(metrics.acks.get_or_create(&agent).get(), 1);
    let waypoint = KindLabels {
        kind: Kind::Waypoint,
    };
    assert_eq!(metrics.acks.get_or_create(&waypoint).get(), 0);

    // Shutdown ends the stream with `unavailable`, and the client leaves the registry.
    stop.send_replace(true);
    let end = tokio::time::timeout(WAIT, updates.message())
        .await
        .expect("in time");
    assert_eq!(
        end.expect_err("stream ends with a status").code(),
        tonic::Code::Unavailable
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while !registry.list().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "client not removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_stream_must_start_with_hello() {
    let (addr, registry, _stop, pki) = start().await;
    let token = token_of("n1");
    let credential = Some(("n1", token.as_str()));
    let ack = ConfigRequest {
        request: Some(Request::Ack(Ack {
            version: "x".to_owned(),
            warnings: vec![],
        })),
    };
    let status = open(addr, &pki, credential, ack)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = open(addr, &pki, credential, hello("", ClientKind::Agent))
        .await
        .expect_err("refused");
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "client_id is required"
    );
    assert!(registry.list().is_empty());
}

#[tokio::test]
async fn a_stream_without_valid_credentials_is_unauthenticated() {
    let (addr, registry, _stop, pki) = start().await;
    let n2 = token_of("n2");
    for (credential, what) in [
        (None, "no credentials"),
        (Some(("n1", "not-the-token")), "a wrong token"),
        (Some(("n1", n2.as_str())), "another node's token"),
        (Some(("n9", n2.as_str())), "an unknown node"),
    ] {
        let status = open(addr, &pki, credential, hello("agent/n1", ClientKind::Agent))
            .await
            .expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        );
    }
    assert!(registry.list().is_empty());
}

#[tokio::test]
async fn a_hello_claiming_another_node_is_refused() {
    let (addr, registry, _stop, pki) = start().await;
    // n2's valid credential, and a Hello claiming n1 (whose policies differ).
    let n2 = token_of("n2");
    let status = open(
        addr,
        &pki,
        Some(("n2", &n2)),
        hello_as("agent/n1", "n1", ClientKind::Agent),
    )
    .await
    .expect_err("claims another node");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("not the authenticated principal"),
        "{status:?}"
    );
    // Its own node is fine.
    let (_tx, _updates) = open(
        addr,
        &pki,
        Some(("n2", &n2)),
        hello_as("agent/n2", "n2", ClientKind::Agent),
    )
    .await
    .expect("own node");
    let clients = registry.list();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].node, "n2");
}

#[tokio::test]
async fn a_node_credential_cannot_ask_for_the_waypoint_view() {
    let (addr, registry, _stop, pki) = start().await;
    let token = token_of("n1");
    let status = open(
        addr,
        &pki,
        Some(("n1", &token)),
        hello("waypoint/default/web", ClientKind::Waypoint),
    )
    .await
    .expect_err("waypoint view");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("a waypoint authenticates as waypoint/<namespace>/<name>"),
        "{status:?}"
    );
    assert!(registry.list().is_empty());
}

#[tokio::test]
async fn a_waypoint_credential_opens_the_waypoint_view_only() {
    let (addr, registry, _stop, pki) = start().await;
    let token = token_of(WAYPOINT);
    let status = open(
        addr,
        &pki,
        Some((WAYPOINT, &token)),
        hello_as("waypoint/wp-1", WAYPOINT, ClientKind::Agent),
    )
    .await
    .expect_err("agent view");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("kind AGENT is refused"),
        "{status:?}"
    );
    let (_tx, mut updates) = open(
        addr,
        &pki,
        Some((WAYPOINT, &token)),
        hello_as("waypoint/wp-1", WAYPOINT, ClientKind::Waypoint),
    )
    .await
    .expect("waypoint stream");
    let first = tokio::time::timeout(WAIT, updates.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an update");
    let kinds: Vec<i32> = first.upserts.iter().map(|r| r.kind).collect();
    assert!(kinds.contains(&(ResourceKind::Route as i32)), "{kinds:?}");
    assert!(kinds.contains(&(ResourceKind::Service as i32)), "{kinds:?}");
    assert!(
        !kinds.contains(&(ResourceKind::PeerAuthentication as i32)),
        "agents enforce PeerAuthentication: {kinds:?}"
    );
    let clients = registry.list();
    assert_eq!(clients.len(), 1);
    assert_eq!(
        (clients[0].kind.as_str(), clients[0].node.as_str()),
        ("waypoint", WAYPOINT)
    );
}

#[tokio::test]
async fn a_plaintext_client_is_refused_before_grpc() {
    let (addr, registry, _stop, pki) = start().await;
    let plaintext = async {
        let mut client = ConfigServiceClient::connect(format!("http://{addr}")).await?;
        let (tx, rx) = mpsc::channel(4);
        tx.send(hello("agent/n1", ClientKind::Agent)).await?;
        client.stream_config(ReceiverStream::new(rx)).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let result = tokio::time::timeout(WAIT, plaintext)
        .await
        .expect("in time");
    assert!(result.is_err(), "a plaintext client was served");
    let deadline = tokio::time::Instant::now() + WAIT;
    while pki
        .handshakes
        .not_tls
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusal not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(registry.list().is_empty());
}

//! The config stream at the protocol level, with the generated client: the first update is
//! full, a Nack is recorded for the status page, a stream without Hello is refused, and a
//! waypoint's view includes routes that agents never get.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_common::api::config::config_request::Request;
use mesh_common::api::config::config_service_client::ConfigServiceClient;
use mesh_common::api::config::{
    Ack, ClientKind, ConfigRequest, ConfigUpdate, Hello, Nack, ResourceKind,
};
use mesh_controller::controller::{Change, Controller};
use mesh_controller::load::parse_yaml;
use mesh_controller::server::{ConfigServer, Registry};
use mesh_controller::translate::TranslateOptions;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(10);

const CONFIG: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  http: [{timeout: 1s, route: [{destination: {host: web}}]}]\n";

async fn start() -> (SocketAddr, std::sync::Arc<Registry>, watch::Sender<bool>) {
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
    tokio::spawn(ConfigServer::new(controller, registry.clone(), stop_rx).serve(listener));
    (addr, registry, stop)
}

fn hello(id: &str, kind: ClientKind) -> ConfigRequest {
    ConfigRequest {
        request: Some(Request::Hello(Hello {
            client_id: id.to_owned(),
            node: "n1".to_owned(),
            kind: kind as i32,
            last_version: String::new(),
        })),
    }
}

/// Opens a config stream as `id` and waits for its first update: returns the sender for the
/// next requests, the stream and that update.
async fn subscribe(
    addr: SocketAddr,
    id: &str,
    kind: ClientKind,
) -> (
    mpsc::Sender<ConfigRequest>,
    tonic::Streaming<ConfigUpdate>,
    ConfigUpdate,
) {
    let mut client = ConfigServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello(id, kind)).await.expect("queue hello");
    let mut updates = client
        .stream_config(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let first = tokio::time::timeout(WAIT, updates.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an update");
    (tx, updates, first)
}

#[tokio::test]
async fn first_update_is_full_and_nacks_are_recorded() {
    let (addr, registry, stop) = start().await;
    let (tx, mut updates, first) = subscribe(addr, "agent/n1", ClientKind::Agent).await;
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
    let (addr, registry, _stop) = start().await;
    let mut client = ConfigServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(4);
    tx.send(ConfigRequest {
        request: Some(Request::Ack(Ack {
            version: "x".to_owned(),
            warnings: vec![],
        })),
    })
    .await
    .expect("queue");
    let status = client
        .stream_config(ReceiverStream::new(rx))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello("", ClientKind::Agent)).await.expect("queue");
    let status = client
        .stream_config(ReceiverStream::new(rx))
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
async fn waypoints_receive_routes() {
    let (addr, _registry, _stop) = start().await;
    let (tx, _updates, first) = subscribe(addr, "waypoint/default/web", ClientKind::Waypoint).await;
    let mut kinds: Vec<i32> = first.upserts.iter().map(|r| r.kind).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [ResourceKind::Service as i32, ResourceKind::Route as i32]
    );
    drop(tx);
}

//! HBONE end to end in one process on 127.0.0.1: tunnelling, identity checks on both sides,
//! refusals that leave the server serving, pooling, idle close, CONNECT errors.

#[path = "support/fixture.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod fixture;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use fixture::{echo_server, id, issue, round_trip, Mesh, STEP};
use mesh_hbone::hbone::{
    ConnectError, ConnectHandler, ConnectRequest, HboneClientConfig, HboneConnection, HboneError,
    HboneServerConfig, HboneStream, TcpForwarder,
};
use mesh_hbone::tls::{self, StaticCert, TlsError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Dials `server` directly (no pool) presenting `cert`, expecting `expected`.
async fn dial_with(
    mesh: &Mesh,
    cert: &mesh_hbone::certs::WorkloadCert,
    server: SocketAddr,
    expected: &mesh_hbone::Identity,
) -> Result<HboneConnection, HboneError> {
    let config = tls::client_config(StaticCert::new(cert), mesh.bundle.clone(), expected.clone())
        .expect("client TLS config");
    HboneConnection::dial(server, config, &HboneClientConfig::default()).await
}

/// A refused client may only learn it when it first uses the connection (TLS 1.3 checks the
/// client certificate after the client is done): either step failing is a refusal.
async fn refused(result: Result<HboneConnection, HboneError>, target: SocketAddr) -> bool {
    match result {
        Err(_) => true,
        Ok(conn) => timeout(STEP, conn.connect(target))
            .await
            .expect("bounded")
            .is_err(),
    }
}

/// A good client still gets through.
async fn good_client_works(mesh: &Mesh, server: SocketAddr, echo: SocketAddr) {
    let pool = mesh.pool(HboneClientConfig::default());
    let mut stream = timeout(
        STEP,
        pool.connect(&id("client"), &id("server"), server, echo),
    )
    .await
    .expect("bounded")
    .expect("good client connects");
    assert_eq!(
        round_trip(&mut stream, b"still serving").await,
        b"still serving"
    );
}

#[tokio::test]
async fn bytes_round_trip_through_a_connect_stream() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    let pool = mesh.pool(HboneClientConfig::default());

    let mut stream = timeout(
        STEP,
        pool.connect(&id("client"), &id("server"), server.addr, echo),
    )
    .await
    .expect("bounded")
    .expect("connect");
    let data = payload(3 * 1024 * 1024 + 17);
    assert_eq!(round_trip(&mut stream, &data).await, data);
    // Half-close: the echo server sees EOF and closes its side, we read EOF.
    stream.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    timeout(STEP, stream.read_to_end(&mut rest))
        .await
        .expect("bounded")
        .expect("eof");
    assert!(rest.is_empty());

    assert_eq!(pool.stats().connections_opened(), 1);
    assert_eq!(pool.stats().streams_opened(), 1);
    assert_eq!(server.stats.connections_accepted(), 1);
    assert_eq!(server.stats.streams(), 1);
}

#[tokio::test]
async fn client_refuses_a_server_with_another_identity() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("impostor")).await;
    let pool = mesh.pool(HboneClientConfig::default());
    let result = timeout(
        STEP,
        pool.connect(&id("client"), &id("server"), server.addr, echo),
    )
    .await
    .expect("bounded");
    match result {
        Err(HboneError::Tls(TlsError::WrongIdentity { expected, actual })) => {
            assert_eq!(*expected, id("server"));
            assert_eq!(*actual, id("impostor"));
        }
        other => panic!("expected a wrong-identity refusal, got {other:?}"),
    }
    assert_eq!(pool.stats().connect_failures(), 1);
    assert_eq!(pool.stats().streams_opened(), 0);
}

#[tokio::test]
async fn server_refuses_a_client_certificate_from_an_untrusted_ca_and_keeps_serving() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    let rogue = Mesh::new();
    let now = SystemTime::now();
    let cert = issue(
        &rogue.ca,
        &id("client"),
        now,
        now + Duration::from_secs(3600),
    );
    assert!(
        refused(
            dial_with(&mesh, &cert, server.addr, &id("server")).await,
            echo
        )
        .await
    );
    assert_eq!(server.stats.refusals("unknown_issuer"), 1);
    good_client_works(&mesh, server.addr, echo).await;
    assert_eq!(server.stats.refusals_total(), 1);
}

#[tokio::test]
async fn server_refuses_an_expired_client_certificate_and_keeps_serving() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let expired = issue(&mesh.ca, &id("client"), now - 2 * hour, now - hour);
    assert!(
        refused(
            dial_with(&mesh, &expired, server.addr, &id("server")).await,
            echo
        )
        .await
    );
    assert_eq!(server.stats.refusals("expired"), 1);
    let early = issue(&mesh.ca, &id("client"), now + hour, now + 2 * hour);
    assert!(
        refused(
            dial_with(&mesh, &early, server.addr, &id("server")).await,
            echo
        )
        .await
    );
    assert_eq!(server.stats.refusals("not_yet_valid"), 1);
    good_client_works(&mesh, server.addr, echo).await;
}

#[tokio::test]
async fn server_refuses_plain_tcp_and_keeps_serving() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("tcp connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // The server closes the connection (perhaps after a TLS alert); it never answers HTTP.
    let mut buf = Vec::new();
    let _ = timeout(STEP, tcp.read_to_end(&mut buf))
        .await
        .expect("server closes");
    assert!(!buf.starts_with(b"HTTP/"), "no plaintext answer");
    assert_eq!(server.stats.refusals("not_tls"), 1);
    // Also a client that connects and sends nothing at all until it goes away.
    drop(TcpStream::connect(server.addr).await.expect("tcp connect"));
    good_client_works(&mesh, server.addr, echo).await;
}

#[tokio::test]
async fn hundred_concurrent_streams_share_one_tls_connection() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    let pool = mesh.pool(HboneClientConfig::default());
    let all_open = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let (pool, all_open) = (pool.clone(), all_open.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = pool
                .connect(&id("client"), &id("server"), server.addr, echo)
                .await
                .expect("connect");
            // Every stream is open at the same time before any closes.
            all_open.wait().await;
            let msg = format!("stream {i}");
            assert_eq!(
                round_trip(&mut stream, msg.as_bytes()).await,
                msg.as_bytes()
            );
        }));
    }
    for task in tasks {
        timeout(STEP, task)
            .await
            .expect("bounded")
            .expect("stream task");
    }
    assert_eq!(
        pool.stats().connections_opened(),
        1,
        "one TLS connection for 100 streams"
    );
    assert_eq!(pool.stats().streams_opened(), 100);
    assert_eq!(server.stats.connections_accepted(), 1);
    assert_eq!(server.stats.streams(), 100);
}

#[tokio::test]
async fn a_second_connection_opens_only_past_the_stream_limit() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    let config = HboneClientConfig {
        max_streams_per_connection: 10,
        ..HboneClientConfig::default()
    };
    let pool = mesh.pool(config);
    let mut streams = Vec::new();
    for _ in 0..15 {
        streams.push(
            pool.connect(&id("client"), &id("server"), server.addr, echo)
                .await
                .expect("connect"),
        );
    }
    assert_eq!(pool.stats().connections_opened(), 2);
    // Another destination identity or source identity gets its own connection.
    drop(streams);
    let other = mesh.forwarding_server(&id("other")).await;
    let _s = pool
        .connect(&id("client"), &id("other"), other.addr, echo)
        .await
        .expect("connect");
    let _t = pool
        .connect(&id("client2"), &id("server"), server.addr, echo)
        .await
        .expect("connect");
    assert_eq!(pool.stats().connections_opened(), 4);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_timeout() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    let config = HboneClientConfig {
        idle_timeout: Duration::from_millis(200),
        ..HboneClientConfig::default()
    };
    let pool = mesh.pool(config);
    let mut stream = pool
        .connect(&id("client"), &id("server"), server.addr, echo)
        .await
        .expect("connect");
    assert_eq!(round_trip(&mut stream, b"x").await, b"x");
    // In use: not idle however long it lasts.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pool.connections(), 1);
    drop(stream);
    let dropped = std::time::Instant::now();
    while pool.connections() > 0 {
        assert!(dropped.elapsed() < STEP, "idle connection never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped.elapsed() >= Duration::from_millis(200),
        "closed only after the idle timeout"
    );
    assert_eq!(pool.stats().connections_closed(), 1);
    let mut stream = pool
        .connect(&id("client"), &id("server"), server.addr, echo)
        .await
        .expect("reconnect");
    assert_eq!(round_trip(&mut stream, b"y").await, b"y");
    assert_eq!(pool.stats().connections_opened(), 2);
}

#[tokio::test]
async fn malformed_connect_authority_gets_400_and_the_connection_stays_usable() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    let cert = mesh.certs.get(&id("client")).await.expect("cert");
    let conn = dial_with(&mesh, &cert, server.addr, &id("server"))
        .await
        .expect("dial");
    for bad in ["example.com:80", "127.0.0.1", "[::1]", "127.0.0.1:99999"] {
        match timeout(STEP, conn.connect_authority(bad))
            .await
            .expect("bounded")
        {
            Err(HboneError::Status(status)) => assert_eq!(status, 400, "authority {bad}"),
            other => panic!("authority {bad}: expected 400, got {other:?}"),
        }
    }
    let mut stream = conn
        .connect(echo)
        .await
        .expect("good CONNECT on the same connection");
    assert_eq!(round_trip(&mut stream, b"ok").await, b"ok");
}

/// Refuses one port and one peer identity by policy, forwards the rest.
struct Policy {
    forward: TcpForwarder,
    denied_port: u16,
    denied_peer: mesh_hbone::Identity,
}

#[async_trait]
impl ConnectHandler for Policy {
    type Upstream = TcpStream;

    async fn open(&self, request: &ConnectRequest) -> Result<TcpStream, ConnectError> {
        if request.target.port() == self.denied_port || request.peer == self.denied_peer {
            return Err(ConnectError::Forbidden(format!(
                "{} may not reach {}",
                request.peer, request.target
            )));
        }
        self.forward.open(request).await
    }

    async fn serve(&self, request: ConnectRequest, upstream: TcpStream, stream: HboneStream) {
        self.forward.serve(request, upstream, stream).await
    }
}

#[tokio::test]
async fn handler_refusals_map_to_403_and_503() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    // A port with nothing listening: bind, read the port, close.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    };
    let policy = Policy {
        forward: TcpForwarder::default(),
        denied_port: 1,
        denied_peer: id("intruder"),
    };
    let server = mesh
        .server(&id("server"), policy, HboneServerConfig::default())
        .await;
    let pool = mesh.pool(HboneClientConfig::default());
    let denied: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    for (target, status) in [(denied, 403), (closed, 503)] {
        match pool
            .connect(&id("client"), &id("server"), server.addr, target)
            .await
        {
            Err(HboneError::Status(s)) => assert_eq!(s, status, "target {target}"),
            other => panic!("target {target}: expected {status}, got {other:?}"),
        }
    }
    // The handler sees the client's identity from its certificate, and can refuse it.
    match pool
        .connect(&id("intruder"), &id("server"), server.addr, echo)
        .await
    {
        Err(HboneError::Status(s)) => assert_eq!(s, 403, "identity refused by policy"),
        other => panic!("expected 403 for the refused identity, got {other:?}"),
    }
    assert_eq!(pool.stats().stream_failures(), 3);
    // The refused streams gave their slots back: the connection serves on.
    let mut stream = pool
        .connect(&id("client"), &id("server"), server.addr, echo)
        .await
        .expect("connect");
    assert_eq!(round_trip(&mut stream, b"ok").await, b"ok");
    assert_eq!(
        pool.stats().connections_opened(),
        2,
        "one per source identity"
    );
}

#[tokio::test]
async fn server_refuses_a_client_without_a_certificate_and_keeps_serving() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    let verifier = tls::SpiffeServerVerifier::new(mesh.bundle.clone(), id("server"));
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![tls::ALPN_H2.to_vec()];
    let dial =
        HboneConnection::dial(server.addr, Arc::new(config), &HboneClientConfig::default()).await;
    assert!(refused(dial, echo).await);
    assert_eq!(server.stats.refusals("no_certificate"), 1);
    good_client_works(&mesh, server.addr, echo).await;
}

//! Dead peers and bounded waits, in one process on loopback: a peer that goes silent without
//! closing is found by PING on both sides and the pool dials afresh; the TCP connect, the
//! handshakes and the CONNECT response each time out with an error naming the wait; connections
//! dialed from different origins are never shared, and the server sees each origin's address.

#[path = "support/fixture.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod fixture;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fixture::{echo_server, id, round_trip, Mesh, STEP};
use mesh_hbone::hbone::{
    ConnectError, ConnectHandler, ConnectRequest, Connector, HboneClientConfig, HboneConnection,
    HboneError, HboneServerConfig, HboneStream, Liveness, Origin, Step, TcpForwarder,
};
use mesh_hbone::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

/// PINGs fast enough for a test; no `TCP_USER_TIMEOUT`, so only the PINGs can find the peer
/// dead (the proxy's sockets keep acknowledging at the TCP level).
const FAST: Liveness = Liveness {
    ping_interval: Duration::from_millis(300),
    ping_timeout: Duration::from_millis(300),
    tcp_user_timeout: Duration::ZERO,
};

/// Scheduling slack on top of a bound.
const SLACK: Duration = Duration::from_millis(700);

/// A TCP proxy on loopback whose connections can be frozen: they stop forwarding in both
/// directions but stay open, as a peer behind a cut link looks (no FIN, no RST). Connections
/// accepted after a freeze forward normally.
struct FreezingProxy {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<watch::Sender<bool>>>>,
}

impl FreezingProxy {
    async fn start(upstream: SocketAddr) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let live: Arc<Mutex<Vec<watch::Sender<bool>>>> = Arc::default();
        let registry = live.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (freeze, frozen) = watch::channel(false);
                registry.lock().expect("proxy registry").push(freeze);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, frozen.clone()));
                tokio::spawn(pump(sr, cw, frozen));
            }
        });
        FreezingProxy { addr, live }
    }

    /// Freezes every connection open now.
    fn freeze(&self) {
        for conn in self.live.lock().expect("proxy registry").drain(..) {
            let _ = conn.send(true);
        }
    }
}

/// Copies `from` to `to` until EOF; once frozen, holds both open and moves nothing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if *frozen.borrow() {
            // Silent, not closed: the sockets live until the test's runtime ends.
            return std::future::pending().await;
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            _ = frozen.changed() => {}
        }
    }
}

/// Waits (bounded by `STEP`) until `done` holds; returns how long it took.
async fn wait_until(what: &str, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < STEP, "{what}: not within {STEP:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_silent_peer_is_found_dead_by_ping_and_the_next_stream_dials_afresh() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let server = mesh
        .server(
            &id("server"),
            TcpForwarder::default(),
            HboneServerConfig {
                liveness: FAST,
                ..HboneServerConfig::default()
            },
        )
        .await;
    let proxy = FreezingProxy::start(server.addr).await;
    let pool = mesh.pool(HboneClientConfig {
        liveness: FAST,
        ..HboneClientConfig::default()
    });
    let (client_id, server_id) = (id("client"), id("server"));
    let connect = || pool.connect(&client_id, &server_id, proxy.addr, echo);
    let mut stream = timeout(STEP, connect())
        .await
        .expect("bounded")
        .expect("connect");
    assert_eq!(round_trip(&mut stream, b"before").await, b"before");
    // Answered PINGs keep a quiet connection: several intervals pass without a loss.
    tokio::time::sleep(FAST.ping_interval * 4).await;
    assert_eq!(pool.stats().connections_lost(), 0);
    assert_eq!(server.stats.connections_lost(), 0);

    proxy.freeze();
    let bound = FAST.detection_bound().expect("PINGs on") + SLACK;
    let client_side = wait_until("client finds the peer dead", || {
        pool.stats().connections_lost() == 1
    })
    .await;
    assert!(client_side <= bound, "client took {client_side:?}");
    assert_eq!(pool.connections(), 0, "the lost connection left the pool");
    // The stream on it fails (never a clean end: bytes may have been lost).
    let mut buf = [0u8; 16];
    let read = timeout(STEP, stream.read(&mut buf)).await.expect("bounded");
    assert!(
        read.is_err(),
        "a stream of a lost connection ended cleanly: {read:?}"
    );
    let server_side = wait_until("server finds the client dead", || {
        server.stats.connections_lost() == 1
    })
    .await;
    assert!(server_side <= bound, "server took {server_side:?}");

    // The next stream gets a fresh connection (the proxy forwards new connections).
    let mut stream = timeout(STEP, connect())
        .await
        .expect("bounded")
        .expect("reconnect");
    assert_eq!(round_trip(&mut stream, b"after").await, b"after");
    assert_eq!(pool.stats().connections_opened(), 2);
}

#[test]
fn the_default_liveness_finds_a_dead_peer_within_ten_seconds() {
    let bound = Liveness::default().detection_bound().expect("PINGs on");
    assert!(bound <= Duration::from_secs(10), "{bound:?}");
}

/// Accepts every CONNECT and never answers it.
struct NeverAnswers;

#[async_trait]
impl ConnectHandler for NeverAnswers {
    type Upstream = ();

    async fn open(&self, _request: &ConnectRequest) -> Result<(), ConnectError> {
        std::future::pending().await
    }

    async fn serve(&self, _request: ConnectRequest, _upstream: (), _stream: HboneStream) {}
}

#[tokio::test]
async fn an_unanswered_connect_times_out_naming_the_wait() {
    let mesh = Mesh::new();
    let server = mesh
        .server(&id("server"), NeverAnswers, HboneServerConfig::default())
        .await;
    let limit = Duration::from_millis(300);
    let pool = mesh.pool(HboneClientConfig {
        response_timeout: limit,
        ..HboneClientConfig::default()
    });
    let target: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let start = Instant::now();
    let result = timeout(
        STEP,
        pool.connect(&id("client"), &id("server"), server.addr, target),
    )
    .await
    .expect("the CONNECT wait is bounded");
    let err = result.expect_err("no answer, no stream");
    assert!(
        matches!(
            err,
            HboneError::Timeout {
                step: Step::ConnectResponse,
                after,
                ..
            } if after == limit
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("CONNECT response"), "{err}");
    assert!(start.elapsed() >= limit);
    assert_eq!(pool.stats().stream_failures(), 1);
}

#[tokio::test]
async fn a_server_that_never_speaks_tls_times_out_the_handshake() {
    let mesh = Mesh::new();
    // Accepts TCP and then says nothing, holding the sockets.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    mesh.certs.get(&id("client")).await.expect("cert");
    let tls = tls::client_config(
        mesh.certs.resolver(&id("client")),
        mesh.bundle.clone(),
        id("server"),
    )
    .expect("client TLS config");
    let limit = Duration::from_millis(300);
    let config = HboneClientConfig {
        handshake_timeout: limit,
        ..HboneClientConfig::default()
    };
    let start = Instant::now();
    let result = timeout(STEP, HboneConnection::dial(addr, tls, &config))
        .await
        .expect("the handshake wait is bounded");
    let err = result.expect_err("no TLS, no connection");
    assert!(
        matches!(err, HboneError::Timeout { step: Step::Handshake, peer, .. } if peer == addr),
        "{err:?}"
    );
    assert!(err.to_string().contains("handshake"), "{err}");
    assert!(start.elapsed() >= limit);
    // Through the pool: counted as a failed connect, nothing pooled.
    let pool = mesh.pool(config);
    let echo = echo_server().await;
    let result = timeout(STEP, pool.connect(&id("client"), &id("server"), addr, echo))
        .await
        .expect("bounded");
    assert!(result.is_err());
    assert_eq!(pool.stats().connect_failures(), 1);
    assert_eq!(pool.connections(), 0);
}

/// A connector whose connects never complete (a SYN into the void).
#[derive(Debug)]
struct Blackhole;

#[async_trait]
impl Connector for Blackhole {
    async fn connect(&self, _peer: SocketAddr) -> io::Result<TcpStream> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_unreachable_peer_fails_within_the_connect_timeout() {
    let mesh = Mesh::new();
    let limit = Duration::from_millis(300);
    let pool = mesh.pool(HboneClientConfig {
        connect_timeout: limit,
        ..HboneClientConfig::default()
    });
    let origin = Origin::new(1, Arc::new(Blackhole));
    let peer: SocketAddr = "127.0.0.1:15008".parse().expect("addr");
    let start = Instant::now();
    let result = timeout(
        STEP,
        pool.connect_from(&origin, &id("client"), &id("server"), peer, peer),
    )
    .await
    .expect("the connect wait is bounded");
    let err = result.expect_err("unreachable");
    assert!(
        matches!(
            err,
            HboneError::Timeout {
                step: Step::TcpConnect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("TCP connect"), "{err}");
    let took = start.elapsed();
    assert!(took >= limit && took <= limit + SLACK, "{took:?}");
}

/// Dials from a fixed loopback source address, as a pod's namespace gives its own address.
#[derive(Debug)]
struct FromAddress(std::net::Ipv4Addr);

#[async_trait]
impl Connector for FromAddress {
    async fn connect(&self, peer: SocketAddr) -> io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.0.into(), 0))?;
        socket.connect(peer).await
    }
}

/// Answers every CONNECT with the TCP address the HBONE connection came from, then ends.
struct TellsRemote;

#[async_trait]
impl ConnectHandler for TellsRemote {
    type Upstream = ();

    async fn open(&self, _request: &ConnectRequest) -> Result<(), ConnectError> {
        Ok(())
    }

    async fn serve(&self, request: ConnectRequest, _upstream: (), mut stream: HboneStream) {
        let _ = stream
            .write_all(request.remote.ip().to_string().as_bytes())
            .await;
        let _ = stream.shutdown().await;
    }
}

#[tokio::test]
async fn origins_never_share_a_connection_and_the_server_sees_each_address() {
    let mesh = Mesh::new();
    let server = mesh
        .server(&id("server"), TellsRemote, HboneServerConfig::default())
        .await;
    let pool = mesh.pool(HboneClientConfig::default());
    let pod_a = Origin::new(10, Arc::new(FromAddress([127, 0, 0, 2].into())));
    let pod_b = Origin::new(11, Arc::new(FromAddress([127, 0, 0, 3].into())));
    let remote_seen = |origin: Origin| {
        let pool = pool.clone();
        async move {
            // One identity for both pods: only the origin tells them apart.
            let mut stream = timeout(
                STEP,
                pool.connect_from(
                    &origin,
                    &id("shared"),
                    &id("server"),
                    server.addr,
                    server.addr,
                ),
            )
            .await
            .expect("bounded")
            .expect("connect");
            let mut seen = String::new();
            timeout(STEP, stream.read_to_string(&mut seen))
                .await
                .expect("bounded")
                .expect("read");
            seen
        }
    };
    assert_eq!(remote_seen(pod_a.clone()).await, "127.0.0.2");
    assert_eq!(remote_seen(pod_b.clone()).await, "127.0.0.3");
    assert_eq!(pool.stats().connections_opened(), 2, "one per origin");
    // Each origin reuses its own.
    assert_eq!(remote_seen(pod_a).await, "127.0.0.2");
    assert_eq!(remote_seen(pod_b).await, "127.0.0.3");
    assert_eq!(pool.stats().connections_opened(), 2);
    assert_eq!(server.stats.connections_accepted(), 2);
}

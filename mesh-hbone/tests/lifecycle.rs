//! Certificates rotating under traffic, and the server's graceful shutdown.

#[path = "support/fixture.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod fixture;

use std::time::{Duration, Instant};

use fixture::{echo_server, id, round_trip, Mesh, RunningServer, STEP};
use mesh_hbone::hbone::{
    HboneClientConfig, HbonePool, HboneServerConfig, HboneStream, TcpForwarder,
};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

#[tokio::test]
async fn certificates_rotate_under_continuous_traffic_with_zero_failed_streams() {
    // 3 s certificates: renewed every ~1.4 s; the run covers several lifetimes.
    let mesh = Mesh::with_leaf_lifetime(Duration::from_secs(3));
    let echo = echo_server().await;
    let server = mesh.forwarding_server(&id("server")).await;
    // A short idle timeout makes the pool open new connections, each a new handshake with the
    // certificates current at that moment.
    let config = HboneClientConfig {
        idle_timeout: Duration::from_millis(100),
        ..HboneClientConfig::default()
    };
    let pool = mesh.pool(config);

    let started = Instant::now();
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut i = 0u32;
    while started.elapsed() < Duration::from_secs(8) {
        i += 1;
        // Several streams in flight at once, some long enough to outlive a renewal.
        let mut batch = Vec::new();
        for j in 0..4u32 {
            let (pool, addr) = (pool.clone(), server.addr);
            batch.push(tokio::spawn(async move {
                let mut stream = pool
                    .connect(&id("client"), &id("server"), addr, echo)
                    .await?;
                let msg = format!("{i}/{j}");
                if round_trip(&mut stream, msg.as_bytes()).await != msg.as_bytes() {
                    return Err(mesh_hbone::hbone::HboneError::BadRequest(
                        "echo mismatch".into(),
                    ));
                }
                Ok::<_, mesh_hbone::hbone::HboneError>(())
            }));
        }
        for task in batch {
            match timeout(STEP, task).await.expect("bounded").expect("task") {
                Ok(()) => ok += 1,
                Err(e) => {
                    eprintln!("stream failed: {e}");
                    failed += 1;
                }
            }
        }
        // Every few batches, pause past the idle timeout so the next batch handshakes anew.
        let pause = [150, 20, 20][(i % 3) as usize];
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    eprintln!(
        "rotation: {ok} streams ok, {failed} failed, {} client / {} server certificates, {} connections",
        mesh.certs.issued_count(&id("client")),
        mesh.certs.issued_count(&id("server")),
        pool.stats().connections_opened()
    );
    assert_eq!(failed, 0, "{ok} streams ok");
    assert!(ok > 100, "continuous traffic: {ok} streams");
    let client_certs = mesh.certs.issued_count(&id("client"));
    let server_certs = mesh.certs.issued_count(&id("server"));
    assert!(
        client_certs >= 4,
        "client certificate renewed: {client_certs} issued"
    );
    assert!(
        server_certs >= 4,
        "server certificate renewed: {server_certs} issued"
    );
    assert!(
        pool.stats().connections_opened() >= 4,
        "new handshakes happened"
    );
    assert_eq!(server.stats.refusals_total(), 0);
}

/// A server that drains for `grace` on shutdown, with one stream open through it.
struct Draining {
    server: RunningServer,
    _pool: HbonePool,
    stream: HboneStream,
}

impl Draining {
    /// Starts the server and opens a stream, checked with a round trip of `hello`.
    async fn open(mesh: &Mesh, grace: Duration, hello: &[u8]) -> Draining {
        let echo = echo_server().await;
        let config = HboneServerConfig {
            drain_grace: grace,
            ..HboneServerConfig::default()
        };
        let server = mesh
            .server(&id("server"), TcpForwarder::default(), config)
            .await;
        let pool = mesh.pool(HboneClientConfig::default());
        let mut stream = pool
            .connect(&id("client"), &id("server"), server.addr, echo)
            .await
            .expect("connect");
        assert_eq!(round_trip(&mut stream, hello).await, hello);
        Draining {
            server,
            _pool: pool,
            stream,
        }
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_in_flight_streams() {
    let mesh = Mesh::new();
    let Draining {
        mut server,
        _pool,
        mut stream,
    } = Draining::open(&mesh, Duration::from_secs(5), b"before").await;

    server.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new connection is accepted ...
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "listener closed"
    );
    // ... but the in-flight stream still works during the grace period.
    assert_eq!(
        round_trip(&mut stream, b"during drain").await,
        b"during drain"
    );
    assert!(
        !server.task.is_finished(),
        "still draining while a stream is open"
    );

    let closed_at = Instant::now();
    drop(stream);
    timeout(STEP, &mut server.task)
        .await
        .expect("server exits once drained")
        .expect("serve");
    assert!(
        closed_at.elapsed() < Duration::from_secs(2),
        "exited when drained, not at the grace end"
    );
}

#[tokio::test]
async fn shutdown_cuts_streams_still_open_after_the_grace_period() {
    let mesh = Mesh::new();
    let grace = Duration::from_millis(300);
    let Draining {
        mut server,
        _pool,
        mut stream,
    } = Draining::open(&mesh, grace, b"hello").await;

    let started = Instant::now();
    server.shutdown();
    timeout(STEP, &mut server.task)
        .await
        .expect("server exits after the grace")
        .expect("serve");
    let took = started.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(2),
        "exited after {took:?}"
    );
    // The stream is gone: reading ends (EOF or error) instead of hanging.
    let mut buf = [0u8; 16];
    let read = timeout(STEP, stream.read(&mut buf))
        .await
        .expect("stream ends");
    assert!(matches!(read, Ok(0) | Err(_)), "got {read:?}");
}

#[tokio::test]
async fn pool_moves_to_a_new_connection_when_the_peer_restarts() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let config = HboneServerConfig {
        drain_grace: Duration::from_secs(5),
        ..HboneServerConfig::default()
    };
    let mut old = mesh
        .server(&id("server"), TcpForwarder::default(), config.clone())
        .await;
    let pool = mesh.pool(HboneClientConfig::default());
    // A long-lived stream keeps the old connection (draining) alive.
    let mut held = pool
        .connect(&id("client"), &id("server"), old.addr, echo)
        .await
        .expect("connect");
    old.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let new = mesh
        .server_on(old.addr, &id("server"), TcpForwarder::default(), config)
        .await;

    let mut stream = timeout(
        STEP,
        pool.connect(&id("client"), &id("server"), old.addr, echo),
    )
    .await
    .expect("bounded")
    .expect("new stream lands on the restarted server");
    assert_eq!(round_trip(&mut stream, b"new").await, b"new");
    assert_eq!(round_trip(&mut held, b"old").await, b"old");
    assert_eq!(pool.stats().connections_opened(), 2);
    assert_eq!(pool.stats().stream_failures(), 0);
    assert_eq!(new.stats.streams(), 1);
}

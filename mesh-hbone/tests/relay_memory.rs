//! Heap held per idle relayed connection, counted by a counting global allocator (live bytes,
//! not RSS: what the code keeps, without the allocator's own slack). An idle relay must hold
//! no buffer: `tokio::io::copy_bidirectional` holds 16 KiB per relay, so do these bounds.
//!
//! `cargo test -p mesh-hbone --test relay_memory -- --nocapture` prints the figures.

#[path = "support/fixture.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod fixture;

use std::net::SocketAddr;
use std::time::Duration;

use fixture::{id, Mesh, STEP};
use mesh_hbone::hbone::HboneClientConfig;
use mesh_hbone::relay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Counts live heap bytes (`mesh_common::heap::live_bytes`).
#[global_allocator]
static ALLOCATOR: mesh_common::heap::Counting = mesh_common::heap::Counting;

/// Connections held idle per measurement.
const HELD: usize = 200;

fn live() -> usize {
    mesh_common::heap::live_bytes()
}

/// Lets transient allocations (frames in flight, wakers) settle.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// An echo server that holds 16 bytes per connection (the fixture's uses `tokio::io::copy`,
/// whose 8 KiB buffer would be counted with the tunnel).
async fn lean_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                    if tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("addr");
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.expect("connect"), b.expect("accept").0)
}

async fn ping(stream: &mut TcpStream) {
    stream.write_all(b"!").await.expect("write");
    let mut one = [0u8; 1];
    timeout(STEP, stream.read_exact(&mut one))
        .await
        .expect("echo in time")
        .expect("echo");
}

// One test per binary: the counter is process-wide, so tests must not run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_relays_hold_no_buffers() {
    // TCP ⇄ TCP: the sockets exist first; only the relays are counted.
    let echo = lean_echo().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    // Warm-up: each worker thread's scratch buffer (64 KiB, allocated once per thread, shared
    // by every TCP relay on it) is not per connection.
    for _ in 0..20 {
        let (mut client, accepted) = tcp_pair(&listener).await;
        let upstream = TcpStream::connect(echo).await.expect("echo");
        let relay = tokio::spawn(relay::tcp_tcp(accepted, upstream));
        ping(&mut client).await;
        drop(client);
        let _ = timeout(STEP, relay).await.expect("relay ends once closed");
    }
    let mut clients = Vec::with_capacity(HELD);
    let mut inner = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let (client, accepted) = tcp_pair(&listener).await;
        let upstream = TcpStream::connect(echo).await.expect("echo");
        clients.push(client);
        inner.push((accepted, upstream));
    }
    settle().await;
    let before = live();
    let relays: Vec<_> = inner
        .into_iter()
        .map(|(a, b)| tokio::spawn(relay::tcp_tcp(a, b)))
        .collect();
    for client in &mut clients {
        ping(client).await;
    }
    settle().await;
    let per_tcp = live().saturating_sub(before) as f64 / HELD as f64;
    eprintln!("TCP relay: {per_tcp:.0} bytes of heap per idle relay");
    assert!(
        per_tcp < 1024.0,
        "{per_tcp:.0} bytes per idle TCP relay: a buffer is held"
    );
    drop(clients);
    for relay in relays {
        let _ = timeout(STEP, relay).await.expect("relay ends once closed");
    }

    // app ⇄ relay ⇄ HBONE ⇄ relay (TcpForwarder) ⇄ echo, all in this process: both agents' share.
    let mesh = Mesh::new();
    let server = mesh.forwarding_server(&id("server")).await;
    let pool = mesh.pool(HboneClientConfig {
        max_streams_per_connection: 1000,
        ..HboneClientConfig::default()
    });
    // Warm: the pooled TLS connection exists before counting.
    let mut warm = pool
        .connect(&id("client"), &id("server"), server.addr, echo)
        .await
        .expect("warm-up stream");
    warm.write_all(b"!").await.expect("write");
    let mut one = [0u8; 1];
    warm.read_exact(&mut one).await.expect("read");
    let mut clients = Vec::with_capacity(HELD);
    let mut captured = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let (client, accepted) = tcp_pair(&listener).await;
        clients.push(client);
        captured.push(accepted);
    }
    settle().await;
    let before = live();
    let mut relays = Vec::with_capacity(HELD);
    for accepted in captured {
        let stream = timeout(
            STEP,
            pool.connect(&id("client"), &id("server"), server.addr, echo),
        )
        .await
        .expect("bounded")
        .expect("CONNECT");
        relays.push(tokio::spawn(relay::tcp_hbone(accepted, stream)));
    }
    for client in &mut clients {
        ping(client).await;
    }
    settle().await;
    let per_hbone = live().saturating_sub(before) as f64 / HELD as f64;
    eprintln!(
        "HBONE: {per_hbone:.0} bytes of heap per idle tunnelled connection (both relays, both h2 \
         ends, the server's stream task, the upstream socket and its 16-byte echo task)"
    );
    assert_eq!(pool.stats().connections_opened(), 1, "one TLS connection");
    assert!(
        per_hbone < 6.0 * 1024.0,
        "{per_hbone:.0} bytes per idle tunnelled connection"
    );
    drop(clients);
    for relay in relays {
        let relayed = timeout(STEP, relay).await.expect("ends").expect("task");
        assert_eq!((relayed.forward, relayed.backward), (1, 1));
    }
}

//! The relays of `mesh_hbone::relay`, through a real HBONE tunnel on 127.0.0.1 (application
//! socket → client relay → TLS + h2 → server relay → upstream socket) and between two TCP
//! sockets: integrity of large transfers both ways at once, half-close in each direction, resets
//! from either end, byte counts.

#[path = "support/fixture.rs"]
#[allow(dead_code, reason = "each test crate uses a part of the fixture")]
mod fixture;

use std::io;

use async_trait::async_trait;
use fixture::{id, Mesh, RunningServer, STEP};
use mesh_hbone::hbone::{
    ConnectError, ConnectHandler, ConnectRequest, HboneClientConfig, HbonePool, HboneServerConfig,
    HboneStream,
};
use mesh_hbone::relay::{self, RelayError, Relayed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Deterministic bytes that differ with `seed`, so a swapped or shifted chunk is noticed.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a: compares large transfers without printing megabytes on failure.
fn checksum(data: &[u8]) -> (usize, u64) {
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (data.len(), hash)
}

/// Server-side handler: connects to the target and relays with [`relay::tcp_hbone`], reporting
/// what the relay returned.
struct RelayHandler {
    done: mpsc::UnboundedSender<Relayed>,
}

#[async_trait]
impl ConnectHandler for RelayHandler {
    type Upstream = TcpStream;

    async fn open(&self, request: &ConnectRequest) -> Result<TcpStream, ConnectError> {
        let tcp = TcpStream::connect(request.target)
            .await
            .map_err(ConnectError::Unreachable)?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn serve(&self, _request: ConnectRequest, upstream: TcpStream, stream: HboneStream) {
        let _ = self.done.send(relay::tcp_hbone(upstream, stream).await);
    }
}

/// app ⇄ [client relay] ⇄ HBONE ⇄ [server relay] ⇄ upstream.
struct Rig {
    app: TcpStream,
    upstream: TcpStream,
    client: JoinHandle<Relayed>,
    server: mpsc::UnboundedReceiver<Relayed>,
    _pool: HbonePool,
    _hbone: RunningServer,
    _mesh: Mesh,
}

impl Rig {
    async fn new() -> Rig {
        let mesh = Mesh::new();
        let (done, server) = mpsc::unbounded_channel();
        let hbone = mesh
            .server(
                &id("server"),
                RelayHandler { done },
                HboneServerConfig::default(),
            )
            .await;
        let pool = mesh.pool(HboneClientConfig::default());
        let upstream_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = upstream_listener.local_addr().expect("addr");
        let (app, captured) = tcp_pair().await;
        let stream = timeout(
            STEP,
            pool.connect(&id("client"), &id("server"), hbone.addr, target),
        )
        .await
        .expect("bounded")
        .expect("CONNECT");
        let (upstream, _) = timeout(STEP, upstream_listener.accept())
            .await
            .expect("bounded")
            .expect("accept");
        let client = tokio::spawn(relay::tcp_hbone(captured, stream));
        Rig {
            app,
            upstream,
            client,
            server,
            _pool: pool,
            _hbone: hbone,
            _mesh: mesh,
        }
    }

    /// What both relays returned: (client side, server side).
    async fn finish(self) -> (Relayed, Relayed) {
        relays_ended(self.client, self.server).await
    }
}

/// Waits (bounded) for both relays of a rig to end: (client side, server side).
async fn relays_ended(
    client: JoinHandle<Relayed>,
    mut server: mpsc::UnboundedReceiver<Relayed>,
) -> (Relayed, Relayed) {
    let client = timeout(STEP, client)
        .await
        .expect("client relay ends")
        .expect("client relay task");
    let server = timeout(STEP, server.recv())
        .await
        .expect("server relay ends")
        .expect("server relay result");
    (client, server)
}

/// A connected pair of TCP sockets on 127.0.0.1.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.expect("connect"), b.expect("accept").0)
}

/// Writes `data` then half-closes, while reading everything the peer sends until its EOF.
async fn exchange(stream: &mut TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.map(|_| got)
    };
    let (written, got) = timeout(STEP, async { tokio::join!(write, read) })
        .await
        .expect("exchange in time");
    written?;
    got
}

/// Writes `data` on `from`, half-closes it, and checks that `to` reads exactly `data` and then
/// EOF (`what` names the crossing in failures).
async fn send_then_eof(from: &mut TcpStream, to: &mut TcpStream, data: &[u8], what: &str) {
    from.write_all(data).await.expect("write");
    from.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    timeout(STEP, to.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("{what}: no EOF in time"))
        .expect("read");
    assert_eq!(got, data, "{what}");
}

fn assert_clean(relayed: &Relayed, forward: usize, backward: usize, side: &str) {
    assert!(
        relayed.result.is_ok(),
        "{side}: relay failed: {:?}",
        relayed.result
    );
    assert_eq!(relayed.forward, forward as u64, "{side}: forward count");
    assert_eq!(relayed.backward, backward as u64, "{side}: backward count");
}

#[tokio::test]
async fn hbone_large_transfers_both_ways_arrive_intact_and_are_counted() {
    let mut rig = Rig::new().await;
    // Larger than the 4 MiB stream window both ways, so flow control has to turn over.
    let request = payload(9 * 1024 * 1024 + 7, 1);
    let response = payload(6 * 1024 * 1024 + 3, 2);
    let (at_upstream, at_app) = tokio::join!(
        exchange(&mut rig.upstream, &response),
        exchange(&mut rig.app, &request)
    );
    assert_eq!(
        checksum(&at_upstream.expect("upstream")),
        checksum(&request)
    );
    assert_eq!(checksum(&at_app.expect("app")), checksum(&response));
    let (client, server) = rig.finish().await;
    assert_clean(&client, request.len(), response.len(), "client");
    assert_clean(&server, response.len(), request.len(), "server");
}

#[tokio::test]
async fn hbone_half_close_from_the_client_keeps_the_other_direction_open() {
    let mut rig = Rig::new().await;
    send_then_eof(
        &mut rig.app,
        &mut rig.upstream,
        b"request",
        "EOF reaches upstream",
    )
    .await;
    // Only after the EOF: the way back still works.
    send_then_eof(
        &mut rig.upstream,
        &mut rig.app,
        b"late answer",
        "EOF reaches app",
    )
    .await;
    let (client, server) = rig.finish().await;
    assert_clean(&client, 7, 11, "client");
    assert_clean(&server, 11, 7, "server");
}

#[tokio::test]
async fn hbone_half_close_from_the_server_keeps_the_other_direction_open() {
    let mut rig = Rig::new().await;
    send_then_eof(
        &mut rig.upstream,
        &mut rig.app,
        b"banner",
        "EOF reaches app",
    )
    .await;
    send_then_eof(
        &mut rig.app,
        &mut rig.upstream,
        b"reply after EOF",
        "EOF reaches upstream",
    )
    .await;
    let (client, server) = rig.finish().await;
    assert_clean(&client, 15, 6, "client");
    assert_clean(&server, 6, 15, "server");
}

#[tokio::test]
async fn hbone_upstream_reset_ends_both_relays_and_resets_the_app() {
    let Rig {
        mut app,
        upstream,
        client,
        server,
        _pool,
        _hbone,
        _mesh,
    } = Rig::new().await;
    send_then_peer_resets(&mut app, upstream, b"x", "the app").await;
    let (client, server) = relays_ended(client, server).await;
    assert!(
        matches!(server.result, Err(RelayError::Read { .. })),
        "server: {:?}",
        server.result
    );
    assert_eq!(server.backward, 1);
    assert!(
        matches!(client.result, Err(RelayError::Reset(_))),
        "client: {:?}",
        client.result
    );
    assert_eq!(client.forward, 1);
}

#[tokio::test]
async fn hbone_app_reset_ends_both_relays_and_resets_upstream() {
    let Rig {
        app,
        mut upstream,
        client,
        server,
        _pool,
        _hbone,
        _mesh,
    } = Rig::new().await;
    send_then_peer_resets(&mut upstream, app, b"hello", "upstream").await;
    let (client, server) = relays_ended(client, server).await;
    assert!(
        matches!(client.result, Err(RelayError::Read { .. })),
        "client: {:?}",
        client.result
    );
    assert_eq!(client.backward, 5);
    assert!(
        matches!(server.result, Err(RelayError::Reset(_))),
        "server: {:?}",
        server.result
    );
}

/// `own` sends `data` to `peer`, which reads it and then closes with a reset (zero linger):
/// `own` (named `who` in failures) must see the reset, not a clean EOF.
async fn send_then_peer_resets(own: &mut TcpStream, mut peer: TcpStream, data: &[u8], who: &str) {
    own.write_all(data).await.expect("write");
    let mut got = vec![0u8; data.len()];
    timeout(STEP, peer.read_exact(&mut got))
        .await
        .expect("bounded")
        .expect("read");
    assert_eq!(got, data);
    peer.set_zero_linger().expect("linger");
    drop(peer);
    let mut rest = Vec::new();
    let read = timeout(STEP, own.read_to_end(&mut rest))
        .await
        .unwrap_or_else(|_| panic!("{who} hears of the reset in time"));
    assert_eq!(
        read.map_err(|e| e.kind()).err(),
        Some(io::ErrorKind::ConnectionReset),
        "a reset, not a clean EOF, reaches {who}"
    );
}

/// a ⇄ [relay] ⇄ b, as the agent's plaintext and same-node paths use it.
async fn tcp_rig() -> (TcpStream, TcpStream, JoinHandle<Relayed>) {
    let (a, a_inner) = tcp_pair().await;
    let (b_inner, b) = tcp_pair().await;
    (a, b, tokio::spawn(relay::tcp_tcp(a_inner, b_inner)))
}

#[tokio::test]
async fn tcp_large_transfers_survive_a_stalled_reader_and_are_counted() {
    let (mut a, mut b, relay) = tcp_rig().await;
    let to_b = payload(8 * 1024 * 1024 + 5, 3);
    let to_a = payload(3 * 1024 * 1024 + 1, 4);
    // b reads nothing for a while: the relay must keep what it could not write, and resume.
    let b_side = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        exchange(&mut b, &to_a).await
    };
    let (at_a, at_b) = tokio::join!(exchange(&mut a, &to_b), b_side);
    assert_eq!(checksum(&at_b.expect("b")), checksum(&to_b));
    assert_eq!(checksum(&at_a.expect("a")), checksum(&to_a));
    let relayed = timeout(STEP, relay).await.expect("ends").expect("task");
    assert_clean(&relayed, to_b.len(), to_a.len(), "tcp");
}

#[tokio::test]
async fn tcp_half_close_each_way() {
    for a_first in [true, false] {
        let (mut a, mut b, relay) = tcp_rig().await;
        let (first, second) = if a_first {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        send_then_eof(first, second, b"one", "EOF crosses").await;
        send_then_eof(second, first, b"two!", "EOF crosses back").await;
        let relayed = timeout(STEP, relay).await.expect("ends").expect("task");
        let (forward, backward) = if a_first { (3, 4) } else { (4, 3) };
        assert_clean(&relayed, forward, backward, "tcp");
    }
}

#[tokio::test]
async fn tcp_reset_ends_the_relay_with_an_error() {
    let (mut a, b, relay) = tcp_rig().await;
    a.write_all(b"abc").await.expect("write");
    let mut b = b;
    let mut three = [0u8; 3];
    timeout(STEP, b.read_exact(&mut three))
        .await
        .expect("bounded")
        .expect("read");
    b.set_zero_linger().expect("linger");
    drop(b);
    let relayed = timeout(STEP, relay).await.expect("ends").expect("task");
    assert!(relayed.result.is_err(), "{:?}", relayed.result);
    assert_eq!(relayed.forward, 3);
    let mut rest = Vec::new();
    let read = timeout(STEP, a.read_to_end(&mut rest))
        .await
        .expect("a hears of it");
    assert_eq!(
        read.map_err(|e| e.kind()).err(),
        Some(io::ErrorKind::ConnectionReset),
        "a reset, not a clean EOF, reaches the other side"
    );
}

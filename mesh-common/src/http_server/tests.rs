//! The bounded server against real sockets on loopback, with short limits.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

use super::*;

fn short_limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(2),
        max_connections: 4,
        max_connections_per_peer: 2,
        max_head_bytes: 8192,
        max_body_bytes: 16,
    }
}

async fn start(limits: Limits) -> (SocketAddr, ListenerMetrics, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = ListenerMetrics::default();
    let task = tokio::spawn(serve(
        listener,
        "test",
        limits,
        metrics.clone(),
        |request: Request<Bytes>| async move {
            text(
                hyper::StatusCode::OK,
                format!("ok {} {}\n", request.uri().path(), request.body().len()),
            )
        },
    ));
    (addr, metrics, task)
}

/// A connection from `source` (another loopback address is another peer).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source literal"))
        .expect("bind source");
    timeout(Duration::from_secs(2), socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Sends one request and reads its response (status line and body).
async fn exchange(stream: &mut TcpStream, head: &str, body: &[u8]) -> (String, String) {
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(body).await.expect("send body");
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if rest.len() >= length {
                let status = head.lines().next().unwrap_or_default().to_owned();
                return (status, rest[..length].to_owned());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(deadline - Instant::now(), stream.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn get(stream: &mut TcpStream, path: &str) -> (String, String) {
    exchange(
        stream,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        b"",
    )
    .await
}

/// Whether the server closes `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    match timeout(within, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected data from the server"),
        Err(_) => false,
    }
}

/// Waits (at most 2 s) until at most `n` connections are open (a closed connection gives its
/// place back just after its socket closes).
async fn wait_open_at_most(metrics: &ListenerMetrics, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while metrics.open.get() > n {
        assert!(
            Instant::now() < deadline,
            "{} still open",
            metrics.open.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn served(addr: SocketAddr, source: &str) {
    let mut normal = connect_from(source, addr).await;
    let (status, body) = get(&mut normal, "/normal").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "ok /normal 0\n");
}

#[tokio::test]
async fn slow_loris_is_closed_after_the_header_timeout_while_others_are_served() {
    let (addr, metrics, _task) = start(short_limits()).await;
    let started = Instant::now();
    let mut loris = connect_from("127.0.0.1", addr).await;
    loris
        .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n")
        .await
        .expect("partial head");
    let mut silent = connect_from("127.0.0.1", addr).await;
    // Served meanwhile, from another peer (these two hold this peer's places).
    served(addr, "127.0.0.2").await;
    // Still open before the timeout: the loris keeps trickling header lines.
    tokio::time::sleep(Duration::from_millis(100)).await;
    loris.write_all(b"X-B: 2\r\n").await.expect("trickle");
    assert!(closed_within(&mut loris, Duration::from_secs(3)).await);
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed too early: {elapsed:?}"
    );
    assert_eq!(metrics.header_read_timeouts.get(), 2);
    assert_eq!(metrics.idle_closes.get(), 0);
    wait_open_at_most(&metrics, 0).await;
    served(addr, "127.0.0.1").await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let (addr, metrics, _task) = start(short_limits()).await;
    let mut client = connect_from("127.0.0.1", addr).await;
    let (status, _) = get(&mut client, "/first").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Idle for longer than the header timeout but within the idle timeout: still usable, so
    // idle time is not taken for a slow head.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = get(&mut client, "/second").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "ok /second 0\n");
    let idle_since = Instant::now();
    assert!(!closed_within(&mut client, Duration::from_millis(600)).await);
    assert!(closed_within(&mut client, Duration::from_secs(5)).await);
    assert!(idle_since.elapsed() >= Duration::from_millis(1800));
    assert_eq!(metrics.idle_closes.get(), 1);
    assert_eq!(metrics.header_read_timeouts.get(), 0);
    wait_open_at_most(&metrics, 0).await;
}

#[tokio::test]
async fn connections_over_the_caps_are_refused_at_once_and_counted() {
    // Held connections outlive the checks below; a refusal is told from a timeout by its counter.
    let limits = Limits {
        header_read_timeout: Duration::from_secs(2),
        ..short_limits()
    };
    let (addr, metrics, _task) = start(limits).await;
    // Two from one peer hold its places; the third is refused by the per-peer cap.
    let mut held = vec![
        connect_from("127.0.0.1", addr).await,
        connect_from("127.0.0.1", addr).await,
    ];
    let mut third = connect_from("127.0.0.1", addr).await;
    assert!(closed_within(&mut third, Duration::from_secs(1)).await);
    assert_eq!(metrics.refused_peer_cap.get(), 1);
    // Two more peers fill the listener; a fifth connection is refused by the listener cap.
    held.push(connect_from("127.0.0.2", addr).await);
    let mut fourth = connect_from("127.0.0.3", addr).await;
    let (status, _) = get(&mut fourth, "/fourth").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut fifth = connect_from("127.0.0.4", addr).await;
    assert!(closed_within(&mut fifth, Duration::from_secs(1)).await);
    assert_eq!(metrics.refused_listener_cap.get(), 1);
    assert_eq!(metrics.open.get(), 4);
    // Once the silent ones time out, there is room again.
    for stream in &mut held {
        assert!(closed_within(stream, Duration::from_secs(5)).await);
    }
    assert_eq!(metrics.header_read_timeouts.get(), 3);
    wait_open_at_most(&metrics, 1).await;
    served(addr, "127.0.0.4").await;
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let (addr, metrics, _task) = start(short_limits()).await;
    let mut client = connect_from("127.0.0.1", addr).await;
    let big = "x".repeat(9000);
    let (status, _) = exchange(
        &mut client,
        &format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n"),
        b"",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    let mut client = connect_from("127.0.0.2", addr).await;
    let (status, _) = exchange(
        &mut client,
        "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n",
        &[b'y'; 17],
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(closed_within(&mut client, Duration::from_secs(1)).await);
    let mut client = connect_from("127.0.0.3", addr).await;
    let (status, body) = exchange(
        &mut client,
        "POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\n\r\n",
        &[b'y'; 16],
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "ok /b 16\n");
    assert_eq!(metrics.oversized.get(), 2);
}

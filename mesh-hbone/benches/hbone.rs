//! HBONE figures on loopback: bulk throughput through one CONNECT stream against plain TCP,
//! connection and stream set-up time, and memory per idle pooled connection.
//!
//! Run: `cargo bench -p mesh-hbone --bench hbone` (optional env: `HBONE_BENCH_MIB`, default 1024;
//! `HBONE_BENCH_IDLE`, default 500). Everything runs in this process on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_hbone::ca::{CaConfig, CertificateAuthority};
use mesh_hbone::certs::{CertManager, CertManagerConfig};
use mesh_hbone::hbone::{
    HboneClientConfig, HboneConnection, HbonePool, HboneServer, HboneServerConfig, TcpForwarder,
};
use mesh_hbone::{tls, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 64 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A TCP sink: reads everything, then answers with one byte so the sender knows it all arrived.
async fn sink() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = tcp.write_all(b"!").await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// A plaintext TCP relay (the extra hop an agent adds, without TLS or HTTP/2).
async fn relay(to: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(outbound) = TcpStream::connect(to).await {
                    let _ = mesh_hbone::relay::tcp_tcp(inbound, outbound).await;
                }
            });
        }
    });
    Ok(addr)
}

/// Sends `total` bytes on `stream`, half-closes, waits for the sink's acknowledgement.
async fn push<S>(mut stream: S, total: usize) -> anyhow::Result<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let chunk = vec![0x5au8; CHUNK];
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        stream.write_all(&chunk).await?;
        sent += chunk.len();
    }
    stream.shutdown().await?;
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await?;
    Ok(started.elapsed())
}

fn gbps(bytes: usize, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e9
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "default", sa)
}

async fn run() -> anyhow::Result<()> {
    let total = env_usize("HBONE_BENCH_MIB", 1024) * 1024 * 1024;
    let idle = env_usize("HBONE_BENCH_IDLE", 500);

    let ca = Arc::new(CertificateAuthority::generate(CaConfig::new(
        "cluster.local",
    ))?);
    let certs = CertManager::new(ca.clone(), CertManagerConfig::default());
    let bundle = ca.trust_bundle();
    certs.get(&id("server")).await?;
    let server_tls = tls::server_config(certs.resolver(&id("server")), bundle.clone())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server = HboneServer::new(
        listener,
        server_tls,
        TcpForwarder::default(),
        HboneServerConfig::default(),
    );
    let hbone_addr = server.local_addr()?;
    tokio::spawn(server.serve(std::future::pending()));

    // The same server with HTTP/2's default windows (64 KiB) and frames (16 KiB), for contrast.
    let small = HboneServerConfig {
        stream_window: 65_535,
        connection_window: 65_535,
        max_frame_size: 16_384,
        ..HboneServerConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let small_tls = tls::server_config(certs.resolver(&id("server")), bundle.clone())?;
    let small_server = HboneServer::new(listener, small_tls, TcpForwarder::default(), small);
    let small_addr = small_server.local_addr()?;
    tokio::spawn(small_server.serve(std::future::pending()));

    let sink = sink().await?;
    let relay = relay(sink).await?;
    let pool = HbonePool::new(certs.clone(), bundle.clone(), HboneClientConfig::default());

    println!(
        "bulk transfer, {} MiB, 64 KiB writes, one connection:",
        total >> 20
    );
    for round in 0..2 {
        let direct = push(TcpStream::connect(sink).await?, total).await?;
        let relayed = push(TcpStream::connect(relay).await?, total).await?;
        let stream = pool
            .connect(&id("client"), &id("server"), hbone_addr, sink)
            .await?;
        let hbone = push(stream, total).await?;
        let stream = pool
            .connect(&id("client"), &id("server"), small_addr, sink)
            .await?;
        let hbone_small = push(stream, total).await?;
        if round == 1 {
            println!(
                "  plain TCP, direct                 {:6.2} Gbit/s",
                gbps(total, direct)
            );
            println!(
                "  plain TCP, through a TCP relay    {:6.2} Gbit/s",
                gbps(total, relayed)
            );
            println!(
                "  HBONE stream (mTLS + h2 CONNECT)  {:6.2} Gbit/s",
                gbps(total, hbone)
            );
            println!(
                "  HBONE, h2 default 64 KiB windows  {:6.2} Gbit/s",
                gbps(total, hbone_small)
            );
        }
    }

    // Set-up costs.
    let n = 200;
    let started = Instant::now();
    for _ in 0..n {
        let s = pool
            .connect(&id("client"), &id("server"), hbone_addr, sink)
            .await?;
        drop(s);
    }
    let per_stream = started.elapsed() / n;
    let client_tls =
        tls::client_config(certs.resolver(&id("client")), bundle.clone(), id("server"))?;
    let config = HboneClientConfig::default();
    let started = Instant::now();
    for _ in 0..n {
        let conn = HboneConnection::dial(hbone_addr, client_tls.clone(), &config).await?;
        drop(conn);
    }
    let per_conn = started.elapsed() / n;
    println!("set-up: new CONNECT stream on a pooled connection {per_stream:?} (incl. upstream TCP connect)");
    println!("set-up: new connection (TCP + TLS 1.3 mTLS + h2)  {per_conn:?}");

    // Idle connections: each has carried one stream, then sits idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    let mut conns = Vec::with_capacity(idle);
    for _ in 0..idle {
        let conn = HboneConnection::dial(hbone_addr, client_tls.clone(), &config).await?;
        let mut s = conn.connect(sink).await?;
        s.shutdown().await?;
        let mut ack = Vec::new();
        s.read_to_end(&mut ack).await?;
        conns.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib();
    let per = (after.saturating_sub(before)) as f64 / idle as f64;
    println!(
        "idle connections: {idle} → RSS +{} KiB, {per:.1} KiB per idle connection (client and server side together)",
        after.saturating_sub(before)
    );
    drop(conns);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; anything else (`cargo test --all-targets`) skips the run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hbone bench: run with `cargo bench -p mesh-hbone --bench hbone`");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

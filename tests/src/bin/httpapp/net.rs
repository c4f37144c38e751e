//! Sockets: the servers' listener (dual-stack or one address) and the clients' dial, both
//! bounded in time.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use super::args::Listen;
use super::json::emit;

/// The clients' default for every wait.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server waits for a silent peer (a request head, a body frame, a message).
pub const SERVER_IDLE: Duration = Duration::from_secs(30);
/// The most connections a server holds at once.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Binds and listens, then prints `{"listening": .., "port": .., "name": ..}`.
pub fn listen(listen: &Listen, name: &str) -> anyhow::Result<TcpListener> {
    let (addr, dual) = match listen {
        Listen::DualStack(port) => (SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port)), true),
        Listen::Addr(addr) => (*addr, false),
    };
    let bind = || -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if dual {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        TcpListener::from_std(socket.into())
    };
    let listener = bind().with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    emit(&json!({"listening": local.to_string(), "port": local.port(), "name": name}))?;
    Ok(listener)
}

/// Resolves `host` and connects to its first address, within `timeout` in all.
pub async fn dial(host: &str, port: u16, timeout: Duration) -> anyhow::Result<TcpStream> {
    let connect = async {
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host} has no address"))?;
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        anyhow::Ok(stream)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| anyhow!("connecting to {host}:{port}: no answer within {timeout:?}"))?
}

/// An IPv4 peer of a dual-stack socket as plain IPv4 (`::ffff:10.0.0.1` is `10.0.0.1`).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn mapped_peers_read_as_ipv4() {
        let cases = [
            ("[::ffff:10.1.2.3]:80", "10.1.2.3:80"),
            ("[fd00::1]:80", "[fd00::1]:80"),
            ("127.0.0.1:9", "127.0.0.1:9"),
        ];
        for (input, want) in cases {
            let addr: SocketAddr = input.parse().unwrap();
            assert_eq!(canonical(addr).to_string(), want, "{input}");
        }
    }
}

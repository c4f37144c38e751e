//! The agent's proxies for captured connections: outbound (from a pod) and inbound (to a pod).
//!
//! Until the HBONE tunnel is wired in, both relay plaintext: outbound connects to the resolved
//! destination from inside the source pod's netns; inbound delivers to the application from
//! inside the destination pod's netns.

pub mod inbound;
pub mod outbound;

use tokio::net::TcpStream;

/// Copies bytes both ways until both sides are done; returns (client->server, server->client).
pub async fn relay(
    mut downstream: TcpStream,
    mut upstream: TcpStream,
) -> std::io::Result<(u64, u64)> {
    tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await
}

//! HBONE: TCP tunnelled as HTTP/2 CONNECT streams over mutual TLS, on port 15008.

pub mod client;
pub mod connector;
pub mod liveness;
pub mod pool;
pub mod server;
mod stream;

pub use client::{ConnState, HboneClientConfig, HboneConnection};
pub use connector::{Connector, DirectConnector, Origin};
pub use liveness::Liveness;
pub use pool::{HbonePool, PoolKey, PoolStats};
pub use server::{
    ConnectError, ConnectHandler, ConnectRequest, HboneServer, HboneServerConfig, ServerStats,
    TcpForwarder,
};
pub use stream::HboneStream;

/// The HBONE port.
pub const HBONE_PORT: u16 = mesh_common::ports::HBONE;
/// Default per-stream HTTP/2 flow-control window (4 MiB).
pub const DEFAULT_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Default per-connection HTTP/2 flow-control window (16 MiB).
pub const DEFAULT_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Default HTTP/2 maximum frame size (256 KiB: fewer frames per byte than the 16 KiB minimum).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 256 * 1024;

/// Largest header block accepted: a CONNECT needs a few hundred bytes.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Why an HBONE operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    /// The TCP connection to the peer failed.
    #[error("connecting to {peer}: {source}")]
    Connect {
        /// The peer address.
        peer: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A step of the connection or of a CONNECT did not complete in time.
    #[error("{step} with {peer} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        step: Step,
        /// The peer address.
        peer: std::net::SocketAddr,
        /// The limit that passed.
        after: std::time::Duration,
    },
    /// The TLS handshake failed or the peer was refused.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// No certificate to present.
    #[error(transparent)]
    Certificate(#[from] crate::certs::CertError),
    /// HTTP/2 protocol or connection error.
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The peer answered the CONNECT with a non-200 status.
    #[error("CONNECT refused with status {0}")]
    Status(http::StatusCode),
    /// The CONNECT request could not be built (bad authority).
    #[error("invalid CONNECT request: {0}")]
    BadRequest(String),
    /// The connection was closed because the peer stopped answering PINGs.
    #[error("the HBONE connection to {0} was lost: the peer stopped answering")]
    PeerLost(std::net::SocketAddr),
    /// Other I/O failure.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The waits of an HBONE client, named in [`HboneError::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The TCP connect to the peer.
    TcpConnect,
    /// The TLS and HTTP/2 handshakes.
    Handshake,
    /// The peer's answer to a CONNECT request.
    ConnectResponse,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::TcpConnect => "TCP connect",
            Step::Handshake => "TLS/HTTP/2 handshake",
            Step::ConnectResponse => "waiting for the CONNECT response",
        })
    }
}

//! HBONE: TCP tunnelled as HTTP/2 CONNECT streams over mutual TLS, on port 15008.

pub mod client;
pub mod pool;
pub mod server;
mod stream;

pub use client::{HboneClientConfig, HboneConnection};
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
    /// The TCP connection or TLS handshake did not complete in time.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(std::net::SocketAddr),
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
    /// Other I/O failure.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

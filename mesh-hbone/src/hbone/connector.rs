//! Where the TCP connection under an HBONE connection is made.
//!
//! The destination authorizes on the TCP source address, so a node agent dials from inside the
//! source pod's network namespace (the peer then sees the pod's address, as with ztunnel's
//! in-pod mode); tests and tools dial from their own namespace. The pool never shares a
//! connection between two origins: two pods with one identity on one node get one each.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::TcpStream;

/// Makes connected TCP streams to HBONE peers.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug + 'static {
    /// A TCP connection to `peer`. The caller bounds the wait and tunes the socket.
    async fn connect(&self, peer: SocketAddr) -> io::Result<TcpStream>;
}

/// Connects from the calling process's own network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnector;

#[async_trait]
impl Connector for DirectConnector {
    async fn connect(&self, peer: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::connect(peer).await
    }
}

/// A connector with the key the pool files its connections under.
#[derive(Debug, Clone)]
pub struct Origin {
    key: Option<u64>,
    connector: Arc<dyn Connector>,
}

impl Origin {
    /// The calling process's own namespace ([`DirectConnector`]).
    pub fn direct() -> Origin {
        Origin {
            key: None,
            connector: Arc::new(DirectConnector),
        }
    }

    /// `connector`, filed under `key` (e.g. the network namespace's cookie): connections are
    /// shared only between origins with the same key, so the key must identify the source
    /// address the connector dials from.
    pub fn new(key: u64, connector: Arc<dyn Connector>) -> Origin {
        Origin {
            key: Some(key),
            connector,
        }
    }

    /// The pool key part (`None` for [`Origin::direct`]).
    pub fn key(&self) -> Option<u64> {
        self.key
    }

    /// The connector.
    pub fn connector(&self) -> &dyn Connector {
        self.connector.as_ref()
    }
}

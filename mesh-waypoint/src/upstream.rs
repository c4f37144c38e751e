//! Upstream HTTP connections: HTTP/1.1 or HTTP/2 to the chosen endpoint, over an HBONE stream
//! with the waypoint's identity (or plain TCP to an endpoint outside the mesh), pooled per
//! endpoint. HTTP/2 connections are shared by concurrent requests; idle HTTP/1.1 connections are
//! kept (at most [`MAX_IDLE_PER_ENDPOINT`] per endpoint) and reused once their previous response
//! has been read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_common::identity::Identity;
use mesh_common::ports::HBONE;
use mesh_hbone::hbone::{HboneError, HbonePool, HboneStream};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// Body of a request sent upstream.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// Idle HTTP/1.1 connections kept per endpoint.
pub const MAX_IDLE_PER_ENDPOINT: usize = 64;

/// Default time to open an upstream connection (HBONE stream and HTTP handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP version spoken to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge: h2c inside the tunnel).
    Http2,
}

/// An endpoint to send to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Endpoint address and target port.
    pub addr: SocketAddr,
    /// The endpoint workload's identity; `None` for an endpoint outside the mesh (plain TCP).
    pub identity: Option<Identity>,
}

/// Why a request could not be sent, or its response not received.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened (HBONE refused, peer unreachable, TLS or identity failure).
    #[error("connect to {addr}: {message}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
    /// Opening the connection took longer than the connect timeout.
    #[error("connect to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    /// The connection failed or was reset before the response headers.
    #[error("{addr}: {source}")]
    Reset {
        /// The endpoint.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
}

/// A byte stream to an endpoint.
pub type Io = Either<HboneStream, TcpStream>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    endpoint: Endpoint,
    protocol: Protocol,
}

/// Pooled upstream connections of one waypoint instance.
#[derive(Debug)]
pub struct Upstreams {
    hbone: HbonePool,
    own: Identity,
    connect_timeout: Duration,
    idle_h1: Mutex<HashMap<Key, Vec<http1::SendRequest<UpstreamBody>>>>,
    h2: Mutex<HashMap<Key, http2::SendRequest<UpstreamBody>>>,
}

impl Upstreams {
    /// Upstream connections over `hbone`, presenting `own` (the waypoint's identity).
    pub fn new(hbone: HbonePool, own: Identity) -> Arc<Upstreams> {
        Arc::new(Upstreams {
            hbone,
            own,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_h1: Mutex::default(),
            h2: Mutex::default(),
        })
    }

    /// The HBONE pool (its counters feed the metrics).
    pub fn hbone(&self) -> &HbonePool {
        &self.hbone
    }

    /// Sends `request` to `endpoint` in `protocol` and returns the response head with its
    /// streaming body. The request must already be in the form that protocol needs
    /// (see `proxy::upstream_form`).
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        protocol: Protocol,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let key = Key {
            endpoint: endpoint.clone(),
            protocol,
        };
        let addr = endpoint.addr;
        match protocol {
            Protocol::Http2 => {
                let mut sender = match self.take_h2(&key) {
                    Some(sender) => sender,
                    None => self.open_h2(&key).await?,
                };
                sender
                    .send_request(request)
                    .await
                    .map_err(|source| UpstreamError::Reset { addr, source })
            }
            Protocol::Http1 => {
                let mut sender = match self.take_h1(&key) {
                    Some(sender) => sender,
                    None => self.open_h1(&key).await?,
                };
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|source| UpstreamError::Reset { addr, source })?;
                // Ready again once this response's body has been read; reused then.
                if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                    self.put_h1(key, sender);
                }
                Ok(response)
            }
        }
    }

    fn take_h2(&self, key: &Key) -> Option<http2::SendRequest<UpstreamBody>> {
        let mut h2 = lock(&self.h2);
        match h2.get(key) {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                h2.remove(key);
                None
            }
            None => None,
        }
    }

    fn take_h1(&self, key: &Key) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = lock(&self.idle_h1);
        let senders = idle.get_mut(key)?;
        senders.retain(|s| !s.is_closed());
        let ready = senders.iter().position(|s| s.is_ready());
        let sender = ready.map(|i| senders.swap_remove(i));
        if senders.is_empty() {
            idle.remove(key);
        }
        sender
    }

    fn put_h1(&self, key: Key, sender: http1::SendRequest<UpstreamBody>) {
        let mut idle = lock(&self.idle_h1);
        let senders = idle.entry(key).or_default();
        if senders.len() < MAX_IDLE_PER_ENDPOINT {
            senders.push(sender);
        }
    }

    async fn open_h1(&self, key: &Key) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        let addr = key.endpoint.addr;
        let handshake = async {
            let io = self.open(&key.endpoint).await?;
            http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| UpstreamError::Connect {
                    addr,
                    message: e.to_string(),
                })
        };
        let (sender, conn) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(addr))??;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn open_h2(&self, key: &Key) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let addr = key.endpoint.addr;
        let handshake = async {
            let io = self.open(&key.endpoint).await?;
            http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| UpstreamError::Connect {
                    addr,
                    message: e.to_string(),
                })
        };
        let (sender, conn) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(addr))??;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        lock(&self.h2).insert(key.clone(), sender.clone());
        Ok(sender)
    }

    /// A byte stream to the endpoint: an HBONE stream (`<ip>:15008`, CONNECT `<ip>:<port>`) to
    /// a meshed endpoint, plain TCP to one outside the mesh.
    pub async fn open(&self, endpoint: &Endpoint) -> Result<Io, UpstreamError> {
        let addr = endpoint.addr;
        let stream = match &endpoint.identity {
            Some(identity) => {
                let peer = SocketAddr::new(addr.ip(), HBONE);
                let stream = self
                    .hbone
                    .connect(&self.own, identity, peer, addr)
                    .await
                    .map_err(|e: HboneError| UpstreamError::Connect {
                        addr,
                        message: e.to_string(),
                    })?;
                Either::Left(stream)
            }
            None => {
                let tcp = TcpStream::connect(addr)
                    .await
                    .map_err(|e| UpstreamError::Connect {
                        addr,
                        message: e.to_string(),
                    })?;
                let _ = tcp.set_nodelay(true);
                Either::Right(tcp)
            }
        };
        Ok(stream)
    }

    /// Opens a byte stream to `endpoint` within the connect timeout (opaque TCP passthrough).
    pub async fn open_stream(&self, endpoint: &Endpoint) -> Result<Io, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, self.open(endpoint))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(endpoint.addr))?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
